"""The placement modes' side of the draft node (``ros.robot_side``): the robot's step is
``serve.IdnMode``'s ``plan`` and ``resolve``, on a ``Placement`` view
(``idn_node.PlacementView``) that says a variant of a node on the robot's path is available
while the node reports it loaded on ``ROOT/<node>/holdings`` and the latest allocation
(``ROOT/placement/allocation``) still gives it; the robot's own variants come from its own
store, which follows the allocation too (``idn_node.Holder``, loads and unloads reported on
``events``). A step the robot serves itself acts at once; otherwise the window goes as an
``act`` request (``sensor_msgs/JointState``, the variant key in ``header.frame_id``) on
``out/<node>/<robot>/request`` to the node the plan names, and the answer comes back on
``out/<node>/<robot>/answer``; without one by the deadline ``resolve`` falls back (the
robot's own variant, else holding still). The node does not activate before the first
allocation is loaded here and on every node of its path. Parameters: ``robot``,
``topology``, ``catalogue``, ``models``, ``root``."""

from __future__ import annotations

from typing import Any

from sensor_msgs.msg import JointState

from hybrid_policy.ros.params import require
from hybrid_policy.ros.robot_side import RobotSide


class PlacementSide(RobotSide):
    def __init__(self, node: Any) -> None:
        from hybrid_policy.families.idn.idn import Where
        from hybrid_policy.families.idn.placement_node import idn_network

        super().__init__(node)
        self.name = self.robot()
        self.network = idn_network(node)
        if self.name not in self.network.robots:
            raise ValueError(f"robot {self.name!r} is not in the topology (robots: "
                             f"{', '.join(self.network.robots)})")
        spec = self.network.robots[self.name]
        if spec.task != node.task.name:
            raise ValueError(f"robot {self.name} runs {spec.task} in the topology, not "
                             f"{node.task.name}")
        self.where = Where(spec.task, spec.access)
        self.models_root = require(node, "models", "", "root of the variants' models "
                                   "(MODELS/<task>/{draft,target,early_exit})")
        self.root = require(node, "root", "", "the graph's namespace (allocation, holdings)")

    def topics(self, readers: dict[str, Any], up, down) -> None:
        """A request topic to each node of the path, an answer from each; the robot's own
        store and its view of the placement."""
        from hybrid_policy.families.idn.idn_node import Holder, PlacementView
        from hybrid_policy.families.idn.serve import NodeStore, VariantModels

        node = self.node
        path = self.network.path(self.name, self.where.access)[1:]
        self.flow_topics(readers, path, self.name, "request", JointState, up, down)
        store = NodeStore(VariantModels(self.models_root))
        self.holder = Holder(node, self.network, self.name, store, node.report, self.root)
        self.view = PlacementView(node, self.network, path, self.holder, node.report, self.root)

    def load(self) -> tuple[Any, str]:
        from hybrid_policy.families.idn.idn import PLACERS
        from hybrid_policy.families.idn.serve import IdnMode

        node = self.node
        mode = IdnMode(node.mode_name, self.name, self.where, self.view.placement,
                       self.holder.store, PLACERS[node.mode_name].local_only)
        return mode, (f"{self.name} in {self.where.access}, path "
                      f"{', '.join(self.view.path)}, deadline {node.deadline_ms:.0f} ms")

    def loaded(self) -> None:
        """Its own variants, as the allocation says (after the warm-up)."""
        self.holder.enable()

    def blocker(self) -> str | None:
        return super().blocker() or self.view.blocker()

    def before_plan(self) -> None:
        self.view.refresh()  # what is held and loaded now

    def send(self, pending: Any, key: int) -> None:
        from hybrid_policy.families.idn.idn_node import act_request_msg

        plan = pending.plan
        self.pubs[plan.route_to].publish(act_request_msg(pending.stamp, plan.request,
                                                         plan.variant))
