"""Server side: the target policy answers each request (verify the draft, or act).

A managed (lifecycle) node: ``configure`` loads the target and warms it up, ``activate``
starts serving; requests that arrive while it is not active are reported and not answered
(the robot falls back at its deadline). The work is ``core.server.serve``: the node only
decodes the request, calls it and encodes the response with the request's stamp. A
malformed request is logged, reported on ``events`` and not answered.

With ``max_batch`` > 1 the node is a batching server (as ``core.events.BatchServer`` models
one): requests queue in arrival order and are verified up to ``max_batch`` at a time in one
forward pass (``core.server.serve_batch``), ``batch_window_ms`` after the first of them
(or at once when the batch is full). Each answer is the one ``serve`` gives its request.
Batch sizes and the longest queue are counted on ``/diagnostics``, and each operation is
reported on ``server/batches`` (its size, duration, the requests left waiting and each
request's wait in the queue) for bags and ``analyze``.

In a fleet the node serves several robots (``clients``): robot ``c``'s requests arrive on
``server/c/request`` and its answers leave on ``server/c/response``, so each answer goes
back the way its request came; the requests of all clients share one queue.
"""

from __future__ import annotations

import sys
import time
from collections import Counter

import numpy as np
from sensor_msgs.msg import JointState

from hybrid_policy.core.protocol import ProtocolError, Request
from hybrid_policy.defaults import DEFAULT_TEMPERATURE
from hybrid_policy.policies.card import read_policy_card
from hybrid_policy.ros import messages, qos
from hybrid_policy.ros.managed import ManagedNode
from hybrid_policy.ros.node_main import run
from hybrid_policy.ros.params import declare, require, string_list
from hybrid_policy.ros.batch_queue import start_batching
from hybrid_policy.ros.reporting import Reporter


class TargetNode(ManagedNode):
    def __init__(self) -> None:
        super().__init__("target_node")
        self.task = require(self, "task", "", "task name (hybrid-policy tasks)")
        self.path = require(self, "target", "", "target checkpoint directory")
        self.temperature = float(declare(self, "temperature", DEFAULT_TEMPERATURE,
                                         "sampling temperature of the code distributions"))
        read_policy_card(self.path, "target", self.task)  # refuse a wrong checkpoint now
        self.max_batch = int(declare(self, "max_batch", 1, "requests verified in one forward "
                                     "pass (1 = one at a time, as they arrive)"))
        if self.max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {self.max_batch}")
        self.window_s = float(declare(self, "batch_window_ms", 0.0, "wait this long after "
                                      "the first queued request for more (ms)")) / 1e3
        if not self.window_s >= 0:
            raise ValueError(f"batch_window_ms must be >= 0, got {self.window_s * 1e3}")
        self.robots = string_list(self, "clients", "robots served, each on its own topics "
                                   "server/<robot>/request|response (unset: one robot)")
        self.batches: Counter[int] = Counter()
        self.target = None
        self.served = 0
        self.busy_ms = {"parse": 0.0, "serve": 0.0, "reply": 0.0}  # summed over requests
        telemetry = qos.declare(self, "telemetry")
        self.report = Reporter(self, telemetry)
        self.report.extra = lambda: {"state": self.state_label, "served": self.served,
                                     **self._mean_ms(), **self._batch_stats()}
        down, up = qos.declare(self, "downlink"), qos.declare(self, "uplink")
        publishers = {"events": self.report.events}
        self.request_subs, self.response_pubs = {}, {}
        guarded = self.report.guard("request", self.on_request)
        for prefix in [f"server/{c}/" for c in self.robots] or ["server/"]:
            pub = self.create_publisher(JointState, prefix + "response", down)
            publishers[prefix + "response"] = self.response_pubs[prefix + "response"] = pub
            self.request_subs[prefix + "request"] = self.create_subscription(
                JointState, prefix + "request",  # two arguments: rclpy passes the message info
                lambda msg, info, g=guarded, p=pub: g(msg, p, info), up)
        # queue: (stamp, request, publisher, arrival ns) in arrival order
        self.batch_pub, self.gate, self.queue = start_batching(self, telemetry, publishers,
                                                               self._serve_batch)
        self.get_logger().info(f"{self.task} target {self.path}: unconfigured")

    def load(self) -> str:
        """The target, warmed up."""
        from hybrid_policy.policies import load_policy

        self.target = load_policy(self.path, role="target", task=self.task,
                                  temperature=self.temperature)
        self._warm_up()
        return f"{self.target.model.num_parameters():,} parameters, serving when active"

    def unload(self) -> None:
        self.target = None

    def activation_blocker(self) -> str | None:
        """Serve once each request topic has a writer and each response topic a reader
        (its link), and the expected readers
        matched: the robot's draft node, activated after it, then finds the path matched
        end to end, also in a graph started by hand (``expect`` empty)."""
        silent = [t for t, sub in self.request_subs.items() if sub.get_publisher_count() < 1]
        if silent:
            return f"nothing publishes {', '.join(silent)} (start the link first)"
        unread = [t for t, pub in self.response_pubs.items() if pub.get_subscription_count() < 1]
        if unread:
            return f"nothing reads {', '.join(unread)} (start the link first)"
        return f"readers not matched {self.gate.missing()}" if not self.gate.matched() else None

    def _warm_up(self, rounds: int = 5) -> None:
        """Run the model a few times before serving: the first calls of a torch model are
        several times slower, and the robot's first deadline should not pay for them."""
        from hybrid_policy.families.adahi.server import serve

        t = self.target
        window = np.zeros((t.history, t.obs_dim), np.float32)
        probs = np.full((t.levels, t.codebook_size), 1.0 / t.codebook_size)
        for i in range(rounds):
            serve(t, Request("verify", window, i, (0,) * t.levels, probs))
            serve(t, Request("act", window, i))

    def on_request(self, msg: JointState, pub, info: dict) -> None:
        from hybrid_policy.families.adahi.server import check_request

        if not self.active:
            raise messages.MessageError("target_node is not active: not served")
        if self.max_batch > 1 or self.robots:
            try:
                req = messages.parse_request(msg)
                check_request(self.target, req)
            except ProtocolError as exc:
                raise messages.MessageError(str(exc)) from None
            # arrival: when DDS received it, which counts the time it waited unread while
            # the node was busy serving (system clock, as time.time_ns)
            self.queue.add((msg.header.stamp, req, pub, info["received_timestamp"]))
            return
        self._serve_one(msg, pub)

    def _serve_batch(self, batch: list) -> None:
        """Queued requests in one forward pass, answered in order."""
        from hybrid_policy.families.adahi.server import serve_batch

        t1 = time.perf_counter()
        answers = serve_batch(self.target, [req for _, req, _, _ in batch])
        t2 = time.perf_counter()
        for (stamp, _, pub, _), resp in zip(batch, answers):
            pub.publish(messages.response_msg(stamp, resp))
        self.served += len(batch)
        self.batches[len(batch)] += 1
        self.busy_ms["serve"] += (t2 - t1) * 1e3
        self.busy_ms["reply"] += (time.perf_counter() - t2) * 1e3

    def deactivated(self) -> None:
        """Requests still queued will not be answered: the robots fall back."""
        self.queue.drop_all("requests")

    def _batch_stats(self) -> dict[str, object]:
        if self.max_batch == 1:
            return {}
        return {"batch_sizes": dict(sorted(self.batches.items())),
                "queue_max": self.queue.longest}

    def _serve_one(self, msg: JointState, pub) -> None:
        from hybrid_policy.families.adahi.server import serve

        t0 = time.perf_counter()
        try:
            req = messages.parse_request(msg)
            t1 = time.perf_counter()
            resp = serve(self.target, req)
        except ProtocolError as exc:
            raise messages.MessageError(str(exc)) from None
        t2 = time.perf_counter()
        self.served += 1
        pub.publish(messages.response_msg(msg.header.stamp, resp))
        t3 = time.perf_counter()
        self.busy_ms["parse"] += (t1 - t0) * 1e3
        self.busy_ms["serve"] += (t2 - t1) * 1e3
        self.busy_ms["reply"] += (t3 - t2) * 1e3

    def _mean_ms(self) -> dict[str, float]:
        """Mean ms per served request spent parsing, serving and replying."""
        return {f"{k}_ms": round(v / max(self.served, 1), 3) for k, v in self.busy_ms.items()}

    def close(self) -> str:
        return f"served {self.served} ({self._mean_ms()}); events: {dict(self.report.counts)}"


def main(args: list[str] | None = None) -> int:
    return run(TargetNode, args)


if __name__ == "__main__":
    sys.exit(main())
