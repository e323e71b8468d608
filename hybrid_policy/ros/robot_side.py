"""The draft node's side of a family's wire (``families.base.Family.robot_side``).

The draft node (``ros/draft_node.py``) is the robot's: it reads the robot interface, runs
the mode's ``plan`` each step, keeps the steps in flight with their deadlines, publishes
the command ``resolve`` gives and the step's record. What differs by family is how a step's
request leaves and its answer comes back, and which parameters say so: a ``RobotSide``. The
node calls it in this order: construction (declare and check the family's parameters),
``topics`` (publishers and subscriptions), on ``configure`` ``load`` (the mode) and, after
the node's warm-up, ``loaded``, before ``activate`` ``blocker``, then each step ``before_plan`` and, when the plan asks a server,
``send``. An answer ends its step through ``node.finish(key, response)``; the node's
``on_response`` does it for a ``protocol.Response`` on a JointState.

A family whose requests go to nodes by flows (``ros.fleet_wiring``) publishes each on
``out/<node>/<robot>/<leaf>`` and takes the answers on ``out/<node>/<robot>/answer``:
``flow_topics`` makes both.
"""

from __future__ import annotations

import math
from typing import Any, Callable

from sensor_msgs.msg import JointState

from hybrid_policy.core.plan import Mode
from hybrid_policy.core.protocol import Response
from hybrid_policy.ros.params import require


class RobotSide:
    """The defaults: no modelled step time, no extra wait before acting, no early exit."""

    modelled = False  # steps charged their modelled time (sim_time graphs), not measured

    def __init__(self, node: Any) -> None:
        self.node = node
        self.pubs: dict[str, Any] = {}  # flow_topics: the request publisher of each node
        self.what = "requests"

    @property
    def thresholds(self) -> dict[str, Any]:
        """What the mode decides by, for the node's start-up line."""
        return {}

    def robot(self) -> str:
        """This robot's name in the fleet (parameter ``robot``)."""
        return require(self.node, "robot", "", "this robot's name in the fleet")

    def topics(self, readers: dict[str, Any], up, down) -> None:
        """Publishers (added to ``readers``, the readiness gate's) and subscriptions."""
        raise NotImplementedError

    def flow_topics(self, readers: dict[str, Any], dests, robot: str, leaf: str, msg_type,
                    up, down, on_answer: Callable[[Any, str], None] | None = None) -> None:
        """A request publisher to each node of ``dests`` and its answers' subscription
        (``on_answer(msg, node)``; default: the node's ``on_response``)."""
        self.what = "features" if leaf == "feature" else "requests"
        for dest in dests:
            name = f"out/{dest}/{robot}/"
            self.pubs[dest] = readers[name + leaf] = self.node.create_publisher(
                msg_type, name + leaf, up)
            guard = self.node.report.guard(
                "answer" if on_answer else "response",
                (lambda msg, d=dest: on_answer(msg, d)) if on_answer else self.node.on_response)
            self.node.create_subscription(JointState, name + "answer", guard, down)

    def load(self) -> tuple[Mode, str]:
        """The mode (models loaded) and a line for the log."""
        raise NotImplementedError

    def loaded(self) -> None:
        """After ``load`` and the node's warm-up."""

    def blocker(self) -> str | None:
        """Why the node may not act yet (``None``: it may): a request publisher unmatched."""
        idle = [d for d, pub in self.pubs.items() if pub.get_subscription_count() < 1]
        if idle:
            return f"nothing reads the {self.what} to {', '.join(idle)} (start the links first)"
        return None

    def before_plan(self) -> None:
        """Each step, before the mode plans."""

    def send(self, pending: Any, key: int) -> None:
        """The step's request leaves (``pending.plan.request``)."""
        raise NotImplementedError

    def exit_layer(self, response: Response | None) -> float:
        """The early exit that answered the step, for its record (NaN: not an early exit)."""
        return math.nan

    def wait_s(self) -> float:
        """How long a step waits for its answer before it falls back."""
        return self.node.deadline_s

    def latency_ms(self, pending: Any, detail: Any) -> float | None:
        """A step's modelled time (``None``: measured on the steady clock)."""
        return None

    def close(self) -> None:
        """The node is closing."""
