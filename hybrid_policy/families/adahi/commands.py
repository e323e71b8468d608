"""The draft/target family's own command: ``hybrid-policy calibrate``."""

from __future__ import annotations

import argparse
from typing import Any


def add_calibrate(sub: Any) -> None:
    from hybrid_policy.arguments import (
        add_clock_args, add_model_args, positive_int, price_ms,
    )

    p = sub.add_parser("calibrate", help="fit deviation vs rejection and derive τ*",
                       description="Roll out hybrid inference (verify every step), fit the "
                       "target's rejection probability against the action deviation, derive τ* "
                       "in closed form from the fit and the link/compute costs, sweep τ for the "
                       "trade-off plot. Writes MODELS/TASK/calibration/LINK.json and two PNGs.")
    add_model_args(p)
    p.add_argument("--episodes", type=positive_int, default=40,
                   help="verify-every-step episodes for the fit (default 40)")
    p.add_argument("--sweep-episodes", type=positive_int, default=20,
                   help="closed-loop episodes per point of the trade-off sweep (default 20)")
    p.add_argument("--price-ms", type=price_ms, default=0.0,
                   help="price of one transmission + server operation in ms-equivalents: τ* "
                   "becomes the load-aware fixed point for one robot (docs/method.md §6; "
                   "default 0: τ* as before)")
    add_clock_args(p)
    p.set_defaults(func=cmd_calibrate)


def cmd_calibrate(args: argparse.Namespace) -> int:
    import torch

    from hybrid_policy.families import run
    from hybrid_policy.families.adahi import setup

    run.check_task_link(args)
    torch.set_num_threads(1)
    draft, target = setup.models(args)
    doc, _ = setup.run_calibration(args, draft, target, setup.setting(args, draft, target),
                                   args.episodes)
    f, t = doc["fit"], doc["thresholds"]
    print(f"fit: rejection = {f['intercept']:.4f} + {f['slope']:.4f} * ln(deviation + 1e-3) over "
          f"{f['samples']} steps; Spearman rho {f['spearman']:.3f}; AUROC {f['auroc']:.3f}")
    c = doc["costs"]
    print(f"verification costs {c['verify_ms']:.2f} ms on {doc['link']}; an unverified "
          f"rejection costs {c['error_cost_ms']:.2f} ms (period {c['control_period_ms']:.1f} ms x "
          f"correction {c['rejection_error']:.3f} x weight {c['quality_weight']:g}): link bound "
          f"L_v/C_e = {c['rejection_budget']:.4f}; quality bound (mean rejection) "
          f"{c['mean_rejection']:.4f}; r* = {c['r_star']:.4f} ({c['bound']} bound)")
    a = doc["draft_alone"]
    print(f"the draft alone succeeded in {a['draft_only_successes']}/{a['episodes']} calibration "
          f"scenes, verifying every step in {a['hybrid_successes']}: quality bound "
          f"{a['quality_bound']}")
    print(f"tau* = {t['tau']:.4f} (skips {doc['calibration_skip_rate']:.0%} of calibration "
          f"steps; lowest-cost tau on the empirical curve: {doc['empirical_best_tau']:.4f})")
    if c.get("price_ms"):
        delay = c["load"]["marginal_ms"]
        print(f"price {c['price_ms']:g} ms per transmission + server operation, one robot "
              f"(server {100 * c['load']['utilisation']:.0f}% busy, marginal queueing delay "
              f"{'inf' if delay is None else f'{delay:.2f}'} ms): tau* is the load-aware fixed "
              f"point (docs/method.md section 6), {c['bound']} bound")
    return 0
