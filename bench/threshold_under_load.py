"""The threshold under load: on a fast link, a fleet that loads one server, side by side:
hybrid, adahi at the calibration's τ*, adahi at the load-aware τ (core.load_threshold),
and target_only.

In process (``core.fleet``): N robots of ``--task`` on ``--link`` share one edge server of
this machine's speed (``--max-batch``, default 1: no batching). N is the smallest fleet whose
verify-every-step request rate would keep the server at least ``--utilisation`` busy
(N ≥ u · T / S; ``--robots`` overrides). Every mode runs the same episodes: each robot runs
``--episodes`` per seed, for each of ``--seeds``. Prints the load-aware τ over a range of
prices (closed form, no rollouts) and the least price at which the quality bound sets τ;
then per mode (adahi also at the load-aware τ without a price: what the load alone does):
τ, uplink and server operations per step, success (pooled with a 95% interval, and
min/median/max over seeds), success relative to target_only, p95 step latency, server
utilisation and mean queueing delay, and the ratios to hybrid.

``--clocks realtime,lockstep`` runs every row on both clocks (``core.realtime``; real time
with ``--loop``), on the same episodes; ``--front 0.4,0.7,0.9`` adds adahi at the τ that
skips those shares of the calibration steps, so τ* and the load-aware τ can be placed on
the fleet's real-time front; ``--draft-ms``/``--target-ms`` pin the compute model (the knee
moves with a measured one).

    .venv/bin/python bench/threshold_under_load.py --link 6g_hrllc --price-ms 10
    .venv/bin/python bench/threshold_under_load.py --link 5g_embb --robots 24 \
        --clocks realtime,lockstep --front 0.4,0.55,0.7,0.8,0.9 --price-ms 10 \
        --draft-ms 1.10 --target-ms 1.90
"""

from __future__ import annotations

import argparse
import logging
import math
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from hybrid_policy.families.adahi.frontier import wilson

log = logging.getLogger("bench.threshold_under_load")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="fetch_push")
    parser.add_argument("--link", default="6g_hrllc")
    parser.add_argument("--models", default="models")
    parser.add_argument("--price-ms", type=float, default=0.0,
                        help="π of the load-aware τ (ms per transmission + server operation)")
    parser.add_argument("--robots", type=int, default=0, help="fleet size (0: from "
                        "--utilisation)")
    parser.add_argument("--utilisation", type=float, default=0.8,
                        help="smallest open-loop server utilisation of hybrid to load it to")
    parser.add_argument("--max-batch", type=int, default=1)
    parser.add_argument("--episodes", type=int, default=12, help="episodes per robot per seed")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--phases", choices=("random", "even"), default="random",
                        help="robots' start phases (core.fleet; default random)")
    parser.add_argument("--deadline-ms", type=float, default=100.0)
    parser.add_argument("--prices", default="0,1,2,5,10,20,50",
                        help="prices for the closed-form table")
    parser.add_argument("--clocks", default="lockstep",
                        help="comma-separated: lockstep and/or realtime, each row on each")
    parser.add_argument("--loop", choices=("wait", "period", "draft_first"), default="wait",
                        help="the real-time loop (core.realtime)")
    parser.add_argument("--front", default="",
                        help="adahi at the τ skipping these shares of calibration steps")
    parser.add_argument("--draft-ms", type=float, help="pin the draft's compute (ms)")
    parser.add_argument("--target-ms", type=float, help="pin the target's compute (ms)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(1)

    import sim_envs
    from hybrid_policy.core import compute, topology
    from hybrid_policy.families.adahi import timing
    from hybrid_policy.families.adahi import calibration
    from hybrid_policy.families.adahi import load_threshold
    from hybrid_policy.families.adahi.calibration_file import default_path
    from hybrid_policy.families.adahi.fleet import evaluate_fleet
    from hybrid_policy.families.adahi.modes import make_mode
    from hybrid_policy.core.realtime import clock_for
    from hybrid_policy.policies import load_policy
    from hybrid_policy.policies.build import ensure_default_models

    t_start = time.perf_counter()
    paths = ensure_default_models(args.task, Path(args.models))
    draft = load_policy(paths.draft, role="draft")
    target = load_policy(paths.target, role="target")
    cal_path = default_path(args.models, args.task, args.link)
    thresholds = calibration.load_thresholds(cal_path, args.task, args.link, draft, target)
    cal = load_threshold.Calibrated.from_doc(
        calibration.load_doc(cal_path, args.task, args.link, draft, target))
    period = sim_envs.task_spec(args.task).control_period_ms
    observations = compute.sample_observations(args.task)
    model = timing.measure(draft, target, observations)
    model = replace(model, **{k: v for k, v in (("draft_ms", args.draft_ms),
                                                ("target_ms", args.target_ms)) if v is not None})
    if args.max_batch > 1:
        sizes = tuple(n for n in (1, 2, 4, 8, 16, 32, 64) if n < args.max_batch) + (
            args.max_batch,)
        model = replace(model, batch_ms=timing.measure_batches(
            target, timing.verify_requests(draft, target, observations, max(sizes)), sizes))
    robots = args.robots or math.ceil(args.utilisation * period / model.target())
    topo = topology.parse({
        "nodes": {"edge": {"tier": "edge", "max_batch": args.max_batch}},
        "robots": [{"name": "r", "count": robots, "task": args.task, "mode": "adahi",
                    "access": "edge", "link": args.link}]})
    load = load_threshold.server_loads(topo, model)["edge"]
    c = cal.costs
    print(f"\n{args.task} on {args.link}: {robots} robots, one edge server (max_batch "
          f"{args.max_batch}), verification {load.service_ms:.2f} ms, period {period:g} ms; "
          f"calibration: L_v {c.verify_ms:.2f} ms, C_e {c.error_cost_ms:.1f} ms, "
          f"r̄ {'lifted' if cal.mean_rejection is None else f'{cal.mean_rejection:.3f}'}, "
          f"τ* {thresholds.tau:.4f} "
          f"(skips {cal.skip_rate(thresholds.tau):.0%})")
    print("\nload-aware τ (closed form on the calibration samples; no rollouts)")
    print(f"{'price ms':>8s} {'τ':>8s} {'skip':>6s} {'ρ':>6s} {'W_q ms':>7s} {'D ms':>7s} "
          f"{'bound':>8s}")
    for p in [float(x) for x in args.prices.split(",")]:
        r = load_threshold.solve(cal, load, p)
        print(f"{p:8g} {r.tau:8.4f} {r.skip_rate:6.1%} {r.utilisation:6.2f} {r.wait_ms:7.2f} "
              f"{r.marginal_ms:7.2f} {r.bound:>8s}")
    print(f"quality price π_q (least π at which r̄ sets τ): "
          f"{load_threshold.quality_price(cal, load):.2f} ms")
    solved = load_threshold.solve(cal, load, args.price_ms)
    print(f"used: price {args.price_ms:g} ms -> τ {solved.tau:.4f} ({solved.bound} bound)")

    runs = [("hybrid", "hybrid", None), ("adahi τ*", "adahi", thresholds)]
    if args.price_ms > 0:  # what the load alone does
        runs.append(("adahi load π=0", "adahi", replace(
            thresholds, tau=load_threshold.solve(cal, load, 0.0).tau)))
    runs += [(f"adahi load π={args.price_ms:g}", "adahi", replace(thresholds, tau=solved.tau)),
             ("target_only", "target_only", None)]
    for share in (float(x) for x in args.front.split(",") if x):  # the front through τ*
        runs.append((f"adahi skip {share:.0%}", "adahi",
                     replace(thresholds, tau=float(np.quantile(cal.delta, share)))))
    clocks = [c for c in args.clocks.split(",") if c]
    runs = [(f"{label} [{c}]" if len(clocks) > 1 else label, mode, th, c)
            for label, mode, th in runs for c in clocks]
    seeds = [int(s) for s in args.seeds.split(",")]
    per = {label: [] for label, _, _, _ in runs}
    for seed in seeds:
        for label, mode, th, clock in runs:
            t0 = time.perf_counter()
            run = evaluate_fleet(topo, lambda _: make_mode(mode, draft, target, th),
                                 {args.task: target}, model, args.deadline_ms, args.episodes,
                                 seed, progress=False, phases=args.phases,
                                 control=clock_for(clock, period, loop=args.loop))
            total, server = run.total(), run.servers["edge"]
            per[label].append({
                "steps": total.steps, "uplink": total.uplink_tx, "ops": total.server_ops,
                "successes": total.successes, "episodes": total.episodes,
                "latencies": total.latencies, "util": server["utilisation"],
                "wait": server["queueing_ms_mean"], "missed": total.missed_ticks,
                "stale": total.stale_ticks})
            log.info("seed %d %s: success %.1f%%, uplink %.3f/step, %.0f s", seed, label,
                     100 * total.success_rate, total.uplink_tx / total.steps,
                     time.perf_counter() - t0)

    def pooled(label: str, key: str) -> float:
        rows = per[label]
        return sum(r[key] for r in rows) / sum(r["steps"] for r in rows)

    def success(label: str) -> tuple[int, int]:
        return sum(r["successes"] for r in per[label]), sum(r["episodes"] for r in per[label])

    base = {c: next(label for label, m, _, k in runs if m == "target_only" and k == c)
            for c in clocks}
    hybrid = {c: next(label for label, m, _, k in runs if m == "hybrid" and k == c)
              for c in clocks}
    print(f"\n{len(seeds)} seeds x {robots} robots x {args.episodes} episodes = "
          f"{len(seeds) * robots * args.episodes} episodes per mode (same episodes for every "
          f"mode); success: pooled [95% Wilson], min/median/max over seeds")
    print(f"{'mode':27s} {'τ':>7s} {'uplink/st':>9s} {'ops/st':>7s} {'success':>8s} "
          f"{'95% int':>13s} {'seeds min/med/max':>19s} {'vs target':>9s} {'p95 ms':>7s} "
          f"{'util':>5s} {'wait ms':>7s} {'up/hyb':>6s} {'ops/hyb':>7s} {'miss/st':>7s} "
          f"{'stale/st':>8s}")
    for label, mode, th, clock in runs:
        k_t, n_t = success(base[clock])
        k, n = success(label)
        lo, hi = wilson(k, n)
        by_seed = sorted(r["successes"] / r["episodes"] for r in per[label])
        lat = np.concatenate([r["latencies"] for r in per[label]])
        tau = "-" if th is None else f"{th.tau:.4f}"
        print(f"{label:27s} {tau:>7s} {pooled(label, 'uplink'):9.3f} {pooled(label, 'ops'):7.3f} "
              f"{k / n:8.1%} {f'{lo:.1%}-{hi:.1%}':>13s} "
              f"{f'{by_seed[0]:.0%}/{np.median(by_seed):.0%}/{by_seed[-1]:.0%}':>19s} "
              f"{(k / n) / (k_t / n_t):9.3f} {np.percentile(lat, 95):7.1f} "
              f"{np.mean([r['util'] for r in per[label]]):5.2f} "
              f"{np.mean([r['wait'] for r in per[label]]):7.2f} "
              f"{pooled(label, 'uplink') / pooled(hybrid[clock], 'uplink'):6.3f} "
              f"{pooled(label, 'ops') / pooled(hybrid[clock], 'ops'):7.3f} "
              f"{pooled(label, 'missed'):7.3f} {pooled(label, 'stale'):8.3f}")
    ratios = {label: [a["successes"] / a["episodes"] / max(t["successes"] / t["episodes"], 1e-9)
                      for a, t in zip(per[label], per[base[clock]])]
              for label, _, _, clock in runs}
    print("success vs target_only per seed: " + "; ".join(
        f"{label}: {', '.join(f'{x:.3f}' for x in v)}" for label, v in ratios.items()))
    print(f"wall time {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
