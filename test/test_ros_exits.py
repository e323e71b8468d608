"""The early-exit family over ROS 2 (``bringup --topology`` with an early-exit mode): the
robots' parts on their draft nodes, one exit node per computing node, features as
sensor_msgs/Image through link nodes, one bag; in lockstep every robot sends, is answered
by the exit and acts as the in-process fleet with the same plan says."""

from conftest import run_cli
import json
import subprocess

import numpy as np
import pytest
from ros_helpers import SEED, TASK, bringup_args, commanded, robot_steps

from hybrid_policy.bag_analysis import analyze, read_bag
from hybrid_policy.core import topology
from hybrid_policy.core.compute import ComputeModel
from hybrid_policy.families.exits.early_exit import ExitPlan, build_plan
from hybrid_policy.families.exits.calibration import ExitCompute
from hybrid_policy.core.fleet import evaluate_fleet
from hybrid_policy.families.exits.fleet import ExitRun
from hybrid_policy.ros.fleet_graph import graph_nodes as nodes
from hybrid_policy.ros.graph import GraphConfig

EPISODES, LINK, DEADLINE_MS = 2, "5g_embb", 5000.0
COMPUTE = ExitCompute(((1, 0.2), (8, 0.5)), 0.05, 0.6)

# Two robots whose 5G link reaches two edge nodes; both edges pass work up to the cloud.
FLEET = f"""
partitions: {{robot: 1, edge: 2, cloud: 4}}
nodes:
  edge_a: {{tier: edge, speed: 0.5, max_batch: 2, parent: cloud, link: wifi}}
  edge_b: {{tier: edge, speed: 1.0, parent: cloud,
           link: {{profile: wifi, uplink_mbps: 500, downlink_mbps: 800, delay_ms: 1}}}}
  cloud: {{tier: cloud, speed: 2.0, max_batch: 4}}
robots:
  - {{name: robot, count: 2, task: {TASK}, mode: early_exit, access: edge_a,
     reach: [edge_a, edge_b], link: 5g_embb}}
"""


def in_process(tiny_ee, path, plan):
    records: dict[str, list] = {}
    run = ExitRun(tiny_ee["net"], plan, COMPUTE)
    result = evaluate_fleet(
        topology.load(path), run, ComputeModel(1.0, 1.0), DEADLINE_MS, EPISODES, SEED,
        progress=False, on_step=lambda robot, rec: records.setdefault(robot, []).append(rec))
    return records, result


def make_plan(cli, tiny, tiny_ee, path, mode, tmp_path):
    """early_exit: thresholds at the exits' median confidence (every exit answers some
    steps); dto_ee: solved by `hybrid-policy exit-plan` for COMPUTE (not this machine's
    timings under load)."""
    out = tmp_path / f"{mode}.json"
    if mode == "early_exit":
        conf = tiny_ee["samples"].confidence
        plan = build_plan(mode, topology.load(path), (1, 2, 4),
                          {1: float(np.median(conf[:, 0])), 2: float(np.median(conf[:, 1]))})
        plan.save(out)
        return plan, out
    parts = tmp_path / "compute.json"
    parts.write_text(json.dumps(COMPUTE.as_dict()))
    res = run_cli("exit-plan", "--exit-compute", str(parts), "--task", TASK, "--draft",
         str(tiny["draft"]), "--target", str(tiny["target"]), "--models", str(tiny["root"]),
         "--early-exit", str(tiny_ee["path"]), "--topology", str(path), "--mode", mode,
         "--out", str(out))
    assert res.returncode == 0, res.stderr[-3000:]
    return ExitPlan.load(out), out


@pytest.mark.parametrize("mode", ["early_exit", "dto_ee"])
def test_a_ros_early_exit_fleet_decides_as_the_in_process_fleet(cli, tiny, tiny_ee, tmp_path,
                                                                 mode):
    path = tmp_path / "fleet.yaml"
    path.write_text(FLEET)
    plan, plan_file = make_plan(cli, tiny, tiny_ee, path, mode, tmp_path)
    records, expected = in_process(tiny_ee, path, plan)
    bag = tmp_path / "bag"
    out = subprocess.run(
        bringup_args(cli, tiny, bag, mode, LINK, EPISODES, "--models", str(tiny["root"]),
                     "--early-exit", str(tiny_ee["path"]), "--exit-plan", str(plan_file),
                     "--topology", str(path), "--deadline-ms", str(DEADLINE_MS),
                     "--max-age-ms", "60000"), capture_output=True, text=True, timeout=400)
    assert out.returncode == 0, out.stderr[-3000:]

    info, topics = read_bag(bag)
    for robot in ("robot_0", "robot_1"):
        recs = records[robot]
        mine, steps = robot_steps(topics, robot, recs)
        answered = [int(s["exit_layer"]) for s in steps]
        want = [r.response.exit_layer if r.response is not None else 1 for r in recs]
        assert answered == want
        told, expected_actions = commanded(mine, "standard", np.array([r.action for r in recs]))
        np.testing.assert_allclose(told, expected_actions, atol=1e-5)
    all_exits = {int(dict(zip(m.name, m.position))["exit_layer"])
                 for k, v in topics.items() if k.endswith("/step") for _, m in v}
    if mode == "early_exit":
        assert all_exits == {1, 2, 4}  # the comparison covered every exit

    doc = analyze(bag)
    m = doc["modes"][mode]
    total = expected.total()
    assert m["counts"]["uplink_tx"] == total.uplink_tx
    assert m["counts"]["server_ops"] == total.server_ops
    assert m["counts"]["fallbacks"] == total.fallbacks
    assert m["exit_shares"] == total.summary()["exit_shares"]
    assert m["uplink_bytes_per_step"] == pytest.approx(total.uplink_bytes / total.steps)
    for name, stats in m["servers"].items():
        assert stats["requests"] == expected.servers[name]["requests"], name
    assert info["exit_plan"] == str(plan_file.resolve())


def test_the_early_exit_graph_wires_every_flow(tiny, tiny_ee, tmp_path):
    """Without DDS: every feature flow has a link node for its hop, with the chain of links
    between the two nodes, and every exit node hears each robot from each sender."""
    path = tmp_path / "fleet.yaml"
    path.write_text(FLEET)
    plan = build_plan("ee_random", topology.load(path), (1, 2, 4), {1: 0.5, 2: 0.5})
    plan.save(tmp_path / "plan.json")
    specs = {s.key: s for s in nodes(GraphConfig(
        mode="ee_random", task=TASK, link=LINK, topology=str(path),
        early_exit=str(tiny_ee["path"]), exit_plan=str(tmp_path / "plan.json"),
        bag=str(tmp_path / "bag")))}
    assert {"robot_0/draft_node", "robot_0/link_to_edge_a", "robot_1/link_to_edge_b",
            "edge_a/link_to_cloud", "edge_a/exit_node", "edge_b/exit_node", "cloud/exit_node",
            "lifecycle_manager", "recorder_node"} <= set(specs)
    hop = specs["edge_b/link_to_cloud"].parameters
    assert hop["carries"] == "features" and hop["links"] == ["wifi:500.0:800.0:1.0"]
    assert hop["flows"] == ["robot_0:edge_b:cloud", "robot_1:edge_b:cloud"]
    cloud = specs["cloud/exit_node"].parameters
    assert cloud["end"] == 4 and sorted(cloud["inputs"]) == [
        "robot_0:edge_a", "robot_0:edge_b", "robot_1:edge_a", "robot_1:edge_b"]
    assert specs["edge_a/exit_node"].parameters["offload"] == ["cloud:1.0"]
    draft = specs["robot_1/draft_node"].parameters
    assert draft["robot"] == "robot_1" and draft["mode"] == "ee_random" and "draft" not in draft
    assert specs["lifecycle_manager"].parameters["node_names"][:3] == [
        "/hybrid/edge_a/exit_node", "/hybrid/edge_b/exit_node", "/hybrid/cloud/exit_node"]
    # a plan for another mode, or none, is refused
    with pytest.raises(Exception, match="a plan for ee_random, not dto_ee"):
        nodes(GraphConfig(mode="dto_ee", task=TASK, link=LINK, topology=str(path),
                          exit_plan=str(tmp_path / "plan.json")))
    with pytest.raises(Exception, match="needs its plan"):
        nodes(GraphConfig(mode="dto_ee", task=TASK, link=LINK, topology=str(path)))
    with pytest.raises(Exception, match="runs on a topology"):
        GraphConfig(mode="early_exit", task=TASK, link=LINK)
    assert json.loads((tmp_path / "plan.json").read_text())["mode"] == "ee_random"
