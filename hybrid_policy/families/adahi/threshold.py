"""Derived skip threshold τ*: from the measured relation between the action deviation Δ
and the target's rejection probability r, and from what a verification costs.

Model (after U-HLM, arXiv 2412.12687): on calibration rollouts that verify every step,
fit ``r ≈ a + b ln(Δ + ε)`` by least squares. ``r`` is exact: the probability that
level-wise verification rejects, computed from both code distributions. The relation is
linear in the logarithm of Δ: rejection climbs steeply at small deviations and flattens at
large ones (docs/method.md).

Two bounds on the rejection probability of a step that may be skipped:

- link: skipping saves the verification round trip ``L_v`` (uplink + server + downlink,
  ms) but executes the draft unverified; an unverified rejection costs
  ``C_e = w · T · ē`` (the wrong action for ``w`` control periods ``T``, scaled by ``ē``,
  the mean normalised size of a correction, measured). Skipping pays iff
  ``r(Δ) · C_e < L_v``: ``r < L_v / C_e``.
- quality: never skip a step the fit rates riskier than the average step, ``r < r̄``
  (``r̄``: mean rejection probability of the calibration steps). Single-step costs miss
  that errors compound in closed loop; this keeps verification where the draft is least
  trustworthy whatever the link. Calibration lifts it when the draft *alone* succeeds on
  at least as many of the calibration scenes as verification on every step does: then
  there is no compounding to guard against (``calibration.draft_alone``).

So ``r* = min(L_v / C_e, r̄)`` and, in closed form,

    Δ < τ* = exp((r* − a) / b) − ε            (b > 0)

τ* rises with a slower link until the quality bound takes over, and falls when a wrong
action is expensive. docs/method.md has the derivation and the empirical trade-off check.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from hybrid_policy.families.adahi.names import ThresholdError, check_tau  # noqa: F401  (re-exported)


EPS = 1e-3  # ε: keeps ln(Δ + ε) finite at Δ = 0


@dataclass(frozen=True)
class LinearFit:
    """``r ≈ intercept + slope · ln(Δ + ε)``."""

    intercept: float  # a
    slope: float  # b
    spearman: float  # rank correlation of Δ and r
    auroc: float  # AUROC of Δ for predicting a sampled rejection
    samples: int

    def predict(self, delta: np.ndarray) -> np.ndarray:
        return self.intercept + self.slope * np.log(np.asarray(delta, float) + EPS)

    def inverse(self, r: float) -> float:
        """The Δ at which the fit predicts rejection probability ``r``."""
        return float(np.exp((r - self.intercept) / self.slope) - EPS)


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (Mann–Whitney U), ties counted half."""
    labels = np.asarray(labels, bool)
    pos, neg = labels.sum(), (~labels).sum()
    if pos == 0 or neg == 0:
        return float("nan")
    ranks = stats.rankdata(scores)
    return float((ranks[labels].sum() - pos * (pos + 1) / 2) / (pos * neg))


def fit(delta: np.ndarray, rejection_prob: np.ndarray, rejected: np.ndarray) -> LinearFit:
    """Least-squares line through (ln(Δ + ε), r) over finite Δ, with rank and ROC statistics."""
    delta, r = np.asarray(delta, float), np.asarray(rejection_prob, float)
    keep = np.isfinite(delta)
    if keep.sum() < 3 or np.ptp(delta[keep]) == 0:
        raise ThresholdError("calibration needs at least 3 steps with distinct finite Δ")
    slope, intercept = np.polyfit(np.log(delta[keep] + EPS), r[keep], 1)
    rho = stats.spearmanr(delta[keep], r[keep]).statistic
    return LinearFit(float(intercept), float(slope), float(rho),
                     auroc(delta[keep], np.asarray(rejected)[keep]), int(keep.sum()))


@dataclass(frozen=True)
class Costs:
    verify_ms: float  # L_v: expected round trip of one verification
    control_period_ms: float  # T
    rejection_error: float  # ē: mean normalised |draft − executed| action when rejected
    quality_weight: float = 2.0  # w: the wrong move, then the move that undoes it

    @property
    def error_cost_ms(self) -> float:
        """C_e = w T ē: what executing one would-be-rejected draft action costs."""
        return self.quality_weight * self.control_period_ms * self.rejection_error

    @property
    def rejection_budget(self) -> float:
        """r at which skipping and verifying cost the same: L_v / C_e."""
        return self.verify_ms / max(self.error_cost_ms, 1e-12)


def rejection_bound(costs: Costs, mean_rejection: float | None) -> tuple[float, str]:
    """``r* = min(L_v / C_e, r̄)`` and which bound set it (``"link"`` or ``"quality"``);
    ``mean_rejection`` None: the calibration lifted the quality bound (the draft alone held
    the verified success in closed loop), so the link bound alone decides. A budget above 1
    (skipping pays at any rejection probability) is r* = 1: τ* then skips every step the
    fit rates possible, and stays finite."""
    if mean_rejection is None or costs.rejection_budget <= mean_rejection:
        return min(costs.rejection_budget, 1.0), "link"
    return float(mean_rejection), "quality"


def derive_tau(f: LinearFit, r_star: float) -> float:
    """Closed-form τ*: the Δ at which the fit reaches ``r_star`` (clipped at 0: never skip
    when even Δ = 0 is predicted too risky)."""
    if f.slope <= 0:
        raise ThresholdError(
            f"the fit has slope {f.slope:.4g} <= 0: Δ does not predict rejection on this "
            "calibration data, so no threshold on Δ can trade transmissions for quality")
    return max(0.0, f.inverse(r_star))


def tradeoff_curve(delta: np.ndarray, rejection_prob: np.ndarray, costs: Costs,
                   taus: np.ndarray) -> dict[str, list[float]]:
    """For each τ: the fraction of steps skipped, the mean r of skipped steps and the
    per-step cost ``(1 − s) L_v + s · E[r | skipped] · C_e`` on the calibration data."""
    delta, r = np.asarray(delta, float), np.asarray(rejection_prob, float)
    out: dict[str, list[float]] = {"tau": [], "skip_rate": [], "skipped_rejection": [],
                                   "cost_ms": []}
    for tau in taus:
        skip = delta < tau
        s = float(skip.mean())
        rej = float(r[skip].mean()) if skip.any() else 0.0
        out["tau"].append(float(tau))
        out["skip_rate"].append(s)
        out["skipped_rejection"].append(rej)
        out["cost_ms"].append((1 - s) * costs.verify_ms + s * rej * costs.error_cost_ms)
    return out
