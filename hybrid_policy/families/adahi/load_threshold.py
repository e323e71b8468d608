"""τ* under load: a verification also costs a price and a wait in a shared server's queue.

``threshold.py`` skips a step iff ``r(Δ) · C_e < L_v``: only the step's own latency
counts, so on a fast link (``6g_hrllc``, ``L_v`` ≈ the server's compute) τ* collapses and
ADAHI verifies almost every step, even when many robots share one server. Here the cost of
one verification is ``L_v + π + D(ρ)``:

- ``π`` (ms-equivalent, ≥ 0): the price the operator puts on one uplink transmission and
  server operation (spectrum, energy, server time). ``π = 0`` adds nothing.
- ``D(ρ)``: the *marginal* queueing delay at the server's operating point. One robot step's
  cost in a fleet of ``N`` robots of period ``T`` on a server of service time ``S`` is

      J(s) = (1 − s)(L_v + π + W_q(ρ)) + s · E[r | skipped] · C_e,   ρ = N (1 − s) S / T

  with ``s`` the skip rate. Skipping one more step (of rejection probability r) changes J
  by ``r C_e − (L_v + π + W_q + ρ W_q')``: besides its own wait ``W_q`` a request adds
  ``ρ W_q'`` to everybody else's. So ``D = d(ρ W_q)/dρ``. For Poisson arrivals and a
  deterministic service (M/D/1, Pollaczek–Khinchine):

      W_q = ρ S / (2 (1 − ρ)),     D = ρ (2 − ρ) S / (2 (1 − ρ)²),     both ∞ for ρ ≥ 1.

So ``r* = min((L_v + π + D(ρ)) / C_e, r̄)`` and ``τ = exp((r* − a)/b) − ε`` as before; but
ρ depends on τ through the skip rate ``s(τ)`` (empirical, on the calibration's Δ samples):

    τ → s(τ) → ρ → D(ρ) → r* → τ

The map ``g`` is non-increasing in τ (a higher τ skips more, loads the server less, makes
verification cheaper, asks for a lower τ), so ``g(τ) − τ`` is strictly decreasing: the
fixed point is unique, but plain iteration can oscillate around it (a decreasing map, a
cobweb). ``s`` is a step function with a step at each distinct Δ sample, so g is constant
on each of the ``m + 1`` pieces between them; the fixed point is the right end of the last
piece where g still lies above τ, found exactly by bisection over the pieces (log₂ m
evaluations). Where g jumps over the diagonal at a sample the result is that sample: the
largest τ whose own load still justifies it. ``J`` is convex in ``s`` (its derivative
rises with s: ``r`` rises and ``D`` falls), so this point minimises the modelled fleet cost
under the quality bound. docs/method.md §6 has the derivation and measured numbers.

With ``π = 0`` and no load this is exactly ``threshold.derive_tau`` of today's r*.
With batching (``max_batch > 1``) the batch-1 service time overstates the wait: the model
is conservative there (it skips at least as much as the real queue would justify).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from hybrid_policy.families.adahi.threshold import Costs, LinearFit, derive_tau, rejection_bound
from hybrid_policy.errors import HybridPolicyError

if TYPE_CHECKING:  # compute imports torch; only its type is needed here
    from hybrid_policy.core.compute import ComputeModel
    from hybrid_policy.core.topology import Topology

log = logging.getLogger(__name__)


class LoadThresholdError(HybridPolicyError, ValueError):
    """Inputs the load-aware derivation cannot use; the message says what is valid."""


def check_price(price_ms: Any) -> float:
    """A price per transmission and server operation: a finite number of ms >= 0."""
    if isinstance(price_ms, bool) or not isinstance(price_ms, (int, float)) \
            or not math.isfinite(price_ms) or price_ms < 0:
        raise LoadThresholdError(f"price per transmission must be a finite number of ms >= 0 "
                                 f"(0 = no price), got {price_ms!r}")
    return float(price_ms)


@dataclass(frozen=True)
class Load:
    """The server's operating point: ``robots`` robots of control period
    ``control_period_ms`` each send at most one request a period; one verification (a batch
    of one) takes ``service_ms`` at the server."""

    robots: int
    control_period_ms: float
    service_ms: float

    def __post_init__(self) -> None:
        if isinstance(self.robots, bool) or not isinstance(self.robots, int) or self.robots < 1:
            raise LoadThresholdError(f"load: robots must be an integer >= 1, got {self.robots!r}")
        for name in ("control_period_ms", "service_ms"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise LoadThresholdError(f"load: {name} must be a finite number > 0, "
                                         f"got {value!r}")

    def utilisation(self, skip_rate: float) -> float:
        """ρ = λ S with λ = N (1 − s) / T requests per ms."""
        return self.robots * (1.0 - skip_rate) * self.service_ms / self.control_period_ms


def md1_wait(rho: float, service_ms: float) -> float:
    """M/D/1 mean wait in the queue (Pollaczek–Khinchine): ρ S / (2 (1 − ρ)); ∞ at ρ ≥ 1."""
    return math.inf if rho >= 1.0 else rho * service_ms / (2.0 * (1.0 - rho))


def marginal_delay(rho: float, service_ms: float) -> float:
    """d(ρ W_q)/dρ = ρ (2 − ρ) S / (2 (1 − ρ)²): one more request's own wait plus the wait
    it adds to every other request; ∞ at ρ ≥ 1."""
    return math.inf if rho >= 1.0 else rho * (2.0 - rho) * service_ms / (2.0 * (1.0 - rho) ** 2)


@dataclass(frozen=True)
class Calibrated:
    """What the derivation needs from a calibration: the fit, the costs, the quality bound
    r̄ (None: lifted by the calibration) and the Δ of every calibration step (non-finite
    Δ: never below any τ, still counted as a step)."""

    fit: LinearFit
    costs: Costs
    mean_rejection: float | None
    delta: np.ndarray  # finite Δ samples, sorted
    steps: int  # all calibration steps (finite or not): the denominator of s(τ)

    @classmethod
    def from_samples(cls, fit: LinearFit, costs: Costs, mean_rejection: float | None,
                     delta: Any) -> "Calibrated":
        d = np.asarray([np.inf if x is None else x for x in delta], float)
        finite = np.sort(d[np.isfinite(d)])
        if finite.size == 0:
            raise LoadThresholdError("the calibration has no finite Δ samples: run "
                                     "`hybrid-policy calibrate` again")
        quality = None if mean_rejection is None else float(mean_rejection)
        return cls(fit, costs, quality, finite, int(d.size))

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> "Calibrated":
        """From ``hybrid-policy calibrate``'s JSON (the ``fit``, ``costs`` and ``samples``
        sections it has always written)."""
        try:
            c = doc["costs"]
            costs = Costs(c["verify_ms"], c["control_period_ms"], c["rejection_error"],
                          c["quality_weight"])
            return cls.from_samples(LinearFit(**doc["fit"]), costs, c["quality_bound"],
                                    doc["samples"]["delta"])
        except (KeyError, TypeError) as exc:
            raise LoadThresholdError(f"the calibration lacks what the load-aware threshold "
                                     f"needs ({exc}): run `hybrid-policy calibrate` again"
                                     ) from None

    def skip_rate(self, tau: float) -> float:
        """s(τ): the fraction of calibration steps with Δ < τ."""
        return int(np.searchsorted(self.delta, tau, side="left")) / self.steps


@dataclass(frozen=True)
class LoadThreshold:
    """The fixed point and what set it."""

    tau: float
    skip_rate: float  # s(τ) on the calibration steps
    utilisation: float  # ρ at that skip rate (≥ 1: the server cannot keep up)
    wait_ms: float  # W_q at ρ (M/D/1 mean wait)
    marginal_ms: float  # D(ρ), the delay term in the bound
    price_ms: float  # π
    r_star: float
    bound: str  # "link" (L_v + π + D over C_e) or "quality" (r̄)

    def as_dict(self) -> dict[str, Any]:
        """JSON-safe (∞ written as null)."""
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                for k, v in self.__dict__.items()}


def tau_for_delay(cal: Calibrated, delay_ms: float, price_ms: float) -> tuple[float, float, str]:
    """The inner step of the map: τ, r* and the bound when a verification costs
    ``L_v + price + delay``. With both 0 it is today's τ* to the bit."""
    costs = replace(cal.costs, verify_ms=cal.costs.verify_ms + delay_ms + price_ms)
    r_star, bound = rejection_bound(costs, cal.mean_rejection)
    return derive_tau(cal.fit, r_star), r_star, bound


def solve(cal: Calibrated, load: Load | None, price_ms: float = 0.0) -> LoadThreshold:
    """The unique fixed point of τ → s(τ) → ρ → D(ρ) → τ (module doc); ``load=None``: no
    queue (D = 0)."""
    price_ms = check_price(price_ms)
    cuts = np.unique(cal.delta)  # s is constant on [0, u_1], (u_1, u_2], …, (u_m, ∞)
    counts = np.searchsorted(cal.delta, cuts, side="right")  # samples ≤ u_k

    def piece(k: int) -> tuple[float, float, str, float]:
        """g on piece k (the k smallest distinct Δ below it): τ, r*, bound, skip rate."""
        s = 0.0 if k == 0 else counts[k - 1] / cal.steps
        delay = 0.0 if load is None else marginal_delay(load.utilisation(s), load.service_ms)
        return (*tau_for_delay(cal, delay, price_ms), s)

    def above(k: int) -> bool:  # does g lie above τ somewhere on piece k?
        return k == 0 or piece(k)[0] > cuts[k - 1]

    lo, hi = 0, len(cuts)  # above(lo) holds; find the last k with above(k) (monotone)
    if above(hi):
        lo = hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if above(mid) else (lo, mid)
    g, r_star, bound, s = piece(lo)
    tau = g if lo == len(cuts) else min(g, float(cuts[lo]))
    s, r_star = float(s), float(r_star)
    rho = wait = delay = 0.0
    if load is not None:
        rho = load.utilisation(s)
        wait, delay = md1_wait(rho, load.service_ms), marginal_delay(rho, load.service_ms)
    out = LoadThreshold(tau, s, rho, wait, delay, price_ms, r_star, bound)
    if load is not None and rho >= 1.0:
        log.warning("the server is overloaded even at the quality bound: ρ = %.2f at skip rate "
                    "%.2f (%d robots); τ = %.4f", rho, s, load.robots, tau)
    return out


def price_for(cal: Calibrated, load: Load | None, tau: float) -> float:
    """The least price at which the fixed point reaches ``tau`` (closed form): the price
    that makes a step at Δ = τ break even, ``r(τ) C_e − L_v − D(ρ(s(τ)))``, 0 if load alone
    gets there. It is the multiplier of a rate budget: for "at most B transmissions a
    step" take τ where s(τ) = 1 − B. Above the quality bound's τ no price helps (∞)."""
    r = float(cal.fit.predict(tau))
    if cal.mean_rejection is not None and r > cal.mean_rejection:
        return math.inf
    s = cal.skip_rate(tau)
    delay = 0.0 if load is None else marginal_delay(load.utilisation(s), load.service_ms)
    return max(0.0, r * cal.costs.error_cost_ms - cal.costs.verify_ms - delay)


def quality_price(cal: Calibrated, load: Load | None) -> float:
    """π_q: the least price at which the quality bound sets τ (skip everything r̄ allows);
    ∞ when the calibration lifted the quality bound."""
    if cal.mean_rejection is None:
        return math.inf
    return price_for(cal, load, derive_tau(cal.fit, cal.mean_rejection))


def server_loads(topo: "Topology", compute: "ComputeModel") -> dict[str, Load]:
    """Each server's operating point in ``topo``: the robots it verifies for, their control
    period (the harmonic mean where tasks differ: the same request rate) and one
    verification's time at the node's speed (``compute.target_batch(1, speed)``)."""
    import sim_envs

    out = {}
    for name in topo.servers():
        periods = [sim_envs.task_spec(r.task).control_period_ms for r in topo.robots_of(name)]
        period = periods[0] if len(set(periods)) == 1 else len(periods) / sum(
            1.0 / t for t in periods)
        out[name] = Load(len(periods), period, compute.target_batch(1, topo.nodes[name].speed))
    return out
