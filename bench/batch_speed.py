"""The target's batch-size scaling: ms for one batched verification of n requests.

A batching server runs the target's trunk once for the whole batch
(``core.server.serve_batch``); the per-request verification after it stays per request.
This measures ms per batch for n = 1 … 64 on real verify requests of the draft, over
``--runs`` runs (each the median of ``--rounds`` timed batches), and prints min / median /
max, ms per request and the throughput against batch 1. The fleet evaluator measures the
same curve (``families.adahi.timing.measure_batches``) before it runs and takes its compute times
from it.

    .venv/bin/python bench/batch_speed.py --task fetch_push --runs 3
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import torch

SIZES = (1, 2, 4, 8, 16, 32, 64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="fetch_push")
    parser.add_argument("--models", default="models")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    from hybrid_policy.core.compute import sample_observations
    from hybrid_policy.families.adahi.timing import measure_batches, verify_requests
    from hybrid_policy.policies import load_policy
    from hybrid_policy.policies.build import ensure_default_models

    paths = ensure_default_models(args.task, Path(args.models))
    draft = load_policy(paths.draft, role="draft")
    target = load_policy(paths.target, role="target")
    requests = verify_requests(draft, target, sample_observations(args.task, 200), max(SIZES))
    runs = np.array([[ms for _, ms in measure_batches(target, requests, SIZES, args.rounds)]
                     for _ in range(args.runs)])
    print(f"\n{args.task} target ({target.model.num_parameters():,} parameters), "
          f"{args.threads} thread(s), {args.runs} runs: ms per batched verification")
    print(f"{'batch':>5s} {'ms min / median / max':>26s} {'ms/request':>11s} "
          f"{'throughput vs 1':>16s}")
    single = np.median(runs[:, 0])
    for i, n in enumerate(SIZES):
        col = runs[:, i]
        med = float(np.median(col))
        print(f"{n:5d} {col.min():8.2f} / {med:7.2f} / {col.max():7.2f} {med / n:11.3f} "
              f"{n * single / med:15.2f}x")


if __name__ == "__main__":
    main()
