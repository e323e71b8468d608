"""Server side: the target policy answers each request (verify the draft, or act).

The work is ``core.server.serve``: the node only decodes the request, calls it and encodes
the response with the request's stamp. A malformed request is logged, reported on
``events`` and not answered (the robot falls back at its deadline).
"""

from __future__ import annotations

import sys

import numpy as np
import torch
from rclpy.node import Node
from sensor_msgs.msg import JointState
from diagnostic_msgs.msg import DiagnosticStatus

from hybrid_policy.core.protocol import ProtocolError, Request
from hybrid_policy.core.server import serve
from hybrid_policy.policies import load_policy
from hybrid_policy.policies.runtime import DEFAULT_TEMPERATURE
from hybrid_policy.ros import messages, qos
from hybrid_policy.ros.node_main import run
from hybrid_policy.ros.params import require
from hybrid_policy.ros.readiness import ReadyGate


class TargetNode(Node):
    def __init__(self) -> None:
        super().__init__("target_node")
        task = require(self, "task", "")
        path = require(self, "target", "")
        temperature = float(self.declare_parameter("temperature", DEFAULT_TEMPERATURE).value)
        torch.set_num_threads(int(self.declare_parameter("threads", 1).value))
        self.target = load_policy(path, role="target", task=task, temperature=temperature)
        self.served = 0
        self._warm_up()
        self.pub = self.create_publisher(JointState, "server/response",
                                         qos.declare(self, "downlink"))
        self.events = self.create_publisher(DiagnosticStatus, "events",
                                            qos.declare(self, "telemetry"))
        self.create_subscription(JointState, "server/request", self.on_request,
                                 qos.declare(self, "uplink"))
        self.gate = ReadyGate(self, {"server/response": self.pub, "events": self.events})
        self.get_logger().info(f"serving {task} target {path} "
                               f"({self.target.model.num_parameters():,} parameters)")

    def _warm_up(self, rounds: int = 5) -> None:
        """Run the model a few times before serving: the first calls of a torch model are
        several times slower, and the robot's first deadline should not pay for them."""
        t = self.target
        window = np.zeros((t.history, t.obs_dim), np.float32)
        probs = np.full((t.levels, t.codebook_size), 1.0 / t.codebook_size)
        for i in range(rounds):
            serve(t, Request("verify", window, i, (0,) * t.levels, probs))
            serve(t, Request("act", window, i))

    def on_request(self, msg: JointState) -> None:
        try:
            req = messages.parse_request(msg)
            resp = serve(self.target, req)
        except (messages.MessageError, ProtocolError) as exc:
            key = messages.stamp_key(msg.header.stamp)
            self.get_logger().warning(f"rejected request {key}: {exc}")
            self.events.publish(messages.status("target_node", 1, "rejected request", {
                "stamp": key, "reason": exc}))
            return
        self.served += 1
        self.pub.publish(messages.response_msg(msg.header.stamp, resp))


def main(args: list[str] | None = None) -> int:
    return run(TargetNode, args)


if __name__ == "__main__":
    sys.exit(main())
