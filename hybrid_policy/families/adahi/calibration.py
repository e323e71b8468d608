"""``hybrid-policy calibrate``: verify every step, fit Δ → rejection, derive τ*, check it.

1. Roll out ``hybrid`` (verification on every step) and log per step the action deviation
   Δ, the draft's entropy, the exact rejection probability of level-wise verification
   (``speculative.rejection_prob``) and whether verification rejected.
2. Fit ``r ≈ a + b ln(Δ + ε)``, report Spearman ρ and AUROC, derive τ* from the fit, the
   measured verification cost on the chosen link and the mean rejection probability
   (``threshold.rejection_bound``, ``threshold.derive_tau``); the draft alone runs on the
   same scenes, and the quality bound is lifted when it succeeds as often (``draft_alone``).
3. Match the comparison modes to ADAHI's skip rate on the calibration data (the entropy
   quantile for ``uncertainty_skip``, the rate itself for ``random_skip``).
4. Sweep τ (ADAHI) and the skip rate (random_skip) in closed loop to draw the measured
   success-vs-transmission trade-off, with τ* marked.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hybrid_policy.core import evaluator
from hybrid_policy.families.adahi import calibration_file
from hybrid_policy.families.adahi import load_threshold
from hybrid_policy.families.adahi.calibration_file import VERSION, StaleCalibrationError  # noqa: F401
from hybrid_policy.core.evaluator import Setting, StepRecord
from hybrid_policy.families.adahi.modes import DraftMode, SkipRule, Thresholds, make_mode
from hybrid_policy.families.adahi.speculative import rejection_prob
from hybrid_policy.families.adahi.threshold import (
    Costs, derive_tau, fit, rejection_bound, tradeoff_curve,
)
from hybrid_policy.policies import Policy

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CalibrationConfig:
    episodes: int = 40
    seed: int = 1000  # calibration episodes differ from the default evaluation (seed 0)
    quality_weight: float = 2.0
    sweep_episodes: int = 20
    sweep_points: int = 6
    # π: ms-equivalent price of one transmission + server operation (core.load_threshold).
    # 0 derives τ* exactly as before; > 0 solves the load-aware fixed point for one robot.
    price_ms: float = 0.0


@dataclass
class Samples:
    delta: list[float]
    uncertainty: list[float]
    rejection_prob: list[float]
    rejected: list[bool]
    verify_ms: list[float]
    correction: list[float]  # normalised mean |draft − executed| action, rejected steps
    hybrid_success: list[bool]  # per calibration scene: verifying every step
    draft_success: list[bool]  # the same scenes and sampling streams: the draft alone


def draft_alone(s: Samples) -> dict[str, Any]:
    """Whether the quality bound stays: it guards against a draft whose unverified errors
    compound in closed loop, so it is lifted only when the draft alone succeeded on at
    least as many of the calibration scenes as verification on every step (the same
    scenes and sampling streams: a paired comparison)."""
    hybrid, alone = int(sum(s.hybrid_success)), int(sum(s.draft_success))
    return {"episodes": len(s.hybrid_success), "hybrid_successes": hybrid,
            "draft_only_successes": alone,
            "quality_bound": "lifted" if alone >= hybrid else "kept"}


def collect(task: str, draft: Policy, target: Policy, setting: Setting,
            cfg: CalibrationConfig) -> Samples:
    samples = Samples([], [], [], [], [], [], [], [])
    scale = draft.tokenizer.action_std.numpy()

    def on_step(name: str, rec: StepRecord) -> None:
        if name != "hybrid" or rec.response is None:  # draft alone, or lost: nothing verified
            return
        plan = rec.plan
        samples.delta.append(plan.deviation)
        samples.uncertainty.append(plan.uncertainty)
        samples.rejection_prob.append(
            rejection_prob(draft.begin(plan.window), target.begin(plan.window), draft.levels))
        samples.rejected.append(not rec.response.accepted)
        samples.verify_ms.append(rec.latency_ms - setting.compute.draft())
        if not rec.response.accepted:
            samples.correction.append(
                float(np.mean(np.abs(plan.draft_action - rec.response.action) / scale)))

    res = evaluator.evaluate(task, [make_mode("hybrid", draft, target),
                                    make_mode("draft_only", draft, target)],
                             cfg.episodes, cfg.seed, setting, on_step=on_step)
    samples.hybrid_success = list(res["hybrid"].episode_success)
    samples.draft_success = list(res["draft_only"].episode_success)
    return samples


def calibrate(task: str, draft: Policy, target: Policy, setting: Setting,
              cfg: CalibrationConfig, control_period_ms: float) -> dict[str, Any]:
    s = collect(task, draft, target, setting, cfg)
    delta, r = np.asarray(s.delta), np.asarray(s.rejection_prob)
    f = fit(delta, r, np.asarray(s.rejected))
    costs = Costs(float(np.mean(s.verify_ms)), control_period_ms,
                  float(np.mean(s.correction)) if s.correction else 0.0, cfg.quality_weight)
    alone = draft_alone(s)
    quality = float(r.mean()) if alone["quality_bound"] == "kept" else None
    r_star, bound = rejection_bound(costs, quality)
    tau = derive_tau(f, r_star)
    priced = None
    if cfg.price_ms > 0:  # one robot on its own server: the calibration's own setting
        priced = load_threshold.solve(
            load_threshold.Calibrated.from_samples(f, costs, quality, s.delta),
            load_threshold.Load(1, control_period_ms, setting.compute.target()), cfg.price_ms)
        tau, r_star, bound = priced.tau, priced.r_star, priced.bound
    skip_rate = float(np.mean(delta < tau))
    uncertainty = np.asarray(s.uncertainty)
    thresholds = Thresholds(
        tau=tau,
        uncertainty_tau=float(np.quantile(uncertainty, skip_rate)) if skip_rate > 0 else 0.0,
        random_skip=skip_rate,
    )
    finite = delta[np.isfinite(delta)]
    grid = np.unique(np.quantile(finite, np.linspace(0.0, 1.0, 21)))
    curve = tradeoff_curve(delta, r, costs, np.append(grid, np.inf))
    best = int(np.argmin(curve["cost_ms"]))
    log.info("fit r = %.4f + %.4f ln(Δ + ε) (Spearman %.3f, AUROC %.3f, %d steps); τ* = %.4f skips "
             "%.0f%% of calibration steps", f.intercept, f.slope, f.spearman, f.auroc,
             f.samples, tau, 100 * skip_rate)
    sweep = sweep_tradeoff(task, draft, target, setting, cfg, finite, tau)
    return {
        "version": VERSION,
        "task": task, "link": setting.link.name, "temperature": draft.temperature,
        "models": models_id(draft, target), "compute": setting.compute.as_dict(),
        "clock": {"kind": setting.clock.kind, "period_ms": setting.clock.period_ms,
                  "loop": setting.clock.loop},
        "config": asdict(cfg), "fit": asdict(f), "thresholds": asdict(thresholds),
        "costs": {**asdict(costs), "error_cost_ms": costs.error_cost_ms,
                  "rejection_budget": costs.rejection_budget,
                  "mean_rejection": float(r.mean()), "quality_bound": quality,
                  "r_star": r_star, "bound": bound,
                  **({} if priced is None else {"price_ms": cfg.price_ms,
                                                "load": priced.as_dict()})},
        "draft_alone": alone, "calibration_skip_rate": skip_rate, "tradeoff": curve,
        "empirical_best_tau": curve["tau"][best], "sweep": sweep,
        "samples": {"delta": [x if np.isfinite(x) else None for x in s.delta],
                    "rejection_prob": s.rejection_prob, "rejected": s.rejected},
    }


def sweep_tradeoff(task: str, draft: Policy, target: Policy, setting: Setting,
                   cfg: CalibrationConfig, finite_delta: np.ndarray,
                   tau: float) -> dict[str, list[dict[str, float]]]:
    """Closed-loop success and transmission rate of ADAHI over τ and of random skipping
    over the skip rate, on the same episodes."""
    qs = np.linspace(0.1, 0.9, cfg.sweep_points)
    taus = sorted({*np.quantile(finite_delta, qs).tolist(), tau})
    modes: list[DraftMode] = []
    for t in taus:
        modes.append(DraftMode(f"adahi@{t:.4f}", draft, target.history, SkipRule("deviation", t)))
    for q in qs:
        modes.append(DraftMode(f"random@{q:.2f}", draft, target.history, SkipRule("random", q)))
    res = evaluator.evaluate(task, modes, cfg.sweep_episodes, cfg.seed + 1, setting)
    out: dict[str, list[dict[str, float]]] = {"adahi": [], "random_skip": []}
    for name, r in res.items():
        kind, value = name.split("@")
        m = r.summary()
        out["adahi" if kind == "adahi" else "random_skip"].append(
            {"param": float(value), "success_rate": m["success_rate"],
             "uplink_tx_per_step": m["uplink_tx_per_step"]})
    return out


def save(doc: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1))
    tmp.replace(path)


def models_id(draft: Policy, target: Policy) -> dict[str, str]:
    return {"draft": draft.identity(), "target": target.identity()}


def load_thresholds(path: Path, task: str, link: str, draft: Policy,
                    target: Policy, command: str | None = None) -> Thresholds:
    """The thresholds of the calibration at ``path``, refusing one that does not fit
    (``command``: what remakes it, named in the refusal)."""
    return calibration_file.load_thresholds(path, task, link, draft.temperature,
                                            models_id(draft, target), command)


def load_doc(path: Path, task: str, link: str, draft: Policy, target: Policy) -> dict[str, Any]:
    """The whole calibration at ``path`` (for ``load_threshold``), checked likewise."""
    return calibration_file.load_doc(path, task, link, draft.temperature,
                                     models_id(draft, target))
