"""Success of the scripted expert, the draft and the target side by side, per task.

Trains the default models of each task first if they are missing or stale (see
``hybrid_policy.policies.build``), then runs expert, ``draft_only`` and ``target_only`` on the
same seeded evaluation episodes (disjoint from the demonstration seeds).
Usage: ``python bench/bc_success.py [--tasks fetch_push,fetch_pick_place,mw_pick_place]
[--episodes 100]``.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np
import torch

import sim_envs
from hybrid_policy.families.adahi.server import answering
from hybrid_policy.core import evaluator
from hybrid_policy.core.compute import ComputeModel
from hybrid_policy.core.evaluator import Setting
from hybrid_policy.core.link import link_profile
from hybrid_policy.core.plan import Plan
from hybrid_policy.families.adahi.modes import make_mode
from hybrid_policy.policies import load_policy
from hybrid_policy.policies.build import ensure_default_models


class ExpertMode:
    """The scripted expert as a mode, for reference (privileged state, not a policy)."""

    name = "expert"

    def __init__(self, task: str) -> None:
        self._expert = sim_envs.make_expert(task)

    def reset(self) -> None:
        pass

    def plan(self, obs: np.ndarray, rng: np.random.Generator) -> Plan:
        return Plan(self._expert(obs), None)

    def resolve(self, plan: Plan, response: object) -> np.ndarray:
        return plan.draft_action


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="fetch_push,fetch_pick_place,mw_pick_place")
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--models", type=Path, default=Path("models"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    rows = []
    for task in args.tasks.split(","):
        t0 = time.perf_counter()
        paths = ensure_default_models(task, args.models)
        build_s = time.perf_counter() - t0
        torch.set_num_threads(1)
        draft = load_policy(paths.draft, role="draft", task=task)
        target = load_policy(paths.target, role="target", task=task)
        modes = [ExpertMode(task), make_mode("draft_only", draft, target),
                 make_mode("target_only", draft, target)]
        # Success only: a lossless zero-delay link and no compute time.
        setting = Setting(answering(target), link_profile("ideal"), ComputeModel(0.0, 0.0))
        res = evaluator.evaluate(task, modes, args.episodes, args.seed, setting)
        torch.set_num_threads(2)
        rows.append((task, res["expert"].success_rate, res["draft_only"].success_rate,
                     res["target_only"].success_rate, build_s))
    print(f"\n{'task':18} {'expert':>7} {'draft':>7} {'target':>7} {'gap':>6}  "
          f"({args.episodes} eval episodes, seed {args.seed})")
    for task, e, d, t, build_s in rows:
        print(f"{task:18} {e:7.0%} {d:7.0%} {t:7.0%} {100 * (t - d):5.0f}pt  "
              f"(models ready in {build_s:.0f} s)")


if __name__ == "__main__":
    main()
