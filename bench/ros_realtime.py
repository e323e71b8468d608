"""Success over ROS 2 at the task's rate against the in-process real-time evaluator, on the
same episodes, in one run.

For each mode (default hybrid and adahi on fetch_push over 5g_embb, the default models):
``hybrid-policy bringup --clock realtime`` (every node its own process, the standard robot
interface, the simulator ticking at 25 Hz on the wall clock, ``--loop period``,
``--link-in-draft`` unless ``--link-node``) for ``--episodes`` episodes, and ``hybrid-policy
eval --eval-clock realtime --loop period`` on the same reset seeds and sampling streams.
Prints per mode: success with its 95% Wilson interval for both, whether the ROS figure lies
inside the in-process interval, missed and stale ticks per step on both, and the draft
node's step latency p50/p95 (measured over ROS, modelled in process).

    .venv/bin/python bench/ros_realtime.py --episodes 100
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hybrid_policy.families.adahi.frontier import wilson

log = logging.getLogger("bench.ros_realtime")
SIM = re.compile(r"sim_node: (\d+) successes in (\d+) episodes, (\d+) missed and (\d+) stale")
LATENCY = re.compile(r"draft_node: (\d+) steps, latency ms p50 ([\d.]+) p95 ([\d.]+)")


def cli() -> str:
    return str(Path(sys.executable).with_name("hybrid-policy"))


def over_ros(args, mode: str) -> dict[str, float]:
    """One real-time bringup of ``mode``; its figures from the nodes' close summaries."""
    cmd = [cli(), "bringup", "--task", args.task, "--link", args.link, "--mode", mode,
           "--episodes", str(args.episodes), "--seed", str(args.seed), "--clock", "realtime",
           "--loop", "period", "--models", args.models,
           *([] if args.link_node else ["--link-in-draft"])]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=7200)
    text = out.stdout + out.stderr
    sim, lat = SIM.search(text), LATENCY.search(text)
    if out.returncode != 0 or not sim or not lat:
        raise SystemExit(f"{' '.join(cmd)} failed ({out.returncode}):\n{text[-3000:]}")
    steps = int(lat.group(1))
    log.info("%s over ROS: %s in %.0f s", mode, sim.group(0), time.perf_counter() - t0)
    return {"successes": int(sim.group(1)), "episodes": int(sim.group(2)),
            "missed": int(sim.group(3)) / steps, "stale": int(sim.group(4)) / steps,
            "p50": float(lat.group(2)), "p95": float(lat.group(3))}


def in_process(args, modes: list[str]) -> dict[str, dict[str, float]]:
    """``eval`` in real time (period loop) on the same episodes."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "eval.json"
        cmd = [cli(), "eval", "--task", args.task, "--link", args.link, "--modes",
               ",".join(modes), "--episodes", str(args.episodes), "--seed", str(args.seed),
               "--eval-clock", "realtime", "--loop", "period", "--models", args.models,
               "--json", str(path)]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=7200)
        if out.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stderr[-3000:]}")
        doc = json.loads(path.read_text())
    rows = {}
    for mode in modes:
        m = doc["modes"][mode]
        rows[mode] = {"successes": round(m["success_rate"] * m["episodes"]),
                      "episodes": m["episodes"], "missed": m["missed_ticks_per_step"],
                      "stale": m["stale_ticks_per_step"], "p50": float("nan"),
                      "p95": m["latency_ms_p95"]}
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="fetch_push")
    parser.add_argument("--link", default="5g_embb")
    parser.add_argument("--modes", default="hybrid,adahi")
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--models", default="models")
    parser.add_argument("--link-node", action="store_true",
                        help="keep the link as its own node (default: in the draft node)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    modes = args.modes.split(",")
    ros = {mode: over_ros(args, mode) for mode in modes}
    here = in_process(args, modes)
    print(f"{args.task} on {args.link}, {args.episodes} episodes (seed {args.seed}), real time "
          f"at the task's rate, loop period; ROS: standard interface, "
          f"{'link node' if args.link_node else 'link in the draft node'}, no bag")
    print("| mode | ROS success [95%] | in process [95%] | ROS inside? | missed / stale ticks "
          "per step, ROS | in process | ROS latency p50 / p95 ms | in process p95 (modelled) |")
    print("|---|---|---|---|---|---|---|---|")
    for mode in modes:
        r, p = ros[mode], here[mode]
        rs, ps = r["successes"] / r["episodes"], p["successes"] / p["episodes"]
        (rl, rh), (pl, ph) = wilson(r["successes"], r["episodes"]), wilson(p["successes"],
                                                                           p["episodes"])
        print(f"| `{mode}` | {rs:.1%} [{rl:.2f}, {rh:.2f}] | {ps:.1%} [{pl:.2f}, {ph:.2f}] | "
              f"{'yes' if pl <= rs <= ph else 'no'} | {r['missed']:.3f} / {r['stale']:.3f} | "
              f"{p['missed']:.3f} / {p['stale']:.3f} | {r['p50']:.1f} / {r['p95']:.1f} | "
              f"{p['p95']:.1f} |")


if __name__ == "__main__":
    main()
