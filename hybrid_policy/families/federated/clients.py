"""The federation: its clients (the topology's robots), their data and serving rates, and
the weights of the training objective. Torch-free.

Objective (docs/families/federated.md): the expected loss of the requests as they are served,

    F(θ) = Σ_i Σ_k α_ik F_ik(θ),   α_ik = λ_i ρ_ik / Σ_j λ_j,

with λ_i client i's request rate, ρ_ik the share of its requests exit k serves (its serving
rates, Σ_k ρ_ik = 1) and F_ik exit k's loss on client i's data. ``serving_rate`` trains each
client on Σ_k ρ_ik F_ik and averages each block of the net over the clients by the requests
that block serves there (``block_weights``); ``fedavg`` trains every exit alike and averages
by data size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from hybrid_policy.core.topology import check_keys
from hybrid_policy.errors import HybridPolicyError

METHODS = ("serving_rate", "fedavg", "central", "local")
FEDERATED = ("serving_rate", "fedavg")  # the methods that run through Flower
PARTITIONS = ("direction", "iid")
RATE_TOLERANCE = 1e-3


class FederatedError(HybridPolicyError, ValueError):
    """A federation that cannot train: no clients, a client without data, bad rates."""


@dataclass(frozen=True)
class Client:
    name: str
    data_share: float  # share of the federation's demonstration episodes it holds
    requests: float  # its request rate λ (relative to the other clients')
    serving_rates: tuple[float, ...] | None  # ρ: share of its requests each exit serves
    region: int  # the part of the task's scenes its data (and its requests) come from


@dataclass(frozen=True)
class Federation:
    path: str
    task: str
    exits: tuple[int, ...]
    episodes: int  # demonstration episodes shared out among the clients
    partition: str
    clients: tuple[Client, ...]
    local_epochs: int = 1
    lr: float = 1e-3
    batch_size: int = 256

    def client(self, name: str) -> Client:
        for c in self.clients:
            if c.name == name:
                return c
        raise FederatedError(f"{self.path}: no client {name!r}; clients: "
                             f"{', '.join(c.name for c in self.clients)}")

    def rates(self) -> dict[str, tuple[float, ...]]:
        missing = [c.name for c in self.clients if c.serving_rates is None]
        if missing:
            raise FederatedError(
                f"{self.path}: no serving rates for {', '.join(missing)}: declare "
                "federated.clients.<name>.serving_rates or pass a serving log (--serving-log)")
        return {c.name: c.serving_rates for c in self.clients}


def check_rates(where: str, rates: Any, exits: Sequence[int]) -> tuple[float, ...]:
    """Serving rates: one share per exit, each in [0, 1], summing to 1."""
    if not isinstance(rates, (list, tuple)) or len(rates) != len(exits):
        raise FederatedError(f"{where}: serving rates must list {len(exits)} shares, one per "
                             f"exit {list(exits)}; got {rates!r}")
    try:
        out = tuple(float(r) for r in rates)
    except (TypeError, ValueError):
        raise FederatedError(f"{where}: serving rates must be numbers; got {rates!r}") from None
    if not all(math.isfinite(r) and 0.0 <= r <= 1.0 for r in out):
        raise FederatedError(f"{where}: each serving rate must be in [0, 1]; got {list(out)}")
    if abs(sum(out) - 1.0) > RATE_TOLERANCE:
        raise FederatedError(f"{where}: serving rates must sum to 1 (every request is served "
                             f"by one exit); {list(out)} sum to {sum(out):.4f}")
    return out


def _number(where: str, value: Any, low: float, integer: bool = False) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        x = math.nan
    if not math.isfinite(x) or x < low or (integer and x != int(x)):
        kind = "an integer" if integer else "a number"
        raise FederatedError(f"{where}: must be {kind} >= {low}; got {value!r}")
    return x


CLIENT_KEYS = {"data", "requests", "serving_rates", "region"}
KEYS = {"task", "exits", "episodes", "partition", "clients", "local_epochs", "lr", "batch_size"}


def parse(doc: Any, where: str) -> Federation:
    """The ``federated`` block of a topology document (its robots already validated)."""
    from hybrid_policy.core import topology

    return parse_block(topology.parse(doc, where))


def parse_block(topo) -> Federation:
    """The ``federated`` block of a parsed topology."""
    where = topo.path
    spec = topo.blocks.get("federated")
    if not isinstance(spec, dict) or not spec.get("clients"):
        raise FederatedError(f"{where}: no clients: federated training needs a 'federated' "
                             "block whose 'clients' maps robot names to their data share and "
                             "serving rates (see config/federated.yaml)")
    check_keys(spec, f"{where}: federated", set(), KEYS, FederatedError)
    if not isinstance(spec["clients"], dict):
        raise FederatedError(f"{where}: federated.clients must map robot names to settings")
    robots = {r.name: r for r in topo.robots}
    tasks = {robots[n].task for n in spec["clients"] if n in robots}
    task = str(spec.get("task", next(iter(tasks), "")))
    try:
        exits = tuple(int(e) for e in spec.get("exits", (1, 2, 4)))
    except (TypeError, ValueError):
        exits = ()
    if not exits or list(exits) != sorted(set(exits)) or exits[0] < 1:
        raise FederatedError(f"{where}: federated.exits must be rising layer counts >= 1 "
                             f"(e.g. [1, 2, 4]); got {spec.get('exits')!r}")
    partition = spec.get("partition", "direction")
    if partition not in PARTITIONS:
        raise FederatedError(f"{where}: federated.partition {partition!r}; valid: "
                             f"{', '.join(PARTITIONS)}")
    clients = []
    for i, (name, c) in enumerate(spec["clients"].items()):
        entry = f"{where}: federated.clients.{name}"
        if name not in robots:
            raise FederatedError(f"{entry}: not a robot of the topology; robots: "
                                 f"{', '.join(robots)}")
        if robots[name].task != task:
            raise FederatedError(f"{entry}: runs {robots[name].task}, the federation trains "
                                 f"{task}")
        c = {} if c is None else c
        if not isinstance(c, dict) or set(c) - CLIENT_KEYS:
            raise FederatedError(f"{entry}: expected a mapping with keys among "
                                 f"{', '.join(sorted(CLIENT_KEYS))}; got {c!r}")
        share = _number(f"{entry}.data", c.get("data", 1.0 / len(spec["clients"])), 0.0)
        if share <= 0:
            raise FederatedError(f"{entry}: a client with no data (data: {share}) cannot "
                                 "train; give it a share > 0 or leave it out of the federation")
        rates = c.get("serving_rates")
        clients.append(Client(
            str(name), share, _number(f"{entry}.requests", c.get("requests", 1.0), 0.0),
            None if rates is None else check_rates(f"{entry}.serving_rates", rates, exits),
            int(_number(f"{entry}.region", c.get("region", i), 0, integer=True))))
    total = sum(c.data_share for c in clients)
    if total > 1.0 + RATE_TOLERANCE:
        raise FederatedError(f"{where}: the clients' data shares sum to {total:.3f}; they "
                             "share out one set of demonstrations, so at most 1")
    if sum(c.requests for c in clients) <= 0:
        raise FederatedError(f"{where}: every client has request rate 0: nothing is served")
    return Federation(
        where, task, exits,
        int(_number(f"{where}: federated.episodes", spec.get("episodes", 300), 1, True)),
        partition, tuple(clients),
        int(_number(f"{where}: federated.local_epochs", spec.get("local_epochs", 1), 1, True)),
        _number(f"{where}: federated.lr", spec.get("lr", 1e-3), 0.0),
        int(_number(f"{where}: federated.batch_size", spec.get("batch_size", 256), 1, True)))


def load(path: str | Path) -> Federation:
    from hybrid_policy.core import topology

    return parse(topology.read(path), str(path))


# -- serving logs: measured serving rates ---------------------------------------------------

def serving_log(doc: Mapping[str, Any], mode: str) -> dict[str, dict[int, int]]:
    """Steps each exit served per robot, from ``hybrid-policy eval --topology F --json``'s
    report of an early-exit mode (its robots' ``steps`` and ``exit_shares``)."""
    try:
        robots = doc["modes"][mode]["robots"]
    except (KeyError, TypeError):
        modes = ", ".join(doc.get("modes", {})) if isinstance(doc, Mapping) else ""
        raise FederatedError(f"the serving log has no robots of mode {mode!r}; modes there: "
                             f"{modes or 'none'} (write one with eval --topology F --modes "
                             f"{mode} --json FILE)") from None
    out = {}
    for r in robots:
        if "exit_shares" not in r:
            raise FederatedError(f"the serving log's robot {r.get('robot')} has no exit shares:"
                                 f" {mode} is not an early-exit mode")
        out[str(r["robot"])] = {int(k): round(v * r["steps"]) for k, v in r["exit_shares"].items()}
    return out


def rates_from_log(log: Mapping[str, Mapping[int, int]], exits: Sequence[int]
                   ) -> tuple[dict[str, tuple[float, ...]], dict[str, float]]:
    """Serving rates ρ_ik = served_ik / Σ_k served_ik and request rates λ_i = Σ_k served_ik /
    Σ_jk served_jk from per-robot counts of the steps each exit served."""
    rates, requests = {}, {}
    total = sum(sum(c.values()) for c in log.values())
    for robot, counts in log.items():
        unknown = sorted(set(counts) - set(exits))
        if unknown:
            raise FederatedError(f"serving log: robot {robot} was served by exit {unknown[0]}, "
                                 f"which the net does not have; exits {list(exits)}")
        n = sum(counts.values())
        if n <= 0:
            raise FederatedError(f"serving log: robot {robot} has no served steps")
        rates[robot] = tuple(counts.get(e, 0) / n for e in exits)
        requests[robot] = n / total
    return rates, requests


def with_serving(fed: Federation, rates: Mapping[str, Sequence[float]],
                 requests: Mapping[str, float] | None = None) -> Federation:
    """The federation with measured serving (and request) rates in place of declared ones."""
    missing = [c.name for c in fed.clients if c.name not in rates]
    if missing:
        raise FederatedError(f"the serving log has no steps of client(s) {', '.join(missing)}")
    return replace(fed, clients=tuple(
        replace(c, serving_rates=check_rates(f"serving log: {c.name}", list(rates[c.name]),
                                             fed.exits),
                requests=c.requests if requests is None else float(requests[c.name]))
        for c in fed.clients))


# -- the objective's weights ----------------------------------------------------------------

def objective_weights(fed: Federation) -> np.ndarray:
    """α [clients, exits]: the share of all requests that client i sends and exit k serves."""
    rates = fed.rates()
    lam = np.array([c.requests for c in fed.clients])
    return lam[:, None] * np.array([rates[c.name] for c in fed.clients]) / lam.sum()


def local_exit_weights(fed: Federation, client: str, method: str) -> tuple[float, ...]:
    """The weights of a client's exit losses: its serving rates (``serving_rate``, ``local``)
    or all alike (``fedavg``, ``central``)."""
    if method in ("serving_rate", "local"):
        rates = fed.client(client).serving_rates
        if rates is None:
            fed.rates()  # raises: says where rates come from
        return tuple(rates)
    return tuple(1.0 for _ in fed.exits)


def block_of(key: str, exits: Sequence[int]) -> tuple[str, int]:
    """The block of the early-exit net a state-dict key belongs to, and the deepest layer
    count that reads it: ('embed', 0), ('layer', l) or ('exit', k's layer)."""
    head, _, rest = key.partition(".")
    if head == "blocks":
        return "layer", int(rest.split(".")[0]) + 1
    if head == "heads":
        return "exit", exits[int(rest.split(".")[0])]
    return "embed", 0


def block_weights(fed: Federation, method: str, key: str, sizes: Mapping[str, int]
                  ) -> np.ndarray:
    """Aggregation weights of the clients' copies of one tensor. ``serving_rate``: λ_i × the
    share of client i's requests that use the block (an exit head: ρ_ik; layer l: the exits
    at or after l; the embedding: all). ``fedavg``: the clients' data sizes. Normalised; a
    block no client's requests use falls back to data sizes."""
    n = np.array([float(sizes[c.name]) for c in fed.clients])
    if method == "fedavg":
        return n / n.sum()
    if method != "serving_rate":
        raise FederatedError(f"method {method!r} does not aggregate; federated methods: "
                             f"{', '.join(FEDERATED)}")
    kind, layer = block_of(key, fed.exits)
    rates = fed.rates()
    use = [sum(r for e, r in zip(fed.exits, rates[c.name])
               if (e == layer if kind == "exit" else e >= layer)) for c in fed.clients]
    w = np.array([c.requests for c in fed.clients]) * np.array(use)
    return w / w.sum() if w.sum() > 0 else n / n.sum()


# -- non-IID data: which scenes a client sees ------------------------------------------------

def _xy(fields: Sequence[str], name: str) -> tuple[int, int] | None:
    if f"{name}_x" in fields and f"{name}_y" in fields:
        return fields.index(f"{name}_x"), fields.index(f"{name}_y")
    return None


def direction(obs: np.ndarray, fields: Sequence[str]) -> float:
    """The task's direction in the first observation of a scene, in [0, 2π): from the
    object (the gripper where there is none) to the goal, in the table plane."""
    goal = _xy(fields, "goal")
    mover = _xy(fields, "object_pos") or _xy(fields, "grip_pos") or _xy(fields, "hand_pos")
    if goal is None or mover is None:
        raise FederatedError("the direction partition needs goal and object (or gripper) "
                             f"positions in the observation; fields: {', '.join(fields)}")
    dx, dy = obs[goal[0]] - obs[mover[0]], obs[goal[1]] - obs[mover[1]]
    return float(np.arctan2(dy, dx) % (2 * np.pi))


def region(obs: np.ndarray, fields: Sequence[str], regions: int) -> int:
    """The sector of the task's direction (``regions`` equal sectors) a scene falls in."""
    return min(int(direction(obs, fields) / (2 * np.pi) * regions), regions - 1)


def partition(first_obs: np.ndarray, fields: Sequence[str], fed: Federation, seed: int
              ) -> dict[str, np.ndarray]:
    """Episode indices of each client. ``direction``: client i gets episodes whose scene is in
    its region (so the robots push in different directions: their actions differ, not only
    their scenes), as many as its data share of ``fed.episodes``; ``iid``: random episodes."""
    rng = np.random.default_rng([seed, 0xFED])
    regions = max(c.region for c in fed.clients) + 1
    where = (np.array([region(o, fields, regions) for o in first_obs])
             if fed.partition == "direction" else np.zeros(len(first_obs), dtype=int))
    taken: set[int] = set()
    out = {}
    for c in fed.clients:
        want = max(1, round(c.data_share * fed.episodes))
        pool = [i for i in np.flatnonzero(where == (c.region if fed.partition == "direction"
                                                     else 0)) if i not in taken]
        if len(pool) < want:
            raise FederatedError(
                f"{fed.path}: client {c.name} needs {want} episodes of region {c.region} but "
                f"the demonstrations hold {len(pool)} there; collect more (hybrid-policy demos)"
                " or lower federated.episodes")
        pick = np.sort(rng.choice(pool, size=want, replace=False))
        taken.update(pick.tolist())
        out[c.name] = pick
    return out
