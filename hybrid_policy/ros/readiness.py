"""Start-up handshake: no message of a run is published before every reader is matched.

DDS matches each writer with each reader on its own schedule; a volatile message published
before its writer has matched a reader is never delivered to that reader (a bag would miss
the first steps). So every node waits until each of its publishers has matched the number
of subscribers the graph description expects (``expect``: ``"topic count"`` entries), then
announces itself on the latched ``ready`` topic. The simulator starts the first episode
only when its own publishers are matched and every other node has announced itself.
"""

from __future__ import annotations

from typing import Callable

from diagnostic_msgs.msg import DiagnosticStatus
from rclpy.node import Node
from rclpy.publisher import Publisher
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from hybrid_policy.ros import messages
from hybrid_policy.ros.params import string_list

READY_TOPIC = "ready"
# Latched: a node that starts late still sees who announced before it.
READY_QOS = QoSProfile(reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST,
                       depth=20, durability=DurabilityPolicy.TRANSIENT_LOCAL)


def parse_counts(entries: list[str]) -> dict[str, int]:
    out = {}
    for e in entries:
        parts = e.split()
        if len(parts) != 2 or not parts[1].isdigit():
            raise ValueError(f"entry {e!r} is not 'topic count'")
        out[parts[0]] = int(parts[1])
    return out


class ReadyGate:
    """Calls ``then`` once every publisher in ``publishers`` has matched the expected
    number of subscribers (parameter ``expect``), after announcing the node as ready."""

    def __init__(self, node: Node, publishers: dict[str, Publisher],
                 then: Callable[[], None] | None = None) -> None:
        self.node, self.publishers, self.then = node, publishers, then
        self.expect = parse_counts(string_list(node, "expect"))
        unknown = sorted(set(self.expect) - set(publishers))
        if unknown:
            raise ValueError(f"expect names topics this node does not publish: {unknown}")
        self.ready = False
        self._pub = node.create_publisher(DiagnosticStatus, READY_TOPIC, READY_QOS)
        self._timer = node.create_timer(0.02, self._check)

    def _check(self) -> None:
        if not all(self.publishers[t].get_subscription_count() >= n
                   for t, n in self.expect.items()):
            return
        self._timer.cancel()
        self.ready = True
        self._pub.publish(messages.status(self.node.get_name(), 0, "ready", {}))
        if self.then is not None:
            self.then()


class ReadyWaiter:
    """Collects the ``ready`` announcements of the nodes named in ``names``."""

    def __init__(self, node: Node, names: list[str]) -> None:
        self.waiting = set(names)
        node.create_subscription(DiagnosticStatus, READY_TOPIC, self._on_ready, READY_QOS)

    def _on_ready(self, msg: DiagnosticStatus) -> None:
        self.waiting.discard(msg.name)

    @property
    def done(self) -> bool:
        return not self.waiting
