"""Simulator speed and scripted-expert success per task.

Prints, per task: env steps per second (time inside ``env.step`` only), expert episodes
solved, and mean episode length. Usage: ``python bench/sim_speed.py [--episodes N] [--seed S]``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import sim_envs
from sim_envs.collect import episode_seeds


def measure(task: str, episodes: int, seed: int) -> dict[str, float]:
    env, expert = sim_envs.make_task(task), sim_envs.make_expert(task)
    step_time, steps, solved, lengths = 0.0, 0, 0, []
    for ep_seed in episode_seeds(seed, episodes).tolist():
        obs, _ = env.reset(seed=ep_seed)
        n = 0
        while True:
            action = expert(obs)
            t0 = time.perf_counter()
            obs, _, terminated, truncated, info = env.step(action)
            step_time += time.perf_counter() - t0
            n += 1
            if terminated or truncated:
                break
        steps += n
        solved += info["success"]
        lengths.append(n)
    env.close()
    return {"steps_per_s": steps / step_time, "success": solved / episodes,
            "mean_len": float(np.mean(lengths))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"{'task':18} {'steps/s':>8} {'expert success':>15} {'mean len':>9}")
    for task in sim_envs.task_names():
        m = measure(task, args.episodes, args.seed)
        print(f"{task:18} {m['steps_per_s']:8.0f} {m['success']:>14.0%} {m['mean_len']:9.1f}"
              f"   ({args.episodes} episodes)")


if __name__ == "__main__":
    main()
