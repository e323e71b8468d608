"""What the standard robot interface costs against the compact vector one.

1. In process: building the observation from one snapshot of standard readings
   (``core.robot_map.Assembler``: six inputs put, one tick) and the commands from an
   action, µs per step.
2. Over ROS: ``hybrid-policy bringup`` in lockstep, ``draft_only`` (no server, so the
   robot side is all there is), once per interface and run; the control-loop period is
   the time between consecutive snapshots of an episode, from the bag's stamps.

Prints min / median / max over ``--runs`` runs, both interfaces side by side.

    .venv/bin/python bench/robot_interface.py --runs 3
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

log = logging.getLogger("bench.robot_interface")


def in_process(task: str, steps: int) -> list[float]:
    import sim_envs
    from hybrid_policy.core import robot_map

    env = sim_envs.make_task(task)
    spec = env.task_spec
    rmap = robot_map.load(robot_map.default_path(task), spec.obs_fields,
                          spec.control_period_ms / 1e3, task)
    env.reset(seed=0)
    measured = env.measure()
    asm = robot_map.Assembler(rmap, spec.obs_dim, max_age_ms=1e9)
    action = np.array([0.3, -0.2, 0.1, 0.5], np.float32)
    times = []
    for i in range(1, steps + 1):
        t0 = time.perf_counter()
        for name, inp in rmap.inputs.items():
            asm.put(name, i, inp.frame, measured[inp.topic])
        (tick,) = asm.snapshot_ticks(i)
        rmap.command(action, tick.finger_q)
        times.append((time.perf_counter() - t0) * 1e6)
    return times


def over_ros(task: str, interface: str, episodes: int, models: str) -> dict[str, float]:
    from hybrid_policy.bag_analysis import read_bag
    from hybrid_policy.ros.messages import stamp_key

    with tempfile.TemporaryDirectory() as tmp:
        bag = Path(tmp) / "bag"
        cmd = [str(Path(sys.executable).with_name("hybrid-policy")), "bringup", "--mode",
               "draft_only", "--task", task, "--episodes", str(episodes), "--seed", "0",
               "--models", models, "--interface", interface, "--bag", str(bag)]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        if out.returncode != 0:
            raise SystemExit(f"bringup failed:\n{out.stderr[-2000:]}")
        _, topics = read_bag(bag)
    steps = [(int(dict(zip(m.name, m.position))["episode"]), stamp_key(m.header.stamp))
             for _, m in topics["step"]]
    periods = [(b - a) / 1e6 for (ea, a), (eb, b) in zip(steps, steps[1:]) if ea == eb]
    return {"period_ms_median": float(np.median(periods)),
            "period_ms_p95": float(np.percentile(periods, 95)), "steps": len(steps)}


def spread(values: list[float]) -> str:
    return f"{min(values):7.3f} / {np.median(values):7.3f} / {max(values):7.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="fetch_push")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--models", default="models")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    os.environ.setdefault("ROS_DOMAIN_ID", str(90 + os.getpid() % 10))
    from hybrid_policy.policies.build import ensure_default_models

    ensure_default_models(args.task, Path(args.models))

    per_run = [np.median(in_process(args.task, 2000)) for _ in range(args.runs)]
    print(f"\n{args.task}: standard readings -> observation + commands, in process "
          f"(µs per step, min / median / max of run medians): {spread(per_run)}")

    results: dict[str, list[dict[str, float]]] = {"vector": [], "standard": []}
    for run in range(args.runs):
        for interface in results:
            r = over_ros(args.task, interface, args.episodes, args.models)
            log.info("run %d %s: %s", run + 1, interface, r)
            results[interface].append(r)
    print(f"\nlockstep control-loop period over ROS, draft_only, {args.episodes} episodes, "
          f"{args.runs} runs (ms, min / median / max of run figures)")
    print(f"{'interface':10s} {'median period':>28s} {'p95 period':>28s}")
    for interface, runs in results.items():
        print(f"{interface:10s} {spread([r['period_ms_median'] for r in runs]):>28s} "
              f"{spread([r['period_ms_p95'] for r in runs]):>28s}")
    ratio = (np.median([r["period_ms_median"] for r in results["standard"]])
             / np.median([r["period_ms_median"] for r in results["vector"]]))
    print(f"standard / vector median period: {ratio:.2f}x")


if __name__ == "__main__":
    main()
