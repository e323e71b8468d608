"""RoCoIn against its baselines as devices fail: success and p95 latency per failure
probability, and what the redundancy costs in uplink bytes and device work.

In process (``core.fleet`` with ``core.rocoin``) on ``--topology`` (default
config/rocoin.yaml: six edge devices of different speed, two students, groups of three).
Every mode runs the same seeded episodes for each failure probability ``p`` (a device fails
a request with probability p, half by crashing: down for ``restart_ms``, half by answering
``slow_ms`` late) and seed. ``--fallback hold`` (default): a step with a group missing
holds still, as for a robot without a model of its own; ``draft``: its draft acts.

Prints per mode and p: success, p95 and mean latency, fallbacks per step (median [min,
max] over seeds), then per mode at p = 0 the uplink bytes and device operations per step,
and the goal check: rocoin's success at p = 0.2 against its p = 0 figure, and the
no-redundancy baseline's drop.

    .venv/bin/python bench/rocoin.py --json docs/rocoin_bench.json --plot docs/img/rocoin.png
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import yaml

from seed_spread import spread  # bench/: run as a script

log = logging.getLogger("bench.rocoin")
MODES = ("rocoin", "rocoin_single", "rocoin_random", "rocoin_target")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="fetch_push")
    parser.add_argument("--models", default="models")
    parser.add_argument("--topology", default="config/rocoin.yaml")
    parser.add_argument("--ps", default="0,0.1,0.2,0.3")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--episodes", type=int, default=8, help="per robot, mode, p, seed")
    parser.add_argument("--fallback", choices=("hold", "draft"), default="hold")
    parser.add_argument("--restart-ms", type=float, default=100.0)
    parser.add_argument("--slow-ms", type=float, default=300.0)
    parser.add_argument("--deadline-ms", type=float, default=100.0)
    parser.add_argument("--json")
    parser.add_argument("--plot")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(1)

    from hybrid_policy.core import compute, topology
    from hybrid_policy.families.adahi import timing
    from hybrid_policy.families.rocoin import setup as rocoin_setup
    from hybrid_policy.core.fleet import evaluate_fleet
    from hybrid_policy.families.rocoin.fleet import StudentRun
    from hybrid_policy.families.rocoin.rocoin import parse_config
    from hybrid_policy.policies import load_policy
    from hybrid_policy.policies.build import ensure_default_models

    started = time.perf_counter()
    _, sm = rocoin_setup.prepare(args.task, args.topology, args.models)
    doc = yaml.safe_load(Path(args.topology).read_text())
    doc["rocoin"]["fallback"] = args.fallback
    topo = topology.parse(doc, args.topology)
    cfg = parse_config(topo, doc["rocoin"])
    sm = replace(sm, config=cfg)  # the layouts carry --fallback
    paths = ensure_default_models(args.task, Path(args.models))
    draft = load_policy(paths.draft, role="draft", task=args.task)
    model = timing.measure(draft, sm.target, compute.sample_observations(args.task))
    ps = [float(p) for p in args.ps.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    rows: dict[str, dict[float, list[dict]]] = {m: {p: [] for p in ps} for m in MODES}
    for seed in seeds:
        for p in ps:
            faults = replace(cfg.faults, p=p, kind="mixed", per="request",
                             restart_ms=args.restart_ms, slow_ms=args.slow_ms)
            for mode in MODES:
                lay = rocoin_setup.layout_for(mode, topo, sm, seed)
                res = evaluate_fleet(
                    topo, StudentRun(lay, sm, faults, draft, sm.target.history), model,
                    args.deadline_ms, args.episodes, seed, progress=False)
                summary = res.total().summary()
                ops = sum(s.get("requests", 0) - s.get("expired", 0)
                          for s in res.servers.values())
                summary["device_ops_per_step"] = ops / max(summary["steps"], 1)
                summary["groups"] = lay.groups
                rows[mode][p].append(summary)
                log.info("seed %d p %.1f %-14s success %.3f p95 %.2f ms fallbacks %.3f", seed,
                         p, mode, summary["success_rate"], summary["latency_ms_p95"],
                         summary["fallbacks_per_step"])
    elapsed = time.perf_counter() - started

    print(f"\nRoCoIn on {args.topology}: {len(topo.robots)} robots, {args.episodes} episodes "
          f"each per run, seeds {seeds}, fallback {args.fallback}; {elapsed:.0f} s")
    print(f"students: codes {[len(n.codes) for n in sm.nets]}, parameters "
          f"{[n.num_parameters() for n in sm.nets]} (target {sm.target.model.num_parameters()})"
          f"; rocoin groups {rocoin_setup.layout_for('rocoin', topo, sm).groups}")
    print("\nmode           p    success                p95 latency ms            "
          "mean latency ms           fallbacks/step")
    for mode in MODES:
        for p in ps:
            r = rows[mode][p]
            print(f"{mode:<14} {p:.1f}  {spread([x['success_rate'] for x in r]):<22} "
                  f"{spread([x['latency_ms_p95'] for x in r]):<25} "
                  f"{spread([x['latency_ms_mean'] for x in r]):<25} "
                  f"{spread([x['fallbacks_per_step'] for x in r])}")
    print("\nthe cost of redundancy (p = 0): uplink bytes and device operations per step")
    for mode in MODES:
        r = rows[mode][ps[0]]
        print(f"{mode:<14} uplink bytes {np.median([x['uplink_bytes_per_step'] for x in r]):8.0f}"
              f"   device ops {np.median([x['device_ops_per_step'] for x in r]):.2f}")
    if 0.0 in ps and 0.2 in ps:
        def mean_success(mode, p):
            return float(np.mean([x["success_rate"] for x in rows[mode][p]]))
        for mode in ("rocoin", "rocoin_single"):
            a, b = mean_success(mode, 0.0), mean_success(mode, 0.2)
            print(f"{mode}: success {a:.3f} at p = 0, {b:.3f} at p = 0.2 (change {b - a:+.3f})")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({
            "topology": args.topology, "episodes": args.episodes, "seeds": seeds,
            "fallback": args.fallback, "restart_ms": args.restart_ms, "slow_ms": args.slow_ms,
            "students": sm.summary(), "elapsed_s": elapsed,
            "results": {m: {str(p): v for p, v in r.items()} for m, r in rows.items()}},
            indent=1))
    if args.plot:
        plot(rows, ps, args.plot)


def plot(rows, ps, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for mode, by_p in rows.items():
        for ax, key in zip(axes, ("success_rate", "latency_ms_p95")):
            med = [np.median([x[key] for x in by_p[p]]) for p in ps]
            lo = [np.min([x[key] for x in by_p[p]]) for p in ps]
            hi = [np.max([x[key] for x in by_p[p]]) for p in ps]
            ax.plot(ps, med, marker="o", label=mode)
            ax.fill_between(ps, lo, hi, alpha=0.15)
    axes[0].set(xlabel="device failure probability p", ylabel="success (median, min-max)")
    axes[1].set(xlabel="device failure probability p", ylabel="p95 latency (ms)")
    axes[0].legend()
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
