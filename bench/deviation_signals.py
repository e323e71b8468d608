"""How well candidate skip signals predict the target's rejection, side by side.

Runs ``hybrid`` (verify every step) on the default models of a task and scores, per step,
three signals the robot can compute without the server:

- ``deviation``: the package's Δ(t) (EMA of the proposal's distance from the draft's own
  expected action, per-dimension normalised; ``core/deviation.py``);
- ``entropy``: the draft's code entropy along its sampled path (``uncertainty_skip``);
- ``exec_gap``: the proposal's normalised distance from the last executed action.

For each: Spearman ρ with the exact rejection probability, Spearman ρ with the size of
the correction (|draft − executed| action, normalised), AUROC for a sampled rejection, and
the mean rejection probability and correction among the 40% of steps it ranks lowest (what
a 40% skip rate would execute unverified).
Usage: ``python bench/deviation_signals.py [--task fetch_push] [--episodes 40]
[--temperature 0.5]``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from scipy import stats

from hybrid_policy.core import evaluator
from hybrid_policy.core.compute import ComputeModel
from hybrid_policy.core.evaluator import Setting, StepRecord
from hybrid_policy.core.link import link_profile
from hybrid_policy.core.modes import make_mode
from hybrid_policy.core.speculative import rejection_prob
from hybrid_policy.core.threshold import auroc
from hybrid_policy.policies import load_policy
from hybrid_policy.policies.build import ensure_default_models
from hybrid_policy.policies.runtime import DEFAULT_TEMPERATURE


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="fetch_push")
    parser.add_argument("--episodes", type=int, default=40)
    parser.add_argument("--seed", type=int, default=1000)
    parser.add_argument("--models", type=Path, default=Path("models"))
    parser.add_argument("--temperature", type=float, default=DEFAULT_TEMPERATURE,
                        help="sampling temperature of both policies")
    args = parser.parse_args()
    paths = ensure_default_models(args.task, args.models)
    torch.set_num_threads(1)
    draft = load_policy(paths.draft, role="draft", task=args.task, temperature=args.temperature)
    target = load_policy(paths.target, role="target", task=args.task,
                         temperature=args.temperature)
    scale = draft.tokenizer.action_std.numpy().astype(np.float64)
    rows: dict[str, list[float]] = {k: [] for k in
                                    ("deviation", "entropy", "exec_gap", "r", "rejected", "harm")}
    last_action: list[np.ndarray | None] = [None]

    def on_step(_: str, rec: StepRecord) -> None:
        plan = rec.plan
        gap = (np.nan if rec.step == 0 or last_action[0] is None
               else float(np.mean(np.abs(plan.draft_action - last_action[0]) / scale)))
        last_action[0] = rec.action
        if rec.response is None:
            return
        rows["deviation"].append(plan.deviation)
        rows["entropy"].append(plan.uncertainty)
        rows["exec_gap"].append(gap)
        rows["r"].append(rejection_prob(draft.begin(plan.window), target.begin(plan.window),
                                        draft.levels))
        rows["rejected"].append(float(not rec.response.accepted))
        rows["harm"].append(float(np.mean(np.abs(plan.draft_action - rec.action) / scale)))

    setting = Setting(target, link_profile("ideal"), ComputeModel(0.0, 0.0))
    evaluator.evaluate(args.task, [make_mode("hybrid", draft, target)], args.episodes,
                       args.seed, setting, on_step=on_step)
    data = {k: np.asarray(v, float) for k, v in rows.items()}
    r, harm, rejected = data["r"], data["harm"], data["rejected"].astype(bool)
    print(f"{args.task}: {len(r)} verified steps, temperature {draft.temperature}, mean "
          f"rejection probability {r.mean():.3f}, mean correction {harm.mean():.3f}")
    print(f"{'signal':10} {'rho(r)':>7} {'rho(corr)':>9} {'AUROC':>6} "
          f"{'r@40%':>6} {'corr@40%':>8}")
    for name in ("deviation", "entropy", "exec_gap"):
        v = data[name]
        ok = np.isfinite(v)
        low = ok & (v < np.quantile(v[ok], 0.4))
        print(f"{name:10} {stats.spearmanr(v[ok], r[ok]).statistic:7.3f} "
              f"{stats.spearmanr(v[ok], harm[ok]).statistic:9.3f} "
              f"{auroc(v[ok], rejected[ok]):6.3f} {r[low].mean():6.3f} {harm[low].mean():8.3f}")


if __name__ == "__main__":
    main()
