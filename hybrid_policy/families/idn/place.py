"""Online model placement of INFIDA (inference delivery networks, arXiv 2105.02510).

* A *slot* is a (node, model) pair that could be held, indexed 0..S-1 over the network;
  every node owns a disjoint set of slots, each with a size (parameters), and a capacity.
* A *request class* (``Demand``) seen in a period has a weight (requests) and options: the
  slots that could serve it with their gains, best first, and a fallback gain ``base``
  that is always there (the repository in the cloud). With g_1 >= ... >= g_K > base and
  g_{K+1} = base, an allocation x in [0, 1]^S earns
  ``G(x) = weight * (base + sum_k (g_k - g_{k+1}) * min(1, x_{slot_1} + ... + x_{slot_k}))``:
  for an integral x, the gain of the best held option; for a fractional x, a concave
  relaxation whose supergradient is cheap, so it can be ascended online.
* Each node v keeps a fractional allocation y_v on Y_v = {y in [0, 1] : sum s y = b_v}
  (all ones when everything fits) and per period takes one mirror-ascent step with the
  size-weighted negative entropy sum (s/b) y log y: z = y * exp(eta * g * b / s), then the
  Bregman projection y = clip(c * z, floor, 1) with the scalar c solved exactly. The floor
  keeps the multiplicative update from sticking at 0, so a model can come back after a
  shift in demand.
* The held allocation x is sampled per node by DepRound with sizes: pairwise martingale
  steps keep every marginal and sum s y, so capacity is never exceeded; with unequal sizes
  one entry may stay fractional and is dropped when it does not fit, the only bias. On the
  set (sum s y = b) it never fits, so where no subset of sizes sums to b it is dropped in
  every draw: on random 8-model nodes with sizes 1-5, ~11-16% of capacity went unused and
  single marginals were up to 0.1-0.28 low (always downward).

Gradients are normalised by the caller (gain per request: divide by the total weight), so
gains in [0, 1] make ``DEFAULT_ETA`` converge in a few hundred periods on small nodes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from hybrid_policy.errors import HybridPolicyError

# Step size per period for gradients normalised to gain per request in [0, 1]: the
# exponent is eta * g * b / s. On the 2-node, 5-model instance of test_idn_place 0.5
# settles within 0.05 of the optimum in ~110 periods and follows a full reversal of the
# demand in ~260; 1.0 halves both but on closer-run instances oscillates 0.1-0.2 around
# the optimum, 0.2 is steadier but takes ~270 periods to converge and >400 to follow.
DEFAULT_ETA = 0.5
# Smallest fractional share kept, so that a model the entropy map pushed out can return
# after a shift: from 1e-6 to 1e-3 it changed the shift tracking by only ~10%, and it
# costs floor * (entries) of each capacity on models nobody wants.
DEFAULT_FLOOR = 1e-4
_REL_TOL = 1e-9
_SNAP = 1e-12
_TINY = 1e-300


class PlacementError(HybridPolicyError, ValueError):
    """Slots, sizes, capacities, demands or allocations that placement cannot use."""


def _finite(name: str, value: float) -> float:
    value = float(value)
    if not math.isfinite(value):
        raise PlacementError(f"{name} {value} must be finite")
    return value


def _positive_array(name: str, values: np.ndarray) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 1 or not np.all(np.isfinite(arr)) or not np.all(arr > 0):
        raise PlacementError(f"{name} {arr.tolist()} must be a 1-D array of finite values > 0")
    return arr


def _index_array(name: str, values: np.ndarray, n_slots: int | None = None) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1 or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
        raise PlacementError(f"{name} {arr.tolist()} must be a 1-D array of integer indices")
    arr = arr.astype(np.int64)
    if np.any(arr < 0) or (n_slots is not None and np.any(arr >= n_slots)):
        valid = "0.." + (str(n_slots - 1) if n_slots is not None else "")
        raise PlacementError(f"{name} {arr.tolist()}: slot indices must be in {valid}")
    if len(np.unique(arr)) != len(arr):
        raise PlacementError(f"{name} {arr.tolist()}: slot indices must be unique")
    return arr


# --------------------------------------------------------------------------- demands


@dataclass(frozen=True)
class Demand:
    """One request class: ``weight`` requests, served by the first held of ``slots``
    (gains descending, all > ``base``) or else by the always-available ``base``."""

    weight: float
    slots: np.ndarray
    gains: np.ndarray
    base: float

    def __post_init__(self) -> None:
        w = _finite("demand weight", self.weight)
        if w < 0:
            raise PlacementError(f"demand weight {w} must be >= 0")
        base = _finite("demand base gain", self.base)
        slots = _index_array("demand slots", self.slots)
        gains = np.asarray(self.gains, dtype=float)
        if gains.shape != slots.shape or not np.all(np.isfinite(gains)):
            raise PlacementError(
                f"demand gains {gains.tolist()} must be finite, one per slot ({len(slots)})")
        if np.any(np.diff(gains) > 0) or np.any(gains <= base):
            raise PlacementError(f"demand gains {gains.tolist()} must be descending and all "
                                 f"> base {base}: build demands with demand()")
        object.__setattr__(self, "weight", w)
        object.__setattr__(self, "base", base)
        object.__setattr__(self, "slots", slots)
        object.__setattr__(self, "gains", gains)

    @property
    def steps(self) -> np.ndarray:
        """g_k - g_{k+1} (with g_{K+1} = base): what holding option k adds over the next."""
        return self.gains - np.append(self.gains[1:], self.base)


def demand(weight: float, options: Sequence[tuple[int, float]], base: float,
           n_slots: int | None = None) -> Demand:
    """A ``Demand`` from unordered (slot, gain) options: options no better than ``base``
    can never be chosen over the cloud, so they are dropped; the rest sorted best first."""
    base = _finite("demand base gain", base)
    pairs = []
    for opt in options:
        slot, g = opt
        if isinstance(slot, bool) or not isinstance(slot, (int, np.integer)):
            raise PlacementError(f"demand option slot {slot!r} must be an integer index")
        if isinstance(g, bool) or not math.isfinite(float(g)):
            raise PlacementError(f"demand option gain {g!r} for slot {slot} must be finite")
        pairs.append((int(slot), float(g)))
    _index_array("demand option slots", np.array([p[0] for p in pairs], dtype=np.int64),
                 n_slots)
    kept = sorted((p for p in pairs if p[1] > base), key=lambda p: -p[1])
    return Demand(weight, np.array([p[0] for p in kept], dtype=np.int64),
                  np.array([p[1] for p in kept], dtype=float), base)


def _check_x(x: np.ndarray, demands: Sequence[Demand]) -> np.ndarray:
    x = np.asarray(x, dtype=float)
    if x.ndim != 1 or not np.all(np.isfinite(x)):
        raise PlacementError("allocation x must be a 1-D array of finite values in [0, 1]")
    for d in demands:
        if d.slots.size and d.slots.max() >= len(x):
            raise PlacementError(f"demand slot {int(d.slots.max())} is outside the "
                                 f"allocation: slots must be in 0..{len(x) - 1}")
    return x


def gain(x: np.ndarray, demands: Sequence[Demand]) -> float:
    """Total gain G(x); for an integral x, each demand's best held option (or base)."""
    x = _check_x(x, demands)
    total = 0.0
    for d in demands:
        covered = np.minimum(1.0, np.cumsum(x[d.slots]))
        total += d.weight * (d.base + float(d.steps @ covered))
    return total


def subgradient(x: np.ndarray, demands: Sequence[Demand]) -> np.ndarray:
    """A supergradient of the concave G at x: slot j of a demand earns every step k >= j
    whose prefix sum is at most 1. At a prefix of exactly 1 (a slot the projection capped
    at 1) this takes the left derivative, also a supergradient: with the right one (0) a
    held model loses its gradient the period it is capped, drops, regains it and bounces,
    and the iterates never settle (measured: 0.06-0.1 off the optimum instead of 0.005)."""
    x = _check_x(x, demands)
    grad = np.zeros(len(x))
    for d in demands:
        open_steps = d.steps * (np.cumsum(x[d.slots]) <= 1.0)
        np.add.at(grad, d.slots, d.weight * np.cumsum(open_steps[::-1])[::-1])
    return grad


def served(x: np.ndarray, d: Demand) -> int:
    """Position in ``d.slots`` of the best option held by the integral x, or -1 (base)."""
    x = _check_x(x, [d])
    held = np.flatnonzero(x[d.slots] >= 0.5)
    return int(held[0]) if held.size else -1


# --------------------------------------------------------------------------- projection


def _check_node(sizes: np.ndarray, capacity: float) -> tuple[np.ndarray, float]:
    sizes = _positive_array("sizes", sizes)
    capacity = _finite("capacity", capacity)
    if capacity <= 0:
        raise PlacementError(f"capacity {capacity} must be > 0")
    return sizes, capacity


def project(z: np.ndarray, sizes: np.ndarray, capacity: float,
            floor: float = DEFAULT_FLOOR) -> np.ndarray:
    """Bregman projection of z > 0 onto {floor <= y <= 1, sum s y = capacity} for the
    size-weighted entropy: KKT gives y = clip(c z, floor, 1); sum s y is piecewise linear
    and increasing in c with breakpoints floor/z and 1/z, so c is found exactly on the
    segment that brackets the capacity. All ones when everything fits."""
    sizes, capacity = _check_node(sizes, capacity)
    z = np.asarray(z, dtype=float)
    if z.shape != sizes.shape or not np.all(np.isfinite(z)) or np.any(z < 0) or z.max() <= 0:
        raise PlacementError(f"z must be finite, >= 0, not all 0, one per size ({len(sizes)})")
    total = float(sizes.sum())
    if total <= capacity:
        return np.ones_like(z)
    if not (math.isfinite(floor) and 0 <= floor < 1 and floor * total < capacity):
        raise PlacementError(f"floor {floor} must be in [0, 1) with floor * sum(sizes) = "
                             f"{floor * total} < capacity {capacity}")
    z = np.maximum(z / z.max(), _TINY)  # the projection is invariant to scaling z
    breaks = np.sort(np.concatenate([floor / z, 1.0 / z]))
    filled = (sizes * np.clip(np.outer(breaks, z), floor, 1.0)).sum(axis=1)
    i = int(np.searchsorted(filled, capacity))  # filled[i-1] < capacity <= filled[i]
    i = min(max(i, 1), len(breaks) - 1)
    mid = 0.5 * (breaks[i - 1] + breaks[i])
    capped, floored = mid * z >= 1.0, mid * z <= floor
    free = ~(capped | floored)
    c = ((capacity - sizes[capped].sum() - floor * sizes[floored].sum())
         / (sizes[free] * z[free]).sum())
    return np.clip(c * z, floor, 1.0)


# --------------------------------------------------------------------------- rounding


@dataclass(frozen=True)
class Rounded:
    """An integral node allocation and the entry the pairwise steps left fractional
    (``leftover`` -1 if none) with its value then; ``dropped``: it did not fit, the one
    event that biases marginals (E[x_k] = y_k - E[leftover_y; dropped, leftover = k])."""

    x: np.ndarray
    leftover: int
    leftover_y: float
    dropped: bool


def depround_detail(y: np.ndarray, sizes: np.ndarray, capacity: float,
                    rng: np.random.Generator) -> Rounded:
    """DepRound with sizes: pairs of fractional entries move along s_i dy_i + s_j dy_j = 0
    until one hits 0 or 1, to either end with the probabilities that keep E[y] (a
    martingale), so every marginal and sum s y are kept. Larger sizes pair first, so the
    entry left fractional tends to be small and more often fits."""
    sizes, capacity = _check_node(sizes, capacity)
    y = np.asarray(y, dtype=float)
    if y.shape != sizes.shape or not np.all(np.isfinite(y)):
        raise PlacementError(f"y must be finite, one per size ({len(sizes)})")
    if np.any(y < -_REL_TOL) or np.any(y > 1 + _REL_TOL):
        raise PlacementError(f"y {y.tolist()} must be in [0, 1]")
    if float(sizes @ y) > capacity * (1 + _REL_TOL):
        raise PlacementError(f"sum size * y = {float(sizes @ y)} must be <= capacity {capacity}")
    v = np.clip(y, 0.0, 1.0).tolist()
    s = sizes.tolist()
    order = np.argsort(-sizes, kind="stable").tolist()
    cur = -1
    for j in order:
        if v[j] <= _SNAP or v[j] >= 1 - _SNAP:
            v[j] = float(v[j] >= 1 - _SNAP)
            continue
        if cur < 0:
            cur = j
            continue
        i = cur
        up = min((1 - v[i]) * s[i], v[j] * s[j])      # i up, j down
        down = min(v[i] * s[i], (1 - v[j]) * s[j])    # i down, j up
        t = up if rng.random() * (up + down) < down else -down
        v[i] += t / s[i]
        v[j] -= t / s[j]
        for k in (i, j):
            if v[k] <= _SNAP or v[k] >= 1 - _SNAP:
                v[k] = float(v[k] >= 1 - _SNAP)
        cur = i if 0 < v[i] < 1 else (j if 0 < v[j] < 1 else -1)
    x = np.array([1 if vi == 1.0 else 0 for vi in v], dtype=np.int64)
    left_y, dropped = (v[cur] if cur >= 0 else 0.0), False
    if cur >= 0:
        if float(sizes @ x) + s[cur] <= capacity * (1 + _REL_TOL):
            x[cur] = int(rng.random() < left_y)
        else:
            dropped = True
    if float(sizes @ x) > capacity * (1 + _REL_TOL):
        raise PlacementError(f"internal: rounding held {float(sizes @ x)} > capacity {capacity}")
    return Rounded(x, cur, left_y, dropped)


def depround(y: np.ndarray, sizes: np.ndarray, capacity: float,
             rng: np.random.Generator) -> np.ndarray:
    """Integral 0/1 allocation with E[x] = y (see ``depround_detail`` for the one bias)."""
    return depround_detail(y, sizes, capacity, rng).x


# --------------------------------------------------------------------------- INFIDA


@dataclass(frozen=True)
class NodeSlots:
    """The slots a node could hold: global ``slots``, their ``sizes`` and its ``capacity``
    (parameters)."""

    name: str
    slots: np.ndarray
    sizes: np.ndarray
    capacity: float

    def __post_init__(self) -> None:
        slots = _index_array(f"node {self.name!r} slots", self.slots)
        if not slots.size:
            raise PlacementError(f"node {self.name!r} has no slots: give it at least one")
        sizes = _positive_array(f"node {self.name!r} sizes", self.sizes)
        if sizes.shape != slots.shape:
            raise PlacementError(f"node {self.name!r}: {len(sizes)} sizes for {len(slots)} "
                                 "slots: give one size per slot")
        capacity = _finite(f"node {self.name!r} capacity", self.capacity)
        if capacity <= 0:
            raise PlacementError(f"node {self.name!r} capacity {capacity} must be > 0")
        object.__setattr__(self, "slots", slots)
        object.__setattr__(self, "sizes", sizes)
        object.__setattr__(self, "capacity", capacity)

    @property
    def fits_all(self) -> bool:
        """Everything fits: y stays all ones and the node never steps."""
        return float(self.sizes.sum()) <= self.capacity


class Infida:
    """Fractional allocation y over all slots; one mirror-ascent step per period per node."""

    def __init__(self, nodes: Sequence[NodeSlots], n_slots: int, eta: float = DEFAULT_ETA,
                 y0: np.ndarray | None = None, floor: float = DEFAULT_FLOOR) -> None:
        if isinstance(n_slots, bool) or not isinstance(n_slots, (int, np.integer)) \
                or n_slots < 1:
            raise PlacementError(f"n_slots {n_slots!r} must be an integer >= 1")
        eta = _finite("eta", eta)
        if eta <= 0:
            raise PlacementError(f"eta {eta} must be > 0")
        if not nodes:
            raise PlacementError("nodes is empty: give at least one NodeSlots")
        owner = np.full(n_slots, -1)
        for k, node in enumerate(nodes):
            if node.slots.max() >= n_slots:
                raise PlacementError(f"node {node.name!r} slot {int(node.slots.max())} is "
                                     f"outside 0..{n_slots - 1}")
            taken = node.slots[owner[node.slots] >= 0]
            if taken.size:
                raise PlacementError(f"slots {taken.tolist()} of node {node.name!r} are "
                                     "owned by another node: nodes must own disjoint slots")
            owner[node.slots] = k
        if np.any(owner < 0):
            raise PlacementError(f"slots {np.flatnonzero(owner < 0).tolist()} are owned by "
                                 "no node: every slot 0..n_slots-1 must belong to one")
        self.nodes, self.n_slots, self.eta, self.floor = list(nodes), int(n_slots), eta, floor
        if y0 is None:
            y0 = np.zeros(n_slots)
            for node in self.nodes:
                y0[node.slots] = project(np.ones(len(node.slots)), node.sizes, node.capacity,
                                         floor)
        self.y = self._start(np.asarray(y0, dtype=float))

    def _start(self, y0: np.ndarray) -> np.ndarray:
        if y0.shape != (self.n_slots,) or not np.all(np.isfinite(y0)):
            raise PlacementError(f"y0 must be {self.n_slots} finite values")
        if np.any(y0 < -_REL_TOL) or np.any(y0 > 1 + _REL_TOL):
            raise PlacementError("y0 must be in [0, 1]")
        y = np.empty(self.n_slots)
        for node in self.nodes:
            yv = np.clip(y0[node.slots], 0.0, 1.0)
            want = min(node.capacity, float(node.sizes.sum()))
            used = float(node.sizes @ yv)
            if abs(used - want) > _REL_TOL * want:
                raise PlacementError(f"y0 of node {node.name!r} fills {used} of capacity "
                                     f"{node.capacity}: it must fill exactly {want}")
            # lifts entries below the floor (on the set otherwise, c = 1 keeps y0)
            y[node.slots] = project(np.maximum(yv, self.floor), node.sizes, node.capacity,
                                    self.floor)
        return y

    def step(self, grad: np.ndarray) -> None:
        """y_v <- project(y_v * exp(eta * grad_v * b / s)) per node, in log space so large
        exponents cannot overflow (the projection ignores the scale of z)."""
        grad = np.asarray(grad, dtype=float)
        if grad.shape != (self.n_slots,) or not np.all(np.isfinite(grad)):
            raise PlacementError(f"grad must be {self.n_slots} finite values (one per slot)")
        for node in self.nodes:
            if node.fits_all:
                continue
            logz = np.log(self.y[node.slots]) + (
                self.eta * grad[node.slots] * node.capacity / node.sizes)
            z = np.exp(logz - logz.max())
            self.y[node.slots] = project(z, node.sizes, node.capacity, self.floor)

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        """Integral allocation x (0/1 per slot) by DepRound per node; E[x] ~ y."""
        x = np.zeros(self.n_slots, dtype=np.int64)
        for node in self.nodes:
            x[node.slots] = depround(self.y[node.slots], node.sizes, node.capacity, rng)
        return x
