"""Federated training of the early-exit net: the objective's weights, the non-IID clients,
Flower's simulation engine end to end, a client failing mid-round, and bad input."""

from __future__ import annotations

from conftest import run_cli

import json
import subprocess

import numpy as np
import pytest
import torch
import yaml

from hybrid_policy.families.federated import clients as fl
from hybrid_policy.families.federated import local, train
from hybrid_policy.families.federated.clients import FederatedError
from hybrid_policy.families.federated.run import read_log
from hybrid_policy.families.exits.net import load_early_exit

EXITS = (1, 2, 4)


def topology_doc(clients: dict, episodes: int = 20, **extra) -> dict:
    """A fetch_reach fleet of two robots (a, b) with a federated block."""
    return {
        "partitions": {"robot": 1, "edge": 2, "cloud": 4},
        "nodes": {"edge": {"tier": "edge", "speed": 0.2, "parent": "cloud",
                           "link": {"profile": "5g_embb"}},
                  "cloud": {"tier": "cloud", "speed": 2.0}},
        "robots": [{"name": n, "task": "fetch_reach", "mode": "early_exit", "access": "edge",
                    "link": "5g_embb"} for n in ("a", "b")],
        "federated": {"task": "fetch_reach", "exits": list(EXITS), "episodes": episodes,
                      "lr": 0.003, "batch_size": 64, "local_epochs": 4, "clients": clients,
                      **extra},
    }


TWO = {"a": {"data": 0.4, "serving_rates": [0.7, 0.2, 0.1]},
       "b": {"data": 0.6, "serving_rates": [0.1, 0.3, 0.6]}}


def tiny_data(tiny) -> dict:
    return {"data": str(tiny["data"]), "tokenizer": str(tiny["root"] / "tokenizer")}


def write(tmp_path, doc, name="fed.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc))
    return str(path)


# -- the objective's weights ---------------------------------------------------------------

def test_serving_weights_from_a_synthetic_serving_log_equal_a_hand_computation(tmp_path):
    # robot a: 100 steps, 70 served by exit 1, 20 by exit 2, 10 by exit 4
    # robot b: 300 steps, 30 / 90 / 180
    doc = {"modes": {"early_exit": {"robots": [
        {"robot": "a", "steps": 100, "exit_shares": {"1": 0.7, "2": 0.2, "4": 0.1}},
        {"robot": "b", "steps": 300, "exit_shares": {"1": 0.1, "2": 0.3, "4": 0.6}}]}}}
    counts = fl.serving_log(doc, "early_exit")
    assert counts == {"a": {1: 70, 2: 20, 4: 10}, "b": {1: 30, 2: 90, 4: 180}}
    rates, requests = fl.rates_from_log(counts, EXITS)
    assert rates["a"] == pytest.approx((0.7, 0.2, 0.1))
    assert requests == pytest.approx({"a": 0.25, "b": 0.75})
    fed = fl.with_serving(fl.parse(topology_doc(TWO), "t"), rates, requests)
    # α_ik = λ_i ρ_ik / Σλ: the share of all requests client i sends and exit k serves
    alpha = fl.objective_weights(fed)
    assert alpha == pytest.approx(np.array([[70, 20, 10], [30, 90, 180]]) / 400)
    sizes = {"a": 50, "b": 150}
    # exit 1's head: clients by the requests it serves there, 70 : 30
    assert fl.block_weights(fed, "serving_rate", "heads.0.norm.weight", sizes) \
        == pytest.approx([0.7, 0.3])
    # layer 2 is read by exits 2 and 4: a 20 + 10 = 30 requests, b 90 + 180 = 270
    assert fl.block_weights(fed, "serving_rate", "blocks.1.linear1.weight", sizes) \
        == pytest.approx([0.1, 0.9])
    # the embedding serves every request: 100 : 300
    assert fl.block_weights(fed, "serving_rate", "obs_proj.weight", sizes) \
        == pytest.approx([0.25, 0.75])
    # FedAvg: data sizes, every block alike
    assert fl.block_weights(fed, "fedavg", "heads.0.norm.weight", sizes) \
        == pytest.approx([0.25, 0.75])
    assert fl.local_exit_weights(fed, "a", "serving_rate") == pytest.approx((0.7, 0.2, 0.1))
    assert fl.local_exit_weights(fed, "a", "fedavg") == (1.0, 1.0, 1.0)


def test_the_server_averages_each_block_by_its_weights():
    from hybrid_policy.families.federated.flower_apps import merge_states

    fed = fl.parse(topology_doc(TWO), "t")
    a = {"heads.0.w": torch.zeros(2), "obs_proj.weight": torch.zeros(2)}
    b = {"heads.0.w": torch.ones(2), "obs_proj.weight": torch.ones(2)}
    merged = merge_states(fed, "serving_rate", [a, b], [0, 1], {"a": 10, "b": 30})
    assert merged["heads.0.w"] == pytest.approx(torch.full((2,), 0.1 / 0.8))  # 0.7·0 + 0.1·1
    assert merged["obs_proj.weight"] == pytest.approx(torch.full((2,), 0.5))  # λ alike
    fedavg = merge_states(fed, "fedavg", [a, b], [0, 1], {"a": 10, "b": 30})
    assert fedavg["heads.0.w"] == pytest.approx(torch.full((2,), 0.75))
    # only b answered this round: its copy is the average
    assert merge_states(fed, "serving_rate", [b], [1], {"b": 30})["heads.0.w"] \
        == pytest.approx(torch.ones(2))


# -- non-IID clients ------------------------------------------------------------------------

def test_direction_partition_gives_each_client_its_own_region_and_share(tiny):
    ds = tiny["ds"]
    fed = fl.parse(topology_doc(TWO), "t")
    first = local.first_observations(ds)
    parts = fl.partition(first, ds.obs_fields, fed, seed=0)
    assert [len(parts["a"]), len(parts["b"])] == [8, 12]  # 0.4 and 0.6 of 20 episodes
    assert not set(parts["a"]) & set(parts["b"])
    for name, region in (("a", 0), ("b", 1)):
        assert {fl.region(first[i], ds.obs_fields, 2) for i in parts[name]} == {region}
    # the regions are the halves of the direction from the gripper to the goal
    angles = [fl.direction(first[i], ds.obs_fields) for i in parts["a"]]
    assert all(0 <= x < np.pi for x in angles)


# -- Flower, end to end ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def flower_run(tiny, tmp_path_factory):
    """2 clients, 3 rounds of serving_rate through Flower's simulation engine, client b
    failing in round 1 (one Ray start serves both checks: it dominates the time)."""
    tmp = tmp_path_factory.mktemp("fl")
    path = write(tmp, topology_doc(TWO))
    run, fed = train.prepare(path, "serving_rate", 3, str(tmp / "run"), fail="b:1",
                             **tiny_data(tiny))
    return train.fl_train(run, cores=1), fed, tmp / "run"


def test_two_clients_through_flower_lower_every_clients_loss(flower_run, tiny):
    summary, fed, out = flower_run
    rounds = read_log(out)
    assert [r["round"] for r in rounds] == [1, 2, 3]
    assert all(r["failed"] == [] for r in rounds[1:])
    for name in ("a", "b"):  # each client's loss falls from its first round to its last
        losses = [np.mean(r["clients"][name]["loss"]) for r in rounds
                  if name in r["clients"]]
        assert losses[-1] < losses[0], (name, losses)
        assert len(rounds[1]["clients"][name]["loss"]) == len(EXITS)
    assert rounds[2]["lr"] < rounds[1]["lr"] < rounds[0]["lr"]  # decays over the rounds
    net = load_early_exit(summary["checkpoints"]["all"], "fetch_reach")
    assert net.exits == EXITS
    assert net.info["federated"]["method"] == "serving_rate"
    assert net.info["federated"]["clients"]["a"]["serving_rates"] == [0.7, 0.2, 0.1]
    # the normalisation came from the clients' pooled observations
    assert not torch.allclose(net.net.obs_std, torch.ones_like(net.net.obs_std))


def test_the_federated_checkpoint_serves_the_early_exit_mode(flower_run):
    from hybrid_policy.families.exits.early_exit import EarlyExitMode
    from hybrid_policy.families.exits.plan import build_plan
    from hybrid_policy.core import topology

    summary, fed, _ = flower_run
    net = load_early_exit(summary["checkpoints"]["all"], "fetch_reach")
    topo = topology.parse(yaml.safe_load(open(fed.path)), fed.path)
    plan = build_plan("early_exit", topo, net.exits, {e: 0.5 for e in net.exits[:-1]})
    mode = EarlyExitMode("early_exit", "a", net, plan)
    obs = np.zeros(net.obs_dim, dtype=np.float32)
    step = mode.plan(obs, np.random.default_rng(0))
    assert step.draft_action is not None and np.isfinite(step.draft_action).all()


def test_a_client_that_fails_mid_round_leaves_the_round_to_the_others(flower_run):
    _, _, out = flower_run
    rounds = read_log(out)
    assert list(rounds[0]["clients"]) == ["a"]
    assert len(rounds[0]["failed"]) == 1 and "injected failure" in rounds[0]["failed"][0][
        "reason"]
    assert sorted(rounds[1]["clients"]) == ["a", "b"] and rounds[1]["failed"] == []


def test_local_and_central_baselines_train_with_the_same_rounds(tiny, tmp_path):
    path = write(tmp_path, topology_doc(TWO))
    for method in ("central", "local"):
        run, fed = train.prepare(path, method, 2, str(tmp_path / method), **tiny_data(tiny))
        summary = train.fl_train(run)
        rounds = read_log(tmp_path / method)
        assert [r["round"] for r in rounds] == [1, 2]
        names = ["pooled"] if method == "central" else ["a", "b"]
        assert sorted(rounds[0]["clients"]) == names
        assert sorted(summary["checkpoints"]) == (["all"] if method == "central" else names)
    # local: each client's net saw only its own data (8 and 12 episodes' steps)
    steps = {n: read_log(tmp_path / "local")[0]["clients"][n]["examples"] for n in ("a", "b")}
    assert steps["a"] < steps["b"]
    result = train.evaluate(summary, fed, 2, seed=0)
    assert set(result["clients"]) == {"a", "b"}
    assert all(r["episodes"] == 2 for r in result["clients"].values())


# -- bad input ------------------------------------------------------------------------------

@pytest.mark.parametrize("clients, message", [
    ({"a": {"data": 0.0, "serving_rates": [0.5, 0.25, 0.25]}}, "a client with no data"),
    ({"a": {"serving_rates": [0.5, 0.2, 0.2]}}, "must sum to 1"),
    ({"a": {"serving_rates": [0.5, 0.5]}}, "one per exit"),
    ({"zed": {}}, "not a robot of the topology"),
    ({}, "no clients"),
])
def test_bad_federations_are_refused_with_what_is_valid(clients, message):
    with pytest.raises(FederatedError, match=message):
        fl.parse(topology_doc(clients), "t")


@pytest.mark.parametrize("key, value, message", [
    ("exits", [2, 1, 4], "rising layer counts"),
    ("partition", "by_colour", "valid: direction, iid"),
    ("episodes", 0, "must be an integer >= 1"),
    ("rounds", 3, "unknown key 'rounds'"),
])
def test_bad_federated_settings_are_refused(key, value, message):
    doc = topology_doc(TWO)
    doc["federated"][key] = value
    with pytest.raises(FederatedError, match=message):
        fl.parse(doc, "t")


def test_a_topology_without_a_federated_block_has_no_clients():
    doc = topology_doc(TWO)
    del doc["federated"]
    with pytest.raises(FederatedError, match="no clients"):
        fl.parse(doc, "t")


def test_missing_rates_and_unknown_serving_logs_are_refused(tiny, tmp_path):
    fed = fl.parse(topology_doc({"a": {}, "b": {"serving_rates": [0, 0, 1]}}), "t")
    with pytest.raises(FederatedError, match="no serving rates for a"):
        fl.objective_weights(fed)
    with pytest.raises(FederatedError, match="no robots of mode 'dto_ee'"):
        fl.serving_log({"modes": {"early_exit": {"robots": []}}}, "dto_ee")
    with pytest.raises(FederatedError, match="exit 3"):
        fl.rates_from_log({"a": {3: 5}}, EXITS)
    with pytest.raises(FederatedError, match="no data"):
        local.episodes_of(tiny["ds"], [])


def test_a_failure_drill_must_name_a_client_and_a_round(tiny, tmp_path):
    path = write(tmp_path, topology_doc(TWO))
    with pytest.raises(FederatedError, match="expected CLIENT:ROUND with ROUND in 1..2"):
        train.prepare(path, "fedavg", 2, str(tmp_path / "o"), fail="b:3", **tiny_data(tiny))
    with pytest.raises(FederatedError, match="no client 'c'; clients: a, b"):
        train.prepare(path, "fedavg", 2, str(tmp_path / "o"), fail="c:1", **tiny_data(tiny))


def test_a_region_too_small_for_a_clients_share_is_refused(tiny):
    fed = fl.parse(topology_doc(TWO, episodes=200), "t")
    with pytest.raises(FederatedError, match="needs 80 episodes of region 0"):
        fl.partition(local.first_observations(tiny["ds"]), tiny["ds"].obs_fields, fed, 0)


def test_fl_train_cli_reports_bad_input_without_a_traceback(tmp_path):
    bad = topology_doc({"a": {"serving_rates": [0.9, 0.2, 0.1]}})
    path = write(tmp_path, bad)
    proc = run_cli("fl-train", "--topology", path, "--method", "serving_rate",
                   "--out", str(tmp_path / "o"))
    assert proc.returncode == 2
    assert "must sum to 1" in proc.stderr and "Traceback" not in proc.stderr
    doc = json.loads(json.dumps(bad))
    doc["federated"]["clients"] = {"a": {"serving_rates": [0.5, 0.25, 0.25]}}
    proc = run_cli("fl-train", "--topology", write(tmp_path, doc, "ok.yaml"),
                   "--method", "nope", "--out", str(tmp_path / "o"))
    assert proc.returncode == 2 and "invalid choice: 'nope'" in proc.stderr


# -- Flower's deployment engine on loopback -------------------------------------------------

def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(port: int, procs, timeout: float = 60.0) -> None:
    import time
    import urllib.request

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if any(p.poll() is not None for p in procs):
            pytest.fail("the SuperLink exited on start")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1):
                return
        except OSError:
            time.sleep(0.3)
    pytest.fail(f"the SuperLink on {port} was not healthy within {timeout} s")


def test_the_same_apps_run_under_the_deployment_engine_on_loopback(cli, tiny, tmp_path):
    """A SuperLink and two SuperNodes as separate processes; fl-train submits the run."""
    import os
    import signal
    import time

    env = train.flower_env(tmp_path / "flwr_home")
    link = _free_port()
    procs, logs = [], []

    def start(name, cmd):
        logs.append(open(tmp_path / f"{name}.log", "w"))
        procs.append(subprocess.Popen(cmd, env=env, stdout=logs[-1], stderr=subprocess.STDOUT,
                                      start_new_session=True, cwd=tmp_path))

    try:
        start("superlink", ["flower-superlink", "--insecure",
                            "--disable-runtime-dependency-installation", "--port", str(link)])
        _wait_healthy(link, procs)
        for name in ("a", "b"):
            start(f"supernode_{name}", ["flower-supernode", "--insecure", "--superlink",
                                        f"127.0.0.1:{link}", "--port", str(_free_port()),
                                        "--node-config", f"client='{name}'"])
        path = write(tmp_path, topology_doc(TWO))
        proc = subprocess.run(
            [*cli, "fl-train", "--topology", path, "--method", "serving_rate", "--rounds", "2",
             "--out", str(tmp_path / "run"), "--superlink", f"127.0.0.1:{link}",
             "--eval-episodes", "0", "--data", str(tiny["data"]),
             "--tokenizer", str(tiny["root"] / "tokenizer")],
            capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
    finally:
        for p in reversed(procs):  # SuperNodes first, then the SuperLink
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        for f in logs:
            f.close()
        time.sleep(0.5)
    rounds = read_log(tmp_path / "run")
    assert [r["round"] for r in rounds] == [1, 2]
    assert all(sorted(r["clients"]) == ["a", "b"] for r in rounds)
    net = load_early_exit(tmp_path / "run" / "early_exit", "fetch_reach")
    assert net.info["federated"]["method"] == "serving_rate"
