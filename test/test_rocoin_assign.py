"""RoCoIn assignment: the bisection + contiguous-cut solver against exhaustive search."""

import numpy as np
import pytest

from hybrid_policy.families.rocoin.assign import (
    Assignment,
    AssignmentError,
    CostModel,
    Device,
    brute_force,
    group_latency,
    integer_shares,
    solve,
)


def _instance(seed: int) -> tuple[list[Device], int, int, CostModel]:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 8))
    k, r = int(rng.choice([2, 3])), int(rng.choice([1, 2]))
    if n < k * r:
        k = 2
    devices = [Device(f"d{i}", float(rng.uniform(0.05, 1)), float(rng.uniform(0, 5)))
               for i in range(n)]
    return devices, k, r, CostModel(float(rng.uniform(0, 3)), float(rng.uniform(5, 20)))


def _as_sets(a: Assignment) -> set[frozenset[str]]:
    return {frozenset(g) for g in a.groups}


def _check(a: Assignment, devices: list[Device], k: int, r: int, min_share: float) -> None:
    assert len(a.groups) == k and all(len(g) >= r for g in a.groups)
    assert sorted(n for g in a.groups for n in g) == sorted(d.name for d in devices)
    assert sum(a.shares) == pytest.approx(1, abs=1e-12)
    assert min(a.shares) >= min_share - 1e-12
    assert list(a.shares) == sorted(a.shares, reverse=True)


@pytest.mark.parametrize("seed", range(12))
def test_solve_matches_brute_force(seed):
    devices, k, r, cost = _instance(seed)
    assert len({d.rtt_ms for d in devices}) == len(devices)  # rtts really differ
    for min_share in (0.0, 0.2 / k):
        fast = solve(devices, k, r, cost, min_share)
        ref = brute_force(devices, k, r, cost, min_share)
        _check(fast, devices, k, r, min_share)
        assert fast.latency_ms == pytest.approx(ref.latency_ms, rel=1e-6)
        assert _as_sets(fast) == _as_sets(ref)


def _latencies(a: Assignment, devices: list[Device], cost: CostModel) -> list[float]:
    by_name = {d.name: d for d in devices}
    return [group_latency([by_name[n] for n in g], x, cost) for g, x in zip(a.groups, a.shares)]


@pytest.mark.parametrize("seed", range(12))
def test_groups_equalise_at_optimum(seed):
    """With no rtt and no fixed cost a zero share costs nothing, so the floor 0 never binds
    and the shares equalise every group's latency."""
    devices, k, r, _ = _instance(seed)
    devices = [Device(d.name, d.speed) for d in devices]
    cost = CostModel(0.0, 10.0)
    a = solve(devices, k, r, cost)
    assert _latencies(a, devices, cost) == pytest.approx([a.latency_ms] * k, rel=1e-9)


@pytest.mark.parametrize("seed", range(12))
def test_faster_groups_only_beside_a_floor_group(seed):
    """With rtt and fixed cost even share 0 takes time: a group can sit at the floor with
    latency L* while the others, scaled down to sum to 1, finish earlier."""
    devices, k, r, cost = _instance(seed)
    a = solve(devices, k, r, cost)
    lats = _latencies(a, devices, cost)
    assert max(lats) == pytest.approx(a.latency_ms, rel=1e-12)
    if min(lats) < a.latency_ms * (1 - 1e-9):
        j = int(np.argmin(a.shares))
        assert a.shares[j] < 1e-8 and lats[j] == pytest.approx(a.latency_ms, rel=1e-9)


def test_min_share_floor_binds():
    """One fast device and three slow ones: without a floor the slow group's share is tiny."""
    devices = [Device("f", 1.0), Device("s1", 0.05), Device("s2", 0.05), Device("s3", 0.05)]
    cost = CostModel(0.0, 10.0)
    free, floored = solve(devices, 2, 1, cost), solve(devices, 2, 1, cost, min_share=0.3)
    assert free.shares[1] < 0.3 and floored.shares[1] == pytest.approx(0.3)
    assert floored.latency_ms > free.latency_ms
    assert floored.latency_ms == pytest.approx(brute_force(devices, 2, 1, cost, 0.3).latency_ms)


def test_hand_computed_instance():
    devices = [Device("a", 1.0), Device("c", 0.5), Device("b", 1.0), Device("d", 0.5)]
    a = solve(devices, 2, 2, CostModel(0.0, 10.0))
    assert a.groups == (("a", "b"), ("c", "d"))
    assert a.shares == pytest.approx((2 / 3, 1 / 3))
    assert a.latency_ms == pytest.approx(20 / 3)


def test_integer_shares():
    assert integer_shares([0.5, 0.3, 0.2], 16) == (8, 5, 3)
    assert integer_shares([0.98, 0.01, 0.01], 10) == (8, 1, 1)
    rng = np.random.default_rng(0)
    for _ in range(50):
        shares = rng.dirichlet(np.full(int(rng.integers(1, 6)), 0.3))
        classes = int(rng.integers(len(shares), 40))
        out = integer_shares(list(shares), classes)
        assert sum(out) == classes and min(out) >= 1
    with pytest.raises(AssignmentError, match="3 classes cannot give 4 students"):
        integer_shares([0.25] * 4, 3)


@pytest.mark.parametrize(("call", "match"), [
    (lambda d, c: solve(d, 0, 1, c), "students must be >= 1"),
    (lambda d, c: solve(d, 2, 0, c), "replicas must be >= 1"),
    (lambda d, c: solve(d, 3, 2, c), "4 devices cannot make 3 groups of 2 replicas"),
    (lambda d, c: solve(d, 2, 1, c, min_share=0.6), "min_share 0.6 must be in"),
    (lambda d, c: solve(d + [Device("a", 1.0)], 2, 1, c), "duplicate device names"),
    (lambda d, c: Device("x", 0.0), "speed 0.0 must be > 0"),
    (lambda d, c: Device("x", 1.0, -1.0), "rtt_ms -1.0 must be >= 0"),
    (lambda d, c: CostModel(-1.0, 1.0), "fixed_ms -1.0 must be >= 0"),
    (lambda d, c: CostModel(0.0, 0.0), "ms_per_share 0.0 must be > 0"),
    (lambda d, c: brute_force(d, 3, 2, c), "cannot make 3 groups"),
])
def test_bad_input(call, match):
    devices = [Device(n, 1.0) for n in "abcd"]
    with pytest.raises(AssignmentError, match=match):
        call(devices, CostModel(0.0, 1.0))
