"""The draft trained on the demonstrations against the draft distilled from the target, per
task: how often the target accepts each, per level, and how each does alone.

Agreement is measured on the windows ``hybrid`` visits on unseen evaluation scenes (the
target's corrected trajectories: where a verifying robot is), the exact rejection
probability of level-wise verification per window (``policies.distill.agreement``).
Closed-loop success: ``draft_only`` of each draft and ``target_only`` on the same episodes,
with 95% Wilson intervals. Both drafts have the same architecture and parameters.
Usage: ``python bench/distilled_draft.py [--tasks fetch_push,fetch_pick_place]
[--episodes 300] [--json docs/distilled_draft.json]``.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

from hybrid_policy.families.adahi.server import answering
from hybrid_policy.core import evaluator
from hybrid_policy.core.compute import ComputeModel
from hybrid_policy.core.evaluator import Setting
from hybrid_policy.families.adahi.frontier import wilson
from hybrid_policy.core.link import link_profile
from hybrid_policy.families.adahi.modes import make_mode
from hybrid_policy.policies import load_policy
from hybrid_policy.families.adahi.distill import ensure_distilled_draft
from hybrid_policy.policies.build import ensure_default_models
from hybrid_policy.families.adahi.distill import agreement

log = logging.getLogger("distilled_draft")


def run_task(task: str, args: argparse.Namespace) -> dict:
    paths = ensure_default_models(task, args.models)
    t0 = time.perf_counter()
    distilled_path = ensure_distilled_draft(task, args.models)
    made_s = time.perf_counter() - t0
    target = load_policy(paths.target, role="target", task=task)
    drafts = {"demonstrations": load_policy(paths.draft, role="draft", task=task),
              "distilled": load_policy(distilled_path, role="draft", task=task)}
    setting = Setting(answering(target), link_profile("ideal"), ComputeModel(0.0, 0.0))
    windows: list[np.ndarray] = []
    evaluator.evaluate(task, [make_mode("hybrid", drafts["demonstrations"], target)],
                       args.agreement_episodes, args.seed + 500, setting,
                       on_step=lambda _, rec: windows.append(rec.plan.window[-target.history:]))
    stacked = np.stack(windows)
    out: dict = {"task": task, "episodes": args.episodes, "windows": len(stacked),
                 "distill_seconds": made_s, "parameters": {}, "drafts": {}}
    modes = [make_mode("target_only", drafts["demonstrations"], target)]
    for kind, d in drafts.items():
        mode = make_mode("draft_only", d, target)
        mode.name = f"draft_only[{kind}]"
        modes.append(mode)
        out["parameters"][kind] = d.model.num_parameters()
        out["drafts"][kind] = agreement(d, target, stacked)
    res = evaluator.evaluate(task, modes, args.episodes, args.seed, setting)
    for name, r in res.items():
        lo, hi = wilson(r.successes, r.episodes)
        entry = {"success": r.success_rate, "success_lo": lo, "success_hi": hi}
        if name == "target_only":
            out["target_only"] = entry
        else:
            out["drafts"][name[len("draft_only["):-1]].update(entry)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="fetch_push,fetch_pick_place")
    parser.add_argument("--episodes", type=int, default=300)
    parser.add_argument("--agreement-episodes", type=int, default=100)
    parser.add_argument("--models", type=Path, default=Path("models"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(1)
    docs = []
    print(f"{'task':18} {'draft':15} {'params':>7} {'rejection':>9} {'acc L0':>7} {'acc L1':>7} "
          f"{'draft-only success [95% CI]':>28} {'target_only':>12}")
    for task in args.tasks.split(","):
        doc = run_task(task, args)
        docs.append(doc)
        for kind, d in doc["drafts"].items():
            print(f"{task:18} {kind:15} {doc['parameters'][kind]:>7} {d['rejection']:9.3f} "
                  f"{d['accept_level0']:7.3f} {d['accept_level1']:7.3f} "
                  f"{d['success']:12.3f} [{d['success_lo']:.3f}, {d['success_hi']:.3f}] "
                  f"{doc['target_only']['success']:12.3f}", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(docs, indent=1))
        print("wrote", args.json)


if __name__ == "__main__":
    main()
