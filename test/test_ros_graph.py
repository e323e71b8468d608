"""The ROS 2 graph for real: nodes in separate processes over DDS, bags, analyze, shutdown."""

from conftest import run_cli
import os
import signal
import time

import numpy as np
import pytest
from ros_helpers import (
    alive, bringup_args, commanded, finish, in_process, node_pids, run_bringup, start_bringup,
)

from hybrid_policy.bag_analysis import analyze, read_bag

EPISODES, LINK = 2, "6g_hrllc"


@pytest.fixture(scope="module")
def median_deviation(tiny):
    records, _ = in_process(tiny, "hybrid", LINK, EPISODES)
    return float(np.median([r.plan.deviation for r in records]))


@pytest.mark.parametrize("interface,link_in_draft", [("standard", False), ("vector", True)])
def test_ros_graph_makes_the_same_decisions_as_in_process(cli, tiny, tmp_path, interface,
                                                          link_in_draft, median_deviation):
    """Lockstep: every step's decision and action as in process; with ``link_in_draft``
    the draft node applies the link itself and no link node runs. τ at the median
    deviation: the skipped steps and the verified ones (each as ``hybrid`` verifies it)."""
    mode, tau = "adahi", median_deviation
    bag = tmp_path / "bag"
    extra = ["--deadline-ms", "5000", "--interface", interface, "--max-age-ms", "60000",
             "--tau", repr(tau)] + (["--link-in-draft"] if link_in_draft else [])
    out = run_bringup(cli, tiny, bag, mode, LINK, EPISODES, *extra)
    assert out.returncode == 0, out.stderr[-3000:]
    assert (bag / "metadata.yaml").exists() and list(bag.glob("*.mcap"))
    records, expected = in_process(tiny, mode, LINK, EPISODES, tau)

    _, topics = read_bag(bag)
    assert ("cmd_twist" in topics) == (interface == "standard") != ("action" in topics)
    assert ("uplink/request" in topics) != link_in_draft and "server/request" in topics
    assert ("link_node" in out.stderr) != link_in_draft
    steps = [dict(zip(m.name, m.position)) for _, m in topics["step"]]
    told, expected_actions = commanded(topics, interface, np.array([r.action for r in records]))
    assert len(told) == len(records) == len(steps)
    uplink = [bool(s["uplink"]) for s in steps]
    assert uplink == [r.plan.request is not None for r in records]
    assert 0 < sum(uplink) < len(uplink)  # τ at the median: some skipped, some sent
    np.testing.assert_allclose(told, expected_actions, atol=1e-6)
    assert [s["deviation"] for s in steps] == pytest.approx(
        [r.plan.deviation for r in records], rel=1e-6)  # float sums in another order

    doc = analyze(bag)
    counts = doc["modes"][mode]["counts"]
    assert counts["uplink_tx"] == expected.uplink_tx
    assert counts["server_ops"] == expected.server_ops
    assert counts["successes"] == expected.successes and counts["episodes"] == EPISODES
    assert counts["fallbacks"] == 0
    assert "uplink_tx_per_step" in doc["modes"][mode]  # eval's schema
    assert mode in out.stdout  # bringup printed the table


def test_analyze_cli_writes_eval_schema(cli, tiny, tmp_path):
    bag = tmp_path / "bag"
    assert run_bringup(cli, tiny, bag, "draft_only", LINK, EPISODES).returncode == 0
    res = run_cli("analyze", str(bag), "--json", str(tmp_path / "a.json"))
    assert res.returncode == 0, res.stderr
    assert "draft_only" in res.stdout and (tmp_path / "a.json").exists()
    doc = analyze(bag)
    m = doc["modes"]["draft_only"]
    assert m["uplink_tx_per_step"] == 0 and m["server_ops_per_step"] == 0
    bad = run_cli("analyze", str(tmp_path))
    assert bad.returncode == 2 and "not a rosbag2 directory" in bad.stderr
    again = run_bringup(cli, tiny, bag, "draft_only", LINK, EPISODES)  # never overwrite a bag
    assert again.returncode == 2 and "already exists; give a new directory" in again.stderr


def _deaf():
    """What some parents hand their children: SIGINT and SIGTERM ignored and blocked."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})


@pytest.mark.parametrize("how", ["kill_draft", "ctrl_c", "sigterm_from_a_deaf_parent"])
def test_bringup_stops_every_node(cli, tiny, tmp_path, how):
    bag = tmp_path / "bag"
    proc, text = start_bringup(bringup_args(cli, tiny, bag, "hybrid", LINK, 500), "episode 1/500",
                               preexec_fn=_deaf if how.endswith("deaf_parent") else None)
    pids = node_pids(text)
    assert set(pids) == {"sim_node", "draft_node", "link_node", "target_node", "recorder_node"}
    if how == "kill_draft":
        os.kill(pids["draft_node"], signal.SIGKILL)
        assert finish(proc) == 1  # a robot-side node died: the run failed
    else:
        proc.send_signal(signal.SIGINT if how == "ctrl_c" else signal.SIGTERM)
        assert finish(proc) == 130
    time.sleep(0.5)
    assert not [n for n, pid in pids.items() if alive(pid)]  # no orphans
    assert (bag / "metadata.yaml").exists()  # the recorder closed its bag
    doc = analyze(bag)
    assert doc["modes"]["hybrid"]["counts"]["steps"] > 0
