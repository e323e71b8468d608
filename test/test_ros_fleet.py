"""A fleet over ROS 2 (``bringup --topology``): robots under their own namespaces share a
batching server two hops away, one bag, and in lockstep every robot decides and acts as the
in-process fleet evaluator says."""

import subprocess

import numpy as np
from ros_helpers import SEED, TASK, bringup_args, commanded, robot_steps

from hybrid_policy.bag_analysis import analyze, read_bag
from hybrid_policy.core import topology
from hybrid_policy.core.compute import ComputeModel
from hybrid_policy.families.adahi.fleet import evaluate_fleet
from hybrid_policy.families.adahi.modes import Thresholds, make_mode
from hybrid_policy.core.stepmetrics import rejected
from hybrid_policy.policies import load_policy
from hybrid_policy.ros.fleet_graph import graph_nodes as nodes
from hybrid_policy.ros.graph import GraphConfig

EPISODES, LINK, DEADLINE_MS = 2, "6g_hrllc", 5000.0

# Two robots reach the edge node over 5G; the edge passes their requests up a Wi-Fi hop
# (its own figures) to the regional node, which verifies them in batches of up to 4.
FLEET = f"""
nodes:
  edge_0: {{tier: edge, parent: regional,
           link: {{profile: wifi, uplink_mbps: 500, downlink_mbps: 800, delay_ms: 2}}}}
  regional: {{tier: regional, speed: 2.0, max_batch: 4}}
robots:
  - {{name: robot, count: 2, task: {TASK}, mode: hybrid, access: edge_0, server: regional,
     link: 5g_embb}}
"""


def in_process_fleet(tiny, path, mode_name, tau):
    draft = load_policy(tiny["draft"], role="draft")
    target = load_policy(tiny["target"], role="target")
    thresholds = None if tau is None else Thresholds(tau, 0.0, 0.0)
    records: dict[str, list] = {}
    run = evaluate_fleet(topology.load(path),
                         lambda _: make_mode(mode_name, draft, target, thresholds),
                         {TASK: target}, ComputeModel(1.0, 1.0), DEADLINE_MS, EPISODES, SEED,
                         progress=False,
                         on_step=lambda robot, rec: records.setdefault(robot, []).append(rec))
    return records, run


def test_a_ros_fleet_decides_as_the_in_process_fleet(cli, tiny, tmp_path):
    """adahi with τ at the median deviation of hybrid's steps: some steps skipped, some
    verified as hybrid verifies every one, so one graph checks both paths."""
    path = tmp_path / "fleet.yaml"
    path.write_text(FLEET)
    mode = "adahi"
    records, _ = in_process_fleet(tiny, path, "hybrid", None)
    tau = float(np.median([r.plan.deviation for recs in records.values() for r in recs]))
    records, expected = in_process_fleet(tiny, path, mode, tau)
    bag = tmp_path / "bag"
    out = subprocess.run(
        bringup_args(cli, tiny, bag, mode, LINK, EPISODES, "--topology", str(path),
                     "--deadline-ms", str(DEADLINE_MS), "--max-age-ms", "60000",
                     "--tau", repr(tau)),
        capture_output=True, text=True, timeout=400)
    assert out.returncode == 0, out.stderr[-3000:]

    info, topics = read_bag(bag)
    assert info["servers"] == "regional"
    for robot in ("robot_0", "robot_1"):
        recs = records[robot]
        mine, steps = robot_steps(topics, robot, recs)
        verdicts = [bool(s["accepted"]) for s in steps if s["verdict"]]
        rejections = [rejected(r.plan.request, r.response) for r in recs]
        assert verdicts == [not x for x in rejections if x is not None]
        told, expected_actions = commanded(mine, "standard", np.array([r.action for r in recs]))
        np.testing.assert_allclose(told, expected_actions, atol=1e-6)
    sent = [bool(dict(zip(m.name, m.position))["uplink"]) for k, v in topics.items()
            if k.endswith("/step") for _, m in v]
    assert 0 < sum(sent) < len(sent)

    doc = analyze(bag)
    m = doc["modes"][mode]
    assert [r["robot"] for r in m["robots"]] == ["robot_0", "robot_1"]
    for r in m["robots"]:
        want = expected.robots[r["robot"]]
        assert r["server"] == "regional" and r["link"] == "5g_embb"
        assert r["steps"] == want.steps and r["episodes"] == EPISODES
        assert r["success_rate"] == want.success_rate
        assert r["uplink_tx_per_step"] == want.uplink_tx / want.steps
        assert r["server_ops_per_step"] == want.server_ops / want.steps
    total = expected.total()
    assert m["counts"]["uplink_tx"] == total.uplink_tx
    assert m["counts"]["server_ops"] == total.server_ops
    assert m["counts"]["fallbacks"] == total.fallbacks  # a packet the links lose in both
    assert m["counts"]["losses"] == sum(r.lost for recs in records.values() for r in recs)
    server = m["servers"]["regional"]
    assert server["requests"] == total.server_ops  # every request that arrived, verified
    assert sum(int(k) * c for k, c in server["batch_sizes"].items()) == total.server_ops
    assert all(1 <= int(k) <= 4 for k in server["batch_sizes"])  # the node's max_batch
    assert server["queueing_ms_p95"] >= 0 and 0 < server["utilisation"] < 1
    assert "robot_1" in out.stdout and "regional" in out.stdout  # per-robot/server tables


def test_fleet_graph_wires_each_robot_to_its_server_and_back(tiny, tmp_path):
    """Without DDS: every topic a node publishes or subscribes in the fleet graph has the
    other end, through the namespaces and remaps, and the hop carries both robots."""
    path = tmp_path / "fleet.yaml"
    path.write_text(FLEET)
    specs = {s.key: s for s in nodes(GraphConfig(
        mode="hybrid", task=TASK, link=LINK, draft=str(tiny["draft"]),
        target=str(tiny["target"]), topology=str(path), bag=str(tmp_path / "bag")))}
    assert {"robot_0/sim_node", "robot_1/draft_node", "robot_1/link_node",
            "edge_0/link_to_regional", "regional/target_node", "lifecycle_manager",
            "recorder_node"} <= set(specs)
    assert "edge_0/target_node" not in specs  # edge_0 relays, it verifies for no robot
    hop = specs["edge_0/link_to_regional"].parameters
    assert hop["clients"] == ["robot_0:1", "robot_1:1"] and hop["upstream"] == "/hybrid/regional"
    assert hop["uplink_mbps"] == 500 and hop["delay_ms"] == 2
    remaps = dict(specs["robot_1/link_node"].remaps)
    assert remaps["server/request"] == "/hybrid/edge_0/server/robot_1/request"
    assert specs["regional/target_node"].parameters["clients"] == ["robot_0", "robot_1"]
    assert specs["regional/target_node"].parameters["max_batch"] == 4
    assert [specs[f"robot_{i}/sim_node"].parameters["first_episode"] for i in (0, 1)] == [0, 10]
    assert specs["lifecycle_manager"].parameters["node_names"] == [
        "/hybrid/regional/target_node", "/hybrid/robot_0/draft_node",
        "/hybrid/robot_1/draft_node"]


def test_a_ros_fleet_refuses_what_it_cannot_run(cli, tiny, tmp_path):
    mixed = tmp_path / "mixed.yaml"
    mixed.write_text(FLEET + """  - {name: pusher, task: fetch_push, mode: hybrid, access: edge_0,
     link: 5g_embb}
""")
    out = subprocess.run(bringup_args(cli, tiny, tmp_path / "b", "hybrid", LINK, 1,
                                      "--topology", str(mixed)),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "runs one task" in out.stderr and "fetch_push" in out.stderr
    clash = tmp_path / "clash.yaml"
    clash.write_text(FLEET.replace("name: robot, count: 2", "name: edge_0"))
    out = subprocess.run(bringup_args(cli, tiny, tmp_path / "c", "hybrid", LINK, 1,
                                      "--topology", str(clash)),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "rename edge_0" in out.stderr
