"""Flower's ClientApp and ServerApp of the federation: the same two apps run under the
simulation engine (``train.run_federated``: one process, Ray) and the deployment engine
(SuperLink and SuperNodes as separate processes; ``flwr run`` with the app project in
``hybrid_policy/families/federated/app``; docs/families/federated.md).

A round: the server sends the global net and the round's learning rate; each client trains
it for ``local_epochs`` on its own data, its exit losses weighted by its method's weights,
and returns it with its per-exit losses; the server averages the clients' nets, block by
block, by ``clients.block_weights``. Before the first round one query gathers the clients'
observation moments, from which the net's input normalisation is set. A client that fails
in a round is logged and left out of that round's average (Flower returns its error).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg
from tqdm import tqdm

from hybrid_policy.families.federated import clients as fl
from hybrid_policy.families.federated import local
from hybrid_policy.families.federated.clients import FederatedError
from hybrid_policy.families.federated.run import (
    FlRun, RoundLog, client_work, failing, save_result, settle,
)

log = logging.getLogger(__name__)

MOMENTS = "query.moments"


def _client_index(context: Context, fed: fl.Federation) -> int:
    """Which client this node is: node config ``client=<robot name>`` (deployment) or
    ``partition-id`` (set by the simulation engine, or given to a SuperNode)."""
    cfg = context.node_config
    if "client" in cfg:
        names = [c.name for c in fed.clients]
        if cfg["client"] not in names:
            raise FederatedError(f"node config client={cfg['client']!r} is not a client of "
                                 f"{fed.path}; clients: {', '.join(names)}")
        return names.index(str(cfg["client"]))
    if "partition-id" not in cfg:
        raise FederatedError("the node has no client: start its SuperNode with --node-config "
                             "\"client='<robot name>'\" (or partition-id=<index>)")
    return int(cfg["partition-id"])


def _work(msg: Message, context: Context):
    run = FlRun.from_config(msg.content["config"])
    fed = run.federation()
    return run, fed, client_work(run, fed, _client_index(context, fed),
                                 str(context.node_config.get("data", "")))


client_app = ClientApp()


@client_app.query(MOMENTS.split(".", 1)[1])
def _moments(msg: Message, context: Context) -> Message:
    _, _, work = _work(msg, context)
    n, s1, s2 = work.moments
    return Message(RecordDict({"metrics": MetricRecord(
        {"client": work.index, "count": n, "sum": s1.tolist(), "sumsq": s2.tolist()})}),
        reply_to=msg)


@client_app.train()
def _train(msg: Message, context: Context) -> Message:
    torch.set_num_threads(1)  # one client per core: the simulation runs clients side by side
    run, fed, work = _work(msg, context)
    cfg = msg.content["config"]
    server_round = int(cfg["server-round"])
    if failing(run, work.name, server_round):
        raise RuntimeError(f"client {work.name}: injected failure in round {server_round}")
    net = work.net(fed.exits, msg.content["arrays"].to_torch_state_dict())
    losses = local.train_round(net, work.data, fl.local_exit_weights(fed, work.name, run.method),
                               fed.local_epochs, float(cfg["lr"]), fed.batch_size,
                               run.seed * 100_003 + server_round * 101 + work.index)
    return Message(RecordDict({"arrays": ArrayRecord(net.state_dict()), "metrics": MetricRecord(
        {"client": work.index, "examples": work.examples, "losses": losses})}), reply_to=msg)


def merge_states(fed: fl.Federation, method: str, states: list[dict[str, torch.Tensor]],
                 present: list[int], examples: dict[str, int]) -> dict[str, torch.Tensor]:
    """The clients' nets (``states``, of the clients ``present``) averaged tensor by tensor
    with ``clients.block_weights`` renormalised over those clients."""
    names = [c.name for c in fed.clients]
    sizes = {c.name: examples.get(c.name, 0) for c in fed.clients}
    merged = {}
    for key in states[0]:
        w = fl.block_weights(fed, method, key, sizes)[present]
        if w.sum() <= 0:  # only clients that do not use this block answered
            w = np.array([sizes[names[i]] for i in present], dtype=float)
        w = w / w.sum()
        merged[key] = sum(float(wi) * s[key].double() for wi, s in zip(w, states)
                          ).to(states[0][key].dtype)
    return merged


class ServedStrategy(FedAvg):
    """FedAvg's rounds with the federation's aggregation: block by block, weighted by
    ``clients.block_weights`` over the clients that answered; every round logged."""

    def __init__(self, run: FlRun, fed: fl.Federation, log_: RoundLog) -> None:
        n = len(fed.clients)
        super().__init__(fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=n,
                         min_available_nodes=n, weighted_by_key="examples")
        self.run, self.fed, self.log = run, fed, log_
        self.bar = tqdm(total=run.rounds, desc=f"fl-train {run.method}", unit="round",
                        disable=None)
        self.lr = fed.lr
        self.latest: ArrayRecord | None = None  # the last round's average that some client made

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        self.lr = local.round_lr(self.fed.lr, server_round, self.run.rounds)
        config["lr"] = self.lr
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(self, server_round: int, replies: Iterable[Message]):
        replies = list(replies)
        ok = [r for r in replies if not r.has_error()]
        failed = [{"node": int(r.metadata.src_node_id), "reason": r.error.reason}
                  for r in replies if r.has_error()]
        names = [c.name for c in self.fed.clients]
        metrics = [r.content["metrics"] for r in ok]
        losses = {names[int(m["client"])]: list(m["losses"]) for m in metrics}
        examples = {names[int(m["client"])]: int(m["examples"]) for m in metrics}
        self.log.add(server_round, self.lr, losses, examples, failed)
        self.bar.update(1)
        if not ok:
            log.error("round %d: no client answered; the net is left as it was", server_round)
            return None, None
        merged = merge_states(self.fed, self.run.method,
                              [r.content["arrays"].to_torch_state_dict() for r in ok],
                              [int(m["client"]) for m in metrics], examples)
        self.latest = ArrayRecord(merged)
        return self.latest, MetricRecord({"clients": len(ok), "failed": len(failed)})


def _normalisation(grid: Grid, run: FlRun, net) -> None:
    """One query round: the clients' observation moments set the net's normalisation."""
    nodes = list(grid.get_node_ids())
    replies = grid.send_and_receive([Message(
        RecordDict({"config": ConfigRecord(run.as_config())}), dst_node_id=node,
        message_type=MOMENTS) for node in nodes], timeout=600)
    moments = []
    for r in replies:
        if r.has_error():
            log.warning("node %d sent no observation moments: %s", r.metadata.src_node_id,
                        r.error.reason)
            continue
        m = r.content["metrics"]
        moments.append((int(m["count"]), np.asarray(m["sum"]), np.asarray(m["sumsq"])))
    if not moments:
        raise FederatedError("no client answered the normalisation query")
    local.set_normalisation(net, moments)


def serve_federation(grid: Grid, run: FlRun) -> Path:
    """The server's whole run: normalisation, ``run.rounds`` rounds, the checkpoint."""
    from sim_envs import task_spec

    from hybrid_policy.policies.checkpoint import load_tokenizer

    fed = run.federation()
    tok, _ = load_tokenizer(run.tokenizer)
    net = local.new_net(tok, len(task_spec(fed.task).obs_fields), fed.exits, run.seed)
    _normalisation(grid, run, net)
    strategy = ServedStrategy(run, fed, RoundLog(run.out, run.method))
    try:
        strategy.start(grid=grid, initial_arrays=ArrayRecord(net.state_dict()),
                       num_rounds=run.rounds, train_config=ConfigRecord(run.as_config()),
                       timeout=3600)
    finally:
        strategy.bar.close()
    if strategy.latest is None:
        raise FederatedError(f"no client completed a round; see {strategy.log.path}")
    net.load_state_dict(strategy.latest.to_torch_state_dict())
    return save_result(run, fed, net, tok)


def server_app_for(run: FlRun) -> ServerApp:
    """A ServerApp bound to ``run`` (the simulation engine: settings in this process)."""
    app = ServerApp()

    @app.main()
    def _main(grid: Grid, context: Context) -> None:
        serve_federation(grid, run)

    return app


server_app = ServerApp()


@server_app.main()
def _deployed(grid: Grid, context: Context) -> None:
    """The deployment engine's entry: the run's settings from ``flwr run --run-config``."""
    run = FlRun.from_config(dict(context.run_config))
    serve_federation(grid, run if run.rates else settle(run, run.federation()))
