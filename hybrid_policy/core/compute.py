"""Compute model: per-step inference times measured on this machine, scaled to the
deployed hardware by speed factors (a robot CPU slower than this one, a server faster).
A batching server's time for a batch of n requests follows its measured batch curve,
relative to its time for one. Each family measures its own models (the draft/target
family: ``families.adahi.timing``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import numpy as np



@contextmanager
def single_thread() -> Iterator[None]:
    """Time batch-1 inference on one torch thread: more only add overhead, and on a busy
    machine their synchronisation turns a 0.1 ms layer into 100 ms (a timing that then
    decides a plan)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@dataclass(frozen=True)
class ComputeModel:
    draft_ms: float  # one draft step on the robot: encode, sample, decode
    target_ms: float  # one server operation: encode, verify or sample, decode
    device_speed: float = 1.0  # robot CPU relative to this machine (2 = twice as fast)
    server_speed: float = 1.0  # server relative to this machine
    batch_ms: tuple[tuple[int, float], ...] = ()  # measured (batch size, ms), sizes rising

    def __post_init__(self) -> None:
        for name in ("draft_ms", "target_ms", "device_speed", "server_speed"):
            value = getattr(self, name)
            if not np.isfinite(value) or value < 0 or (name.endswith("speed") and value == 0):
                raise ValueError(f"compute model: {name} must be finite and positive, got {value}")
        sizes = [n for n, _ in self.batch_ms]
        if self.batch_ms and (sizes[0] != 1 or sizes != sorted(set(sizes))
                              or not all(ms > 0 for _, ms in self.batch_ms)):
            raise ValueError(f"compute model: batch_ms must start at batch 1 with rising sizes "
                             f"and positive times, got {self.batch_ms}")

    def draft(self) -> float:
        return self.draft_ms / self.device_speed

    def target(self) -> float:
        return self.target_ms / self.server_speed

    def target_batch(self, n: int, speed: float | None = None) -> float:
        """ms for one batched server operation on ``n`` requests, on a server of ``speed``
        (default ``server_speed``): ``target_ms`` times the measured batch curve relative to
        batch 1 (linear between measured sizes, extrapolated per request beyond them), so a
        batch of one is exactly ``target()``. Without a measured curve, n separate passes."""
        speed = self.server_speed if speed is None else speed
        if n <= 1:
            return self.target_ms / speed
        if not self.batch_ms:
            return n * self.target_ms / speed
        sizes = np.array([s for s, _ in self.batch_ms], float)
        times = np.array([t for _, t in self.batch_ms])
        if n <= sizes[-1]:
            ratio = np.interp(n, sizes, times) / times[0]
        else:
            per_request = times[-1] / sizes[-1]
            ratio = (times[-1] + (n - sizes[-1]) * per_request) / times[0]
        return float(self.target_ms * ratio / speed)

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


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
