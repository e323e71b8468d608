"""What a node tells the rest of the graph about messages it could not use and about
fallbacks: one ``events`` message each (``diagnostic_msgs/DiagnosticStatus``, for bags and
``analyze``), counters on ``/diagnostics`` once a second (``diagnostic_msgs/DiagnosticArray``,
the ROS convention that ``rqt_robot_monitor`` and diagnostic aggregators read), and a log line.

``guard`` wraps every subscription callback: whatever a message makes the callback raise,
the node logs it, reports it and drops the message. No message can stop a node.
"""

from __future__ import annotations

import traceback
from collections import Counter
from typing import Any, Callable

from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy

from hybrid_policy.ros import messages

DIAGNOSTICS_TOPIC = "/diagnostics"
DIAGNOSTICS_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
OK, WARN, ERROR = 0, 1, 2
STEADY = Clock(clock_type=ClockType.STEADY_TIME)  # waits and periods: wall time, never sim time


class Reporter:
    """Counts, logs and publishes a node's events; wraps its callbacks."""

    def __init__(self, node: Node, events_qos: QoSProfile, period_s: float = 1.0) -> None:
        self.node = node
        self.counts: Counter[str] = Counter()
        self._last: Counter[str] = Counter()
        self.events = node.create_publisher(DiagnosticStatus, "events", events_qos)
        self._diag = node.create_publisher(DiagnosticArray, DIAGNOSTICS_TOPIC, DIAGNOSTICS_QOS)
        self._timer = node.create_timer(period_s, self.publish_diagnostics, clock=STEADY)
        self.extra: Callable[[], dict[str, Any]] = dict  # more key/values for /diagnostics

    def event(self, message: str, values: dict[str, Any], level: int = WARN,
              log: bool = True) -> None:
        """One counted event on ``events``."""
        self.counts[message] += 1
        if log and (self.counts[message] <= 5 or self.counts[message] % 100 == 0):
            self.node.get_logger().warning(
                f"{message} (#{self.counts[message]}): "
                + ", ".join(f"{k}={v}" for k, v in values.items()))
        self.events.publish(messages.status(self.node.get_name(), level, message, values))

    def reject(self, what: str, stamp: Time | None, reason: object) -> None:
        """A message that is not used: reported with its stamp and the reason, dropped."""
        self.event(f"rejected {what}", {
            "stamp": "" if stamp is None else messages.stamp_key(stamp), "reason": reason})

    def guard(self, what: str, callback: Callable[..., None]) -> Callable[..., None]:
        """``callback`` that never raises: anything a message makes it raise is a rejection.
        Arguments after the message (rclpy's message info, say) are passed through."""

        def guarded(msg: Any, *more: Any) -> None:
            try:
                callback(msg, *more)
            except messages.MessageError as exc:
                self.reject(what, getattr(getattr(msg, "header", None), "stamp", None), exc)
            except Exception as exc:  # noqa: BLE001  the node must survive any message
                self.node.get_logger().error(f"{what} callback failed: "
                                             f"{traceback.format_exc(limit=3)}")
                self.reject(what, getattr(getattr(msg, "header", None), "stamp", None),
                            f"{type(exc).__name__}: {exc}")

        return guarded

    def publish_diagnostics(self) -> None:
        new = self.counts - self._last
        self._last = self.counts.copy()
        level = WARN if new else OK
        status = messages.status(self.node.get_fully_qualified_name(), level,
                                 "; ".join(f"{n} {k}" for k, n in sorted(new.items())) or "OK",
                                 {**self.extra(), **dict(sorted(self.counts.items()))})
        status.hardware_id = "hybrid_policy"
        msg = DiagnosticArray()
        msg.header.stamp = self.node.get_clock().now().to_msg()
        msg.status = [status]
        self._diag.publish(msg)
