"""An inference delivery network over the fleet topology: where each policy variant lives,
how a request is served, and the placement policies that decide what every node holds.

Each robot is a node too (it can hold what fits ``robot_params``). A request of robot ``ρ``
on task ``t`` from access node ``a`` travels ``ρ → a → … → top``; the top node is the
**repository**: it holds every variant of the catalogue and is not placed. Every node on
the path that holds a variant ``m`` of ``t`` offers it with gain

    gain(v, m) = success(m) − λ · latency(v, m),   latency = expected round trip robot→v
                                                      + m.ms / speed(v)

and the request is served by the best-gain option held and loaded (the repository's best is
always there). INFIDA's allocation gain of a request is that gain above the repository's
(``idn_place.gain``), concave in a fractional allocation.

Placement policies (``PLACERS``), each asked once a period for the next integral allocation
from the requests of the period just ended:

- ``idn`` (INFIDA): every node keeps a fractional allocation, takes one mirror-ascent step on
  the subgradient of the period's gain (each node's component needs only the requests that
  passed it and the fractional holdings of the nodes below it on their paths: the neighbour
  information of the paper) and samples its models by DepRound (``idn_place``), renewing
  the draw's random numbers every ``REFRESH`` periods so that models move when the
  fractional allocation does, not on every coin (docs/method.md §10);
- ``idn_static``: one allocation for the whole run, optimised offline for the run's average
  request mix (an oracle that knows the future mix, not its order);
- ``idn_greedy``: each node holds the best-gain variant of its most requested tasks first,
  from the previous period's counts, until its capacity is used;
- ``idn_cloud``: nothing outside the repository;
- ``idn_robot``: each robot holds the best variant of its task that fits it and serves
  every request itself.

Loading a model a node did not hold takes ``load_ms_per_mparam`` per million parameters;
until then the node cannot serve it (``Holdings``). No torch, no ROS.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from hybrid_policy.families.idn import place as idn_place
from hybrid_policy.families.idn.catalogue import Catalogue, Variant
from hybrid_policy.core.link import expected_ms
from hybrid_policy.families.idn.names import MODES as IDN_MODES
from hybrid_policy.core.topology import Robot, Topology, TopologyError, check_keys

# A period's observed requests: (robot, task, access node) -> how many.
Counts = Counter


@dataclass(frozen=True)
class Shift:
    """At ``at_s`` seconds of the run, ``robots`` switch to ``task`` and/or move to the cell of
    access node ``access`` (empty: unchanged)."""

    at_s: float
    robots: tuple[str, ...]
    task: str = ""
    access: str = ""


@dataclass(frozen=True)
class IdnConfig:
    """The topology's ``idn`` block."""

    period_ms: float = 2000.0  # placement is decided once per period
    latency_weight: float = 0.005  # λ: gain lost per ms of latency
    robot_params: int = 20000  # what a robot can hold
    robot_speed: float = 1.0  # a robot's compute speed relative to this machine
    load_ms_per_mparam: float = 500.0  # loading a model takes this per million parameters
    eta: float = 10.0  # INFIDA's mirror-ascent step, on the gain per request (docs/method.md)
    shifts: tuple[Shift, ...] = ()

    def load_ms(self, params: int) -> float:
        return params / 1e6 * self.load_ms_per_mparam


class IdnError(TopologyError):
    pass


_CONFIG_KEYS = {"period_ms", "latency_weight", "robot_params", "robot_speed",
                "load_ms_per_mparam", "eta", "shifts"}


def parse_config(topo: Topology, doc: Any) -> IdnConfig:
    where = f"{topo.path}: idn"
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise IdnError(f"{where}: expected a mapping ({', '.join(sorted(_CONFIG_KEYS))})")
    check_keys(doc, where, set(), _CONFIG_KEYS, IdnError)
    out = {}
    for key, low, strict in (("period_ms", 0.0, True), ("latency_weight", 0.0, False),
                             ("robot_speed", 0.0, True), ("load_ms_per_mparam", 0.0, False),
                             ("eta", 0.0, True)):
        if key in doc:
            v = doc[key]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
                    or v < low or (strict and v == low):
                raise IdnError(f"{where}: {key} must be a number {'>' if strict else '>='} "
                               f"{low:g}, got {v!r}")
            out[key] = float(v)
    if "robot_params" in doc:
        v = doc["robot_params"]
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise IdnError(f"{where}: robot_params must be a whole number >= 0 (parameters a "
                           f"robot can hold), got {v!r}")
        out["robot_params"] = v
    out["shifts"] = tuple(_shift(topo, where, i, s) for i, s in enumerate(doc.get("shifts", [])))
    return IdnConfig(**out)


def _shift(topo: Topology, where: str, i: int, spec: Any) -> Shift:
    entry = f"{where}: shifts[{i}]"
    if not isinstance(spec, dict) or "at_s" not in spec or "robots" not in spec \
            or not set(spec) <= {"at_s", "robots", "task", "access"}:
        raise IdnError(f"{entry}: expected {{at_s, robots, task?, access?}}")
    at = spec["at_s"]
    if isinstance(at, bool) or not isinstance(at, (int, float)) or at < 0:
        raise IdnError(f"{entry}: at_s must be a time in seconds >= 0, got {at!r}")
    names = {r.name for r in topo.robots}
    robots = spec["robots"]
    if not isinstance(robots, list) or not robots or any(r not in names for r in robots):
        raise IdnError(f"{entry}: robots must list robots of the topology; robots: "
                       f"{', '.join(sorted(names))}")
    from sim_envs import task_names

    task, access = str(spec.get("task", "")), str(spec.get("access", ""))
    if task and task not in task_names():
        raise IdnError(f"{entry}: unknown task {task!r}; valid: {', '.join(task_names())}")
    if access and access not in topo.nodes:
        raise IdnError(f"{entry}: access {access!r} is not a node; nodes: "
                       f"{', '.join(topo.nodes)}")
    if not task and not access:
        raise IdnError(f"{entry}: a shift changes the robots' task, their access node or both")
    return Shift(float(at), tuple(robots), task, access)


def config_of(topo: Topology, doc: dict) -> IdnConfig:
    return parse_config(topo, doc.get("idn", {}))


# -- the network -------------------------------------------------------------------------
@dataclass(frozen=True)
class Option:
    """One way to serve a request: ``variant`` at ``node``; ``slot`` -1 = the repository."""

    node: str
    variant: Variant
    slot: int
    latency_ms: float
    gain: float


@dataclass
class Where:
    """A robot's current task and cell (what shifts change)."""

    task: str
    access: str


class IdnNetwork:
    """Slots, paths and gains of one topology and catalogue (module doc)."""

    def __init__(self, topology: Topology, catalogue: Catalogue, cfg: IdnConfig) -> None:
        self.topology, self.catalogue, self.cfg = topology, catalogue, cfg
        roots = [n for n, node in topology.nodes.items() if not node.parent]
        if len(roots) != 1:
            raise IdnError(f"{topology.path}: an inference delivery network needs one top node "
                           f"(the repository) above every other; found {', '.join(roots)}")
        self.repository = roots[0]
        clash = sorted({r.name for r in topology.robots} & set(topology.nodes))
        if clash:
            raise IdnError(f"{topology.path}: robot and node names must differ: {clash[0]}")
        for task in {r.task for r in topology.robots} | {s.task for s in cfg.shifts if s.task}:
            catalogue.of(task)  # every task a robot runs needs variants
        self.robots = {r.name: r for r in topology.robots}
        self.slots: list[tuple[str, Variant]] = []
        self.nodes: list[idn_place.NodeSlots] = []
        for node, capacity in self._capacities().items():
            fits = [v for v in catalogue.variants if v.params <= capacity]
            if not fits:
                continue
            first = len(self.slots)
            self.slots += [(node, v) for v in fits]
            self.nodes.append(idn_place.NodeSlots(
                node, np.arange(first, len(self.slots)), np.array([v.params for v in fits], float),
                float(capacity)))
        self.slot_of = {(n, v.key): i for i, (n, v) in enumerate(self.slots)}
        self._options: dict[tuple[str, str, str], tuple[list[Option], Option]] = {}

    def _capacities(self) -> dict[str, int]:
        total = sum(v.params for v in self.catalogue.variants)
        caps = {r.name: self.cfg.robot_params for r in self.topology.robots}
        for name, node in self.topology.nodes.items():
            if name != self.repository:
                caps[name] = node.memory_params or total
        return caps

    def start(self) -> dict[str, Where]:
        return {r.name: Where(r.task, r.access) for r in self.topology.robots}

    def robot_at(self, robot: str, access: str) -> Robot:
        return replace(self.robots[robot], access=access, server=access, reach=(access,))

    def speed(self, node: str) -> float:
        return self.cfg.robot_speed if node in self.robots else self.topology.nodes[node].speed

    def path(self, robot: str, access: str) -> list[str]:
        up, node = [access], self.topology.nodes[access].parent
        while node:
            up.append(node)
            node = self.topology.nodes[node].parent
        return [robot, *up]

    def options(self, robot: str, where: Where) -> tuple[list[Option], Option]:
        """Every placeable option of a request, best first, and the repository's best."""
        key = (robot, where.task, where.access)
        if key not in self._options:
            from hybrid_policy.families.idn.catalogue import message_bytes

            spec = self.robot_at(robot, where.access)
            opts, base = [], None
            for node in self.path(robot, where.access):
                for v in self.catalogue.of(where.task):
                    up, down = message_bytes(v)
                    rtt = 0.0 if node == robot else expected_ms(
                        self.topology.links_between(spec, node), up, down)
                    lat = rtt + v.step_ms(self.speed(node))
                    o = Option(node, v, self.slot_of.get((node, v.key), -1), lat,
                               v.success - self.cfg.latency_weight * lat)
                    if node == self.repository:
                        base = o if base is None or o.gain > base.gain else base
                    elif o.slot >= 0:
                        opts.append(o)
            opts.sort(key=lambda o: -o.gain)
            self._options[key] = (opts, base)
        return self._options[key]

    def demands(self, counts: Counts, where: dict[str, Where] | None = None
                ) -> list[idn_place.Demand]:
        out = []
        for (robot, task, access), n in counts.items():
            opts, base = self.options(robot, Where(task, access))
            out.append(idn_place.demand(float(n), [(o.slot, o.gain) for o in opts], base.gain))
        return out

    def serve(self, available: np.ndarray, robot: str, where: Where,
              local_only: bool = False) -> Option:
        """The best-gain option held and loaded (``available``), else the repository's;
        ``local_only``: the robot's own best, the repository only when it holds none."""
        opts, base = self.options(robot, where)
        for o in opts:
            if available[o.slot] and (not local_only or o.node == robot):
                if local_only or o.gain > base.gain:
                    return o
        return base


# -- what nodes hold, and loading ----------------------------------------------------------
@dataclass
class Holdings:
    """The integral allocation in force and when each newly loaded model becomes usable."""

    network: IdnNetwork
    x: np.ndarray = field(init=False)
    ready_ms: np.ndarray = field(init=False)
    loads: int = 0
    load_ms: float = 0.0

    def __post_init__(self) -> None:
        n = len(self.network.slots)
        self.x = np.zeros(n, np.int8)
        self.ready_ms = np.zeros(n)

    def apply(self, x: np.ndarray, now_ms: float) -> list[int]:
        """Hold ``x`` from ``now_ms``: drop what it leaves out at once, start loading what it
        adds. Returns the slots that load."""
        x = np.asarray(x, np.int8)
        new = np.nonzero((x == 1) & (self.x == 0))[0]
        for s in new:
            ms = self.network.cfg.load_ms(self.network.slots[s][1].params)
            self.ready_ms[s] = now_ms + ms
            self.load_ms += ms
        self.loads += len(new)
        self.x = x.copy()
        return new.tolist()

    def available(self, now_ms: float) -> np.ndarray:
        return (self.x == 1) & (self.ready_ms <= now_ms)

    def held(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for s in np.nonzero(self.x)[0]:
            node, v = self.network.slots[s]
            out.setdefault(node, []).append(v.key)
        return out


# -- placement policies --------------------------------------------------------------------
class InfidaPlacer:
    name = "idn"
    local_only = False

    def __init__(self, net: IdnNetwork, seed: int, **_: Any) -> None:
        self.net = net
        self.infida = idn_place.Infida(net.nodes, len(net.slots), net.cfg.eta, floor=FLOOR)
        self.seed, self.period = seed, 0

    def decide(self, counts: Counts) -> np.ndarray:
        demands = self.net.demands(counts)
        total = sum(d.weight for d in demands)
        if total > 0:
            self.infida.step(idn_place.subgradient(self.infida.y, demands) / total)
        # the same random numbers for REFRESH periods (module doc): each period's draw is
        # still DepRound's, with E[x] = y, but a node swaps models only when y moved or
        # the numbers are renewed
        self.period += 1
        return self.infida.sample(np.random.default_rng(
            [self.seed, 0x1D7, self.period // REFRESH]))


class GreedyPlacer:
    name = "idn_greedy"
    local_only = False

    def __init__(self, net: IdnNetwork, seed: int, **_: Any) -> None:
        self.net = net

    def decide(self, counts: Counts) -> np.ndarray:
        x = np.zeros(len(self.net.slots), np.int8)
        for ns in self.net.nodes:
            seen: Counter = Counter()  # task -> requests through this node
            gains: dict[int, float] = Counter()  # slot -> request-weighted gain here
            for (robot, task, access), n in counts.items():
                opts, _ = self.net.options(robot, Where(task, access))
                here = [o for o in opts if o.node == ns.name]
                if here:
                    seen[task] += n
                    for o in here:
                        gains[o.slot] += n * o.gain
            left = ns.capacity
            for task, _ in seen.most_common():
                fits = [s for s in ns.slots if self.net.slots[s][1].task == task
                        and self.net.slots[s][1].params <= left and s in gains]
                if fits:
                    best = max(fits, key=lambda s: gains[s])
                    x[best] = 1
                    left -= self.net.slots[best][1].params
        return x


class StaticPlacer:
    name = "idn_static"
    local_only = False

    def __init__(self, net: IdnNetwork, seed: int, average: Counts | None = None,
                 **_: Any) -> None:
        if not average:
            raise IdnError("idn_static needs the run's average request mix to optimise for")
        self.x = optimise(net, average, seed)

    def decide(self, counts: Counts) -> np.ndarray:
        return self.x


class CloudPlacer:
    name = "idn_cloud"
    local_only = False

    def __init__(self, net: IdnNetwork, seed: int, **_: Any) -> None:
        self.n = len(net.slots)

    def decide(self, counts: Counts) -> np.ndarray:
        return np.zeros(self.n, np.int8)


class RobotPlacer:
    name = "idn_robot"
    local_only = True

    def __init__(self, net: IdnNetwork, seed: int, **_: Any) -> None:
        self.net = net
        self.tasks = {r: w.task for r, w in net.start().items()}

    def decide(self, counts: Counts) -> np.ndarray:
        for (robot, task, _), _n in counts.items():
            self.tasks[robot] = task  # the task it runs now
        x = np.zeros(len(self.net.slots), np.int8)
        for robot, task in self.tasks.items():
            mine = [s for (node, v), s in ((self.net.slots[s], s) for s in range(len(x)))
                    if node == robot and v.task == task]
            if mine:
                x[max(mine, key=lambda s: self.net.slots[s][1].success)] = 1
        return x


REFRESH = 10  # periods between renewals of the rounding's random numbers
FLOOR = 1e-2  # INFIDA's floor on y: how fast a dropped model can come back
PLACERS = {p.name: p for p in (InfidaPlacer, StaticPlacer, GreedyPlacer, CloudPlacer,
                               RobotPlacer)}
assert tuple(PLACERS) == IDN_MODES


def optimise(net: IdnNetwork, counts: Counts, seed: int, steps: int = 400,
             samples: int = 64) -> np.ndarray:
    """A good integral allocation for a fixed request mix: INFIDA's fractional optimum
    (``steps`` mirror-ascent steps on the mix), then the best of ``samples`` DepRound draws
    and of a greedy rounding of it, by the mix's gain."""
    demands = net.demands(counts)
    total = sum(d.weight for d in demands)
    inf = idn_place.Infida(net.nodes, len(net.slots), net.cfg.eta)
    for _ in range(steps):
        inf.step(idn_place.subgradient(inf.y, demands) / total)
    rng = np.random.default_rng([seed, 0x57A71C])
    best = _round_greedy(net, inf.y)
    for _ in range(samples):
        x = inf.sample(rng)
        if idn_place.gain(x, demands) > idn_place.gain(best, demands):
            best = x
    return np.asarray(best, np.int8)


def _round_greedy(net: IdnNetwork, y: np.ndarray) -> np.ndarray:
    x = np.zeros(len(y), np.int8)
    for ns in net.nodes:
        left = ns.capacity
        for i in np.argsort(-y[ns.slots], kind="stable"):
            if ns.sizes[i] <= left:
                x[ns.slots[i]] = 1
                left -= ns.sizes[i]
    return x


def make_placer(name: str, net: IdnNetwork, seed: int, average: Counts | None = None):
    if name not in PLACERS:
        raise IdnError(f"unknown placement mode {name!r}; valid: {', '.join(PLACERS)}")
    return PLACERS[name](net, seed, average=average)
