"""The ROS 2 graph for real: nodes in separate processes over DDS, bags, analyze, shutdown."""

import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from hybrid_policy.bag_analysis import analyze, read_bag
from hybrid_policy.core import evaluator
from hybrid_policy.core.compute import ComputeModel
from hybrid_policy.core.evaluator import Setting
from hybrid_policy.core.link import link_profile
from hybrid_policy.core.modes import Thresholds, make_mode
from hybrid_policy.policies import load_policy

# Keep this suite's DDS traffic apart from anything else on the machine.
os.environ.setdefault("ROS_DOMAIN_ID", str(40 + os.getpid() % 50))

SEED, EPISODES, LINK = 3, 2, "6g_hrllc"


def in_process(tiny, mode_name, tau=None):
    draft = load_policy(tiny["draft"], role="draft")
    target = load_policy(tiny["target"], role="target")
    mode = make_mode(mode_name, draft, target,
                     None if tau is None else Thresholds(tau, 0.0, 0.0))
    records = []
    setting = Setting(target, link_profile(LINK), ComputeModel(1.0, 1.0), deadline_ms=5000.0)
    res = evaluator.evaluate("fetch_reach", [mode], EPISODES, SEED, setting, progress=False,
                             on_step=lambda _, rec: records.append(rec))
    return records, res[mode_name]


def run_bringup(cli, tiny, bag, mode, tau=None, episodes=EPISODES):
    args = [*cli, "bringup", "--mode", mode, "--task", "fetch_reach", "--link", LINK,
            "--episodes", str(episodes), "--seed", str(SEED), "--draft", str(tiny["draft"]),
            "--target", str(tiny["target"]), "--deadline-ms", "5000", "--bag", str(bag),
            "--timeout", "240"]
    if tau is not None:
        args += ["--tau", repr(tau)]
    return subprocess.run(args, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def median_deviation(tiny):
    records, _ = in_process(tiny, "hybrid")
    return float(np.median([r.plan.deviation for r in records]))


@pytest.mark.parametrize("mode", ["hybrid", "adahi"])
def test_ros_graph_makes_the_same_decisions_as_in_process(cli, tiny, tmp_path, mode,
                                                          median_deviation):
    tau = median_deviation if mode == "adahi" else None
    bag = tmp_path / "bag"
    out = run_bringup(cli, tiny, bag, mode, tau)
    assert out.returncode == 0, out.stderr[-3000:]
    assert (bag / "metadata.yaml").exists() and list(bag.glob("*.mcap"))
    records, expected = in_process(tiny, mode, tau)

    _, topics = read_bag(bag)
    actions = np.array([m.position for _, m in topics["action"]])
    steps = [dict(zip(m.name, m.position)) for _, m in topics["step"]]
    assert len(actions) == len(records) == len(steps)
    uplink = [bool(s["uplink"]) for s in steps]
    assert uplink == [r.plan.request is not None for r in records]
    if mode == "adahi":
        assert 0 < sum(uplink) < len(uplink)  # τ at the median: some skipped, some sent
    np.testing.assert_allclose(actions, np.array([r.action for r in records]), atol=1e-6)
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
    assert run_bringup(cli, tiny, bag, "draft_only").returncode == 0
    res = subprocess.run([*cli, "analyze", str(bag), "--json", str(tmp_path / "a.json")],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "draft_only" in res.stdout and (tmp_path / "a.json").exists()
    doc = analyze(bag)
    m = doc["modes"]["draft_only"]
    assert m["uplink_tx_per_step"] == 0 and m["server_ops_per_step"] == 0
    bad = subprocess.run([*cli, "analyze", str(tmp_path)], capture_output=True, text=True,
                         timeout=60)
    assert bad.returncode == 2 and "not a rosbag2 directory" in bad.stderr


def _pids(stderr_text):
    return {name: int(pid) for name, pid in re.findall(r"(\w+_node) \(pid (\d+)\)", stderr_text)}


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _start_long_run(cli, tiny, bag):
    args = [*cli, "bringup", "--mode", "hybrid", "--task", "fetch_reach", "--link", LINK,
            "--episodes", "500", "--draft", str(tiny["draft"]), "--target", str(tiny["target"]),
            "--bag", str(bag)]
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    text = ""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # until the first episode has ended
        line = proc.stderr.readline()
        text += line
        if "episode 1/500" in line:
            return proc, _pids(text), text
        if not line and proc.poll() is not None:
            break
    proc.kill()
    pytest.fail(f"the graph did not start: {text[-2000:]}")


def _finish(proc, timeout=30):
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode


@pytest.mark.parametrize("how", ["kill_target", "ctrl_c"])
def test_bringup_stops_every_node(cli, tiny, tmp_path, how):
    bag = tmp_path / "bag"
    proc, pids, _ = _start_long_run(cli, tiny, bag)
    assert set(pids) == {"sim_node", "draft_node", "link_node", "target_node", "recorder_node"}
    if how == "kill_target":
        os.kill(pids["target_node"], signal.SIGKILL)
        assert _finish(proc) == 1  # a node died: the run failed
    else:
        proc.send_signal(signal.SIGINT)
        assert _finish(proc) == 130
    time.sleep(0.5)
    assert not [n for n, pid in pids.items() if _alive(pid)]  # no orphans
    assert (bag / "metadata.yaml").exists()  # the recorder closed its bag
    doc = analyze(bag)
    assert doc["modes"]["hybrid"]["counts"]["steps"] > 0
