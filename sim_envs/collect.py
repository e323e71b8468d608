"""Roll a task's scripted expert and keep the successful episodes as a demonstration set."""

from __future__ import annotations

import logging

import numpy as np
from tqdm import tqdm

from sim_envs.dataset import DemoDataset, sim_versions
from sim_envs.registry import expert_name, make_expert, make_task, task_spec

log = logging.getLogger(__name__)


# Demonstrations and evaluations draw reset seeds from disjoint ranges, so a policy is
# never evaluated on a scene it was trained on.
_SPLIT_RANGES = {"train": (0, 2**30), "eval": (2**30, 2**31 - 1)}


def episode_seeds(seed: int, episodes: int, split: str = "train") -> np.ndarray:
    """Per-episode reset seeds drawn from ``seed``; a longer run extends a shorter one."""
    low, high = _SPLIT_RANGES[split]
    return np.random.default_rng(seed).integers(low, high, size=episodes, dtype=np.int64)


def collect_demos(task: str, episodes: int, seed: int, progress: bool | None = None) -> DemoDataset:
    """Roll the expert of ``task`` for ``episodes`` seeded episodes; keep the successes.

    ``progress=None`` shows a bar only on a terminal.
    """
    if episodes < 1:
        raise ValueError(f"episodes must be a positive integer, got {episodes}")
    spec = task_spec(task)
    env, expert = make_task(task), make_expert(task)
    obs_chunks, act_chunks, lengths, kept_seeds, dropped = [], [], [], [], []
    try:
        bar = tqdm(episode_seeds(seed, episodes).tolist(), desc=f"demos {task}", unit="ep",
                   disable=None if progress is None else not progress)
        for ep_seed in bar:
            obs, _ = env.reset(seed=ep_seed)
            ep_obs, ep_act, success = [], [], False
            while True:
                action = expert(obs)
                ep_obs.append(obs)
                ep_act.append(action)
                obs, _, terminated, truncated, info = env.step(action)
                if terminated or truncated:
                    success = info["success"]
                    break
            if success:
                obs_chunks.append(np.stack(ep_obs))
                act_chunks.append(np.stack(ep_act))
                lengths.append(len(ep_act))
                kept_seeds.append(ep_seed)
            else:
                dropped.append(ep_seed)
            bar.set_postfix(kept=len(lengths), dropped=len(dropped))
    finally:
        env.close()
    if dropped:
        log.warning("%s: dropped %d of %d expert episodes that did not succeed (seeds %s)",
                    task, len(dropped), episodes, dropped)
    if not lengths:
        raise RuntimeError(f"{task}: the expert succeeded in none of {episodes} episodes")
    lengths_arr = np.asarray(lengths, dtype=np.int64)
    ds = DemoDataset(
        task=task,
        obs_fields=spec.obs_fields,
        observations=np.concatenate(obs_chunks).astype(np.float32),
        actions=np.concatenate(act_chunks).astype(np.float32),
        episode_starts=np.concatenate([[0], np.cumsum(lengths_arr)[:-1]]).astype(np.int64),
        episode_lengths=lengths_arr,
        episode_seeds=np.asarray(kept_seeds, dtype=np.int64),
        meta={
            "expert": expert_name(task),
            "seed": seed,
            "episodes_requested": episodes,
            "episodes_kept": len(lengths),
            "dropped_seeds": dropped,
            "max_steps": spec.max_steps,
            "versions": sim_versions(),
        },
    )
    ds.validate(f"collected {task}")
    return ds
