"""The early-exit family's per-step logic: the robot's ``plan``/``resolve`` and a node's
``serve_features``, shared by the in-process fleet and the ROS nodes.

One early-exit net (``policies.early_exit``) is split across the compute nodes on a robot's
routes (``ExitPlan``): each node runs its part of the trunk and its exit. The node answers
with its exit's action when the exit's **confidence** reaches the node's threshold (the
last part always answers); otherwise it forwards the feature, the tokens after its last
layer, to a next node drawn from its offloading distribution. Modes differ only in the
plan: ``early_exit`` (calibrated thresholds, nearest next node), ``dto_ee`` (thresholds and
offloading from ``core.dto_ee``), ``ee_fixed`` (fixed thresholds, nearest), ``ee_random``
(calibrated thresholds, uniform offloading), ``cloud_only`` (no exits: the observation
window goes to the top node, which runs the whole net).

Confidence is ``1 − H(p)/log(K^L)`` of the exit's joint code distribution ``p`` over the
``K^L`` code tuples: 1 when one tuple has all the mass, 0 when it is uniform. It depends on
the observation only (not on a draw), so the share of steps an exit answers is a fixed
function of its threshold, which the optimiser needs. Every random choice is drawn from
the step's seed (the answer's codes, the next node), so a step's outcome does not depend on
where or when it is computed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from sim_envs.spec import ACTION_DIM
from hybrid_policy.core.mode_names import EXIT_MODES
from hybrid_policy.core.modes import Plan
from hybrid_policy.core.protocol import FeatureRequest, ProtocolError, Response
from hybrid_policy.core.topology import Robot, Topology
from hybrid_policy.errors import HybridPolicyError
from hybrid_policy.policies import ObsHistory

FIXED_THRESHOLD = 0.8  # ee_fixed: one confidence threshold for every exit, not calibrated


class ExitPlanError(HybridPolicyError, ValueError):
    """A placement or thresholds the net and the topology cannot run."""


def check_threshold(value: float, where: str = "threshold") -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise ExitPlanError(f"{where}: a confidence threshold must be a number in [0, 1], got "
                            f"{value!r}")
    return float(value)


def confidence(step) -> float:
    """1 − normalised entropy of the exit's joint code distribution (module doc)."""
    p = step.joint()
    nz = p[p > 0]
    return float(1.0 - (-(nz * np.log(nz)).sum()) / math.log(len(p)))


def answer(step, seed: int, layer: int) -> Response:
    """The exit's action for the step: codes drawn from the step's seed."""
    codes = step.sample(np.random.default_rng(seed))
    return Response(step.action(codes), codes, True, len(codes), (), layer)


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
    parts = topology.partitions or {"robot": exits[0], "edge": exits[min(1, len(exits) - 1)],
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


class EarlyExitMode:
    """The robot side: its part of the net and its exit; below its threshold it sends the
    feature (or, for ``cloud_only``, the observation window) on. Without an answer it acts
    on its own exit's action (``cloud_only``: holds still)."""

    def __init__(self, name: str, robot: str, net, plan: ExitPlan) -> None:
        if name not in EXIT_MODES:
            raise ExitPlanError(f"{name} is not an early-exit mode")
        self.name, self.robot, self.net, self.setup = name, robot, net, plan
        self.layers = plan.ends[robot]
        self._history = ObsHistory(net.history, net.obs_dim)

    def reset(self) -> None:
        self._history.reset()

    def plan(self, obs: np.ndarray, rng: np.random.Generator) -> Plan:
        window = self._history.push(obs).copy()
        seed = int(rng.integers(2**31))
        if self.layers == 0:
            req = FeatureRequest(0, window, seed, self.setup.encoding)
            return Plan(None, req, window=window, route_to=self._next(seed))
        tokens = self.net.advance(self.net.start([window]), 0, self.layers)
        step = self.net.exit(tokens, self.layers)[0]
        conf = confidence(step)
        ans = answer(step, seed, self.layers)
        plan = Plan(ans.action, None, codes=ans.codes, window=window, confidence=conf)
        if conf < self.setup.thresholds[self.robot]:
            plan.request = FeatureRequest(self.layers, tokens[0].numpy(), seed,
                                          self.setup.encoding)
            plan.route_to = self._next(seed)
        return plan

    def _next(self, seed: int) -> str:
        return choose(self.setup.offload[self.robot], seed, self.layers)

    def resolve(self, plan: Plan, response: Response | None) -> np.ndarray:
        if response is not None:
            return response.action
        return plan.draft_action if plan.draft_action is not None else np.zeros(
            ACTION_DIM, np.float32)


def check_feature(net, end: int, req: FeatureRequest) -> None:
    """Raise ``ProtocolError`` unless a node whose part ends at ``end`` can continue ``req``."""
    if not 0 <= req.layer < end:
        raise ProtocolError(f"a feature after layer {req.layer} reached a node whose part "
                            f"ends at layer {end}: it must come from before it")
    width = net.obs_dim if req.layer == 0 else net.d_model
    if req.data.shape != (net.history, width):
        raise ProtocolError(f"feature after layer {req.layer} is {req.data.shape[0]}x"
                            f"{req.data.shape[1]}, expected {net.history}x{width}")


def serve_features(net, end: int, threshold: float, offload: Mapping[str, float],
                   requests: list[FeatureRequest]) -> list[tuple[Response | FeatureRequest,
                                                                 str, float]]:
    """One node's operation on a batch: per request ``(outcome, next node, confidence)`` —
    the answer (``next node`` empty) or the feature after ``end`` for the next node. Raises
    ``ProtocolError`` if any request is unusable."""
    import torch

    for req in requests:
        check_feature(net, end, req)
    out: list = [None] * len(requests)
    by_layer: dict[int, list[int]] = {}
    for i, req in enumerate(requests):
        by_layer.setdefault(req.layer, []).append(i)
    for layer, idx in by_layer.items():
        if layer == 0:
            tokens = net.start([requests[i].data for i in idx])
        else:
            tokens = torch.from_numpy(np.stack([requests[i].data for i in idx]))
        tokens = net.advance(tokens, layer, end)
        for j, (i, step) in enumerate(zip(idx, net.exit(tokens, end))):
            req, conf = requests[i], confidence(step)
            if end == net.layers or conf >= threshold:
                out[i] = (answer(step, req.seed, end), "", conf)
            else:
                out[i] = (FeatureRequest(end, tokens[j].numpy(), req.seed, req.encoding),
                          choose(offload, req.seed, end), conf)
    return out
