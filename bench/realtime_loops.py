"""Lockstep against real time (core.realtime), side by side in one run: every mode on the
same episodes, for each link and each real-time loop (``wait``, ``period``,
``draft_first``), over several seeds. Prints success (mean over seeds with its 95%
Wilson interval over all episodes), missed and stale ticks per step, and writes ``--json``.

Usage: ``python bench/realtime_loops.py [--task fetch_push] [--links 5g_embb,6g_hrllc,wifi]
[--modes draft_only,hybrid,adahi] [--episodes 100] [--seeds 0,1,2] [--json FILE]``.
Default models and calibrations are made on first use, as ``hybrid-policy eval`` does.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import tempfile
from pathlib import Path

from hybrid_policy.cli import main as cli_main

CLOCKS = (("lockstep", "wait"), ("realtime", "wait"), ("realtime", "period"),
          ("realtime", "draft_first"))


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return (math.nan, math.nan)
    p = successes / n
    mid = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (mid - half, mid + half)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="fetch_push")
    parser.add_argument("--links", default="5g_embb,6g_hrllc,wifi")
    parser.add_argument("--modes", default="draft_only,hybrid,adahi")
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--models", default="models")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    rows, out = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for link in args.links.split(","):
            cli_main(["calibrate", "--task", args.task, "--link", link, "--models", args.models])
            for clock, loop in CLOCKS:
                per_mode: dict[str, list[dict]] = {}
                for seed in args.seeds.split(","):
                    path = Path(tmp) / f"{link}_{clock}_{loop}_{seed}.json"
                    cli_main(["eval", "--task", args.task, "--link", link, "--models",
                              args.models, "--modes", args.modes, "--episodes",
                              str(args.episodes), "--seed", seed, "--eval-clock", clock,
                              "--loop", loop, "--json", str(path)])
                    for name, m in json.loads(path.read_text())["modes"].items():
                        per_mode.setdefault(name, []).append(m)
                for name, ms in per_mode.items():
                    n = sum(m["episodes"] for m in ms)
                    s = sum(round(m["success_rate"] * m["episodes"]) for m in ms)
                    lo, hi = wilson(s, n)
                    row = {"link": link, "clock": clock, "loop": loop, "mode": name,
                           "episodes": n, "success": s / n, "ci95": [lo, hi],
                           "missed_ticks_per_step": sum(m["missed_ticks_per_step"]
                                                        for m in ms) / len(ms),
                           "stale_ticks_per_step": sum(m["stale_ticks_per_step"]
                                                       for m in ms) / len(ms),
                           "latency_ms_p95": max(m["latency_ms_p95"] for m in ms)}
                    out.append(row)
                    rows.append(f"{link:9s} {clock:8s} {loop:11s} {name:12s} "
                                f"{row['success']:6.1%} [{lo:.2f}, {hi:.2f}]  missed "
                                f"{row['missed_ticks_per_step']:.3f}  stale "
                                f"{row['stale_ticks_per_step']:.3f}  p95 "
                                f"{row['latency_ms_p95']:.1f} ms")
    print("link      clock    loop        mode         success [95%]      per step")
    print("\n".join(rows))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
