"""Compute model: per-step inference times measured on this machine, scaled to the
deployed hardware by speed factors (a robot CPU slower than this one, a server faster)."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np

from hybrid_policy.core.modes import DraftMode, SkipRule
from hybrid_policy.core.server import serve
from hybrid_policy.policies import Policy


@dataclass(frozen=True)
class ComputeModel:
    draft_ms: float  # one draft step on the robot: encode, sample, decode
    target_ms: float  # one server operation: encode, verify or sample, decode
    device_speed: float = 1.0  # robot CPU relative to this machine (2 = twice as fast)
    server_speed: float = 1.0  # server relative to this machine

    def __post_init__(self) -> None:
        for name in ("draft_ms", "target_ms", "device_speed", "server_speed"):
            value = getattr(self, name)
            if not np.isfinite(value) or value < 0 or (name.endswith("speed") and value == 0):
                raise ValueError(f"compute model: {name} must be finite and positive, got {value}")

    def draft(self) -> float:
        return self.draft_ms / self.device_speed

    def target(self) -> float:
        return self.target_ms / self.server_speed

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def measure(draft: Policy, target: Policy, observations: np.ndarray, steps: int = 100,
            device_speed: float = 1.0, server_speed: float = 1.0) -> ComputeModel:
    """Median wall time of the robot's per-step work (the draft's ``plan``: encode, sample,
    Δ) and of the server's (a verification), on real observations."""
    mode = DraftMode("measure", draft, target.history, SkipRule("never"))
    rng = np.random.default_rng(0)
    d_ms, t_ms = [], []
    for i in range(steps):
        if i % 20 == 0:
            mode.reset()
        t0 = time.perf_counter()
        plan = mode.plan(observations[i % len(observations)], rng)
        t1 = time.perf_counter()
        serve(target, plan.request)
        t2 = time.perf_counter()
        d_ms.append((t1 - t0) * 1e3)
        t_ms.append((t2 - t1) * 1e3)
    return ComputeModel(float(np.median(d_ms)), float(np.median(t_ms)), device_speed,
                        server_speed)


def sample_observations(task: str, steps: int = 60, seed: int = 0) -> np.ndarray:
    """Observations from expert rollouts of ``task``: realistic inputs for timing."""
    import sim_envs

    env, expert = sim_envs.make_task(task), sim_envs.make_expert(task)
    obs, _ = env.reset(seed=seed)
    out = [obs]
    while len(out) < steps:
        obs, _, terminated, truncated, _ = env.step(expert(obs))
        out.append(obs)
        if terminated or truncated:
            obs, _ = env.reset(seed=seed + len(out))
    env.close()
    return np.stack(out)
