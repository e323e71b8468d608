"""DTO-EE: where an early-exit policy's requests go on and where they stop, chosen together.

An early-exit policy split over compute nodes in stages (robots → edge → cloud) makes two
decisions per node that pull against each other: the confidence threshold θ (answer here,
fast but maybe wrong, or go on) and the offloading distribution p (which next node gets the
requests that go on). A lower θ at a robot unloads the edge and so makes going on cheaper
for everybody, which asks for a higher θ; sending more to a fast edge fills its queue. Set
apart, each choice is made against the wrong costs of the other. Here (after DTO-EE, arXiv
2412.08284, which optimises both jointly at each edge node by a distributed algorithm)
both are chosen against one objective, exactly on the calibration's empirical samples:

    J = mean response delay + μ · mean loss        (μ ≥ 0: ms per unit of TV distance)

A request carries its calibration sample, so every node's arrivals are a weighted
population of samples; one pass in stage order gives them all. Delay: the service at every
node visited, the M/D/1 wait at a shared one (``load_threshold.md1_wait``), the link of
every hop; loss: the exit's TV distance to the final exit where the request is answered.

The optimiser is Gallager's minimum-delay routing with the threshold added as one more
local decision: a backward pass gives every node the per-sample marginal cost-to-go of one
more request (its service, its marginal queueing delay ``d(ρ W_q)/dρ``, then the exit's
loss or the next hops' advertised costs), which is all a node hears from its next hops. With
it each node picks its exact best threshold and shifts probability towards its cheapest
next hop. Only moves that lower J are kept, so J never rises. J is not convex in the
thresholds (a node's best threshold depends on the population its upstream sends it, and
that on the threshold), so ``optimise`` runs from two opposite starts and then searches:
one node at a time tries other thresholds while the rest re-optimise, keeping what lowers
J. ``solve_for_loss`` prices the loss by bisection. docs/method.md §8 has the details.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType
from typing import Any, Mapping

import numpy as np

from hybrid_policy.families.adahi.load_threshold import marginal_delay, md1_wait
from hybrid_policy.errors import HybridPolicyError

RHO_CAP = 0.99  # above it the optimiser's wait is the quadratic extension (see modelled_wait)
_SUM_TOLERANCE = 1e-6  # an offloading distribution may miss 1 by this much (it is renormalised)


class DtoEeError(HybridPolicyError, ValueError):
    """A problem, policy or budget the DTO-EE optimiser cannot use; the message says what
    is valid."""


def check_threshold(x: Any) -> float:
    """A confidence threshold: a finite number in [0, 1] (an exit answers iff c ≥ θ)."""
    if isinstance(x, bool) or not isinstance(x, numbers.Real) or not math.isfinite(x) \
            or not 0.0 <= x <= 1.0:
        raise DtoEeError(f"a confidence threshold must be a finite number in [0, 1] "
                         f"(0: always answer, 1: answer only at confidence 1), got {x!r}")
    return float(x)


def _check_price(price: Any) -> float:
    if isinstance(price, bool) or not isinstance(price, numbers.Real) \
            or not math.isfinite(price) or price < 0:
        raise DtoEeError(f"the price of accuracy must be a finite number >= 0 (ms per unit "
                         f"of mean loss; 0: delay only), got {price!r}")
    return float(price)


def _number(what: str, x: Any, positive: bool = False) -> float:
    if isinstance(x, bool) or not isinstance(x, numbers.Real) or not math.isfinite(x) \
            or x < 0 or (positive and x == 0):
        raise DtoEeError(f"{what} must be a finite number {'> 0' if positive else '>= 0'}, "
                         f"got {x!r}")
    return float(x)


def modelled_wait(rho: float, service_ms: float) -> float:
    """The optimiser's wait in a queue: M/D/1 ``ρ S / (2 (1 − ρ))`` up to ``RHO_CAP``, above it
    the wait whose total ``ρ W`` continues ``ρ W_q`` by its second-order Taylor polynomial at
    the cap: finite, convex and steep (``S / (1 − cap)³``), so an overloaded start can move
    traffic away. ``evaluate`` reports the true wait (∞ for ρ ≥ 1)."""
    if rho <= RHO_CAP:
        return md1_wait(rho, service_ms)
    d = rho - RHO_CAP
    total = RHO_CAP * md1_wait(RHO_CAP, service_ms) + marginal_delay(RHO_CAP, service_ms) * d \
        + 0.5 * service_ms / (1.0 - RHO_CAP) ** 3 * d * d
    return total / rho


def modelled_marginal(rho: float, service_ms: float) -> float:
    """``d(ρ W)/dρ`` of ``modelled_wait``: one more request's own wait plus the wait it adds
    to every other request (``load_threshold.marginal_delay`` up to the cap)."""
    if rho <= RHO_CAP:
        return marginal_delay(rho, service_ms)
    return marginal_delay(RHO_CAP, service_ms) \
        + service_ms / (1.0 - RHO_CAP) ** 3 * (rho - RHO_CAP)


def _curvature(rho: float, service_ms: float) -> float:
    """d²(λ W)/dλ² of the modelled queue: S² / (1 − ρ)³, constant above the cap."""
    return service_ms ** 2 / (1.0 - min(rho, RHO_CAP)) ** 3


@dataclass(frozen=True, eq=False)
class Samples:
    """The calibration: for observation i and stage k the exit's confidence ``c[i, k]`` and
    its loss ``ℓ[i, k]`` (TV distance to the final exit's code distribution)."""

    confidence: np.ndarray  # [N, stages], in [0, 1]
    loss: np.ndarray  # [N, stages], >= 0; the last column is the final exit (answers always)

    def __post_init__(self) -> None:
        arrays = []
        for what in ("confidence", "loss"):
            try:
                a = np.array(getattr(self, what), dtype=float)
            except (TypeError, ValueError):
                raise DtoEeError(f"samples: {what} must be an array of numbers [N, stages]"
                                 ) from None
            if a.ndim != 2 or a.shape[0] < 1 or a.shape[1] < 1:
                raise DtoEeError(f"samples: {what} must be a 2-D array [N, stages] with "
                                 f"N >= 1 and stages >= 1, got shape {a.shape}")
            if not np.isfinite(a).all():
                raise DtoEeError(f"samples: {what} must be finite")
            a.setflags(write=False)
            object.__setattr__(self, what, a)
            arrays.append(a)
        conf, loss = arrays
        if conf.shape != loss.shape:
            raise DtoEeError(f"samples: confidence {conf.shape} and loss {loss.shape} must "
                             f"have the same shape [N, stages]")
        if conf.min() < 0 or conf.max() > 1:
            raise DtoEeError(f"samples: confidences must lie in [0, 1], got values in "
                             f"[{conf.min():g}, {conf.max():g}]")
        if loss.min() < 0:
            raise DtoEeError(f"samples: losses must be >= 0, got {loss.min():g}")

    @property
    def count(self) -> int:
        return int(self.confidence.shape[0])

    @property
    def stages(self) -> int:
        return int(self.confidence.shape[1])


@dataclass(frozen=True)
class Node:
    """One compute node. ``queued=None``: a shared FIFO server unless a source (a robot
    computes its own step: no queue); True/False say so explicitly."""

    name: str
    stage: int  # 0 = source (robot), stages - 1 = final
    service_ms: float  # time for one request here (its blocks + exit at its speed)
    arrivals_per_ms: float = 0.0  # external requests per ms (sources only, > 0 there)
    next_hops: Mapping[str, float] = field(default_factory=dict, hash=False)  # → link ms
    queued: bool | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise DtoEeError(f"a node's name must be a non-empty string, got {self.name!r}")
        if isinstance(self.stage, bool) or not isinstance(self.stage, numbers.Integral) \
                or self.stage < 0:
            raise DtoEeError(f"node {self.name!r}: stage must be an integer >= 0 "
                             f"(0 = source), got {self.stage!r}")
        object.__setattr__(self, "stage", int(self.stage))
        object.__setattr__(self, "service_ms",
                           _number(f"node {self.name!r}: service_ms", self.service_ms))
        object.__setattr__(self, "arrivals_per_ms",
                           _number(f"node {self.name!r}: arrivals_per_ms", self.arrivals_per_ms))
        if not isinstance(self.next_hops, Mapping):
            raise DtoEeError(f"node {self.name!r}: next_hops must map a next node's name to "
                             f"its link cost in ms, got {self.next_hops!r}")
        hops = {}
        for hop, cost in self.next_hops.items():
            if not isinstance(hop, str):
                raise DtoEeError(f"node {self.name!r}: next hop names must be strings, "
                                 f"got {hop!r}")
            hops[hop] = _number(f"node {self.name!r}: the link cost to {hop!r}", cost)
        object.__setattr__(self, "next_hops", MappingProxyType(hops))
        if self.queued is not None and not isinstance(self.queued, bool):
            raise DtoEeError(f"node {self.name!r}: queued must be True, False or None "
                             f"(queued unless a source), got {self.queued!r}")

    @property
    def is_queued(self) -> bool:
        return self.stage > 0 if self.queued is None else self.queued


@dataclass(frozen=True)
class Problem:
    """The samples and the nodes; checked once here, so the solver trusts them."""

    samples: Samples
    nodes: tuple[Node, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.samples, Samples):
            raise DtoEeError(f"problem: samples must be a Samples, got "
                             f"{type(self.samples).__name__}")
        nodes = tuple(self.nodes)
        object.__setattr__(self, "nodes", nodes)
        if not nodes or not all(isinstance(n, Node) for n in nodes):
            raise DtoEeError("problem: nodes must be a non-empty sequence of Node")
        final = self.samples.stages - 1
        by_name: dict[str, Node] = {}
        for n in nodes:
            if n.name in by_name:
                raise DtoEeError(f"problem: node names must be unique, {n.name!r} repeats")
            by_name[n.name] = n
        for n in nodes:
            if n.stage > final:
                raise DtoEeError(f"node {n.name!r}: stage {n.stage} does not exist: the "
                                 f"samples have {final + 1} stages (0 … {final})")
            if n.stage == final and n.next_hops:
                raise DtoEeError(f"node {n.name!r} is at the final stage {final}: its exit "
                                 f"answers every request, so it takes no next hops")
            if n.stage < final and not n.next_hops:
                raise DtoEeError(f"node {n.name!r} (stage {n.stage}) has no next hops: a node "
                                 f"before the final stage {final} needs at least one")
            for hop in n.next_hops:
                if hop not in by_name:
                    raise DtoEeError(f"node {n.name!r}: next hop {hop!r} is not a node "
                                     f"(nodes: {', '.join(sorted(by_name))})")
                if by_name[hop].stage <= n.stage:
                    raise DtoEeError(f"node {n.name!r} (stage {n.stage}): next hop {hop!r} is "
                                     f"at stage {by_name[hop].stage}; a next hop must be at a "
                                     f"later stage")
            if n.stage == 0 and n.arrivals_per_ms <= 0:
                raise DtoEeError(f"source {n.name!r} (stage 0) has no arrivals: "
                                 f"arrivals_per_ms must be > 0 at a source")
            if n.stage > 0 and n.arrivals_per_ms > 0:
                raise DtoEeError(f"node {n.name!r} (stage {n.stage}) has arrivals_per_ms > 0: "
                                 f"external requests arrive at stage-0 sources only")
        if not any(n.stage == 0 for n in nodes):
            raise DtoEeError("problem: no source: at least one node must be at stage 0")

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise DtoEeError(f"no node {name!r} (nodes: {', '.join(n.name for n in self.nodes)})")

    @cached_property
    def _graph(self) -> "_Graph":
        return _Graph(self)


@dataclass(frozen=True)
class Evaluation:
    """The true cost of one policy (∞ delay where a queue is overloaded, ``stable`` False)."""

    mean_delay_ms: float
    mean_loss: float
    objective: float  # J = mean delay + price · mean loss
    price: float
    arrivals_per_ms: dict[str, float]  # λ per node
    utilisation: dict[str, float]  # ρ = λ S per node
    wait_ms: dict[str, float]  # M/D/1 wait per node (0 where not queued)
    exit_fraction: dict[str, float]  # share of the node's arrivals answered there (nan: none)
    answered_by_stage: tuple[float, ...]  # share of all requests answered at each stage
    stable: bool  # every queued node with arrivals has ρ < 1

    def as_dict(self) -> dict[str, Any]:
        """JSON-safe (∞ and nan written as null)."""
        def safe(v: Any) -> Any:
            if isinstance(v, float) and not math.isfinite(v):
                return None
            if isinstance(v, dict):
                return {k: safe(x) for k, x in v.items()}
            if isinstance(v, tuple):
                return [safe(x) for x in v]
            return v
        return {k: safe(v) for k, v in self.__dict__.items()}


@dataclass(frozen=True)
class Solution:
    """A policy and what it costs. ``history``: the optimiser's J after every accepted move
    (the modelled J: above ρ = ``RHO_CAP`` the extended wait), never increasing."""

    thresholds: dict[str, float]  # non-final nodes
    offload: dict[str, dict[str, float]]  # non-final node → next hop → probability
    evaluation: Evaluation
    iterations: int
    converged: bool
    history: tuple[float, ...]


class _Graph:
    """The problem as arrays, nodes in stage order for the passes."""

    def __init__(self, problem: Problem) -> None:
        s = problem.samples
        nodes = problem.nodes
        self.conf, self.loss = s.confidence, s.loss
        self.n_samples, self.stages = s.count, s.stages
        self.names = [n.name for n in nodes]
        self.index = {name: i for i, name in enumerate(self.names)}
        self.stage = np.array([n.stage for n in nodes], int)
        self.order = sorted(range(len(nodes)), key=lambda i: nodes[i].stage)
        self.service = np.array([n.service_ms for n in nodes], float)
        self.queued = np.array([n.is_queued for n in nodes], bool)
        self.arrivals = np.array([n.arrivals_per_ms for n in nodes], float)
        self.final = self.stage == s.stages - 1
        self.hops = [np.array([self.index[m] for m in n.next_hops], int) for n in nodes]
        self.links = [np.array(list(n.next_hops.values()), float) for n in nodes]
        self.hop_names = [list(n.next_hops) for n in nodes]
        self.total = float(self.arrivals.sum())
        self.idle = 1e-12 * self.total  # a node with less load than this has no population
        self.sources = [i for i, n in enumerate(nodes) if n.arrivals_per_ms > 0]
        self.conf_of = [np.ascontiguousarray(self.conf[:, k]) for k in self.stage]  # c, ℓ at
        self.loss_of = [np.ascontiguousarray(self.loss[:, k]) for k in self.stage]  # its exit
        # per stage: the candidate thresholds (descending) and how many samples each answers
        self.order_desc, self.cands, self.ends, self.asc = [], [], [], []
        for k in range(s.stages):
            c = self.conf[:, k]
            asc = np.sort(c)
            cands = np.unique(np.concatenate([c, [0.0, 1.0]]))[::-1]
            self.asc.append(asc)
            self.order_desc.append(np.argsort(-c, kind="stable"))
            self.cands.append(cands)
            self.ends.append(s.count - np.searchsorted(asc, cands, side="left"))

    def answered(self, n: int, theta: float) -> int:
        """How many samples node n's exit answers at θ (those with c ≥ θ)."""
        return int(self.n_samples - np.searchsorted(self.asc[self.stage[n]], theta, "left"))


@dataclass
class _Policy:
    theta: np.ndarray  # per node (unused at final nodes)
    p: list[np.ndarray]  # per node, aligned with its hops (empty at final nodes)

    def copy(self) -> "_Policy":
        return _Policy(self.theta.copy(), [q.copy() for q in self.p])


@dataclass
class _State:
    """One forward pass: populations and the (modelled or true) cost."""

    W: np.ndarray  # [nodes, N] arrivals per ms of each sample
    exits: np.ndarray  # [nodes, N] bool
    omega: np.ndarray  # [nodes, N] the population a node decides for (its own, or if idle
    #                    what its upstream nodes forward: what it would get)
    lam: np.ndarray
    rho: np.ndarray
    wait: np.ndarray
    delay: float  # ms of delay per ms (Σ over requests)
    loss: float  # loss per ms
    objective: float  # (delay + μ loss) / Λ


def _flow(g: _Graph, pol: _Policy, price: float, extended: bool, full: bool = True) -> _State:
    """One pass in stage order. ``full=False``: the cost alone (W, exits, omega None)."""
    nn, N = len(g.names), g.n_samples
    W = np.zeros((nn, N))
    for n in g.sources:
        W[n] = g.arrivals[n] / N
    exits = np.ones((nn, N), bool) if full else None
    omega = np.empty((nn, N)) if full else None
    potential = np.zeros((nn, N)) if full else None
    lam = np.zeros(nn)
    delay = loss = 0.0
    for n in g.order:
        w = W[n]
        lam[n] = w.sum()
        if full:
            om = w if lam[n] > g.idle else potential[n]
            omega[n] = om if om.sum() > 0 else 1.0 / N
        if g.final[n]:
            loss += float(w @ g.loss_of[n])
            continue
        ex = g.conf_of[n] >= pol.theta[n]
        fwd = np.where(ex, 0.0, w)
        loss += float((w - fwd) @ g.loss_of[n])
        for m, q in zip(g.hops[n], pol.p[n]):
            if q > 0:
                W[m] += q * fwd
        delay += float(fwd.sum()) * float(pol.p[n] @ g.links[n])
        if full:
            exits[n] = ex
            going = np.where(ex, 0.0, omega[n])
            for m in g.hops[n]:
                potential[m] += going
    rho = lam * g.service
    wait = np.zeros(nn)
    for n in np.flatnonzero(g.queued & (lam > 0)):
        wait[n] = (modelled_wait if extended else md1_wait)(rho[n], g.service[n])
    delay += float(lam @ g.service) + float(np.sum(lam * wait, where=lam > 0))
    return _State(W, exits, omega, lam, rho, wait, delay, loss,
                  (delay + price * loss) / g.total)


def _best_threshold(g: _Graph, n: int, weights: np.ndarray, gain: np.ndarray,
                    current: float) -> tuple[float, float]:
    """The exact best response: the θ among the stage's candidates minimising
    Σ_i w_i 1[c_i ≥ θ] gain_i (gain = exit cost − going-on cost); the current θ where it
    ties. Returns θ and how much it lowers the linearised cost."""
    k = g.stage[n]
    cum = np.concatenate([[0.0], np.cumsum((weights * gain)[g.order_desc[k]])])
    costs = cum[g.ends[k]]
    best = int(np.argmin(costs))  # candidates descend: ties go to the highest θ
    now = cum[g.answered(n, current)]
    scale = float(np.abs(weights * gain).sum())
    if now <= costs[best] + 1e-12 * scale:
        return current, 0.0
    return float(g.cands[k][best]), float(now - costs[best])


@dataclass
class _Step:
    """What the backward pass proposes: best thresholds, the Gallager shift, the gap."""

    theta: dict[int, tuple[float, float]]  # active node → (best θ, linearised gain)
    shift: dict[int, tuple[int, np.ndarray, np.ndarray]]  # node → (cheapest hop, full
    #     shift per hop, how fast J falls per unit of probability moved from each hop)
    gap: float  # Σ_n t_n Σ_m p_nm (D_nm − D_min) / Λ: the first-order routing gap, ms
    free: bool = False  # an idle node changed its policy in place


def _backward(g: _Graph, pol: _Policy, st: _State, price: float,
              frozen: tuple[int, ...] = ()) -> _Step:
    """Final stage first: each node's marginal cost-to-go per sample, C_n, which is all it
    advertises upstream. A node that forwards nothing sends it all to its cheapest next
    hop, and one without arrivals also takes its best threshold for what it would get:
    neither changes J, so they move at once. Active nodes only propose; the caller keeps a
    proposal only if J falls."""
    nn = len(g.names)
    C = np.zeros((nn, g.n_samples))
    H = np.zeros(nn)  # curvature of the cost in the flow entering the node
    step = _Step({}, {}, 0.0)
    for n in reversed(g.order):
        base, q = g.service[n], 0.0
        if g.queued[n]:
            base += modelled_marginal(st.rho[n], g.service[n])
            q = _curvature(st.rho[n], g.service[n])
        exit_cost = price * g.loss_of[n]
        if g.final[n]:
            C[n], H[n] = base + exit_cost, q
            continue
        hops, om = g.hops[n], st.omega[n]
        ex = g.conf_of[n] >= pol.theta[n]
        going = np.where(ex, 0.0, om)
        kept = float(going.sum())
        going, kept = (going, kept) if kept > 0 else (om, float(om.sum()))
        D = g.links[n] + np.array([C[m] @ going for m in hops]) / kept  # one more via each
        b = int(np.argmin(D))
        t = float(st.W[n] @ ~ex)  # forwarded requests per ms
        if t <= g.idle and pol.p[n][b] != 1.0:
            pol.p[n] = np.zeros(len(hops))
            pol.p[n][b], step.free = 1.0, True
        F = np.full(g.n_samples, float(pol.p[n] @ g.links[n]))  # the going-on cost per sample
        for m, share in zip(hops, pol.p[n]):
            if share > 0:
                F += share * C[m]
        best = _best_threshold(g, n, om, exit_cost - F, pol.theta[n])
        if st.lam[n] <= g.idle:
            if best[0] != pol.theta[n] and n not in frozen:
                pol.theta[n], step.free = best[0], True
                ex = g.conf_of[n] >= best[0]
        else:
            step.theta[n] = best
            if len(hops) > 1 and t > g.idle:
                curv = t * (H[hops] + H[hops[b]])  # 0: no queue behind either hop
                with np.errstate(divide="ignore", invalid="ignore"):
                    full = np.where(curv > 0, (D - D[b]) / curv, 1.0)
                full[b] = 0.0
                step.shift[n] = (b, full, t * (D - D[b]) / g.total)
                step.gap += t * float(pol.p[n] @ (D - D[b])) / g.total
        C[n] = np.where(ex, exit_cost, F) + base
        H[n] = q + (float(om @ ~ex) / float(om.sum())) ** 2 * float(pol.p[n] ** 2 @ H[hops])
    return step


def _shifted(pol: _Policy, step: _Step, eta: float) -> tuple[_Policy, float, float]:
    """Gallager's move: from every next hop, min(p, η · full) to the cheapest one. Also the
    fall of J it predicts to first order, and the largest probability moved."""
    out, predicted, largest = pol.copy(), 0.0, 0.0
    for n, (b, full, slope) in step.shift.items():
        move = np.minimum(out.p[n], eta * full)
        move[b] = 0.0
        out.p[n] = out.p[n] - move
        out.p[n][b] += move.sum()
        predicted += float(move @ slope)
        largest = max(largest, float(move.max()))
    return out, predicted, largest


@dataclass
class _Run:
    policy: _Policy
    state: _State
    iterations: int
    converged: bool
    history: list[float]


def _descend(g: _Graph, pol: _Policy, price: float, max_iterations: int,
             tolerance: float, frozen: tuple[int, ...] = ()) -> _Run:
    """The distributed iteration from ``pol``; a move is kept only if the modelled J falls.
    Each iteration: the backward pass, then (1) every node's best threshold together with a
    Gallager step of η; if J does not fall, (2) the Gallager step alone, halving η until J
    falls by a third of the fall the step predicts (Armijo; η doubles after it), and
    failing that (3) one node's best threshold at a time, the largest predicted gain
    first, moved halfway back towards the current one until J falls. Stops (converged)
    when every threshold is its best response and the routing gap is ≤ tolerance · J, or
    when no move lowers J. ``frozen`` nodes keep their thresholds."""
    st = _flow(g, pol, price, True)
    history = [st.objective]
    eta, converged, it = 1.0, False, 0

    def better(cand: _Policy, by: float = 0.0) -> _State | None:
        """The full state of ``cand`` if it lowers J by more than ``by`` (and than rounding;
        tried on the cost alone first)."""
        if _flow(g, cand, price, True, False).objective \
                < st.objective - max(by, 1e-14 * max(1.0, st.objective)):
            return _flow(g, cand, price, True)
        return None

    for it in range(1, max_iterations + 1):
        step = _backward(g, pol, st, price, frozen)  # idle nodes have responded in place
        if step.free:  # (J moves by at most their tiny load)
            st = _flow(g, pol, price, True)
        for n in frozen:
            step.theta[n] = (pol.theta[n], 0.0)
        moves = {n: th for n, (th, _) in step.theta.items() if th != pol.theta[n]}
        routing_done = step.gap <= tolerance * st.objective
        if not moves and routing_done:
            converged = True
            break
        progress = False
        if moves:
            cand = _shifted(pol, step, eta)[0]
            for n, th in moves.items():
                cand.theta[n] = th
            if (new := better(cand)) is not None:
                pol, st, progress = cand, new, True
        if not progress and not routing_done:
            for _ in range(100):  # Armijo: J must fall by a third of what the step predicts
                cand, predicted, largest = _shifted(pol, step, eta)
                if largest <= 1e-12 or predicted <= 1e-14 * max(1.0, st.objective):
                    break  # (nothing left that rounding would not swallow)
                if (new := better(cand, predicted / 3.0)) is not None:
                    pol, st, progress, eta = cand, new, True, min(2.0 * eta, 1e3)
                    break
                eta /= 2.0
            eta = max(eta, 1e-6)
        for n in sorted(moves, key=lambda n: -step.theta[n][1]) if not progress else ():
            k = g.stage[n]
            now = int(np.flatnonzero(g.ends[k] == g.answered(n, pol.theta[n]))[0])
            to = int(np.flatnonzero(g.cands[k] == moves[n])[0])
            while to != now:
                cand = pol.copy()
                cand.theta[n] = float(g.cands[k][to])
                if (new := better(cand)) is not None:
                    pol, st, progress = cand, new, True
                    break
                to = now + (to - now) // 2 if abs(to - now) > 1 else now
        if not progress:
            converged = routing_done
            break
        history.append(st.objective)
    return _Run(pol, st, it, converged, history)


def _policy(g: _Graph, thresholds: Mapping[str, Any],
            offload: Mapping[str, Mapping[str, Any]] | None) -> _Policy:
    """A user's thresholds and offloading distributions as arrays, checked."""
    if not isinstance(thresholds, Mapping):
        raise DtoEeError(f"thresholds must map node names to a threshold in [0, 1], "
                         f"got {thresholds!r}")
    offload = {} if offload is None else offload
    if not isinstance(offload, Mapping):
        raise DtoEeError(f"offload must map node names to {{next hop: probability}}, "
                         f"got {offload!r}")
    for what, given in (("thresholds", thresholds), ("offload", offload)):
        for name in given:
            if name not in g.index:
                raise DtoEeError(f"{what}: no node {name!r} (nodes: {', '.join(g.names)})")
    theta = np.full(len(g.names), np.nan)
    p = [np.zeros(0) for _ in g.names]
    for n, name in enumerate(g.names):
        if name in thresholds:  # (a final-stage node's is checked, and has no effect)
            try:
                theta[n] = check_threshold(thresholds[name])
            except DtoEeError as exc:
                raise DtoEeError(f"thresholds: node {name!r}: {exc}") from None
        if g.final[n]:
            theta[n] = np.nan
            if offload.get(name):
                raise DtoEeError(f"offload: {name!r} is a final-stage node: it answers every "
                                 f"request and has no next hops")
            continue
        if name not in thresholds:
            raise DtoEeError(f"thresholds: node {name!r} has none; every node before the "
                             f"final stage needs a threshold in [0, 1]")
        hops = g.hop_names[n]
        dist = offload.get(name)
        if dist is None:
            if len(hops) > 1:
                raise DtoEeError(f"offload: node {name!r} has {len(hops)} next hops "
                                 f"({', '.join(hops)}) and needs a distribution over them")
            dist = {hops[0]: 1.0}
        if not isinstance(dist, Mapping):
            raise DtoEeError(f"offload: node {name!r} must map next hops to probabilities, "
                             f"got {dist!r}")
        q = np.zeros(len(hops))
        for hop, prob in dist.items():
            if hop not in hops:
                raise DtoEeError(f"offload: {hop!r} is not a next hop of {name!r} "
                                 f"(next hops: {', '.join(hops)})")
            q[hops.index(hop)] = _number(f"offload: the probability of {name!r} → {hop!r}",
                                         prob)
        if abs(q.sum() - 1.0) > _SUM_TOLERANCE:
            raise DtoEeError(f"offload: node {name!r}'s probabilities must sum to 1, "
                             f"got {q.sum():g}")
        p[n] = q / q.sum()
    return _Policy(theta, p)


def _evaluation(g: _Graph, pol: _Policy, price: float) -> Evaluation:
    st = _flow(g, pol, price, False)
    answered = np.where(st.exits, st.W, 0.0).sum(axis=1)
    by_stage = np.zeros(g.stages)
    np.add.at(by_stage, g.stage, answered)
    stable = not bool((g.queued & (st.lam > g.idle) & (st.rho >= 1.0)).any())
    delay = st.delay / g.total if stable else math.inf
    loss = st.loss / g.total
    return Evaluation(
        mean_delay_ms=delay, mean_loss=loss, objective=delay + price * loss, price=price,
        arrivals_per_ms={m: float(x) for m, x in zip(g.names, st.lam)},
        utilisation={m: float(x) for m, x in zip(g.names, st.rho)},
        wait_ms={m: float(x) for m, x in zip(g.names, st.wait)},
        exit_fraction={m: float(a / lam) if lam > g.idle else math.nan
                       for m, a, lam in zip(g.names, answered, st.lam)},
        answered_by_stage=tuple(float(x) for x in by_stage / g.total), stable=stable)


def evaluate(problem: Problem, thresholds: Mapping[str, float],
             offload: Mapping[str, Mapping[str, float]] | None, price: float) -> Evaluation:
    """The exact cost of a policy on the calibration samples: ``thresholds`` for every node
    before the final stage, ``offload`` a distribution over the next hops of every node
    that has more than one (one next hop: it gets everything)."""
    g = problem._graph
    return _evaluation(g, _policy(g, thresholds, offload), _check_price(price))


def _solution(g: _Graph, run: _Run, price: float) -> Solution:
    pol = run.policy
    return Solution(
        thresholds={m: float(pol.theta[n]) for n, m in enumerate(g.names) if not g.final[n]},
        offload={m: {h: float(x) for h, x in zip(g.hop_names[n], pol.p[n])}
                 for n, m in enumerate(g.names) if not g.final[n]},
        evaluation=_evaluation(g, pol, price), iterations=run.iterations,
        converged=run.converged, history=tuple(run.history))


def _check_run(max_iterations: Any, tolerance: Any, search: Any) -> None:
    for what, x in (("max_iterations", max_iterations), ("search", search)):
        if isinstance(x, bool) or not isinstance(x, numbers.Integral) \
                or x < (1 if what == "max_iterations" else 0):
            raise DtoEeError(f"{what} must be an integer >= "
                             f"{1 if what == 'max_iterations' else 0}, got {x!r}")
    _number("tolerance", tolerance, positive=True)


def _starts(g: _Graph) -> list[_Policy]:
    """Two opposite starts, uniform offloading: every request answered at its robot
    (θ = 0), and every request sent on as far as thresholds allow (θ = 1)."""
    p = [np.full(len(h), 1.0 / len(h)) if len(h) else np.zeros(0) for h in g.hops]
    return [_Policy(np.where(g.final, np.nan, theta), [q.copy() for q in p])
            for theta in (0.0, 1.0)]


def _chain(first: _Run, then: _Run) -> _Run:
    """``then`` continued from where ``first`` ended: one path, one history."""
    return _Run(then.policy, then.state, first.iterations + then.iterations, then.converged,
                first.history + then.history)


def _search(g: _Graph, run: _Run, price: float, search: int, max_iterations: int,
            tolerance: float) -> _Run:
    """The outer search against local optima in the thresholds: one node at a time moves
    its threshold to another candidate (at most ``search`` of 0, 1 and its population's
    confidences, spread evenly) and holds it while the others re-optimise (the distributed
    iteration, to a coarse tolerance); if J ends lower, everything is released and
    re-optimised, and the search starts again. Stops when no node's move helps."""
    best = run
    while search:
        for n in (n for n in g.order if not g.final[n]):
            seen = g.conf_of[n][best.state.omega[n] > 0]  # its population's confidences
            values = np.unique(np.concatenate([seen, [0.0, 1.0]]))[::-1]
            pick = values[np.unique(np.linspace(0, len(values) - 1, search).round().astype(int))]
            now = np.count_nonzero(seen >= best.policy.theta[n])
            lower = best.state.objective * (1.0 - 1e-12)
            for theta in pick:
                if np.count_nonzero(seen >= theta) == now:
                    continue
                pol = best.policy.copy()
                pol.theta[n] = float(theta)
                held = _descend(g, pol, price, min(40, max_iterations), 1e-4, frozen=(n,))
                if held.state.objective < lower:
                    free = _descend(g, held.policy, price, max_iterations, tolerance)
                    if free.state.objective < lower:
                        best = _chain(best, _Run(free.policy, free.state,
                                                 held.iterations + free.iterations,
                                                 free.converged, free.history))
                        break
            else:
                continue
            break  # a node moved: start the search again
        else:
            break
    return best


def _optimise(g: _Graph, price: float, search: int, max_iterations: int,
              tolerance: float) -> tuple[_Run, list[_Run]]:
    """The best run and every run met: the starts and the searched one."""
    runs = [_descend(g, start, price, max_iterations, tolerance) for start in _starts(g)]
    best = _search(g, min(runs, key=lambda r: r.state.objective), price, search,
                   max_iterations, tolerance)
    return best, runs + [best]


def optimise(problem: Problem, price: float, *, search: int = 16,
             max_iterations: int = 1000, tolerance: float = 1e-6) -> Solution:
    """Thresholds and offloading minimising J = mean delay + price · mean loss (module doc):
    the distributed iteration from two starts, the better one searched further (``search``
    candidate thresholds per node, 0: no search). ``iterations``, ``converged`` and
    ``history`` describe the path to the result."""
    price = _check_price(price)
    _check_run(max_iterations, tolerance, search)
    g = problem._graph
    return _solution(g, _optimise(g, price, search, max_iterations, tolerance)[0], price)


def reoptimise(problem: Problem, solution: Solution, *, price: float | None = None,
               search: int = 0, max_iterations: int = 1000,
               tolerance: float = 1e-6) -> Solution:
    """Go on from ``solution``'s policy on ``problem`` (the same nodes and next hops, new
    arrivals or service times: what the nodes observe online), at its price unless
    ``price`` is given. By default only the distributed iteration runs (what the nodes
    do online); it stays in the previous policy's basin, ``search`` > 0 looks further."""
    price = solution.evaluation.price if price is None else _check_price(price)
    _check_run(max_iterations, tolerance, search)
    g = problem._graph
    run = _descend(g, _policy(g, solution.thresholds, solution.offload), price,
                   max_iterations, tolerance)
    return _solution(g, _search(g, run, price, search, max_iterations, tolerance), price)


def solve_for_loss(problem: Problem, loss_budget: float, *, max_price: float = 1e9,
                   price_tolerance: float = 1e-4, search: int = 16,
                   max_iterations: int = 1000, tolerance: float = 1e-6
                   ) -> tuple[Solution, float]:
    """The least mean delay with mean loss ≤ ``loss_budget``: bisection on the price μ (a
    higher μ answers later and loses less), first with the distributed iteration alone to
    a relative 1e-2 (cheap), then with ``optimise``'s search to ``price_tolerance``. Every
    run met is a candidate; returns the stable one within budget of least delay and the μ
    it was found at. Like any price it reaches the points of the lower convex hull of the
    delay–loss curve: between two of them some delay may be left unused (method doc)."""
    budget = _number("the loss budget", loss_budget)
    _number("max_price", max_price, positive=True)
    _number("price_tolerance", price_tolerance, positive=True)
    _check_run(max_iterations, tolerance, search)
    g = problem._graph
    found: list[tuple[float, float, _Run]] = []  # (true delay, price, run) within budget
    met: list[Evaluation] = []
    known: dict[tuple[float, int], bool] = {}

    def feasible(mu: float, depth: int) -> bool:
        if (mu, depth) not in known:
            known[mu, depth] = False
            for run in _optimise(g, mu, depth, max_iterations, tolerance)[1]:
                met.append(ev := _evaluation(g, run.policy, mu))
                if ev.mean_loss <= budget + 1e-12:
                    known[mu, depth] = True
                    found.append((ev.mean_delay_ms, mu, run))
        return known[mu, depth]

    def settle(lo: float, hi: float, depth: int) -> tuple[float, float]:
        """A bracket at this depth: lo (0 or infeasible) < hi feasible (hi = 0: μ = 0 is)."""
        if hi == 0.0:
            if feasible(0.0, depth):
                return 0.0, 0.0
            first = min(met, key=lambda e: e.objective)  # where loss weighs as much as delay
            hi = max(first.mean_delay_ms if first.stable else 1.0, 1e-9) / max(
                first.mean_loss, 1e-12)
        while not feasible(hi, depth):
            lo, hi = hi, 2.0 * hi
            if hi > max_price:
                raise DtoEeError(
                    f"a mean loss of at most {budget:g} cannot be reached: up to a price of "
                    f"{max_price:g} ms per unit loss the least mean loss is "
                    f"{min(e.mean_loss for e in met):g} (the final exit's own is "
                    f"{g.loss[:, -1].mean():g}; requests with confidence 1 answer wherever "
                    f"they are)")
        while lo > 0.0 and feasible(lo, depth):
            lo, hi = (lo / 2.0 if lo > 1e-12 * hi else 0.0), lo
        if lo == 0.0 and feasible(0.0, depth):
            return 0.0, 0.0
        return lo, hi

    def narrow(lo: float, hi: float, depth: int, rtol: float) -> tuple[float, float]:
        while hi - lo > rtol * hi and hi > 1e-12 * max(hi, 1.0):
            mid = 0.5 * (lo + hi) if lo == 0.0 else math.sqrt(lo * hi)
            lo, hi = (lo, mid) if feasible(mid, depth) else (mid, hi)
        return lo, hi

    lo, hi = narrow(*settle(0.0, 0.0, 0), 0, max(price_tolerance, 1e-2))
    narrow(*settle(lo, hi, search), search, price_tolerance)
    delay, mu, run = min(found, key=lambda f: (f[0], f[1]))
    if not math.isfinite(delay):
        raise DtoEeError(f"a mean loss of at most {budget:g} needs more traffic at the later "
                         f"stages than their nodes can serve (a queue at ρ ≥ 1): raise the "
                         f"budget or add capacity")
    return _solution(g, run, mu), mu
