"""The headline comparison: every mode on each task, link and draft over several seeds,
ADAHI against the paper's targets (uplink ≤ 0.60× hybrid, latency ≤ 0.67× hybrid, success ≥
0.97× target) and this package's (uplink and server operations ≤ 0.50×, latency ≤ 0.60×,
success ≥ 0.98×).

Per task, link and draft kind (``demonstrations``: trained on the demonstrations;
``distilled``: distilled from the target): default models (trained if missing),
calibration on the link (run if missing or stale), then ``hybrid-policy eval``'s evaluation
for each seed. Prints mean ± std over the seeds and writes ``--out/results.json`` plus the
per-seed eval JSONs.
Usage: ``python bench/hybrid_results.py [--tasks fetch_push,fetch_pick_place,mw_pick_place]
[--episodes 100] [--seeds 0,1,2] [--links 5g_embb,6g_hrllc]
[--draft-kinds demonstrations,distilled]``.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np

from hybrid_policy.cli import main as cli_main

KEYS = ("success_rate", "success_vs_target", "uplink_tx_per_step", "server_ops_per_step",
        "latency_ms_mean", "latency_vs_hybrid")
TARGETS = {  # (the paper's bound, this package's goal)
    "uplink_vs_hybrid": ("<=", 0.60, 0.50), "server_ops_vs_hybrid": ("<=", 0.60, 0.50),
    "latency_vs_hybrid": ("<=", 0.67, 0.60), "success_vs_target": (">=", 0.97, 0.98)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="fetch_push,fetch_pick_place,mw_pick_place")
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--links", default="5g_embb")
    parser.add_argument("--draft-kinds", default="demonstrations",
                        help="comma-separated: demonstrations, distilled")
    parser.add_argument("--models", default="models")
    parser.add_argument("--out", type=Path, default=Path("runs/hybrid_results"))
    parser.add_argument("--report", type=Path, nargs="+",
                        help="only print the summary and the markdown table of these "
                        "results.json files (no runs)")
    args = parser.parse_args()
    if args.report:
        summary = {k: v for path in args.report for k, v in json.loads(path.read_text()).items()}
        print(markdown(summary))
        return
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    seeds = [int(s) for s in args.seeds.split(",")]
    summary: dict[str, dict] = {}
    for task in args.tasks.split(","):
        for link in args.links.split(","):
            for kind in args.draft_kinds.split(","):
                docs = []
                for seed in seeds:
                    out = args.out / f"{task}_{link}_{kind}_seed{seed}.json"
                    rc = cli_main(["eval", "--task", task, "--modes", "all", "--episodes",
                                   str(args.episodes), "--seed", str(seed), "--link", link,
                                   "--draft-kind", kind, "--models", args.models,
                                   "--json", str(out)])
                    if rc != 0:
                        raise SystemExit(f"eval of {task} {link} {kind} seed {seed} failed "
                                         f"({rc})")
                    docs.append(json.loads(out.read_text()))
                summary[f"{task} {link} {kind}"] = aggregate(docs)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(summary, indent=1))
    print_summary(summary, args)
    print("\n" + markdown(summary))


def aggregate(docs: list[dict]) -> dict:
    """Mean and std over seeds of each mode's figures, plus ADAHI's ratios to hybrid."""
    modes = docs[0]["modes"].keys()
    out: dict = {"modes": {}, "calibration": docs[0]["thresholds"]}
    for mode in modes:
        vals = {k: [d["modes"][mode][k] for d in docs] for k in KEYS}
        for key, ratio in (("uplink_tx_per_step", "uplink_vs_hybrid"),
                           ("server_ops_per_step", "server_ops_vs_hybrid")):
            vals[ratio] = [d["modes"][mode][key] / d["modes"]["hybrid"][key] for d in docs]
        out["modes"][mode] = {k: {"mean": float(np.mean(v)), "std": float(np.std(v)),
                                  "seeds": v} for k, v in vals.items()}
    return out


def print_summary(summary: dict, args: argparse.Namespace) -> None:
    print(f"\n{args.episodes} episodes x seeds {args.seeds}: mean ± std")
    cols = ("success_rate", "success_vs_target", "uplink_vs_hybrid", "server_ops_vs_hybrid",
            "latency_ms_mean", "latency_vs_hybrid")
    for run, s in summary.items():
        print(f"\n{run} draft  (tau* = {s['calibration']['tau']:.4f})")
        print(f"  {'mode':17}" + "".join(f"{c:>22}" for c in cols))
        for mode, m in s["modes"].items():
            print(f"  {mode:17}" + "".join(
                f"{m[c]['mean']:>14.3f} ± {m[c]['std']:5.3f}" for c in cols))
        a = s["modes"]["adahi"]
        checks = []
        for key, (op, paper, goal) in TARGETS.items():
            v = a[key]["mean"]
            met = [v <= b if op == "<=" else v >= b for b in (paper, goal)]
            checks.append(f"{key} {v:.3f} (paper {op} {paper}: {'met' if met[0] else 'MISSED'}"
                          f"; goal {op} {goal}: {'met' if met[1] else 'MISSED'})")
        r = s["modes"]["random_skip"]
        checks.append(f"success adahi {a['success_rate']['mean']:.3f} vs random_skip "
                      f"{r['success_rate']['mean']:.3f} at uplink "
                      f"{a['uplink_vs_hybrid']['mean']:.2f}"
                      f"/{r['uplink_vs_hybrid']['mean']:.2f}")
        print("  ADAHI: " + "; ".join(checks))


def markdown(summary: dict) -> str:
    """One row per task, link and draft: the reference modes' success, ADAHI's ratios to
    hybrid and its success against target_only, and the comparison modes at its rate."""
    def cell(m: dict, key: str, digits: int = 3) -> str:
        return f"{m[key]['mean']:.{digits}f} ± {m[key]['std']:.{digits}f}"

    rows = ["| task | link | draft | τ* | target_only | hybrid | draft_only | **adahi** success "
            "(vs target) | adahi uplink = server ops (vs hybrid) | adahi latency (vs hybrid) "
            "| uncertainty_skip | random_skip |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for run, s in summary.items():
        task, link, kind = run.split(" ")
        m = s["modes"]
        pct = {k: f"{100 * m[k]['success_rate']['mean']:.1f}%" for k in m}
        tau = s["calibration"]["tau"]  # beyond every Δ: the link bound allows skipping all
        rows.append(
            f"| `{task}` | {link} | {kind} | {'∞' if tau > 1e3 else f'{tau:.4f}'} | "
            f"{pct['target_only']} | {pct['hybrid']} | {pct['draft_only']} | "
            f"{pct['adahi']} ({cell(m['adahi'], 'success_vs_target')}) | "
            f"{cell(m['adahi'], 'uplink_vs_hybrid')} | {cell(m['adahi'], 'latency_vs_hybrid')} | "
            + " | ".join(f"{pct[k]} ({m[k]['uplink_vs_hybrid']['mean']:.2f})"
                         for k in ("uncertainty_skip", "random_skip")) + " |")
    return "\n".join(rows)


if __name__ == "__main__":
    main()
