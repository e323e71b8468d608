"""Where each part of an early-exit net runs and how every robot and node decides: the
plan of an early-exit mode on a topology. No torch and no ROS (the ROS graph reads it).

``placement`` puts the parts by the topology's ``partitions``; ``build_plan`` gives each
robot and node its threshold and offloading distribution by mode (``core.early_exit``'s
module doc); ``core.exit_optimise`` writes dto_ee's into it. Every random choice is drawn
from the step's seed, so a step's outcome does not depend on where it is computed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from hybrid_policy.families.exits.names import MODES as EXIT_MODES
from hybrid_policy.core.protocol import feature_hop  # noqa: F401  (re-exported)
from hybrid_policy.core.topology import TIERS, Robot, Topology, TopologyError, number
from hybrid_policy.errors import HybridPolicyError

FIXED_THRESHOLD = 0.8  # ee_fixed: one confidence threshold for every exit, not calibrated
DEFAULT_LOSS_BUDGET = 0.15  # mean TV to the full net of the steps an early exit answers


class ExitPlanError(HybridPolicyError, ValueError):
    """A placement or thresholds the net and the topology cannot run."""


def check_threshold(value: float, where: str = "threshold") -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise ExitPlanError(f"{where}: a confidence threshold must be a number in [0, 1], got "
                            f"{value!r}")
    return float(value)


def choose(probs: Mapping[str, float], seed: int, layer: int) -> str:
    """The next node for a feature after ``layer``, drawn from the step's seed."""
    names = list(probs)
    if len(names) == 1:
        return names[0]
    u = np.random.default_rng([seed, 0x0FF1, layer]).random()
    cdf = np.cumsum([probs[n] for n in names])
    return names[min(int(np.searchsorted(cdf, u * cdf[-1], side="right")), len(names) - 1)]


@dataclass
class ExitPlan:
    """Where each part of the net runs and how every robot and node decides. ``ends``: the
    layer at which the part of each robot (by robot name) and computing node ends (0: the
    robot computes nothing); ``thresholds``: confidence needed to answer; ``offload``: the
    distribution over next computing nodes. Mutable: ``dto_ee`` re-optimises it online."""

    mode: str
    layers: int
    ends: dict[str, int]
    thresholds: dict[str, float]
    offload: dict[str, dict[str, float]]
    encoding: str = "32FC1"
    info: dict = field(default_factory=dict)

    def computing_nodes(self, topology: Topology) -> list[str]:
        return [n for n in topology.nodes if self.ends.get(n, 0) > 0]

    def summary(self) -> dict:
        """The plan as JSON: parts, thresholds and offloading of every robot and node."""
        return {**self.info, "mode": self.mode, "layers": self.layers, "ends": dict(self.ends),
                "thresholds": dict(self.thresholds),
                "offload": {k: dict(v) for k, v in self.offload.items()},
                "encoding": self.encoding}

    def save(self, path) -> None:
        import json
        from pathlib import Path

        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(self.summary(), indent=1, default=float))

    @classmethod
    def load(cls, path) -> "ExitPlan":
        """The plan ``save`` wrote (what ``bringup`` hands the ROS nodes)."""
        import json
        from pathlib import Path

        try:
            doc = json.loads(Path(path).read_text())
            plan = cls(doc["mode"], int(doc["layers"]), {k: int(v) for k, v in doc["ends"].items()},
                       {k: check_threshold(v, f"{path}: threshold of {k}")
                        for k, v in doc["thresholds"].items()},
                       {k: {n: float(x) for n, x in v.items()} for k, v in doc["offload"].items()},
                       doc.get("encoding", "32FC1"))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ExitPlanError(f"{path}: not an early-exit plan ({exc})") from None
        return plan


def partitions_of(topology: Topology) -> dict[str, int]:
    """The topology's ``partitions`` block: tier or node name -> the layer of the
    early-exit net at which that node's part (and exit) ends; 0 for a node that only
    relays ({}: none given)."""
    spec, where, nodes = topology.blocks.get("partitions", {}), topology.path, topology.nodes
    if not isinstance(spec, dict):
        raise TopologyError(f"{where}: partitions must map tiers or node names to the layer "
                            "at which their part of the early-exit net ends")
    out = {}
    for key, layer in spec.items():
        if key not in TIERS and key not in nodes:
            raise TopologyError(f"{where}: partitions: {key!r} is neither a tier "
                                f"({', '.join(TIERS)}) nor a node ({', '.join(nodes)})")
        if key != "robot" and key in TIERS and not any(n.tier == key for n in nodes.values()):
            raise TopologyError(f"{where}: partitions: an exit is placed on tier {key!r}, but "
                                f"the topology has no {key} node")
        out[str(key)] = int(number(f"{where}: partitions.{key}", "layer", layer, 0,
                                   integer=True))
    return out


def placement(topology: Topology, exits: tuple[int, ...], mode: str) -> dict[str, int]:
    """The part of the net each robot and node runs (``ends``), from the topology's
    ``partitions`` (tier or node name → layer; default: robot = first exit, edge = second,
    regional and cloud = the whole net). ``cloud_only``: the top node of each robot's tree
    runs everything."""
    layers = exits[-1]
    if mode == "cloud_only":
        ends = {name: 0 for name in [*(r.name for r in topology.robots), *topology.nodes]}
        for r in topology.robots:
            top = [r.access, *_ancestors(topology, r.access)][-1]
            ends[top] = layers
        return ends
    parts = partitions_of(topology) or {"robot": exits[0],
                                        "edge": exits[min(1, len(exits) - 1)],
                                        "regional": layers, "cloud": layers}
    ends = {}
    for r in topology.robots:
        ends[r.name] = parts.get(r.name, parts.get("robot", 0))
    for name, node in topology.nodes.items():
        ends[name] = parts.get(name, parts.get(node.tier, 0))
    for name, end in ends.items():
        if end and end not in exits:
            raise ExitPlanError(f"{topology.path}: {name}'s part ends at layer {end}, but the "
                                f"net has exits after layers {list(exits)} only")
    return ends


def _ancestors(topology: Topology, node: str) -> list[str]:
    out, n = [], topology.nodes[node].parent
    while n:
        out.append(n)
        n = topology.nodes[n].parent
    return out


def candidates(topology: Topology, ends: dict[str, int], sender: Robot | str,
               nearest: bool) -> list[str]:
    """The computing nodes a sender can pass its feature to: the nearest one up its tree,
    or (``nearest=False``) every one it reaches in one hop, else the nearest."""
    own = ends[sender.name if isinstance(sender, Robot) else sender]
    if isinstance(sender, Robot):
        direct, up = list(sender.reach), [sender.access, *_ancestors(topology, sender.access)]
    else:
        direct, up = list(topology.next_hops(sender)), _ancestors(topology, sender)
    first_up = [n for n in up if ends.get(n, 0) > own][:1]
    if nearest:
        return first_up
    hop = [n for n in direct if ends.get(n, 0) > own]
    return hop or first_up


def build_plan(mode: str, topology: Topology, exits: tuple[int, ...],
               thresholds: Mapping[int, float] | None = None,
               encoding: str = "32FC1") -> ExitPlan:
    """The plan of ``mode`` with per-exit ``thresholds`` (exit layer → confidence; from the
    exits' calibration; ``ee_fixed`` uses ``FIXED_THRESHOLD``; ``cloud_only`` none).
    ``dto_ee`` starts from this plan (nearest next node) and ``core.dto_ee`` replaces its
    thresholds and offloading."""
    if mode not in EXIT_MODES:
        raise ExitPlanError(f"{mode} is not an early-exit mode ({', '.join(EXIT_MODES)})")
    layers = exits[-1]
    ends = placement(topology, exits, mode)
    if mode == "ee_fixed":
        per_exit = {e: FIXED_THRESHOLD for e in exits}
    elif mode == "cloud_only":
        per_exit = {}
    else:
        if thresholds is None:
            raise ExitPlanError(f"mode {mode} needs the exits' calibrated thresholds: run "
                                "`hybrid-policy calibrate-exits` first")
        per_exit = {int(e): check_threshold(t, f"threshold of exit {e}")
                    for e, t in thresholds.items()}
    plan = ExitPlan(mode, layers, ends, {}, {}, encoding, {"per_exit": per_exit})
    senders: list[Robot | str] = [*topology.robots,
                                  *(n for n in topology.nodes if 0 < ends[n] < layers)]
    for s in senders:
        name = s.name if isinstance(s, Robot) else s
        if ends[name] == layers:
            continue
        if ends[name] and ends[name] not in per_exit and mode != "cloud_only":
            raise ExitPlanError(f"no threshold for exit {ends[name]} (of {name}); given: "
                                f"{sorted(per_exit)}")
        plan.thresholds[name] = per_exit.get(ends[name], 1.0)
        nodes = candidates(topology, ends, s, nearest=mode not in ("ee_random", "dto_ee"))
        if not nodes:
            raise ExitPlanError(f"{topology.path}: {name}'s part ends at layer {ends[name]} and "
                                f"no node after it runs the rest of the net (ends: {ends})")
        plan.offload[name] = {n: 1.0 / len(nodes) for n in nodes}
    return plan
