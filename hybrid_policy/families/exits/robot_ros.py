"""The early-exit modes' side of the draft node (``ros.robot_side``): the robot runs its
part of the early-exit net by the plan ``exit_plan`` (its part, threshold and next nodes,
as ``bringup`` solved it) and sends a feature it is not confident about as a
``sensor_msgs/Image`` on ``out/<node>/<robot>/feature`` to the node the plan draws; the
answer comes back on ``out/<node>/<robot>/answer``. Without one by the deadline the robot
acts on its own exit. Parameters: ``early_exit`` (the net), ``exit_plan``, ``robot``."""

from __future__ import annotations

from typing import Any

from sensor_msgs.msg import Image

from hybrid_policy.core.protocol import Response
from hybrid_policy.policies.card import read_config
from hybrid_policy.ros import messages
from hybrid_policy.ros.params import require
from hybrid_policy.ros.robot_side import RobotSide


class ExitSide(RobotSide):
    def __init__(self, node: Any) -> None:
        from hybrid_policy.families.exits.plan import ExitPlan

        super().__init__(node)
        self.net_path = require(node, "early_exit", "", "early-exit net checkpoint directory")
        cfg = read_config(self.net_path)
        if cfg.get("role") != "early_exit" or cfg.get("task") != node.task.name:
            raise ValueError(f"{self.net_path}: not an early-exit net of {node.task.name}")
        self.plan = ExitPlan.load(require(node, "exit_plan", "", "the plan's JSON (bringup "
                                          "writes it: parts, thresholds, offloading)"))
        self.name = self.robot()
        if self.name not in self.plan.ends:
            raise ValueError(f"robot {self.name!r} is not in the plan (robots and nodes: "
                             f"{', '.join(self.plan.ends)})")
        if self.plan.mode != node.mode_name:
            raise ValueError(f"the plan is for {self.plan.mode}, not {node.mode_name}")

    @property
    def thresholds(self) -> dict[str, Any]:
        return {"threshold": self.plan.thresholds.get(self.name)}

    def topics(self, readers: dict[str, Any], up, down) -> None:
        """One feature topic per next node, answers from each."""
        self.flow_topics(readers, self.plan.offload.get(self.name, {}), self.name, "feature",
                         Image, up, down)

    def load(self) -> tuple[Any, str]:
        from hybrid_policy.families.exits.early_exit import EarlyExitMode
        from hybrid_policy.families.exits.net import load_early_exit

        node = self.node
        net = load_early_exit(self.net_path, node.task.name, node.temperature)
        return EarlyExitMode(node.mode_name, self.name, net, self.plan), (
            f"early-exit net, part up to layer {self.plan.ends[self.name]}, deadline "
            f"{node.deadline_ms:.0f} ms")

    def send(self, pending: Any, key: int) -> None:
        plan = pending.plan
        self.pubs[plan.route_to].publish(messages.feature_msg(pending.stamp, plan.request))

    def exit_layer(self, response: Response | None) -> float:
        """The exit that answered, else the robot's own."""
        return float(response.exit_layer if response is not None else self.plan.ends[self.name])
