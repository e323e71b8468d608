"""The wireless link between robot and server, as a relay with a named link profile.

Each request from the robot is delayed by the profile's one-way time for its real
serialised size (or dropped with the profile's loss probability) before it reaches the
server; each response likewise on the way back. Loss and jitter are drawn from
``core.link.packet_rng(request seed)`` in the same order as the in-process evaluator, so
both see the same link for the same request. Losses are reported on ``events``.
"""

from __future__ import annotations

import sys

import numpy as np
from rclpy.node import Node
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import JointState

from hybrid_policy.core.link import link_profile, packet_rng
from hybrid_policy.ros import messages, qos
from hybrid_policy.ros.delay_line import DelayLine
from hybrid_policy.ros.node_main import run
from hybrid_policy.ros.params import require
from hybrid_policy.ros.readiness import ReadyGate
from hybrid_policy.ros.reporting import Reporter


class LinkNode(Node):
    def __init__(self) -> None:
        super().__init__("link_node")
        self.link = link_profile(require(self, "link", ""))
        up, down = qos.declare(self, "uplink"), qos.declare(self, "downlink")
        self.to_server = self.create_publisher(JointState, "server/request", up)
        self.to_robot = self.create_publisher(JointState, "downlink/response", down)
        self.report = Reporter(self, qos.declare(self, "telemetry"))
        self.events = self.report.events
        self.create_subscription(JointState, "server/response",
                                 self.report.guard("response", self.on_response), down, raw=True)
        self.create_subscription(JointState, "uplink/request",
                                 self.report.guard("request", self.on_request), up, raw=True)
        self._rngs: dict[int, np.random.Generator] = {}
        self.delay = DelayLine()
        self.lost = {"uplink": 0, "downlink": 0}
        self.gate = ReadyGate(self, {"server/request": self.to_server,
                                     "downlink/response": self.to_robot, "events": self.events})
        self.get_logger().info(f"link {self.link.name}: {self.link.delay_ms} ms one way, "
                               f"{self.link.uplink_mbps}/{self.link.downlink_mbps} Mb/s, "
                               f"loss {self.link.loss}")

    def on_request(self, raw: bytes) -> None:
        msg = deserialize_message(raw, JointState)
        key = messages.stamp_key(msg.header.stamp)
        try:
            seed = int(messages.parse_request(msg).seed)
        except messages.MessageError:
            seed = key  # the link carries what it is given; the server will refuse it
        rng = packet_rng(seed)
        delay = self.link.deliver(len(raw), True, rng)
        if delay is None:
            self._report_loss("uplink", key)
            return
        self._rngs[key] = rng
        self.delay.schedule(delay, lambda: self.to_server.publish(raw))

    def on_response(self, raw: bytes) -> None:
        key = messages.stamp_key(deserialize_message(raw, JointState).header.stamp)
        rng = self._rngs.pop(key, None) or packet_rng(key)
        delay = self.link.deliver(len(raw), False, rng)
        if delay is None:
            self._report_loss("downlink", key)
            return
        self.delay.schedule(delay, lambda: self.to_robot.publish(raw))

    def _report_loss(self, direction: str, key: int) -> None:
        self.lost[direction] += 1
        self.report.event(f"lost on {direction}", {"stamp": key, "direction": direction},
                          log=False)

    def close(self) -> str:
        self.delay.close()
        return f"lost: {self.lost}"


def main(args: list[str] | None = None) -> int:
    return run(LinkNode, args)


if __name__ == "__main__":
    sys.exit(main())
