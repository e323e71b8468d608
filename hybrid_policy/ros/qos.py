"""Named QoS profiles, one per topic role, overridable by node parameters.

Roles: ``control`` (observation and action between the simulator or robot and the draft
node), ``uplink`` (requests robot → server), ``downlink`` (responses server → robot) and
``telemetry`` (per-step metrics, episode events, rejected messages). Every node declares
``qos.<role>.reliability`` (``reliable``/``best_effort``) and ``qos.<role>.depth`` for the
roles it uses, so a deployment can switch the uplink to best effort, say, from YAML.

Defaults: everything reliable, volatile, keep-last. Lockstep runs need reliable delivery
(a lost observation would stall the loop; a lost request is modelled by the link node,
not left to DDS). Staleness is decided by the application from stamps, never by DDS
``lifespan`` (docs/interfaces.md).
"""

from __future__ import annotations

from dataclasses import dataclass

from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from hybrid_policy.errors import HybridPolicyError


@dataclass(frozen=True)
class RoleQoS:
    reliability: str
    depth: int


ROLES: dict[str, RoleQoS] = {
    "control": RoleQoS("reliable", 10),
    "uplink": RoleQoS("reliable", 10),
    "downlink": RoleQoS("reliable", 10),
    "telemetry": RoleQoS("reliable", 200),
}
_RELIABILITY = {"reliable": ReliabilityPolicy.RELIABLE,
                "best_effort": ReliabilityPolicy.BEST_EFFORT}


def profile(role: str, reliability: str | None = None, depth: int | None = None) -> QoSProfile:
    """The QoS profile of ``role``, with optional overrides."""
    if role not in ROLES:
        raise HybridPolicyError(f"unknown QoS role {role!r}; valid roles: {', '.join(ROLES)}")
    base = ROLES[role]
    rel = reliability or base.reliability
    if rel not in _RELIABILITY:
        raise HybridPolicyError(f"qos.{role}.reliability: {rel!r} is not one of "
                                f"{', '.join(_RELIABILITY)}")
    d = base.depth if depth is None else depth
    if d < 1:
        raise HybridPolicyError(f"qos.{role}.depth must be >= 1, got {d}")
    return QoSProfile(reliability=_RELIABILITY[rel], history=HistoryPolicy.KEEP_LAST, depth=d,
                      durability=DurabilityPolicy.VOLATILE)


def declare(node: Node, role: str) -> QoSProfile:
    """Declare ``qos.<role>.*`` parameters on ``node`` and return the resulting profile."""
    from hybrid_policy.ros.params import declare as declare_param

    base = ROLES[role]
    rel = declare_param(node, f"qos.{role}.reliability", base.reliability,
                        f"{role} topics: reliable | best_effort")
    depth = declare_param(node, f"qos.{role}.depth", base.depth,
                          f"{role} topics: history depth (messages kept)")
    return profile(role, rel, depth)


def with_deadline(base: QoSProfile, seconds: float) -> QoSProfile:
    """``base`` with a DDS deadline: the reader gets an event when a period passes without a
    message. Both ends of a topic must set it (a reader that requests a deadline does not
    match a writer that offers none)."""
    return QoSProfile(reliability=base.reliability, history=base.history, depth=base.depth,
                      durability=base.durability, deadline=Duration(seconds=seconds))
