"""Cooperative-inference modes: one per-step decision object each, one interface for all.

A mode owns the per-episode state it needs (observation history) and, each control step,
turns the robot's observation into the action to execute plus what it cost (uplink
transmission, server operation). The evaluator and the ROS nodes both drive modes through
``reset`` and ``step``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np

from hybrid_policy.errors import HybridPolicyError
from hybrid_policy.policies import ObsHistory, Policy, check_pair


class UnknownModeError(HybridPolicyError, KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


@dataclass
class StepDecision:
    """What a mode did in one control step."""

    action: np.ndarray
    uplink: bool  # an uplink packet (observation / draft proposal) was sent to the server
    server_op: bool  # the target model ran on the server


class Mode(Protocol):
    name: str

    def reset(self) -> None: ...

    def step(self, obs: np.ndarray, rng: np.random.Generator) -> StepDecision: ...


class SinglePolicyMode:
    """Act with one policy alone: ``draft_only`` on the robot, ``target_only`` on the server
    (every observation goes up and every action comes down)."""

    def __init__(self, name: str, policy: Policy, remote: bool) -> None:
        self.name, self.policy, self.remote = name, policy, remote
        self._history = ObsHistory(policy.history, policy.obs_dim)

    def reset(self) -> None:
        self._history.reset()

    def step(self, obs: np.ndarray, rng: np.random.Generator) -> StepDecision:
        step = self.policy.begin(self._history.push(obs))
        action = step.action(step.sample(rng))
        return StepDecision(action=action, uplink=self.remote, server_op=self.remote)


ModeFactory = Callable[[Policy, Policy], Mode]

MODES: dict[str, ModeFactory] = {
    "draft_only": lambda draft, target: SinglePolicyMode("draft_only", draft, remote=False),
    "target_only": lambda draft, target: SinglePolicyMode("target_only", target, remote=True),
}


def parse_modes(text: str) -> list[str]:
    """``"all"`` or a comma-separated list of mode names, checked against the registry."""
    names = list(MODES) if text.strip() == "all" else [m.strip() for m in text.split(",") if m.strip()]
    bad = [m for m in names if m not in MODES]
    if bad or not names:
        raise UnknownModeError(
            f"unknown mode(s) {', '.join(map(repr, bad)) or '(none given)'}; valid modes: "
            f"{', '.join(MODES)} (or 'all')")
    return names


def make_mode(name: str, draft: Policy, target: Policy) -> Mode:
    parse_modes(name)
    check_pair(draft, target)
    return MODES[name](draft, target)
