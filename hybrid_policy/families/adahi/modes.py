"""Cooperative-inference modes: the robot side's per-step decision, one object per mode.

Every mode answers the same two calls each control step:

1. ``plan(obs, rng)``: draft (if the mode has a draft), compute the skip signal, and decide
   whether to ask the server: returns a ``Plan`` holding the draft action and/or a
   ``Request``;
2. ``resolve(plan, response)``: the action to execute given the server's ``Response``, or
   ``None`` when none came (lost, late, server down): then the draft's own action, or a
   zero (hold still) action for ``target_only`` which has no draft.

The in-process evaluator and the ROS draft node both drive modes through these calls; the
server side is ``hybrid_policy.families.adahi.server.serve``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from sim_envs.spec import ACTION_DIM
from hybrid_policy.families.adahi.deviation import ActionDeviation, DeviationConfig
from hybrid_policy.core.plan import Plan
from hybrid_policy.core.protocol import Request, Response
from hybrid_policy.families.adahi.names import (  # noqa: F401  (re-exported)
    MODE_NAMES, NEEDS_THRESHOLDS, Thresholds,
)
from hybrid_policy.errors import HybridPolicyError
from hybrid_policy.policies import ObsHistory, Policy, PolicyCard, check_pair


@dataclass(frozen=True)
class SkipRule:
    """When to execute the draft's proposal without verification."""

    kind: str  # "never", "always", "deviation", "uncertainty", "random"
    tau: float = 0.0  # threshold on Δ or on the entropy; skip probability for "random"

    def skip(self, plan: Plan, rng: np.random.Generator) -> bool:
        if self.kind == "never":
            return False
        if self.kind == "always":
            return True
        if self.kind == "deviation":
            return plan.deviation < self.tau
        if self.kind == "uncertainty":
            return plan.uncertainty < self.tau
        return bool(rng.random() < self.tau)


def entropy(rows: np.ndarray) -> float:
    p = np.clip(rows, 1e-12, 1.0)
    return float(-(rows * np.log(p)).sum())


class DraftMode:
    """A draft on the robot, verified by the server unless the skip rule says otherwise.
    ``draft_only`` never asks; ``hybrid`` always asks; ``adahi`` skips when Δ < τ*."""

    def __init__(self, name: str, draft: Policy, target_history: int, rule: SkipRule,
                 deviation: DeviationConfig = DeviationConfig()) -> None:
        self.name, self.draft, self.rule = name, draft, rule
        self.target_history = target_history
        self._history = ObsHistory(max(draft.history, target_history), draft.obs_dim)
        self._deviation = ActionDeviation(draft.tokenizer.action_std.numpy(), deviation)

    def reset(self) -> None:
        self._history.reset()
        self._deviation.reset()

    def plan(self, obs: np.ndarray, rng: np.random.Generator) -> Plan:
        window = self._history.push(obs)
        step = self.draft.begin(window)
        codes = step.sample(rng)
        probs = step.level_probs(codes)
        action = step.action(codes)
        expected = step.expected_decoded()
        delta = self._deviation.update(self.draft.decode(codes), expected)
        plan = Plan(action, None, delta, entropy(probs), codes, window.copy())
        if not self.rule.skip(plan, rng):
            plan.request = Request("verify", self._history.last(self.target_history).copy(),
                                   int(rng.integers(2**31)), codes, probs)
        return plan

    def resolve(self, plan: Plan, response: Response | None) -> np.ndarray:
        return plan.draft_action if response is None else response.action


class TargetOnlyMode:
    """No draft: every observation goes up, the target samples the action."""

    def __init__(self, target_history: int, obs_dim: int) -> None:
        self.name = "target_only"
        self.target_history = target_history
        self._history = ObsHistory(target_history, obs_dim)

    def reset(self) -> None:
        self._history.reset()

    def plan(self, obs: np.ndarray, rng: np.random.Generator) -> Plan:
        window = self._history.push(obs).copy()
        return Plan(None, Request("act", window, int(rng.integers(2**31))))

    def resolve(self, plan: Plan, response: Response | None) -> np.ndarray:
        return np.zeros(ACTION_DIM, np.float32) if response is None else response.action


DraftTargetMode = DraftMode | TargetOnlyMode


MODE_RULES: dict[str, Callable[[Thresholds], SkipRule]] = {
    "draft_only": lambda t: SkipRule("always"),
    "hybrid": lambda t: SkipRule("never"),
    "adahi": lambda t: SkipRule("deviation", t.tau),
    "uncertainty_skip": lambda t: SkipRule("uncertainty", t.uncertainty_tau),
    "random_skip": lambda t: SkipRule("random", t.random_skip),
}
def make_mode(name: str, draft: Policy, target: Policy | PolicyCard,
              thresholds: Thresholds | None = None) -> DraftTargetMode:
    """The robot side of mode ``name``. It needs the target's history length and identity
    only (a ``PolicyCard`` will do: the robot never holds the target's weights)."""
    if name not in MODE_NAMES:
        from hybrid_policy.families.registry import UnknownModeError, all_modes

        raise UnknownModeError(f"unknown mode {name!r} for a draft and a target; valid modes: "
                               f"{', '.join(MODE_NAMES)} (the others: {', '.join(all_modes())})")
    check_pair(draft, target)
    if name == "target_only":
        return TargetOnlyMode(target.history, target.obs_dim)
    if name in NEEDS_THRESHOLDS and thresholds is None:
        raise HybridPolicyError(f"mode {name} needs calibrated thresholds: run "
                                f"`hybrid-policy calibrate --task {draft.task}` first")
    rule = MODE_RULES[name](thresholds or Thresholds(0.0, 0.0, 0.0))
    return DraftMode(name, draft, target.history, rule)
