"""``hybrid-policy fl-train``: one method's training run and its closed-loop evaluation.

``serving_rate`` and ``fedavg`` run through Flower's simulation engine (``flower_apps``);
``central`` (every client's data pooled on one machine) and ``local`` (each client alone)
are the baselines, trained here with the same round budget: a round is one pass over each
client's data, with the same learning-rate schedule.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hybrid_policy.families.federated import clients as fl
from hybrid_policy.families.federated import local
from hybrid_policy.families.federated.clients import FederatedError, Federation
from hybrid_policy.families.federated.run import (
    CHECKPOINT, FlRun, RoundLog, client_summary, client_work, save_result, settle,
)

log = logging.getLogger(__name__)



def quiet_flower() -> None:
    """Flower and Ray settings for a run on one machine: no telemetry or update checks, and
    Flower's log (every phase of every round, notices about what we chose not to use) at
    errors unless debugging; ours logs each round. Flower sets its logger's level when first
    imported, so this imports it."""
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    import flwr  # noqa: F401

    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:  # errors (a client's) still show
        logging.getLogger("flwr").setLevel(logging.ERROR)
        logging.getLogger("alembic").setLevel(logging.WARNING)  # Flower's state database


def prepare(topology: str, method: str, rounds: int, out: str, seed: int = 0,
            models: str = "models", serving_log: str | None = None,
            serving_mode: str = "early_exit", fail: str = "", data: str | None = None,
            tokenizer: str | None = None) -> tuple[FlRun, Federation]:
    """The run's settings: the federation with its serving rates (declared, or measured in
    ``serving_log``), the demonstrations and tokenizer (by default the task's, under
    ``models``, made if missing)."""
    from sim_envs import dataset

    from hybrid_policy.policies.build import ensure_data

    fed = fl.load(topology)
    if serving_log:
        try:
            doc = json.loads(Path(serving_log).read_text())
        except (OSError, ValueError) as exc:
            raise FederatedError(f"{serving_log}: cannot read the serving log ({exc})") from None
        rates, requests = fl.rates_from_log(fl.serving_log(doc, serving_mode), fed.exits)
        fed = fl.with_serving(fed, rates, requests)
    fed.rates()  # every client's serving rates are known before anything trains
    if fail:
        fed.client(fail.partition(":")[0])  # raises: names the clients
    if data is None or tokenizer is None:
        paths, _, _, _ = ensure_data(fed.task, Path(models))
        data = data or str(dataset.dataset_path(paths.data, fed.task))
        tokenizer = tokenizer or str(paths.tokenizer)
    run = FlRun(topology, method, rounds, out, str(data), str(tokenizer), seed, fail=fail)
    return settle(run, fed), fed


def fl_train(run: FlRun, superlink: str | None = None, cores: int | None = None
             ) -> dict[str, Any]:
    """Train with ``run.method``; writes the checkpoint(s), ``rounds.jsonl`` and
    ``summary.json`` under ``run.out`` and returns the summary. A federated method runs
    under Flower's simulation engine on ``cores`` cores (default: one per client, up to the
    machine's), or, given ``superlink`` (host:port), under its deployment engine."""
    fed = run.federation()
    start = time.monotonic()
    if run.method in fl.FEDERATED and superlink:
        checkpoints = {"all": str(run_deployed(run, superlink))}
    elif run.method in fl.FEDERATED:
        checkpoints = {"all": str(run_federated(run, fed, cores))}
    else:
        checkpoints = run_pooled(run, fed)
    summary = {"method": run.method, "rounds": run.rounds, "seed": run.seed,
               "topology": run.topology, "seconds": round(time.monotonic() - start, 1),
               "checkpoints": checkpoints, "clients": client_summary(fed)}
    (Path(run.out) / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def _checkpoint(run: FlRun, where: str) -> Path:
    path = Path(run.out) / CHECKPOINT
    if not (path / "config.json").exists():
        raise FederatedError(f"the federated run ended without a checkpoint in {path}; see "
                             f"{where}")
    return path


def run_federated(run: FlRun, fed: Federation, cores: int | None = None) -> Path:
    """``serving_rate`` / ``fedavg`` under Flower's simulation engine: one SuperNode per
    client, ClientApps on Ray actors (one core each), the ServerApp in this process."""
    quiet_flower()
    os.environ.setdefault("FLWR_HOME", str(Path(run.out).resolve() / ".flwr"))
    from flwr.simulation import run_simulation

    from hybrid_policy.families.federated.flower_apps import client_app, server_app_for

    cores = cores or max(1, min(len(fed.clients), os.cpu_count() or 1))
    pythonpath = os.environ.get("PYTHONPATH")  # Flower extends it for Ray's workers
    try:
        run_simulation(server_app=server_app_for(run), client_app=client_app,
                       num_supernodes=len(fed.clients), backend_config={
                           "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                           "init_args": {"num_cpus": cores, "num_gpus": 0,
                                         "logging_level": "ERROR", "log_to_driver": False,
                                         "include_dashboard": False}})
    finally:
        if pythonpath is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = pythonpath
    return _checkpoint(run, f"{Path(run.out) / 'rounds.jsonl'} and the log above")


APP_DIR = Path(__file__).with_name("app")
CONNECTION = "hybrid"


def flower_env(home: Path) -> dict[str, str]:
    """The environment of Flower's command-line tools: their home (connections, unpacked
    apps), no telemetry or update checks, and this interpreter's scripts on the PATH (a
    SuperLink or SuperNode starts its helpers by name)."""
    import sys

    bindir = str(Path(sys.executable).parent)
    return {**os.environ, "FLWR_HOME": str(home), "FLWR_TELEMETRY_ENABLED": "0",
            "FLWR_DISABLE_UPDATE_CHECK": "1",
            "PATH": bindir + os.pathsep + os.environ.get("PATH", "")}


def run_deployed(run: FlRun, superlink: str, timeout_s: float = 3600) -> Path:
    """``serving_rate`` / ``fedavg`` under Flower's deployment engine: the run is submitted to
    the SuperLink at ``superlink`` (``flwr run``), whose SuperNodes (one per client, started
    with ``--node-config "client='<robot>'"``) train; the ServerApp writes the checkpoint
    under ``run.out`` on the SuperLink's machine."""
    import re
    import subprocess

    out = Path(run.out).resolve()
    home = out / ".flwr"
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n'
        f'address = "{superlink}"\ninsecure = true\n')
    cfg = {**run.as_config(), "out": str(out), "rates": ",".join(map(str, run.rates)),
           "requests": ",".join(map(str, run.requests))}
    overrides = " ".join(f"{k}={v}" if isinstance(v, int) else f'{k}="{v}"'
                         for k, v in cfg.items())
    env = flower_env(home)
    log.info("submitting the run to the SuperLink at %s", superlink)
    try:
        proc = subprocess.run(["flwr", "run", str(APP_DIR), CONNECTION, "--run-config",
                               overrides, "--stream"], env=env, capture_output=True, text=True,
                              timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise FederatedError(f"the run did not finish within {timeout_s:.0f} s") from None
    stream = proc.stdout + proc.stderr
    (out / "flwr_run.log").write_text(stream)
    found = re.search(r"Successfully started run (\d+)", stream)
    if proc.returncode != 0 or not found:
        raise FederatedError(f"flwr run failed (exit {proc.returncode}): "
                             + " ".join(stream.strip().splitlines()[-5:]))
    status = subprocess.run(["flwr", "ls", CONNECTION, "--run-id", found.group(1), "--format",
                             "json"], env=env, capture_output=True, text=True, timeout=60)
    try:
        state = json.loads(status.stdout)["runs"][0]["status"]
    except (ValueError, KeyError, IndexError):
        state = "unknown"
    if state != "finished:completed":  # flwr run exits 0 even when the ServerApp failed
        raise FederatedError(f"run {found.group(1)} ended as {state}; its log: "
                             f"{out / 'flwr_run.log'}")
    return _checkpoint(run, str(out / "flwr_run.log"))


def _pool(parts: list) -> Any:
    from hybrid_policy.families.exits.net import ExitData

    return ExitData(*(torch.cat([getattr(p, f) for p in parts])
                      for f in ("obs", "codes", "offsets")))


def run_pooled(run: FlRun, fed: Federation) -> dict[str, str]:
    """``central``: one net on every client's data pooled, all exits alike; ``local``: one
    net per client on its own data, its exits weighted by its serving rates."""
    works = [client_work(run, fed, i) for i in range(len(fed.clients))]
    rlog = RoundLog(run.out, run.method)
    if run.method == "central":
        jobs = {"pooled": ([w.moments for w in works], _pool([w.data for w in works]),
                           fl.local_exit_weights(fed, works[0].name, "central"))}
    else:
        jobs = {w.name: ([w.moments], w.data, fl.local_exit_weights(fed, w.name, "local"))
                for w in works}
    nets = {}
    for name, (moments, _, _) in jobs.items():
        nets[name] = local.new_net(works[0].tok, works[0].obs_dim, fed.exits, run.seed)
        local.set_normalisation(nets[name], moments)
    from tqdm import tqdm

    for r in tqdm(range(1, run.rounds + 1), desc=f"fl-train {run.method}", unit="round",
                  disable=None):
        lr = local.round_lr(fed.lr, r, run.rounds)
        losses = {name: local.train_round(nets[name], data, weights, fed.local_epochs, lr,
                                          fed.batch_size, run.seed * 100_003 + r * 101)
                  for name, (_, data, weights) in jobs.items()}
        rlog.add(r, lr, losses, {name: len(jobs[name][1]) for name in jobs}, [])
    if run.method == "central":
        return {"all": str(save_result(run, fed, nets["pooled"], works[0].tok))}
    return {name: str(save_result(run, fed, net, works[0].tok, f"clients/{name}/{CHECKPOINT}"))
            for name, net in nets.items()}


# -- closed-loop evaluation -----------------------------------------------------------------

def evaluate(summary: dict[str, Any], fed: Federation, episodes: int, seed: int = 0
             ) -> dict[str, Any]:
    """Each client's closed-loop success on ``episodes`` scenes of its own region, every step
    served by an exit drawn from its serving rates, with the net its method gives it; and the
    request-weighted mean over the clients."""
    from hybrid_policy.families.exits.net import load_early_exit

    regions = max(c.region for c in fed.clients) + 1
    out: dict[str, Any] = {"clients": {}}
    for i, c in enumerate(fed.clients):
        path = summary["checkpoints"].get(c.name, summary["checkpoints"].get("all"))
        policy = load_early_exit(path, fed.task)
        seeds = local.region_seeds(fed.task, c.region, regions, episodes, seed, fed.partition)
        wins = local.served_success(policy, fed.task, seeds, c.serving_rates, seed + i)
        out["clients"][c.name] = {"success": float(np.mean(wins)), "episodes": len(wins)}
    lam = np.array([c.requests for c in fed.clients])
    out["mean"] = float(sum(lam[i] * out["clients"][c.name]["success"]
                            for i, c in enumerate(fed.clients)) / lam.sum())
    return out
