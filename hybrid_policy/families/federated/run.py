"""One federated training run's settings, the client's side of a round, and the per-round
log; shared by Flower's apps (``flower_apps``) and the non-federated baselines
(``train``)."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from hybrid_policy.families.federated import clients as fl
from hybrid_policy.families.federated.clients import FederatedError, Federation

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FlRun:
    """What a run trains and how; travels to every client in Flower's config record."""

    topology: str
    method: str
    rounds: int
    out: str
    data: str = ""  # the demonstrations the clients' shares are drawn from
    tokenizer: str = ""  # the task's action tokenizer (shared vocabulary)
    seed: int = 0
    rates: tuple[float, ...] = ()  # [clients × exits], row-major: the serving rates in force
    requests: tuple[float, ...] = ()  # per client: the request rates in force
    fail: str = ""  # "client:round": that client raises in that round (failure drills)

    def __post_init__(self) -> None:
        if self.method not in fl.METHODS:
            raise FederatedError(f"unknown method {self.method!r}; valid: "
                                 f"{', '.join(fl.METHODS)}")
        if self.rounds < 1:
            raise FederatedError(f"rounds must be >= 1, got {self.rounds}")
        name, _, rnd = self.fail.partition(":")
        if self.fail and not (name and rnd.isdigit() and 1 <= int(rnd) <= self.rounds):
            raise FederatedError(f"--fail {self.fail!r}: expected CLIENT:ROUND with ROUND in "
                                 f"1..{self.rounds}")

    def federation(self) -> Federation:
        """The topology's federation with the run's serving and request rates."""
        fed = fl.load(self.topology)
        if not self.rates:
            return fed
        k = len(fed.exits)
        rates = {c.name: self.rates[i * k:(i + 1) * k] for i, c in enumerate(fed.clients)}
        return fl.with_serving(fed, rates, {c.name: self.requests[i]
                                            for i, c in enumerate(fed.clients)})

    def as_config(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> "FlRun":
        def numbers(v):  # a list (config record) or "a,b,c" (flwr run --run-config)
            return tuple(float(x) for x in (v.split(",") if isinstance(v, str) else v) if x != "")

        return cls(**{k: numbers(cfg[k]) if k in ("rates", "requests") else cfg[k]
                      for k in cls.__dataclass_fields__ if k in cfg})


def settle(run: FlRun, fed: Federation) -> FlRun:
    """The run with the federation's serving and request rates written in (they must all be
    known before training: declared in the topology or measured)."""
    from dataclasses import replace

    rates = fed.rates()
    return replace(run, rates=tuple(r for c in fed.clients for r in rates[c.name]),
                   requests=tuple(c.requests for c in fed.clients))


def failing(run: FlRun, client: str, server_round: int) -> bool:
    if not run.fail:
        return False
    name, _, rnd = run.fail.partition(":")
    return name == client and rnd.isdigit() and int(rnd) == server_round


# -- a client's side ---------------------------------------------------------------------

@dataclass
class ClientWork:
    """A client's data, loaded once per process: its episodes of the run's demonstrations
    (or a data set of its own), as training tensors."""

    name: str
    index: int
    data: Any  # ExitData
    examples: int
    tok: Any  # the action tokenizer
    obs_dim: int
    moments: tuple  # (count, Σx, Σx²) of its observations

    def net(self, exits, state=None):
        """The early-exit net (its shape from the tokenizer), with ``state`` loaded."""
        from hybrid_policy.families.federated import local

        net = local.new_net(self.tok, self.obs_dim, exits, 0)
        if state is not None:
            net.load_state_dict(state)
        return net


_CLIENTS: dict[tuple, ClientWork] = {}


def client_work(run: FlRun, fed: Federation, index: int, own_data: str = "") -> ClientWork:
    """Client ``index``'s data: its share of ``run.data`` (``clients.partition``), or the
    whole of ``own_data`` where the node was given its own demonstrations."""
    from sim_envs import dataset

    from hybrid_policy.families.federated import local
    from hybrid_policy.policies.checkpoint import load_tokenizer
    from hybrid_policy.policies.model import ROLE_SIZES

    if not 0 <= index < len(fed.clients):
        raise FederatedError(f"client index {index} is outside the federation's "
                             f"{len(fed.clients)} clients")
    key = (run.topology, run.data, run.tokenizer, run.seed, index, own_data)
    if key not in _CLIENTS:
        client = fed.clients[index]
        tok, _ = load_tokenizer(run.tokenizer)
        ds = dataset.load(own_data or run.data)
        if ds.task != fed.task:
            raise FederatedError(f"{own_data or run.data}: holds {ds.task} demonstrations, the "
                                 f"federation trains {fed.task}")
        idx = (np.arange(ds.num_episodes) if own_data else
               fl.partition(local.first_observations(ds), ds.obs_fields, fed, run.seed)[
                   client.name])
        mine = local.episodes_of(ds, idx)
        data = local.client_data(ds, idx, tok, ROLE_SIZES["target"]["history"])
        _CLIENTS[key] = ClientWork(client.name, index, data, len(data), tok,
                                   ds.observations.shape[1], local.obs_moments(mine.observations))
    return _CLIENTS[key]


# -- the per-round log -------------------------------------------------------------------

class RoundLog:
    """``rounds.jsonl`` in the run's directory: per round, each client's loss per exit and
    examples, the clients that failed, the learning rate and the time."""

    def __init__(self, out: str | Path, method: str) -> None:
        self.path = Path(out) / "rounds.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text("")
        self.method, self.start = method, time.monotonic()

    def add(self, server_round: int, lr: float, losses: Mapping[str, list[float]],
            examples: Mapping[str, int], failed: list[dict[str, Any]]) -> dict[str, Any]:
        entry = {"method": self.method, "round": server_round, "lr": lr,
                 "clients": {c: {"loss": [round(x, 5) for x in losses[c]],
                                 "examples": int(examples[c])} for c in losses},
                 "failed": failed, "elapsed_s": round(time.monotonic() - self.start, 2)}
        with self.path.open("a") as f:
            f.write(json.dumps(entry) + "\n")
        for f_ in failed:
            log.warning("round %d: client %s failed (%s); the round went on with the others",
                        server_round, f_.get("client", f_.get("node")), f_["reason"])
        log.info("round %d: %s", server_round, "; ".join(
            f"{c} " + " ".join(f"{x:.3f}" for x in losses[c]) for c in losses))
        return entry


def read_log(out: str | Path) -> list[dict[str, Any]]:
    path = Path(out) / "rounds.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


CHECKPOINT = "early_exit"  # where a run's net is written under its out directory


def client_summary(fed: Federation) -> dict[str, Any]:
    alpha = fl.objective_weights(fed)
    return {c.name: {"data_share": c.data_share, "requests": c.requests, "region": c.region,
                     "serving_rates": list(c.serving_rates), "alpha": alpha[i].tolist()}
            for i, c in enumerate(fed.clients)}


def save_result(run: FlRun, fed: Federation, net, tok, where: str = CHECKPOINT) -> Path:
    """The trained net as an early-exit checkpoint (``eval --early-exit``, ``bringup``)."""
    from hybrid_policy.families.exits.net import save_early_exit

    return save_early_exit(Path(run.out) / where, net, tok, fed.task, {
        "federated": {"method": run.method, "rounds": run.rounds, "seed": run.seed,
                      "topology": run.topology, "data": run.data, "clients": client_summary(fed)}})
