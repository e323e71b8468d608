"""Compute model: per-step inference times measured on this machine, scaled to the
deployed hardware by speed factors (a robot CPU slower than this one, a server faster).
A batching server's time for a batch of n requests follows the measured batch curve of
the target (``measure_batches``), relative to its time for one."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import numpy as np

from hybrid_policy.families.adahi.modes import DraftMode, SkipRule
from hybrid_policy.families.adahi.server import serve
from hybrid_policy.policies import Policy


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


def verify_requests(draft: Policy, target: Policy, observations: np.ndarray,
                    count: int) -> list:
    """``count`` verify requests as a draft makes them on ``observations`` (realistic
    payloads for timing the server)."""
    mode = DraftMode("measure", draft, target.history, SkipRule("never"))
    rng = np.random.default_rng(0)
    requests = []
    for i in range(count):
        if i % 20 == 0:
            mode.reset()
        requests.append(mode.plan(observations[i % len(observations)], rng).request)
    return requests


def measure_batches(target: Policy, requests: list, sizes: tuple[int, ...] = (1, 2, 4, 8, 16,
                    32, 64), rounds: int = 15) -> tuple[tuple[int, float], ...]:
    """Median wall time (ms) of one batched server operation (``serve_batch``) per batch
    size, on this machine. A larger batch can always be run as a smaller one plus padding,
    so the curve is made non-decreasing (timing noise can make it dip)."""
    from hybrid_policy.families.adahi.server import serve_batch

    out = []
    for n in sizes:
        batch = [requests[i % len(requests)] for i in range(n)]
        serve_batch(target, batch)  # warm up this shape
        times = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            serve_batch(target, batch)
            times.append((time.perf_counter() - t0) * 1e3)
        out.append(float(np.median(times)))
    return tuple(zip(sizes, np.maximum.accumulate(out).tolist()))


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
