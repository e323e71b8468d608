"""This machine's compute times of the draft/target family (``core.compute.ComputeModel``):
a draft step and a verification on real observations, and the target's batch curve."""

from __future__ import annotations

import time

import numpy as np

from hybrid_policy.core.compute import ComputeModel
from hybrid_policy.families.adahi.modes import DraftMode, SkipRule
from hybrid_policy.families.adahi.server import serve, serve_batch
from hybrid_policy.policies import Policy


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
