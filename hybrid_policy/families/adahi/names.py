"""The modes by name and the thresholds that skipping modes need, without torch.

Graph descriptions, the launch file and argument parsing check mode names and thresholds
here; ``core.modes`` builds the per-step logic from them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from hybrid_policy.errors import HybridPolicyError

MODE_NAMES = ("draft_only", "target_only", "hybrid", "adahi", "uncertainty_skip", "random_skip")
# The early-exit family (``core.early_exit``): one net split across robot, edge and cloud.
EXIT_MODES = ("early_exit", "dto_ee", "ee_fixed", "ee_random", "cloud_only")
# RoCoIn (``core.rocoin``): distilled students on redundant device groups, and baselines.
ROCOIN_MODES = ("rocoin", "rocoin_single", "rocoin_random", "rocoin_target")
# Inference delivery network (``core.idn``): variants placed online on robot, edge and cloud
# by INFIDA, against its baselines.
IDN_MODES = ("idn", "idn_static", "idn_greedy", "idn_cloud", "idn_robot")
ALL_MODES = MODE_NAMES + EXIT_MODES + ROCOIN_MODES + IDN_MODES
# Modes that skip verification by a threshold, and the field of ``Thresholds`` each uses.
THRESHOLD_OF = {"adahi": "tau", "uncertainty_skip": "uncertainty_tau",
                "random_skip": "random_skip"}
NEEDS_THRESHOLDS = tuple(THRESHOLD_OF)
# A threshold parameter set to this value means "not given: take it from the calibration".
FROM_CALIBRATION = -1.0


class UnknownModeError(HybridPolicyError, KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


class ThresholdError(HybridPolicyError, ValueError):
    pass


def parse_modes(text: str) -> list[str]:
    """``"all"`` (the draft/target modes), ``"exits"`` (the early-exit family),
    ``"students"`` (RoCoIn and its baselines), ``"placement"`` (the inference delivery
    network's placement policies) or a comma-separated list of mode names,
    checked against the registry."""
    groups = {"all": MODE_NAMES, "exits": EXIT_MODES, "students": ROCOIN_MODES,
              "placement": IDN_MODES}
    names = list(groups[text.strip()]) if text.strip() in groups else [
        m.strip() for m in text.split(",") if m.strip()]
    bad = [m for m in names if m not in ALL_MODES]
    if bad or not names:
        raise UnknownModeError(
            f"unknown mode(s) {', '.join(map(repr, bad)) or '(none given)'}; valid modes: "
            f"{', '.join(ALL_MODES)} (or 'all' for the draft/target modes, 'exits' for the "
            "early-exit family, 'students' for RoCoIn's, 'placement' for the inference "
            "delivery network's)")
    return names


def check_mode(name: str) -> str:
    """One mode name (a node or a graph runs one mode at a time)."""
    if parse_modes(name) != [name]:
        raise UnknownModeError(f"one mode is needed here, got {name!r}; valid modes: "
                               f"{', '.join(ALL_MODES)}")
    return name


def check_tau(tau: float) -> float:
    if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not math.isfinite(tau) \
            or tau < 0:
        raise ThresholdError(f"threshold τ must be a finite number >= 0, got {tau!r}")
    return float(tau)


@dataclass(frozen=True)
class Thresholds:
    """Calibrated thresholds (``hybrid-policy calibrate``): τ* on Δ, and for the comparison
    modes the entropy threshold and skip probability that skip as often as ADAHI did."""

    tau: float
    uncertainty_tau: float
    random_skip: float

    def __post_init__(self) -> None:
        check_tau(self.tau)
        check_tau(self.uncertainty_tau)
        if not 0.0 <= self.random_skip <= 1.0:
            raise HybridPolicyError(f"random skip rate must be in [0, 1], got {self.random_skip}")
