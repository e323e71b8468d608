"""RoCoIn: split k distilled students' knowledge shares over redundant device groups.

Every device of group j runs student j (share x_j, sum 1), the first answer counts, so a
group survives all but one failure, and its latency is its WORST member's (any replica may
be the only one left). ``solve`` minimises the slowest group's latency:

* At latency L device d runs a share up to ``capacity(d, L)``, group g up to a_g(L) =
  min_{d in g} capacity(d, L); L is feasible iff some partition into k groups of
  >= ``replicas`` has every a_g(L) >= min_share and sum_g a_g(L) >= 1.
* Exchange argument: sort capacities c_1 >= ... >= c_n; take any partition with minima
  m_1 >= ... >= m_k and sizes s_1..s_k in that order. Groups 1..j hold s_1 + ... + s_j
  devices, all >= m_j, so the contiguous block ending there has a minimum >= m_j. Ends
  r, 2r, ..., (k-1)r, n are the earliest possible, so blocks of ``replicas`` by capacity
  with the rest in the last block dominate every partition minimum by minimum: the
  O(n^2 k) DP over contiguous blocks collapses to this one cut.
* Capacities grow with L, so feasibility is monotone: bisect L from all capacities <= 0
  to all >= 1, to a relative 1e-12. Shares fill each group's capacity at L* above the
  floor, scaled to sum to 1: every group takes L*, unless one sits at the floor (rtt and
  fixed cost make even share 0 slow) and the others, with slack, finish earlier.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from hybrid_policy.errors import HybridPolicyError

_REL_TOL = 1e-12


class AssignmentError(HybridPolicyError, ValueError):
    """Devices, students or costs that no assignment can satisfy."""


@dataclass(frozen=True)
class Device:
    """An edge device: relative compute ``speed`` (> 0) and round trip ``rtt_ms`` (>= 0)."""

    name: str
    speed: float
    rtt_ms: float = 0.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.speed) and self.speed > 0):
            raise AssignmentError(f"device {self.name!r}: speed {self.speed} must be > 0")
        if not (math.isfinite(self.rtt_ms) and self.rtt_ms >= 0):
            raise AssignmentError(f"device {self.name!r}: rtt_ms {self.rtt_ms} must be >= 0")


@dataclass(frozen=True)
class CostModel:
    """A student of share x costs ``fixed_ms + ms_per_share * x`` on a speed-1 device."""

    fixed_ms: float
    ms_per_share: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.fixed_ms) and self.fixed_ms >= 0):
            raise AssignmentError(f"cost fixed_ms {self.fixed_ms} must be >= 0")
        if not (math.isfinite(self.ms_per_share) and self.ms_per_share > 0):
            raise AssignmentError(f"cost ms_per_share {self.ms_per_share} must be > 0")


@dataclass(frozen=True)
class Assignment:
    """Device names per group (input order), groups by share descending, and the latency."""

    groups: tuple[tuple[str, ...], ...]
    shares: tuple[float, ...]
    latency_ms: float


def group_latency(devices: Sequence[Device], share: float, cost: CostModel) -> float:
    """The slowest member's latency: any replica may be the only one still answering."""
    return max(d.rtt_ms + (cost.fixed_ms + cost.ms_per_share * share) / d.speed for d in devices)


def capacity(device: Device, latency_ms: float, cost: CostModel) -> float:
    """The largest share ``device`` answers within ``latency_ms`` (negative if none)."""
    return (device.speed * (latency_ms - device.rtt_ms) - cost.fixed_ms) / cost.ms_per_share


def _validate(devices: Sequence[Device], k: int, r: int, min_share: float) -> None:
    if k < 1:
        raise AssignmentError(f"students must be >= 1, got {k}")
    if r < 1:
        raise AssignmentError(f"replicas must be >= 1, got {r}")
    if len(devices) < k * r:
        raise AssignmentError(f"{len(devices)} devices cannot make {k} groups of {r} replicas")
    if len(names := [d.name for d in devices]) != len(set(names)):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise AssignmentError(f"duplicate device names {dup}: names must be unique")
    if not (math.isfinite(min_share) and 0 <= min_share and min_share * k <= 1):
        raise AssignmentError(f"min_share {min_share} must be in [0, 1/students = {1 / k}]")


def _feasible(devices: Sequence[Device], groups: list[list[int]], latency: float,
              cost: CostModel, min_share: float) -> bool:
    caps = [min(capacity(devices[i], latency, cost) for i in g) for g in groups]
    return min(caps) >= min_share and sum(caps) >= 1


def _bisect(devices: Sequence[Device], cost: CostModel, ok: Callable[[float], bool]) -> float:
    """Smallest feasible latency: every capacity is <= 0 at lo and >= 1 at hi."""
    lo = min(d.rtt_ms + cost.fixed_ms / d.speed for d in devices)
    hi = max(d.rtt_ms + (cost.fixed_ms + cost.ms_per_share) / d.speed for d in devices)
    while hi - lo > _REL_TOL * hi and lo < (mid := 0.5 * (lo + hi)) < hi:
        lo, hi = (lo, mid) if ok(mid) else (mid, hi)
    return hi


def _finish(devices: Sequence[Device], groups: list[list[int]], latency: float,
            cost: CostModel, min_share: float) -> Assignment:
    """Fill each group's capacity at ``latency`` above the floor, scaled to sum to 1."""
    caps = [min(capacity(devices[i], latency, cost) for i in g) for g in groups]
    room = sum(caps) - min_share * len(groups)
    scale = (1 - min_share * len(groups)) / room if room > 0 else 0.0
    shares = [min_share + (c - min_share) * scale for c in caps]
    shares[-1] = 1 - sum(shares[:-1])  # exact sum, error of order 1e-16 on one share
    order = sorted(range(len(groups)), key=lambda j: (-shares[j], min(groups[j])))
    out = [[devices[i] for i in sorted(groups[j])] for j in order]
    return Assignment(
        groups=tuple(tuple(d.name for d in g) for g in out),
        shares=tuple(shares[j] for j in order),
        latency_ms=max(group_latency(g, shares[j], cost) for g, j in zip(out, order)))


def _cut(devices: Sequence[Device], latency: float, cost: CostModel, k: int,
         r: int) -> list[list[int]]:
    """Blocks of r by capacity descending, remainder in the last: dominates every partition."""
    idx = sorted(range(len(devices)), key=lambda i: -capacity(devices[i], latency, cost))
    return [idx[j * r:(j + 1) * r] for j in range(k - 1)] + [idx[(k - 1) * r:]]


def solve(devices: Sequence[Device], students: int, replicas: int, cost: CostModel,
          min_share: float = 0.0) -> Assignment:
    """The latency-optimal partition and shares, by bisection on L (see module docstring)."""
    _validate(devices, students, replicas, min_share)

    def cut(lat: float) -> list[list[int]]:
        return _cut(devices, lat, cost, students, replicas)

    lat = _bisect(devices, cost, lambda x: _feasible(devices, cut(x), x, cost, min_share))
    return _finish(devices, cut(lat), lat, cost, min_share)


def _partitions(items: list[int], k: int, r: int) -> Iterator[list[list[int]]]:
    """Every set partition of ``items`` into exactly k blocks of size >= r."""
    if k == 0:
        yield from ([] if items else [[]])
        return
    first, rest = items[0], items[1:]
    for size in range(r - 1, len(rest) - (k - 1) * r + 1):
        for others in itertools.combinations(rest, size):
            for tail in _partitions([i for i in rest if i not in others], k - 1, r):
                yield [[first, *others], *tail]


def brute_force(devices: Sequence[Device], students: int, replicas: int, cost: CostModel,
                min_share: float = 0.0) -> Assignment:
    """Reference for small tests: optimal shares of every partition, the best one kept."""
    _validate(devices, students, replicas, min_share)
    cands = (_finish(devices, g, _bisect(devices, cost, lambda x, g=g: _feasible(
        devices, g, x, cost, min_share)), cost, min_share)
        for g in _partitions(list(range(len(devices))), students, replicas))
    return min(cands, key=lambda a: a.latency_ms)  # first of equals; _validate: never empty


def integer_shares(shares: Sequence[float], classes: int) -> tuple[int, ...]:
    """Whole classes per student by largest remainder, each >= 1 so no student is empty."""
    if not shares or classes < len(shares):
        raise AssignmentError(f"{classes} classes cannot give {len(shares)} students >= 1 each")
    if not all(math.isfinite(s) and s >= 0 for s in shares) or sum(shares) <= 0:
        raise AssignmentError(f"shares {list(shares)} must be finite, >= 0, with a positive sum")
    quota = [s / sum(shares) * classes for s in shares]
    counts = [math.floor(q) for q in quota]
    by_rem = sorted(range(len(quota)), key=lambda i: (counts[i] - quota[i], i))
    for i in by_rem[:classes - sum(counts)]:
        counts[i] += 1
    for i in range(len(counts)):
        if counts[i] == 0:  # take from the largest, which holds > 1 as classes >= students
            counts[max(range(len(counts)), key=lambda j: (counts[j], -j))] -= 1
            counts[i] = 1
    return tuple(counts)
