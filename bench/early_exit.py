"""The early-exit family side by side: per-exit quality and cost, how confidence relates to
closed-loop success, and dto_ee against its baselines at low, medium and high load.

In process (``core.fleet`` with ``core.early_exit``), on ``--topology`` (default
config/early_exit.yaml: three edge nodes of different speed, a regional and a cloud node)
with its robot count replaced by each of ``--loads``; every mode runs the same seeded
episodes per load and seed (``--seeds``), ``--episodes-total`` episodes per run split over
the robots. Prints:

1. each exit alone (the robot, or the robot + an edge, answers every step): closed-loop
   success, ms per step of the net up to it on this machine, parameters up to it;
2. confidence against success: each exit's Spearman ρ between confidence and loss on the
   calibration, and ``early_exit`` at several loss budgets (success, exit shares);
3. per load and mode: mean and p95 response delay, success, uplink bytes per step (min /
   median / max over seeds), and dto_ee's mean-delay reduction against each baseline
   next to the paper's 21–41%, with its success difference to cloud_only (95% interval);
4. the plot of mean delay against load per mode (``--plot``).

    .venv/bin/python bench/early_exit.py --plot docs/img/early_exit_delay.png
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from seed_spread import spread  # bench/: run as a script

log = logging.getLogger("bench.early_exit")
MODES = ("cloud_only", "ee_fixed", "ee_random", "early_exit", "dto_ee")


def with_count(path: str, count: int):
    from hybrid_policy.core import topology

    doc = yaml.safe_load(Path(path).read_text())
    for spec in doc["robots"]:
        spec["count"] = count
    return topology.parse(doc, f"{path} ({count} robots)")


def run(mode, topo, models, budget, episodes, seed, encoding="32FC1", thresholds=None):
    from hybrid_policy.families.exits import setup as exit_setup
    from hybrid_policy.core.compute import ComputeModel
    from hybrid_policy.families.exits.early_exit import build_plan
    from hybrid_policy.core.fleet import evaluate_fleet
    from hybrid_policy.families.exits.fleet import ExitRun

    if thresholds is None:
        exit_run = exit_setup.exit_run(mode, topo, models, budget, encoding)
    else:
        exit_run = ExitRun(models.net, build_plan(mode, topo, tuple(models.net.exits),
                                                  thresholds, encoding), models.compute)
    res = evaluate_fleet(topo, exit_run, ComputeModel(1.0, 1.0), 100.0, episodes, seed,
                         progress=False)
    return res.total().summary(), res


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="fetch_push")
    parser.add_argument("--models", default="models")
    parser.add_argument("--topology", default="config/early_exit.yaml")
    parser.add_argument("--loads", default="4,8,16", help="robot counts: low, medium, high")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--episodes-total", type=int, default=48,
                        help="episodes per run, split over the robots")
    parser.add_argument("--loss-budget", type=float, default=None,
                        help="default: the package's (exit_plan.DEFAULT_LOSS_BUDGET)")
    parser.add_argument("--budgets", default="0.05,0.1,0.15,0.2,0.3",
                        help="loss budgets of the confidence/success sweep")
    parser.add_argument("--sweep-episodes", type=int, default=48)
    parser.add_argument("--layer-ms", type=float, help="pin one layer's time at batch 1 (the "
                        "measured batch curve keeps its shape): compare runs on a busy machine")
    parser.add_argument("--exit-ms", type=float, help="pin one exit's time per request")
    parser.add_argument("--plot", help="write mean delay against load per mode to this PNG")
    parser.add_argument("--json", help="write every figure as JSON")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(1)
    from hybrid_policy.families.exits import setup as exit_setup
    from hybrid_policy.families.exits.plan import DEFAULT_LOSS_BUDGET
    from hybrid_policy.text_table import text_table

    budget = DEFAULT_LOSS_BUDGET if args.loss_budget is None else args.loss_budget
    models = exit_setup.prepare(args.task, args.models)
    if args.layer_ms or args.exit_ms:
        from dataclasses import replace

        c = models.compute
        scale = (args.layer_ms / c.layer_ms[0][1]) if args.layer_ms else 1.0
        models.compute = replace(c, layer_ms=tuple((n, ms * scale) for n, ms in c.layer_ms),
                                 exit_ms=args.exit_ms or c.exit_ms)
    net, compute, exits = models.net, models.compute, tuple(models.net.exits)
    loads = [int(x) for x in args.loads.split(",")]
    seeds = [int(x) for x in args.seeds.split(",")]
    out: dict = {"task": args.task, "topology": args.topology, "loss_budget": budget,
                 "compute": compute.as_dict(), "calibration": models.samples.stats()}
    t0 = time.time()

    # 1. each exit alone, on the low-load fleet
    low = with_count(args.topology, loads[0])
    params = net.layer_params()
    rows = [("exit (after layer)", "success", "ms/step (this machine)", "parameters up to it")]
    out["exits"] = {}
    for k, layer in enumerate(exits):
        th = {e: (0.0 if e == layer else 1.0) for e in exits[:-1]}
        summary, _ = run("early_exit", low, models, budget,
                         max(1, args.sweep_episodes // loads[0]), seeds[0], thresholds=th)
        n_params = params["embed"] + sum(params[f"layer{i + 1}"] for i in range(layer)) \
            + params[f"exit{layer}"]
        ms = compute.part_ms(0, layer)
        out["exits"][str(layer)] = {"success": summary["success_rate"], "ms": ms,
                                    "parameters": n_params,
                                    "episodes": summary["episodes"]}
        rows.append((str(layer), f"{summary['success_rate']:.1%} ({summary['episodes']} ep)",
                     f"{ms:.2f}", f"{n_params:,}"))
    print("\n1. each exit alone\n" + text_table(rows))

    # 2. confidence vs closed-loop success
    stats = models.samples.stats()
    print("\n2. confidence against loss on the calibration (Spearman rho; -1: confidence "
          "orders the exit's disagreement with the full net perfectly)")
    for layer, s in stats.items():
        print(f"   exit {layer}: rho {s['spearman_confidence_loss']:.3f}, mean confidence "
              f"{s['confidence_mean']:.3f}, mean loss {s['loss_mean']:.3f}")
    rows = [("loss budget", "thresholds", "success", "exit shares")]
    out["budgets"] = {}
    for b in [float(x) for x in args.budgets.split(",")]:
        th = models.samples.thresholds_for_loss(b)
        summary, _ = run("early_exit", low, models, b,
                         max(1, args.sweep_episodes // loads[0]), seeds[0])
        out["budgets"][str(b)] = {"thresholds": {str(k): v for k, v in th.items()},
                                  **summary}
        rows.append((f"{b:g}", " ".join(f"{k}:{v:.3f}" for k, v in th.items()),
                     f"{summary['success_rate']:.1%}",
                     " ".join(f"{k}:{v:.2f}" for k, v in summary["exit_shares"].items())))
    print(text_table(rows))

    # 3. the modes at each load
    table: dict = {}
    for n in loads:
        topo = with_count(args.topology, n)
        episodes = max(1, args.episodes_total // n)
        for seed in seeds:
            for mode in MODES:
                summary, res = run(mode, topo, models, budget, episodes, seed)
                table.setdefault(str(n), {}).setdefault(mode, []).append(
                    {**summary, "episode_success": res.total().episode_success,
                     "servers": res.servers})
                log.info("%d robots, seed %d, %s: delay %.2f ms, success %.1f%% (%.0f s)", n,
                         seed, mode, summary["latency_ms_mean"], 100 * summary["success_rate"],
                         time.time() - t0)
    out["loads"] = table
    rows = [("robots", "mode", "mean delay ms", "p95 delay ms", "success", "uplink B/step",
             "episodes")]
    for n, modes in table.items():
        for mode, runs in modes.items():
            rows.append((n, mode, spread([r["latency_ms_mean"] for r in runs]),
                         spread([r["latency_ms_p95"] for r in runs]),
                         spread([r["success_rate"] for r in runs]),
                         spread([r["uplink_bytes_per_step"] for r in runs]),
                         str(sum(r["episodes"] for r in runs))))
    print("\n3. per load and mode: median [min, max] over seeds " + ", ".join(map(str, seeds))
          + "\n" + text_table(rows, left=2))
    rows = [("robots", *(f"dto_ee vs {m}" for m in MODES if m != "dto_ee"),
             "success - cloud_only (95%)")]
    out["reductions"] = {}
    for n, modes in table.items():
        dto = np.array([r["latency_ms_mean"] for r in modes["dto_ee"]])
        cells, red = [], {}
        for m in MODES:
            if m == "dto_ee":
                continue
            base = np.array([r["latency_ms_mean"] for r in modes[m]])
            cut = 1 - dto / base
            red[m] = cut.tolist()
            cells.append(f"{np.median(cut):+.0%} [{cut.min():+.0%}, {cut.max():+.0%}]")
        a = np.concatenate([r["episode_success"] for r in modes["dto_ee"]]).astype(float)
        b = np.concatenate([r["episode_success"] for r in modes["cloud_only"]]).astype(float)
        diff = a.mean() - b.mean()
        half = 1.96 * np.sqrt(a.var() / len(a) + b.var() / len(b))
        out["reductions"][n] = {"delay_cut": red, "success_diff": diff,
                                "success_diff_ci95": [diff - half, diff + half]}
        rows.append((n, *cells, f"{diff:+.3f} [{diff - half:+.3f}, {diff + half:+.3f}]"))
    print("\n   dto_ee's mean-delay reduction (paper: 21-41%), median [min, max] over seeds\n"
          + text_table(rows, left=1))
    print(f"\n({time.time() - t0:.0f} s)")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1, default=float))
    if args.plot:
        plot(table, loads, args.plot)


def plot(table: dict, loads: list[int], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for mode in MODES:
        med, lo, hi = [], [], []
        for n in loads:
            v = np.array([r["latency_ms_mean"] for r in table[str(n)][mode]])
            med.append(np.median(v))
            lo.append(np.median(v) - v.min())
            hi.append(v.max() - np.median(v))
        ax.errorbar(loads, med, yerr=[lo, hi], marker="o", capsize=3, label=mode)
    ax.set_xlabel("robots sharing the edge nodes")
    ax.set_ylabel("mean response delay (ms)")
    ax.set_title("Early-exit modes against load (median, min-max over seeds)")
    ax.legend()
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    log.info("wrote %s", path)


if __name__ == "__main__":
    main()
