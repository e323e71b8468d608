"""The toy family's side of the draft node: an ``act`` request to its server each step."""

from __future__ import annotations

from sensor_msgs.msg import JointState

from hybrid_policy.ros import messages
from hybrid_policy.ros.params import require
from hybrid_policy.ros.robot_side import RobotSide


class ToySide(RobotSide):
    def __init__(self, node) -> None:
        super().__init__(node)
        self.name = self.robot()
        self.server = require(node, "server", "", "the node that answers this robot")

    def topics(self, readers, up, down) -> None:
        self.flow_topics(readers, [self.server], self.name, "request", JointState, up, down)

    def load(self):
        from toy_family.family import ConstantMode

        return ConstantMode(self.node.task.obs_dim), "a constant policy"

    def send(self, pending, key: int) -> None:
        self.pubs[self.server].publish(messages.request_msg(pending.stamp, pending.plan.request))
