"""Closed-loop fronts: success against uplink transmissions per step for ADAHI (threshold on
Δ), uncertainty_skip (threshold on the draft's entropy) and random_skip (skip probability),
each point run for many episodes with 95% intervals from its episodes (``core.frontier``).

Per task: ``hybrid`` (verify every step) runs first on the evaluation episodes and its
per-step Δ and entropy give, for each skip rate of the grid, the threshold that skips that
share of them; every mode then runs at every rate on the same episodes (same scenes and
sampling streams), with ``target_only``, ``draft_only`` and ADAHI at the calibrated τ*.
The print-out says where τ* sits against the cheapest point that keeps 0.98 of
``target_only``'s success. ``--clock realtime`` (with ``--loop``) runs every point in
simulated real time at the task's rate (``core.realtime``), where a verification that
outlasts the period costs success: the check of τ*'s latency price (``L_v/C_e``) against
the real-time front.
Usage: ``python bench/frontier.py [--tasks fetch_push] [--episodes 300]
[--draft-kind distilled] [--clock realtime] [--loop wait] [--json docs/frontier_bench.json]
[--plot-dir docs/img]``.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from hybrid_policy import cli
from hybrid_policy.core import evaluator
from hybrid_policy.core.evaluator import StepRecord
from hybrid_policy.families.adahi.frontier import EpisodeCounts, cheapest_at
from hybrid_policy.families.adahi.modes import DraftMode, SkipRule, make_mode

log = logging.getLogger("frontier")
SIGNALS = {"adahi": "deviation", "uncertainty_skip": "uncertainty", "random_skip": "random"}
QUALITY = 0.98  # of target_only's success: the paper's bar, and this package's goal


def run_task(task: str, args: argparse.Namespace) -> dict:
    ns = cli.build_parser().parse_args(
        ["eval", "--task", task, "--link", args.link, "--models", str(args.models),
         "--draft-kind", args.draft_kind, "--eval-clock", args.clock, "--loop", args.loop,
         "--server-speed", str(args.server_speed)]
        + (["--calibration", str(args.calibration)] if args.calibration else []))
    draft, target = cli._models(ns)
    setting = replace(cli._setting(ns, draft, target), clock=cli._control(ns, task))
    tau_star = cli._thresholds(ns, draft, target, setting, None, ["adahi"]).tau
    counts = EpisodeCounts()
    signals: dict[str, list[float]] = defaultdict(list)  # hybrid's Δ and entropy

    def on_step(name: str, rec: StepRecord) -> None:
        counts.on_step(name, rec)
        if name == "hybrid":
            signals["deviation"].append(rec.plan.deviation)
            signals["uncertainty"].append(rec.plan.uncertainty)

    def run(modes):
        res = evaluator.evaluate(task, modes, args.episodes, args.seed, setting,
                                 on_step=on_step)
        return {name: r.episode_success for name, r in res.items()}

    t0 = time.perf_counter()
    ends = run([make_mode(m, draft, target) for m in ("hybrid", "target_only", "draft_only")])
    named = {m: counts.point(m, 0.0, m, ok) for m, ok in ends.items()}
    modes, knobs = [DraftMode("adahi@tau*", draft, target.history,
                              SkipRule("deviation", tau_star))], {"adahi@tau*": tau_star}
    for rate in args.rates:
        for mode, kind in SIGNALS.items():
            values = np.asarray(signals.get(kind, []), float)
            knob = rate if kind == "random" else float(np.quantile(values[np.isfinite(values)],
                                                                   rate))
            name = f"{mode}@{rate:.2f}"
            modes.append(DraftMode(name, draft, target.history, SkipRule(kind, knob)))
            knobs[name] = knob
    for name, ok in run(modes).items():
        named[name] = counts.point(name.split("@")[0], knobs[name], name, ok)
    target_success = named["target_only"].success
    star = named["adahi@tau*"]
    best = cheapest_at([p for p in named.values() if p.mode == "adahi"],
                       QUALITY * target_success)
    log.info("%s: %d points x %d episodes in %.0f s", task, len(named), args.episodes,
             time.perf_counter() - t0)
    return {"task": task, "link": args.link, "draft_kind": args.draft_kind,
            **cli._clock_meta(ns), "server_speed": args.server_speed,
            "episodes": args.episodes, "seed": args.seed, "tau_star": tau_star,
            "target_success": target_success, "rates": list(args.rates),
            "points": [p.as_dict() | {"name": n} for n, p in named.items()],
            "tau_star_point": star.as_dict(), "best": None if best is None else best.as_dict()}


def tau_text(tau: float) -> str:
    """τ beyond any Δ (a lifted quality bound and a dear link: skip every step) as ∞."""
    return "inf" if tau > 1e3 else f"{tau:.4f}"


def table(doc: dict) -> str:
    clock = doc.get("clock", "lockstep") + (f", loop {doc['loop']}" if doc.get("loop") else "")
    rows = [f"{doc['task']} ({doc['draft_kind']} draft, {doc['episodes']} episodes a point, "
            f"tau* = {tau_text(doc['tau_star'])} on {doc['link']}, {clock}, server speed "
            f"{doc.get('server_speed', 1.0):g}):",
            f"  {'point':24} {'success [95% CI]':24} {'uplink/step [95% CI]':26}"]
    for p in doc["points"]:
        rows.append(f"  {p['name']:24} {p['success']:.3f} [{p['success_lo']:.3f}, "
                    f"{p['success_hi']:.3f}]    {p['uplink']:.3f} [{p['uplink_lo']:.3f}, "
                    f"{p['uplink_hi']:.3f}]")
    best, star = doc["best"], doc["tau_star_point"]
    bar = QUALITY * doc["target_success"]
    rows.append(f"  success bar {QUALITY} x target_only = {bar:.3f}; tau* point: "
                f"{star['success']:.3f} at {star['uplink']:.3f}/step; cheapest adahi point at "
                "the bar: " + ("none" if best is None else
                               f"{best['success']:.3f} at {best['uplink']:.3f}/step "
                               f"(tau {tau_text(best['knob'])})"))
    return "\n".join(rows)


def plot(doc: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.2))
    style = {"adahi": ("C0", "o"), "uncertainty_skip": ("C1", "s"), "random_skip": ("C2", "^")}
    pts = doc["points"]
    for mode, (color, marker) in style.items():
        ps = sorted((p for p in pts if p["mode"] == mode and p["name"] != "adahi@tau*"),
                    key=lambda p: p["uplink"])
        x = np.array([p["uplink"] for p in ps])
        y = np.array([p["success"] for p in ps])
        def err(lo: str, hi: str, v: np.ndarray) -> np.ndarray:
            return np.clip([v - [p[lo] for p in ps], [p[hi] for p in ps] - v], 0.0, None)

        ax.errorbar(x, y, yerr=err("success_lo", "success_hi", y),
                    xerr=err("uplink_lo", "uplink_hi", x),
                    color=color, marker=marker, ms=4, capsize=2, lw=1, label=mode)
    for p in pts:
        if p["mode"] in ("hybrid", "target_only", "draft_only"):
            ax.plot(p["uplink"], p["success"], "kx")
            below = {"hybrid": 6, "target_only": -10, "draft_only": -10}[p["mode"]]
            ax.annotate(p["mode"], (p["uplink"], p["success"]), fontsize=7, ha="right",
                        textcoords="offset points", xytext=(-4 if p["uplink"] > 0.5 else 40,
                                                            below))
    star = doc["tau_star_point"]
    ax.plot(star["uplink"], star["success"], "*", color="C3", ms=14, label="adahi at τ*")
    ax.axhline(QUALITY * doc["target_success"], color="grey", ls=":", lw=1,
               label=f"{QUALITY} × target_only")
    ax.set_xlabel("uplink transmissions (= server operations) per step")
    ax.set_ylabel("success rate (95% CI)")
    ax.set_title(f"{doc['task']}: {doc['draft_kind']} draft, {doc['episodes']} episodes / point")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="fetch_push")
    parser.add_argument("--episodes", type=int, default=300)
    parser.add_argument("--rates", default="0.4,0.55,0.7,0.8,0.9",
                        help="skip rates of the grid (shares of hybrid's steps)")
    parser.add_argument("--link", default="5g_embb", help="link of the calibration (τ*)")
    parser.add_argument("--draft-kind", default="distilled",
                        choices=("demonstrations", "distilled"))
    parser.add_argument("--models", type=Path, default=Path("models"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--clock", default="lockstep", choices=("lockstep", "realtime"),
                        help="the world waits for each answer, or runs at the task's rate")
    parser.add_argument("--loop", default="wait", choices=("wait", "period", "draft_first"),
                        help="realtime: how a verified step waits (eval --loop)")
    parser.add_argument("--server-speed", type=float, default=1.0,
                        help="server speed relative to this machine (eval --server-speed): "
                        "below 1 a verification can outlast the control period")
    parser.add_argument("--calibration", type=Path, help="τ*'s calibration JSON (default: "
                        "the draft's for --link; e.g. one made with calibrate --server-speed)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--plot-dir", type=Path)
    args = parser.parse_args()
    args.rates = [float(r) for r in args.rates.split(",")]
    if args.episodes < 300:
        log.warning("%d episodes a point: docs/results.md's fronts use >= 300", args.episodes)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(1)
    docs = []
    for task in args.tasks.split(","):
        doc = run_task(task, args)
        print(table(doc), flush=True)
        if args.plot_dir:
            print("wrote", plot(doc, args.plot_dir / f"{task}_frontier.png"))
        docs.append(doc)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(docs, indent=1))
        print("wrote", args.json)


if __name__ == "__main__":
    main()
