"""Parameters and per-step inference latency of the draft and the target.

One step = encode the observation history + sample the codes level by level + decode with
the offset, batch 1, one CPU thread (the robot-side setting). Uses trained checkpoints
under ``--models/<task>`` when present, else freshly initialised models of the same sizes
(latency does not depend on the weights' values).
Usage: ``python bench/policy_speed.py [--task fetch_push] [--steps 2000]``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

import sim_envs
from hybrid_policy.policies import BCPolicy, Policy, load_policy
from hybrid_policy.policies.tokenizer import ActionTokenizer, TokenizerConfig
from hybrid_policy.policies.training import policy_config


def get_policy(role: str, task: str, models: Path) -> tuple[Policy, str]:
    path = models / task / role
    if (path / "config.json").exists():
        return load_policy(path, role=role, task=task), str(path)
    tok = ActionTokenizer(TokenizerConfig())
    model = BCPolicy(policy_config(role, sim_envs.task_spec(task).obs_dim, tok))
    return Policy(model=model, tokenizer=tok, role=role, task=task), "untrained, same size"


def time_steps(policy: Policy, observations: np.ndarray, steps: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    out = np.empty(steps)
    for i in range(steps):
        window = observations[i % (len(observations) - policy.history) :][: policy.history]
        t0 = time.perf_counter()
        step = policy.begin(window)
        step.action(step.sample(rng))
        out[i] = time.perf_counter() - t0
    return out * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="fetch_push")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--models", type=Path, default=Path("models"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    env, expert = sim_envs.make_task(args.task), sim_envs.make_expert(args.task)
    obs, _ = env.reset(seed=0)
    observations = [obs]
    for _ in range(40):  # real observations to feed the models
        obs, _, term, trunc, _ = env.step(expert(obs))
        observations.append(obs)
        if term or trunc:
            obs, _ = env.reset(seed=len(observations))
    observations = np.stack(observations)
    print(f"task {args.task}, batch 1, torch threads 1, {args.steps} steps")
    print(f"{'role':8} {'parameters':>11} {'median ms':>10} {'p95 ms':>8}  source")
    rows = {}
    for role in ("draft", "target"):
        policy, source = get_policy(role, args.task, args.models)
        time_steps(policy, observations, 50)  # warm up
        ms = time_steps(policy, observations, args.steps)
        rows[role] = (policy.model.num_parameters(), np.median(ms))
        print(f"{role:8} {rows[role][0]:11,d} {np.median(ms):10.3f} {np.percentile(ms, 95):8.3f}"
              f"  {source}")
    print(f"target/draft: {rows['target'][0] / rows['draft'][0]:.1f}x parameters, "
          f"{rows['target'][1] / rows['draft'][1]:.1f}x median latency")


if __name__ == "__main__":
    main()
