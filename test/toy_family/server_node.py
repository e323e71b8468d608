"""The toy family's server node: answers each robot's ``act`` request with the constant
action, on the flow's answer topic."""

from __future__ import annotations

import sys

from rclpy.node import Node
from sensor_msgs.msg import JointState

from hybrid_policy.ros import messages, qos
from hybrid_policy.ros.batch_queue import serve_flows
from hybrid_policy.ros.node_main import run
from hybrid_policy.ros.params import string_list
from hybrid_policy.ros.readiness import ReadyGate
from hybrid_policy.ros.reporting import Reporter


class ToyServer(Node):
    def __init__(self) -> None:
        super().__init__("server_node")
        inputs = string_list(self, "inputs", "the robots it answers")
        up, down = qos.declare(self, "uplink"), qos.declare(self, "downlink")
        self.report = Reporter(self, qos.declare(self, "telemetry"))
        publishers = {"events": self.report.events}
        guarded = self.report.guard("request", self.on_request)
        serve_flows(self, [(r, r) for r in inputs], JointState, "request",
                    lambda msg, robot, pub, info: guarded(msg, pub), up, down, publishers)
        self.gate = ReadyGate(self, publishers)
        self.served = 0

    def on_request(self, msg: JointState, pub) -> None:
        from toy_family.family import answer

        request = messages.parse_request(msg)
        pub.publish(messages.response_msg(msg.header.stamp, answer(request)))
        self.served += 1

    def close(self) -> str:
        return f"served {self.served}"


def main(args=None) -> int:
    return run(ToyServer, args)


if __name__ == "__main__":
    sys.exit(main())
