"""The FIFO of a batching server node (target, early-exit or rocoin device node), as
``core.events.BatchServer`` models one: items queue in arrival order and are served up to
``max_batch`` at a time, ``window_s`` after the first of them or at once when the batch is
full; each operation is reported on ``server/batches`` (size, duration, items left waiting
and each item's wait from when DDS received it)."""

from __future__ import annotations

import time
from collections import deque
from typing import Callable

import numpy as np

from hybrid_policy.core.stepmetrics import BATCH_FIELDS
from hybrid_policy.ros import messages
from hybrid_policy.ros.reporting import STEADY


def declare_batching(node, what: str) -> tuple[int, float]:
    """The node's ``max_batch`` (``what``: the items one operation runs) and
    ``batch_window_ms`` parameters, as (max_batch, window in s); refuses bad values."""
    from hybrid_policy.errors import HybridPolicyError
    from hybrid_policy.ros.params import declare

    max_batch = int(declare(node, "max_batch", 1, f"{what} run in one operation"))
    window_s = float(declare(node, "batch_window_ms", 0.0, "wait for more after the first "
                             f"queued {what.rstrip('s')} (ms)")) / 1e3
    if max_batch < 1 or window_s < 0:
        raise HybridPolicyError("max_batch must be >= 1 and batch_window_ms >= 0")
    return max_batch, window_s


def serve_flows(node, flows, request_type, leaf: str, handle: Callable, up, down,
                publishers: dict) -> None:
    """A serving node's inputs: per flow ``(robot, sender)`` its answers go out on
    ``exit/R/S/answer`` and its requests (``request_type``) come in on ``exit/R/S/<leaf>``,
    handed to ``handle(msg, robot, answer publisher, info)``; the answer publishers join
    ``publishers`` (the readiness handshake's)."""
    from sensor_msgs.msg import JointState

    for robot, sender in flows:
        name = f"exit/{robot}/{sender}/"
        pub = publishers[name + "answer"] = node.create_publisher(JointState, name + "answer",
                                                                  down)
        node.create_subscription(
            request_type, name + leaf,
            lambda msg, info, r=robot, p=pub: handle(msg, r, p, info), up)


def start_batching(node, telemetry, publishers: dict, serve: Callable):
    """The serving node's ``server/batches`` publisher, its readiness gate over every
    publisher, and its queue (``max_batch``, ``window_s`` from ``declare_batching``):
    ``(batch publisher, gate, queue)``."""
    from sensor_msgs.msg import JointState

    from hybrid_policy.ros.readiness import ReadyGate

    batch_pub = publishers["server/batches"] = node.create_publisher(
        JointState, "server/batches", telemetry)
    gate = ReadyGate(node, publishers, announce=False)
    return batch_pub, gate, BatchQueue(node, node.max_batch, node.window_s, serve, batch_pub)


class BatchQueue:
    """``serve(items)`` runs one operation; an item is any tuple whose last element is its
    arrival (``time.time_ns``, DDS reception)."""

    def __init__(self, node, max_batch: int, window_s: float,
                 serve: Callable[[list], None], batches_pub) -> None:
        self.node, self.max_batch, self.window_s = node, max_batch, window_s
        self.serve, self.batches_pub = serve, batches_pub
        self.items: deque = deque()
        self.longest = 0
        self._timer = None

    def __len__(self) -> int:
        return len(self.items)

    def add(self, item: tuple) -> None:
        self.items.append(item)
        self.longest = max(self.longest, len(self.items))
        if len(self.items) >= self.max_batch:
            self._serve_next()
        elif self._timer is None:  # the window opens with the first item
            window_ends = self.node.report.guard("batch", lambda _: self._window_ends())
            self._timer = self.node.create_timer(max(self.window_s, 1e-4),
                                                 lambda: window_ends(None), clock=STEADY)

    def _window_ends(self) -> None:
        self.node.destroy_timer(self._timer)
        self._timer = None
        while self.items:
            self._serve_next()

    def _serve_next(self) -> None:
        batch = [self.items.popleft() for _ in range(min(self.max_batch, len(self.items)))]
        start = time.time_ns()
        t0 = time.perf_counter()
        self.serve(batch)
        service_ms = (time.perf_counter() - t0) * 1e3
        waits = [max(start - item[-1], 0) / 1e6 for item in batch]
        self.batches_pub.publish(messages.joint_state(
            self.node.get_clock().now().to_msg(), [*BATCH_FIELDS, *(["wait_ms"] * len(waits))],
            np.array([len(batch), service_ms, len(self.items), *waits])))

    def drop_all(self, what: str) -> None:
        """Deactivation: what is still queued will not be served; say so."""
        if self.items:
            self.node.report.event(f"queued {what} dropped on deactivate",
                                   {what: len(self.items)})
            self.items.clear()
