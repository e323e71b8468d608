"""Candidate skip signals in closed loop, side by side at matched skip rates.

``hybrid`` runs first; each signal's threshold is the quantile of its values over hybrid's
steps that skips the given share of them. Then, on the same scenes and sampling streams:

- ``dev``: the package's Δ (``families/adahi/deviation.py``), as ``adahi`` uses it;
- ``draw``: the draw gap, E_{c'∼q} |dec(ĉ) − dec(c')| / σ, EMA β = 0.2 like Δ (the proposal's
  expected distance from an independent draft draw: Δ plus the draft's action spread);
- ``ent``: the draft's code entropy (``uncertainty_skip``);
- ``both``: skip only when Δ and entropy are both low (the larger of their ranks among
  hybrid's steps below the rate's quantile);
- ``rand``: skip at random at the rate.

Prints success with 95% Wilson intervals and transmissions per step. The variants that are
not the package's Δ live here only: they did not beat it (docs/method.md §11).
Usage: ``python bench/skip_signals.py [--task fetch_push] [--draft-kind demonstrations]
[--rates 0.4,0.55,0.7] [--episodes 300]``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from hybrid_policy.families.adahi.server import answering
from hybrid_policy.core import evaluator
from hybrid_policy.core.compute import ComputeModel
from hybrid_policy.core.evaluator import Setting
from hybrid_policy.families.adahi.frontier import EpisodeCounts
from hybrid_policy.core.link import link_profile
from hybrid_policy.core.plan import Plan
from hybrid_policy.families.adahi.modes import DraftMode, SkipRule, entropy, make_mode
from hybrid_policy.core.protocol import Request
from hybrid_policy.policies import load_policy
from hybrid_policy.families.adahi.distill import ensure_distilled_draft
from hybrid_policy.policies.build import ensure_default_models


class DrawGapMode(DraftMode):
    """``adahi`` with Δ replaced by the EMA of the draw gap (the plan of ``DraftMode``, with
    this signal in the place of Δ)."""

    def __init__(self, name: str, draft, target_history: int, rule) -> None:
        super().__init__(name, draft, target_history, rule)
        self._scale = np.maximum(draft.tokenizer.action_std.numpy().astype(float), 1e-6)
        self._gap: float | None = None

    def reset(self) -> None:
        super().reset()
        self._gap = None

    def plan(self, obs: np.ndarray, rng: np.random.Generator) -> Plan:
        window = self._history.push(obs)
        step = self.draft.begin(window)
        codes = step.sample(rng)
        probs = step.level_probs(codes)
        table = self.draft.code_table
        d = float((step.joint() @ (np.abs(table - self.draft.decode(codes))
                                   / self._scale)).mean())
        self._gap = d if self._gap is None else 0.2 * self._gap + 0.8 * d
        plan = Plan(step.action(codes), None, self._gap, entropy(probs), codes, window.copy())
        if not self.rule.skip(plan, rng):
            plan.request = Request("verify", self._history.last(self.target_history).copy(),
                                   int(rng.integers(2**31)), codes, probs)
        return plan


class BothLow:
    """Skip when both Δ's and the entropy's rank among hybrid's steps are below ``tau``."""

    def __init__(self, dev: np.ndarray, ent: np.ndarray, tau: float) -> None:
        self._dev, self._ent, self.tau = np.sort(dev), np.sort(ent), tau

    def rank(self, dev: float, ent: float) -> float:
        return max(np.searchsorted(self._dev, dev) / len(self._dev),
                   np.searchsorted(self._ent, ent) / len(self._ent))

    def skip(self, plan: Plan, rng: np.random.Generator) -> bool:
        return self.rank(plan.deviation, plan.uncertainty) < self.tau


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="fetch_push")
    parser.add_argument("--draft-kind", default="demonstrations",
                        choices=("demonstrations", "distilled"))
    parser.add_argument("--rates", default="0.4,0.55,0.7")
    parser.add_argument("--episodes", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--models", type=Path, default=Path("models"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    paths = ensure_default_models(args.task, args.models)
    draft_path = (ensure_distilled_draft(args.task, args.models)
                  if args.draft_kind == "distilled" else paths.draft)
    draft = load_policy(draft_path, role="draft", task=args.task)
    target = load_policy(paths.target, role="target", task=args.task)
    setting = Setting(answering(target), link_profile("ideal"), ComputeModel(0.0, 0.0))
    counts = EpisodeCounts()
    signals: dict[str, list[float]] = {"dev": [], "ent": [], "draw": []}

    def hook(name: str, rec) -> None:
        counts.on_step(name, rec)
        if name == "hybrid":
            signals["dev"].append(rec.plan.deviation)
            signals["ent"].append(rec.plan.uncertainty)
        elif name == "draw_hybrid":
            signals["draw"].append(rec.plan.deviation)

    hist = target.history
    res = evaluator.evaluate(args.task, [make_mode("hybrid", draft, target),
                                         DrawGapMode("draw_hybrid", draft, hist,
                                                     SkipRule("never"))],
                             args.episodes, args.seed, setting, on_step=hook)
    dev, ent = np.asarray(signals["dev"]), np.asarray(signals["ent"])
    both = BothLow(dev, ent, 0.0)
    ranks = np.array([both.rank(d, e) for d, e in zip(dev, ent)])
    modes = []
    for rate in (float(r) for r in args.rates.split(",")):
        q = lambda v: float(np.quantile(v, rate))  # noqa: E731
        modes += [DraftMode(f"dev@{rate}", draft, hist, SkipRule("deviation", q(dev))),
                  DrawGapMode(f"draw@{rate}", draft, hist, SkipRule("deviation",
                                                                    q(signals["draw"]))),
                  DraftMode(f"ent@{rate}", draft, hist, SkipRule("uncertainty", q(ent))),
                  DraftMode(f"both@{rate}", draft, hist, BothLow(dev, ent, q(ranks))),
                  DraftMode(f"rand@{rate}", draft, hist, SkipRule("random", rate))]
    res.update(evaluator.evaluate(args.task, modes, args.episodes, args.seed, setting,
                                  on_step=hook))
    print(f"{args.task} ({args.draft_kind} draft), {args.episodes} episodes a point:")
    for name, r in res.items():
        if name == "draw_hybrid":
            continue
        p = counts.point(name, 0.0, name, r.episode_success)
        print(f"  {name:12} success {p.success:.3f} [{p.success_lo:.3f}, {p.success_hi:.3f}]"
              f"  uplink/step {p.uplink:.3f}")


if __name__ == "__main__":
    main()
