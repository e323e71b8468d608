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
from typing import Mapping

import numpy as np

from sim_envs.spec import ACTION_DIM
from hybrid_policy.families.exits.plan import (  # noqa: F401  (re-exported)
    FIXED_THRESHOLD, ExitPlan, ExitPlanError, build_plan, check_threshold, choose, feature_hop,
)
from hybrid_policy.families.exits.names import MODES as EXIT_MODES
from hybrid_policy.core.plan import Plan
from hybrid_policy.core.protocol import FeatureRequest, ProtocolError, Response
from hybrid_policy.policies import ObsHistory


def confidence(step) -> float:
    """1 − normalised entropy of the exit's joint code distribution (module doc)."""
    p = step.joint()
    nz = p[p > 0]
    return float(1.0 - (-(nz * np.log(nz)).sum()) / math.log(len(p)))


def answer(step, seed: int, layer: int) -> Response:
    """The exit's action for the step: codes drawn from the step's seed."""
    codes = step.sample(np.random.default_rng(seed))
    return Response(step.action(codes), codes, True, len(codes), (), layer)


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
