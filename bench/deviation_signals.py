"""How well candidate skip signals predict the target's rejection, side by side.

Runs ``hybrid`` (verify every step) on a task's default models (either draft) and scores,
per step, signals the robot can compute without the server:

- ``deviation``: the package's Δ(t) (EMA of the proposal's distance from the draft's own
  expected action, per-dimension normalised; ``families/adahi/deviation.py``);
- ``entropy``: the draft's code entropy along its sampled path (``uncertainty_skip``);
- ``spread``: the draft's expected distance of its actions from their mean,
  E_q |dec(c) − E_q dec| / σ (action-space uncertainty, no sample);
- ``draw_gap``: the proposal's expected distance from an independent draft draw,
  E_{c'∼q} |dec(ĉ) − dec(c')| / σ (how far a re-draw, a proxy for the target's, would move
  the action);
- ``entropy+spread``: the sum of the two ranks;
- ``exec_gap``: the proposal's normalised distance from the last executed action.

For each: Spearman ρ with the exact rejection probability, Spearman ρ with the size of
the correction (|draft − executed| action, normalised), AUROC for a sampled rejection, and
the mean rejection probability and correction among the 40% and 70% of steps it ranks
lowest (what those skip rates would execute unverified).
Usage: ``python bench/deviation_signals.py [--task fetch_push] [--episodes 40]
[--draft-kind demonstrations] [--temperature 0.5]``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from scipy import stats

from hybrid_policy.families.adahi.server import answering
from hybrid_policy.core import evaluator
from hybrid_policy.core.compute import ComputeModel
from hybrid_policy.core.evaluator import Setting, StepRecord
from hybrid_policy.core.link import link_profile
from hybrid_policy.families.adahi.modes import make_mode
from hybrid_policy.families.adahi.speculative import rejection_prob
from hybrid_policy.families.adahi.threshold import auroc
from hybrid_policy.policies import load_policy
from hybrid_policy.families.adahi.distill import ensure_distilled_draft
from hybrid_policy.policies.build import ensure_default_models
from hybrid_policy.policies.runtime import DEFAULT_TEMPERATURE


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="fetch_push")
    parser.add_argument("--episodes", type=int, default=40)
    parser.add_argument("--seed", type=int, default=1000)
    parser.add_argument("--models", type=Path, default=Path("models"))
    parser.add_argument("--draft-kind", default="demonstrations",
                        choices=("demonstrations", "distilled"))
    parser.add_argument("--temperature", type=float, default=DEFAULT_TEMPERATURE,
                        help="sampling temperature of both policies")
    args = parser.parse_args()
    paths = ensure_default_models(args.task, args.models)
    torch.set_num_threads(1)
    draft_path = (ensure_distilled_draft(args.task, args.models)
                  if args.draft_kind == "distilled" else paths.draft)
    draft = load_policy(draft_path, role="draft", task=args.task, temperature=args.temperature)
    target = load_policy(paths.target, role="target", task=args.task,
                         temperature=args.temperature)
    scale = draft.tokenizer.action_std.numpy().astype(np.float64)
    rows: dict[str, list[float]] = {k: [] for k in
                                    ("deviation", "entropy", "spread", "draw_gap", "exec_gap",
                                     "r", "rejected", "harm")}
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
        joint, table = draft.begin(plan.window).joint(), draft.code_table
        rows["spread"].append(float((joint @ (np.abs(table - joint @ table) / scale)).mean()))
        rows["draw_gap"].append(
            float((joint @ (np.abs(table - draft.decode(plan.codes)) / scale)).mean()))
        rows["exec_gap"].append(gap)
        rows["r"].append(rejection_prob(draft.begin(plan.window), target.begin(plan.window),
                                        draft.levels))
        rows["rejected"].append(float(not rec.response.accepted))
        rows["harm"].append(float(np.mean(np.abs(plan.draft_action - rec.action) / scale)))

    setting = Setting(answering(target), link_profile("ideal"), ComputeModel(0.0, 0.0))
    evaluator.evaluate(args.task, [make_mode("hybrid", draft, target)], args.episodes,
                       args.seed, setting, on_step=on_step)
    data = {k: np.asarray(v, float) for k, v in rows.items()}
    data["entropy+spread"] = stats.rankdata(data["entropy"]) + stats.rankdata(data["spread"])
    r, harm, rejected = data["r"], data["harm"], data["rejected"].astype(bool)
    print(f"{args.task} ({args.draft_kind} draft): {len(r)} verified steps, temperature "
          f"{draft.temperature}, mean rejection probability {r.mean():.3f}, mean correction "
          f"{harm.mean():.3f}")
    print(f"{'signal':15} {'rho(r)':>7} {'rho(corr)':>9} {'AUROC':>6} "
          f"{'r@40%':>6} {'corr@40%':>8} {'r@70%':>6} {'corr@70%':>8}")
    for name in ("deviation", "entropy", "spread", "draw_gap", "entropy+spread", "exec_gap"):
        v = data[name]
        ok = np.isfinite(v)
        cells = []
        for q in (0.4, 0.7):
            low = ok & (v < np.quantile(v[ok], q))
            cells.append(f"{r[low].mean():6.3f} {harm[low].mean():8.3f}")
        print(f"{name:15} {stats.spearmanr(v[ok], r[ok]).statistic:7.3f} "
              f"{stats.spearmanr(v[ok], harm[ok]).statistic:9.3f} "
              f"{auroc(v[ok], rejected[ok]):6.3f} " + " ".join(cells))


if __name__ == "__main__":
    main()
