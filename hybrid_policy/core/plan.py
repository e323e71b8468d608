"""A robot's step, as every family's mode makes it: the plan, and the two calls a mode answers.

Each control step a mode is asked to ``plan(obs, rng)``: it drafts (if it has a draft),
computes what it decides on, and says whether to ask a server (``Plan.request``). When the
answer is back (or not, by the deadline) ``resolve(plan, response)`` gives the action to
execute. The in-process evaluators and the ROS draft node drive every mode through these
two calls; what a family's mode puts in a plan beyond the request is its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from hybrid_policy.core.protocol import FeatureRequest, Request, Response


@dataclass
class Plan:
    draft_action: np.ndarray | None  # what the draft proposes (None: no draft in this mode)
    request: Request | FeatureRequest | None  # what to send up (None: act locally)
    deviation: float = float("nan")  # Δ(t) of the proposal
    uncertainty: float = float("nan")  # entropy (nats) of the draft's codes along its path
    codes: tuple[int, ...] = ()
    window: np.ndarray | None = None  # the observation history the decision was made on
    confidence: float = float("nan")  # confidence of the robot's own answer, where it has one
    route_to: str = ""  # the node the request goes to ("" = the robot's server)
    copies: int = 1  # the request goes to this many nodes (uplink bytes ×)
    variant: str = ""  # the model (task/name) that serves the step, where modes choose one


class Mode(Protocol):
    """The robot side of one mode (module doc)."""

    name: str

    def reset(self) -> None:
        """A new episode (or run): forget the history."""

    def plan(self, obs: np.ndarray, rng: np.random.Generator) -> Plan:
        """This step's decision on observation ``obs``."""

    def resolve(self, plan: Plan, response: Response | None) -> np.ndarray:
        """The action to execute given the answer (``None``: none came in time)."""
