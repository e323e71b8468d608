"""In-process closed-loop evaluation: every mode on the same seeded episodes, no ROS."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

import sim_envs
from sim_envs.collect import episode_seeds
from hybrid_policy.core.modes import Mode

log = logging.getLogger(__name__)


@dataclass
class ModeResult:
    mode: str
    episodes: int = 0
    successes: int = 0
    steps: int = 0
    uplink_tx: int = 0
    server_ops: int = 0
    episode_success: list[bool] = field(default_factory=list)

    @property
    def success_rate(self) -> float:
        return self.successes / self.episodes if self.episodes else 0.0

    def summary(self) -> dict[str, Any]:
        steps = max(self.steps, 1)
        return {"success_rate": self.success_rate, "episodes": self.episodes,
                "steps": self.steps, "uplink_tx_per_step": self.uplink_tx / steps,
                "server_ops_per_step": self.server_ops / steps}


def episode_rng(seed: int, episode: int) -> np.random.Generator:
    """The sampling stream of one episode: the same for every mode, so modes differ only in
    their decisions, never in their luck."""
    return np.random.default_rng([seed, episode])


def run_episode(env: sim_envs.ManipulationTask, mode: Mode, reset_seed: int,
                rng: np.random.Generator, result: ModeResult) -> bool:
    obs, _ = env.reset(seed=reset_seed)
    mode.reset()
    while True:
        decision = mode.step(obs, rng)
        result.steps += 1
        result.uplink_tx += decision.uplink
        result.server_ops += decision.server_op
        obs, _, terminated, truncated, info = env.step(decision.action)
        if terminated or truncated:
            return bool(info["success"])


def evaluate(task: str, modes: list[Mode], episodes: int, seed: int,
             progress: bool | None = None) -> dict[str, ModeResult]:
    """Run each mode for ``episodes`` episodes with the same reset seeds and rng streams."""
    if episodes < 1:
        raise ValueError(f"episodes must be a positive integer, got {episodes}")
    seeds = episode_seeds(seed, episodes, split="eval").tolist()
    env = sim_envs.make_task(task)
    results: dict[str, ModeResult] = {}
    try:
        for mode in modes:
            res = results[mode.name] = ModeResult(mode.name)
            bar = tqdm(seeds, desc=f"eval {mode.name}", unit="ep",
                       disable=None if progress is None else not progress)
            for i, reset_seed in enumerate(bar):
                ok = run_episode(env, mode, reset_seed, episode_rng(seed, i), res)
                res.episodes += 1
                res.successes += ok
                res.episode_success.append(ok)
                bar.set_postfix(success=f"{res.success_rate:.0%}")
    finally:
        env.close()
    return results


def report(task: str, results: dict[str, ModeResult], meta: dict[str, Any]) -> dict[str, Any]:
    """The JSON document of an evaluation: per mode under ``modes.<name>``."""
    modes = {name: r.summary() for name, r in results.items()}
    target = modes.get("target_only", {}).get("success_rate")
    for m in modes.values():
        m["success_vs_target"] = (m["success_rate"] / target) if target else None
    return {"task": task, **meta, "modes": modes}


def format_table(doc: dict[str, Any]) -> str:
    cols = [("mode", "{}"), ("success_rate", "{:.1%}"), ("success_vs_target", "{:.3f}"),
            ("uplink_tx_per_step", "{:.3f}"), ("server_ops_per_step", "{:.3f}"),
            ("episodes", "{}")]
    rows = [[c for c, _ in cols]]
    for name, m in doc["modes"].items():
        vals = {"mode": name, **m}
        rows.append([fmt.format(vals[c]) if vals.get(c) is not None else "-" for c, fmt in cols])
    widths = [max(len(r[i]) for r in rows) for i in range(len(cols))]
    return "\n".join("  ".join(v.rjust(w) if i else v.ljust(w) for i, (v, w) in
                               enumerate(zip(r, widths))) for r in rows)


def write_json(doc: dict[str, Any], path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(doc, indent=1, sort_keys=True))
