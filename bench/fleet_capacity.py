"""Fleet capacity: how many robots one edge server verifies for before the p95 step
latency leaves the control period, per mode, with and without batching.

In process (``core.fleet``): N robots of ``--task`` on ``--link`` share one edge server of
this machine's speed; each runs ``--episodes`` episodes; N runs over ``--counts``.
The batch curve is measured first (``core.compute.measure_batches``). Capacity is the
largest N whose p95 step latency is within the task's control period (40 ms for Fetch).
Prints one table (p95, uplink and server operations per step, success, server
utilisation per N), the capacities side by side with the adahi / hybrid ratio, and writes
the plot of p95 against N (``--plot``). With ``--price-ms`` a third series, ``adahi_load``,
runs adahi at the load-aware τ (``core.load_threshold``) solved for each N and batch size.

    .venv/bin/python bench/fleet_capacity.py --plot docs/img/fleet_capacity.png
"""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger("bench.fleet_capacity")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="fetch_push")
    parser.add_argument("--link", default="5g_embb")
    parser.add_argument("--models", default="models")
    parser.add_argument("--modes", default="hybrid,adahi")
    parser.add_argument("--episodes", type=int, default=2, help="episodes per robot")
    parser.add_argument("--counts", default="1,2,4,8,12,16,20,24,28,32,40,48,56,64",
                        help="fleet sizes N to run")
    parser.add_argument("--batch", default="1,16", help="server max_batch values to compare")
    parser.add_argument("--deadline-ms", type=float, default=100.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--phases", choices=("random", "even"), default="random",
                        help="robots' start phases (core.fleet; default random)")
    parser.add_argument("--plot", help="write p95 latency against N to this PNG")
    parser.add_argument("--draft-ms", type=float, help="use this draft time instead of the "
                        "measured one (compare runs on a machine whose load changes)")
    parser.add_argument("--target-ms", type=float, help="use this verification time (batch "
                        "of one) instead of the measured one; the batch curve keeps its shape")
    parser.add_argument("--price-ms", type=float, help="add adahi_load: adahi at the "
                        "load-aware τ with this price (ms per transmission + server operation)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(1)

    import sim_envs
    from hybrid_policy.core import calibration, compute, load_threshold, topology
    from hybrid_policy.core.calibration_file import default_path
    from hybrid_policy.core.fleet import evaluate_fleet
    from hybrid_policy.core.modes import make_mode
    from hybrid_policy.policies import load_policy
    from hybrid_policy.policies.build import ensure_default_models

    paths = ensure_default_models(args.task, Path(args.models))
    draft = load_policy(paths.draft, role="draft")
    target = load_policy(paths.target, role="target")
    thresholds = calibration.load_thresholds(default_path(args.models, args.task, args.link),
                                             args.task, args.link, draft, target)
    period = sim_envs.task_spec(args.task).control_period_ms
    modes = args.modes.split(",") + ([] if args.price_ms is None else ["adahi_load"])
    cal = None if args.price_ms is None else load_threshold.Calibrated.from_doc(
        calibration.load_doc(default_path(args.models, args.task, args.link), args.task,
                             args.link, draft, target))
    observations = compute.sample_observations(args.task)
    batches = [int(b) for b in args.batch.split(",")]
    model = compute.measure(draft, target, observations)
    if args.draft_ms or args.target_ms:
        model = replace(model, draft_ms=args.draft_ms or model.draft_ms,
                        target_ms=args.target_ms or model.target_ms)
    sizes = tuple(n for n in (1, 2, 4, 8, 16, 32, 64) if n <= max(batches))
    model = replace(model, batch_ms=compute.measure_batches(
        target, compute.verify_requests(draft, target, observations, max(sizes)), sizes))
    log.info("draft %.2f ms, target %.2f ms; batch curve %s", model.draft(), model.target(),
             model.batch_ms)
    counts = [int(n) for n in args.counts.split(",")]
    rows, curves = [], {}
    for mode in modes:
        for max_batch in batches:
            for n in counts:
                kind = "adahi" if mode == "adahi_load" else mode
                topo = topology.parse({
                    "nodes": {"edge": {"tier": "edge", "max_batch": max_batch}},
                    "robots": [{"name": "r", "count": n, "task": args.task, "mode": kind,
                                "access": "edge", "link": args.link}]})
                th = thresholds
                if mode == "adahi_load":
                    solved = load_threshold.solve(
                        cal, load_threshold.server_loads(topo, model)["edge"], args.price_ms)
                    th = replace(thresholds, tau=solved.tau)
                    log.info("adahi_load N=%d: τ %.4f (calibration's %.4f), %s bound", n,
                             th.tau, thresholds.tau, solved.bound)
                t0 = time.perf_counter()
                run = evaluate_fleet(topo, lambda _: make_mode(kind, draft, target, th),
                                     {args.task: target}, model, args.deadline_ms,
                                     args.episodes, args.seed, progress=False,
                                     phases=args.phases)
                wall = time.perf_counter() - t0
                total, server = run.total(), run.servers["edge"]
                p95 = float(np.percentile(total.latencies, 95))
                steps = max(total.steps, 1)
                rows.append((mode, max_batch, n, p95, total.uplink_tx / steps,
                             total.server_ops / steps, total.success_rate,
                             server["utilisation"], server["requests"] / max(
                                 server["operations"], 1), wall))
                curves.setdefault((mode, max_batch), []).append((n, p95))
                log.info("%s batch %d N=%d: p95 %.1f ms, %.1f s wall", mode, max_batch, n, p95,
                         wall)
    print(f"\n{args.task} on {args.link}, one edge server, {args.episodes} episodes per "
          f"robot, control period {period:g} ms")
    print(f"{'mode':12s} {'batch':>5s} {'N':>4s} {'p95 ms':>8s} {'uplink/st':>9s} "
          f"{'ops/st':>7s} {'success':>8s} {'util':>6s} {'mean b':>6s} {'wall s':>7s}")
    for r in rows:
        print(f"{r[0]:12s} {r[1]:5d} {r[2]:4d} {r[3]:8.1f} {r[4]:9.3f} {r[5]:7.3f} "
              f"{r[6]:8.1%} {r[7]:6.1%} {r[8]:6.2f} {r[9]:7.1f}")
    capacity = {key: max([n for n, p in pts if p <= period], default=0)
                for key, pts in curves.items()}
    print(f"\ncapacity: largest N with p95 step latency <= {period:g} ms")
    for (mode, max_batch), cap in capacity.items():
        print(f"  {mode:12s} max_batch {max_batch:3d}: {cap}")
    for max_batch in batches:
        for skipper in ("adahi", "adahi_load"):
            a, h = capacity.get((skipper, max_batch)), capacity.get(("hybrid", max_batch))
            if a is not None and h:
                print(f"  {skipper} / hybrid at max_batch {max_batch}: {a / h:.2f}")
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        for (mode, max_batch), pts in curves.items():
            ns, ps = zip(*pts)
            ax.plot(ns, ps, marker="o", label=f"{mode}, max_batch {max_batch}")
        ax.axhline(period, color="grey", linestyle="--", label=f"control period {period:g} ms")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("robots sharing one edge server")
        ax.set_ylabel("p95 step latency (ms)")
        ax.set_title(f"{args.task}, {args.link}")
        ax.legend(fontsize=8)
        fig.tight_layout()
        Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.plot, dpi=120)
        log.info("wrote %s", args.plot)


if __name__ == "__main__":
    main()
