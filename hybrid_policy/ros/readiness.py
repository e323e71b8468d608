"""Start-up handshake of the graph's own nodes, so a bag holds every step from the first.

DDS matches each writer with each reader on its own schedule; a volatile message published
before its writer has matched a reader is never delivered to that reader (a bag would miss
the first steps). ``expect`` (``"topic count"`` entries, optional; ``bringup`` and the launch
file derive it from the graph description) says how many readers each publisher must have
matched first. Unmanaged nodes (link, simulator) then announce themselves on the latched
``ready`` topic; the managed draft and target nodes instead refuse to ``activate`` until
matched, and the lifecycle manager announces when all of them are active. The simulator
starts the first episode when its own publishers are matched and every node in its
``wait_for`` has announced itself. A driver of its own needs none of this: it waits for
the draft node's lifecycle state ``active`` (docs/interfaces.md).
"""

from __future__ import annotations

from typing import Callable

from diagnostic_msgs.msg import DiagnosticStatus
from rclpy.node import Node
from rclpy.publisher import Publisher
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from hybrid_policy.ros import messages
from hybrid_policy.ros.params import string_list
from hybrid_policy.ros.reporting import STEADY

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
                 then: Callable[[], None] | None = None, announce: bool = True) -> None:
        self.node, self.publishers, self.then = node, publishers, then
        self.expect = parse_counts(string_list(
            node, "expect", "'topic count' per publisher: readers to match before the node "
            "announces itself or activates (bringup and launch set it; optional)"))
        unknown = sorted(set(self.expect) - set(publishers))
        if unknown:
            raise ValueError(f"expect names topics this node does not publish: {unknown}")
        self.ready = False
        if announce:
            self._timer = node.create_timer(0.02, self._check, clock=STEADY)

    def missing(self) -> dict[str, str]:
        """``{topic: "matched/expected"}`` of the publishers still short of readers."""
        return {t: f"{self.publishers[t].get_subscription_count()}/{n}"
                for t, n in self.expect.items()
                if self.publishers[t].get_subscription_count() < n}

    def matched(self) -> bool:
        return not self.missing()

    def _check(self) -> None:
        if not self.matched():
            return
        self._timer.cancel()
        self.ready = True
        announce(self.node)
        if self.then is not None:
            self.then()


class ReadyWaiter:
    """Collects the ``ready`` announcements of the nodes named in ``names`` (relative names
    are in the waiting node's namespace)."""

    def __init__(self, node: Node, names: list[str]) -> None:
        ns = node.get_namespace().rstrip("/")
        self.waiting = {n if n.startswith("/") else f"{ns}/{n}" for n in names}
        node.create_subscription(DiagnosticStatus, READY_TOPIC, self._on_ready, READY_QOS)

    def _on_ready(self, msg: DiagnosticStatus) -> None:
        self.waiting.discard(msg.name)

    @property
    def done(self) -> bool:
        return not self.waiting


def announce(node: Node) -> None:
    """Announce ``node`` (by its fully qualified name) as ready on the latched ``ready``
    topic (a fleet remaps every node's ``ready`` to one topic at its root)."""
    pub = node.create_publisher(DiagnosticStatus, READY_TOPIC, READY_QOS)
    pub.publish(messages.status(node.get_fully_qualified_name(), 0, "ready", {}))
