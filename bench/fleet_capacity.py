"""Fleet capacity: how many robots one edge server verifies for before latency costs
success, per mode, with and without batching.

In process (``core.fleet``): N robots of ``--task`` on ``--link`` share one edge server of
this machine's speed; each runs ``--episodes`` episodes; N runs over ``--counts``, once
per ``--clocks`` (real time: each robot ticks every control period whatever arrived;
lockstep: the world waits, so latency costs no success). The batch curve is measured first
(``families.adahi.timing.measure_batches``). Two capacities: by latency, the largest N whose p95
step latency is within the task's control period (40 ms for Fetch); by success, the
largest N up to which real-time success stays ≥ 0.95× lockstep's on the same episodes (the
same reset seeds and sampling streams: what the server's queue costs the robots). Prints
one table (p95, uplink and server operations per step, success, missed and stale ticks,
server utilisation per N), the capacities side by side with the adahi / hybrid ratio, and
writes the plot of p95 and success against N (``--plot``). With ``--price-ms`` a third
series, ``adahi_load``, runs adahi at the load-aware τ (``core.load_threshold``) solved for
each N and batch size.

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
    parser.add_argument("--clocks", default="realtime,lockstep",
                        help="clocks to run each point on (core.realtime; default both)")
    parser.add_argument("--loop", choices=("wait", "period", "draft_first"), default="wait",
                        help="the real-time loop (core.realtime; default wait)")
    parser.add_argument("--plot", help="write p95 latency and success against N to this PNG")
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
    model = timing.measure(draft, target, observations)
    if args.draft_ms or args.target_ms:
        model = replace(model, draft_ms=args.draft_ms or model.draft_ms,
                        target_ms=args.target_ms or model.target_ms)
    sizes = tuple(n for n in (1, 2, 4, 8, 16, 32, 64) if n <= max(batches))
    model = replace(model, batch_ms=timing.measure_batches(
        target, timing.verify_requests(draft, target, observations, max(sizes)), sizes))
    log.info("draft %.2f ms, target %.2f ms; batch curve %s", model.draft(), model.target(),
             model.batch_ms)
    counts = [int(n) for n in args.counts.split(",")]
    clocks = args.clocks.split(",")
    rows, curves, success = [], {}, {}
    for mode in modes:
        for max_batch in batches:
            for n, clock in ((n, c) for n in counts for c in clocks):
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
                                     phases=args.phases,
                                     control=clock_for(clock, period, loop=args.loop))
                wall = time.perf_counter() - t0
                total, server = run.total(), run.servers["edge"]
                p95 = float(np.percentile(total.latencies, 95))
                steps = max(total.steps, 1)
                rows.append((mode, max_batch, n, clock, p95, total.uplink_tx / steps,
                             total.server_ops / steps, total.success_rate,
                             total.missed_ticks / steps, total.stale_ticks / steps,
                             server["utilisation"], server["requests"] / max(
                                 server["operations"], 1), wall))
                curves.setdefault((mode, max_batch, clock), []).append((n, p95))
                success[(mode, max_batch, clock, n)] = total.success_rate
                log.info("%s batch %d N=%d %s: p95 %.1f ms, success %.1f%%, %.1f s wall",
                         mode, max_batch, n, clock, p95, 100 * total.success_rate, wall)
    print(f"\n{args.task} on {args.link}, one edge server, {args.episodes} episodes per "
          f"robot, control period {period:g} ms, real-time loop {args.loop}")
    print(f"{'mode':12s} {'batch':>5s} {'N':>4s} {'clock':>8s} {'p95 ms':>8s} "
          f"{'uplink/st':>9s} {'ops/st':>7s} {'success':>8s} {'missed':>7s} {'stale':>6s} "
          f"{'util':>6s} {'mean b':>6s} {'wall s':>7s}")
    for r in rows:
        print(f"{r[0]:12s} {r[1]:5d} {r[2]:4d} {r[3]:>8s} {r[4]:8.1f} {r[5]:9.3f} "
              f"{r[6]:7.3f} {r[7]:8.1%} {r[8]:7.3f} {r[9]:6.3f} {r[10]:6.1%} {r[11]:6.2f} "
              f"{r[12]:7.1f}")
    capacity = {key: max([n for n, p in pts if p <= period], default=0)
                for key, pts in curves.items()}
    print(f"\ncapacity by latency: largest N with p95 step latency <= {period:g} ms")
    for (mode, max_batch, clock), cap in capacity.items():
        print(f"  {mode:12s} max_batch {max_batch:3d} {clock:8s}: {cap}")
    for max_batch in batches:
        for clock in clocks:
            for skipper in ("adahi", "adahi_load"):
                a = capacity.get((skipper, max_batch, clock))
                h = capacity.get(("hybrid", max_batch, clock))
                if a is not None and h:
                    print(f"  {skipper} / hybrid at max_batch {max_batch} {clock}: {a / h:.2f}")
    if {"realtime", "lockstep"} <= set(clocks):
        print("\ncapacity by success: largest N up to which real-time success >= 0.95x "
              "lockstep's (same episodes)")
        for mode in modes:
            for max_batch in batches:
                cap = 0
                for n in counts:  # up to the first N that breaks it
                    if (success[(mode, max_batch, "realtime", n)]
                            < 0.95 * success[(mode, max_batch, "lockstep", n)]):
                        break
                    cap = n
                print(f"  {mode:12s} max_batch {max_batch:3d}: {cap}")
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4))
        for (mode, max_batch, clock), pts in curves.items():
            ns, ps = zip(*pts)
            style = "-" if clock == "realtime" else ":"
            label = f"{mode}, max_batch {max_batch}, {clock}"
            ax.plot(ns, ps, style, marker="o", label=label)
            bx.plot(ns, [success[(mode, max_batch, clock, n)] for n in ns], style, marker="o",
                    label=label)
        ax.axhline(period, color="grey", linestyle="--", label=f"control period {period:g} ms")
        for a in (ax, bx):
            a.set_xscale("log", base=2)
            a.set_xlabel("robots sharing one edge server")
        ax.set_ylabel("p95 step latency (ms)")
        bx.set_ylabel("success rate")
        ax.set_title(f"{args.task}, {args.link}")
        bx.set_title(f"success (real-time loop {args.loop})")
        ax.legend(fontsize=7)
        fig.tight_layout()
        Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.plot, dpi=120)
        log.info("wrote %s", args.plot)


if __name__ == "__main__":
    main()
