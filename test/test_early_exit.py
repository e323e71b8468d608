"""The early-exit family in process: the net and its exits, the robot's plan and a node's
answer or forward, the wire format of features, the fleet carrying features node to node,
and the errors for bad thresholds, placements and features."""

from conftest import run_cli
import numpy as np
import pytest

from hybrid_policy.families.exits import calibration as exit_calibration
from hybrid_policy.core.compute import ComputeModel
from hybrid_policy.families.exits.early_exit import (
    ExitPlanError, build_plan, confidence, serve_features,
)
from hybrid_policy.core.fleet import evaluate_fleet
from hybrid_policy.families.exits.fleet import ExitRun
from hybrid_policy.families.registry import parse_topology
from hybrid_policy.core.realtime import Clock
from hybrid_policy.core.protocol import FeatureRequest, ProtocolError, Response
from hybrid_policy.core.topology import TopologyError
from hybrid_policy.families.exits.net import ExitError, train_early_exit

TASK = "fetch_reach"
EXITS = (1, 2, 4)
COMPUTE = exit_calibration.ExitCompute(((1, 0.2), (8, 0.5)), 0.05, 0.6)


@pytest.fixture(scope="module")
def ee(tiny_ee):
    return tiny_ee


def fleet_topology(n=2, link="5g_embb", **extra):
    doc = {"partitions": {"robot": 1, "edge": 2, "cloud": 4},
           "nodes": {"edge_a": {"tier": "edge", "speed": 0.5, "max_batch": 4, "parent": "cloud",
                                "link": "wifi"},
                     "edge_b": {"tier": "edge", "speed": 1.0, "max_batch": 4, "parent": "cloud",
                                "link": "wifi"},
                     "cloud": {"tier": "cloud", "speed": 2.0, "max_batch": 8}},
           "robots": [{"name": "r", "count": n, "task": TASK, "mode": "early_exit",
                       "access": "edge_a", "reach": ["edge_a", "edge_b"], "link": link}]}
    doc.update(extra)
    return parse_topology(doc)  # the families check their blocks (partitions)


def run_fleet(ee, mode, topo, thresholds, episodes=2, on_step=None, control=Clock()):
    plan = build_plan(mode, topo, EXITS, thresholds)
    run = ExitRun(ee["net"], plan, COMPUTE)
    return evaluate_fleet(topo, run, ComputeModel(1.0, 1.0), 100.0, episodes, 0,
                          progress=False, on_step=on_step, control=control), plan


def test_every_exit_is_a_valid_policy_and_the_last_starts_as_the_target(ee, tiny):
    net, target = ee["net"], ee["target"]
    window = np.repeat(tiny["ds"].observations[:1], net.history, 0)
    tokens, start = net.start([window]), 0
    for layer in EXITS:
        tokens = net.advance(tokens, start, layer)
        start = layer
        step = net.exit(tokens, layer)[0]
        joint = step.joint()
        assert joint.shape == (net.codebook_size ** net.levels,)
        assert np.all(joint >= 0) and joint.sum() == pytest.approx(1.0)
        for row in step.level_probs(step.sample(np.random.default_rng(0))):
            assert row.sum() == pytest.approx(1.0)
        assert 0.0 <= confidence(step) <= 1.0
        assert np.all(np.abs(step.action(step.sample(np.random.default_rng(1)))) <= 1.0)
    # an untrained net loaded from the target: its last exit is the target, exactly
    from hybrid_policy.families.exits.net import EarlyExitNet, EarlyExitPolicy

    fresh = EarlyExitNet(target.model.cfg, EXITS)
    fresh.load_target(target.model)
    copy = EarlyExitPolicy(fresh, net.tokenizer, TASK, {}, target.temperature)
    last = copy.exit(copy.advance(copy.start([window]), 0, 4), 4)[0]
    np.testing.assert_allclose(last.joint(), target.begin(window).joint(), atol=1e-6)
    # joint training lowered every exit's loss
    assert all(b < a for a, b in zip(ee["losses"][0], ee["losses"][-1]))


def test_a_node_answers_at_the_first_confident_exit_and_forwards_otherwise(ee, tiny):
    net = ee["net"]
    window = np.repeat(tiny["ds"].observations[:1], net.history, 0)
    feature = FeatureRequest(1, net.advance(net.start([window]), 0, 1)[0].numpy(), 7)
    (ans, nxt, conf), = serve_features(net, 2, 0.0, {"cloud": 1.0}, [feature])
    assert isinstance(ans, Response) and ans.exit_layer == 2 and nxt == "" and conf >= 0
    (fwd, nxt, _), = serve_features(net, 2, 1.0, {"cloud": 1.0}, [feature])
    assert isinstance(fwd, FeatureRequest) and fwd.layer == 2 and nxt == "cloud"
    assert fwd.seed == 7 and fwd.data.shape == (net.history, net.d_model)
    (last, _, _), = serve_features(net, 4, 1.0, {}, [fwd])  # the last part always answers
    assert isinstance(last, Response) and last.exit_layer == 4
    # the answer depends on the seed only, not on the batch it was computed in
    other = FeatureRequest(1, feature.data[::-1].copy(), 9)
    batch = serve_features(net, 2, 0.0, {}, [other, feature])
    np.testing.assert_allclose(batch[1][0].action, ans.action, atol=1e-5)


@pytest.mark.parametrize("robot,edge,remote", [(0.0, 0.0, None), (1.0, 0.0, 2), (1.0, 1.0, 4),
                                               (0.9, 0.95, None)])
def test_forwarding_stops_at_the_first_confident_exit_in_the_fleet(ee, robot, edge, remote):
    """The robot answers iff its exit's confidence reaches its threshold; otherwise the
    nearest edge runs layer 2 and answers iff confident, else the cloud answers."""
    records = []
    topo = fleet_topology(link="ideal")
    run, plan = run_fleet(ee, "early_exit", topo, {1: robot, 2: edge},
                          on_step=lambda _, rec: records.append(rec))
    for rec in records:
        local = rec.plan.confidence >= robot
        assert (rec.plan.request is None) == local
        if not local and rec.response is not None:  # (the wifi hop may lose a packet)
            assert rec.response.exit_layer in ((remote,) if remote else (2, 4))
    total = run.total()
    assert sum(total.answered_at.values()) == total.steps == len(records)
    assert total.answered_at[1] == sum(r.plan.request is None or r.lost for r in records)
    served = {n: s["requests"] for n, s in run.servers.items()}
    assert served["edge_a"] == total.uplink_tx and served["edge_b"] == 0  # nearest: access
    assert served["cloud"] >= total.answered_at[4]
    if robot == 0.0:
        assert total.uplink_tx == 0
    if remote:
        assert total.uplink_tx > 0


def test_random_offloading_uses_every_reachable_edge_and_a_lost_feature_falls_back(ee):
    records = []
    topo = fleet_topology(n=3, link="lossy_wifi")
    run, _ = run_fleet(ee, "ee_random", topo, {1: 1.0, 2: 1.0}, episodes=2,
                       on_step=lambda _, rec: records.append(rec))
    assert run.servers["edge_a"]["requests"] > 0 and run.servers["edge_b"]["requests"] > 0
    lost = [r for r in records if r.lost]
    assert lost and run.total().fallbacks == len(lost)
    for rec in lost:  # the robot's own exit acted
        np.testing.assert_array_equal(rec.action, rec.plan.draft_action)


def test_the_fleet_is_deterministic_and_cloud_only_runs_the_whole_net_at_the_top(ee):
    topo = fleet_topology(n=3)
    a, _ = run_fleet(ee, "ee_random", topo, {1: 0.9, 2: 0.9})
    b, _ = run_fleet(ee, "ee_random", topo, {1: 0.9, 2: 0.9})
    assert {k: v.latencies for k, v in a.robots.items()} == {
        k: v.latencies for k, v in b.robots.items()}
    c, plan = run_fleet(ee, "cloud_only", topo, None)
    assert plan.ends["cloud"] == 4 and plan.ends["edge_a"] == 0 and plan.ends["r_0"] == 0
    assert set(c.servers) == {"cloud"}
    assert c.total().uplink_tx == c.total().steps


def test_features_cross_the_wire_exactly_and_bad_ones_are_refused(ee):
    from rclpy.serialization import serialize_message
    from sensor_msgs.msg import Image

    net = ee["net"]
    data = np.random.default_rng(0).normal(size=(net.history, net.d_model))
    for encoding, size in (("32FC1", 4), ("16FC1", 2)):
        f = FeatureRequest(2, data, 123, encoding)
        msg = Image(height=net.history, width=net.d_model, encoding=encoding,
                    step=net.d_model * size, data=f.to_bytes())
        msg.header.frame_id = f.label()
        assert len(serialize_message(msg)) == f.payload_bytes()
        back = FeatureRequest.from_image(f.label(), net.history, net.d_model, encoding,
                                         f.to_bytes(), (net.history, net.d_model))
        np.testing.assert_array_equal(back.data, f.data)
    half = FeatureRequest(2, data, 1, "16FC1")
    assert np.abs(half.data - data).max() < 1e-2  # what crosses is rounded to float16
    with pytest.raises(ProtocolError, match="is 3x128, expected 4x128"):
        FeatureRequest.from_image("feature:x1:s1", 3, 128, "32FC1", bytes(3 * 128 * 4),
                                  (4, 128))
    with pytest.raises(ProtocolError, match="do not hold"):
        FeatureRequest.from_image("feature:x1:s1", 4, 128, "32FC1", bytes(10), (4, 128))
    with pytest.raises(ProtocolError, match="encoding"):
        FeatureRequest(1, data, 1, "8UC1")
    with pytest.raises(ProtocolError, match="expected 4x128"):
        serve_features(net, 2, 0.5, {}, [FeatureRequest(1, data[:, :10], 1)])
    with pytest.raises(ProtocolError, match="ends at layer 2"):
        serve_features(net, 2, 0.5, {}, [FeatureRequest(2, data, 1)])


def test_bad_thresholds_and_placements_are_refused(ee):
    topo = fleet_topology()
    with pytest.raises(ExitPlanError, match=r"in \[0, 1\]"):
        build_plan("early_exit", topo, EXITS, {1: 1.5, 2: 0.5})
    with pytest.raises(ExitPlanError, match=r"in \[0, 1\]"):
        build_plan("early_exit", topo, EXITS, {1: -0.1, 2: 0.5})
    with pytest.raises(ExitPlanError, match="calibrated thresholds"):
        build_plan("early_exit", topo, EXITS, None)
    with pytest.raises(TopologyError, match="no regional node"):
        fleet_topology(partitions={"robot": 1, "regional": 4})
    with pytest.raises(TopologyError, match="neither a tier"):
        fleet_topology(partitions={"robot": 1, "edge_c": 2})
    with pytest.raises(ExitPlanError, match="exits after layers"):
        build_plan("early_exit", fleet_topology(partitions={"robot": 3, "cloud": 4}), EXITS,
                   {1: 0.5, 2: 0.5})
    with pytest.raises(ExitError, match="rising layer counts"):
        train_early_exit(None, None, ee["target"].model, (2, 1, 4), (1, 1, 1))
    with pytest.raises(ExitError, match="numbers >= 0"):
        train_early_exit(None, None, ee["target"].model, EXITS, (1, -1, 1))


def test_calibrated_thresholds_keep_the_answered_steps_within_the_loss_budget():
    rng = np.random.default_rng(0)
    conf = rng.random((200, 3))
    loss = np.clip(1 - conf + rng.normal(0, 0.05, conf.shape), 0, 1)
    loss[:, -1] = 0
    samples = exit_calibration.ExitSamples(EXITS, conf, loss, [True])
    for budget in (0.05, 0.2, 0.4):
        for k, theta in samples.thresholds_for_loss(budget).items():
            col = EXITS.index(k)
            chosen = conf[:, col] >= theta
            assert loss[chosen, col].mean() <= budget
            lower = conf[:, col] >= np.sort(conf[~chosen, col])[-1]  # one more step
            assert loss[lower, col].mean() > budget
    assert samples.stats()["1"]["spearman_confidence_loss"] < -0.9


def test_eval_runs_the_whole_family_on_a_topology(cli, tiny, ee, tmp_path):
    """``eval --topology F --modes early_exit,dto_ee,ee_fixed,ee_random,cloud_only``: every
    mode runs, dto_ee's plan is optimised (and differs from nearest-node offloading), and
    every mode's answers come from the exits its plan allows. The parts' times are given
    (``--exit-compute``), so the plans do not move with this machine's load."""
    import json

    import yaml

    parts = tmp_path / "compute.json"
    parts.write_text(json.dumps(COMPUTE.as_dict()))

    topo = tmp_path / "ee.yaml"
    doc = {"partitions": {"robot": 1, "edge": 2, "cloud": 4},
           "nodes": {"edge_a": {"tier": "edge", "speed": 0.2, "parent": "cloud",
                                "link": "wifi"},
                     "edge_b": {"tier": "edge", "speed": 1.0, "parent": "cloud",
                                "link": "wifi"},
                     "cloud": {"tier": "cloud", "speed": 2.0, "max_batch": 8}},
           "robots": [{"name": "r", "count": 3, "task": TASK, "mode": "dto_ee",
                       "access": "edge_a", "reach": ["edge_a", "edge_b"], "link": "5g_embb"}]}
    topo.write_text(yaml.safe_dump(doc))
    out = tmp_path / "e.json"
    res = run_cli("eval", "--task", TASK, "--draft", str(tiny["draft"]), "--target",
         str(tiny["target"]), "--models", str(tiny["root"]), "--early-exit", str(ee["path"]),
         "--topology", str(topo), "--modes", "early_exit,dto_ee,ee_fixed,ee_random,cloud_only",
         "--episodes", "1", "--exit-compute", str(parts), "--json", str(out))
    assert res.returncode == 0, res.stderr
    result = json.loads(out.read_text())
    assert result["early_exit"]["compute"] == json.loads(parts.read_text())
    assert set(result["modes"]) == {"early_exit", "dto_ee", "ee_fixed", "ee_random",
                                    "cloud_only"}
    plans = result["exit_plans"]
    assert plans["early_exit"]["offload"]["r_0"] == {"edge_a": 1.0}
    assert set(plans["dto_ee"]["offload"]["r_0"]) == {"edge_a", "edge_b"}
    assert plans["dto_ee"]["offload"]["r_0"]["edge_b"] > 0.5  # the slow edge is avoided
    assert result["modes"]["cloud_only"]["exit_shares"].keys() <= {"0", "4"}
    for mode, m in result["modes"].items():
        assert m["episodes"] == 3 and "servers" in m, mode
    assert "edge_a" in res.stdout and "dto_ee" in res.stdout
    # an early-exit mode without a topology is refused with the reason
    res = run_cli("eval", "--task", TASK, "--modes", "dto_ee", "--models",
                          str(tmp_path / "none"))
    assert res.returncode == 2 and "give the nodes with --topology" in res.stderr


def test_dto_ee_is_solved_for_the_fleet_and_re_solved_from_the_load_it_observes(ee):
    """The plan spreads the robots' features over the edges they reach, within the loss
    early_exit's plan has; during the run it is re-solved from the observed step rates
    (a robot slowed by its answers sends fewer steps than its control rate)."""
    from hybrid_policy.families.exits import setup as exit_setup

    topo = fleet_topology(n=3)
    models = exit_setup.ExitModels(ee["net"], ee["samples"], COMPUTE)
    run = exit_setup.exit_run("dto_ee", topo, models, 0.3, period_ms=40.0)
    plan = run.plan
    assert plan.info["modelled"]["mean_loss"] <= plan.info["loss_constraint"] + 1e-9
    assert set(plan.offload["r_0"]) == {"edge_a", "edge_b"}
    for probs in plan.offload.values():
        assert sum(probs.values()) == pytest.approx(1.0)
    assert all(0.0 <= t <= 1.0 for t in plan.thresholds.values())
    calls = []
    reoptimise = run.reoptimise
    run.reoptimise = lambda rates: (calls.append(rates), reoptimise(rates))
    run.reoptimise_ms = 200.0
    evaluate_fleet(topo, run, ComputeModel(1.0, 1.0), 100.0, 2, 0, progress=False)
    assert calls and plan.info["reoptimised"] == len(calls)
    for rates in calls:  # steps per ms: at most one per control period
        assert set(rates) == {"r_0", "r_1", "r_2"}
        assert all(0 < r <= 1 / 40.0 + 1e-9 for r in rates.values())
    for probs in plan.offload.values():
        assert sum(probs.values()) == pytest.approx(1.0)


@pytest.mark.parametrize("doc, why", [
    ({"layer_ms": [[2, 0.2]], "embed_ms": 0.1, "exit_ms": 0.1}, "bad exit compute"),
    ({"layer_ms": [[1, 0.5], [8, 0.2]], "embed_ms": 0.1, "exit_ms": 0.1}, "bad exit compute"),
    ({"layer_ms": [[1, 0.2]], "embed_ms": -1, "exit_ms": 0.1}, "bad exit compute"),
    ({"layer_ms": [[1, 0.2]], "embed_ms": float("nan"), "exit_ms": 0.1}, "bad exit compute"),
    ({"layer_ms": [[1, 0.2]], "exit_ms": 0.1}, "not an exit compute"),
    ({"layer_ms": 3, "embed_ms": 0.1, "exit_ms": 0.1}, "not an exit compute"),
])
def test_given_part_times_are_read_back_and_bad_ones_refused(tmp_path, doc, why):
    import json

    from hybrid_policy.errors import HybridPolicyError

    good = tmp_path / "good.json"
    good.write_text(json.dumps(COMPUTE.as_dict()))
    assert exit_calibration.ExitCompute.load(good) == COMPUTE
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc))
    with pytest.raises(HybridPolicyError, match=f"{why}.*expected .*layer_ms"):
        exit_calibration.ExitCompute.load(bad)
    with pytest.raises(HybridPolicyError, match="cannot read the exit compute"):
        exit_calibration.ExitCompute.load(tmp_path / "missing.json")


def test_exits_in_real_time_tick_on_where_the_cloud_is_far(ee):
    """Real time for the early-exit family: where every answer beats the 40 ms tick it is
    lockstep; where the cloud is a slow hop away, steps forwarded there miss their ticks
    (the robot holds still) or act on an older state, while lockstep waits and misses none."""
    fast = fleet_topology(1)
    lock, _ = run_fleet(ee, "cloud_only", fast, {}, episodes=1)
    rt, _ = run_fleet(ee, "cloud_only", fast, {}, episodes=1, control=Clock("realtime"))
    assert max(lock.robots["r_0"].latencies) < 40.0  # the premise of the equality
    assert lock.robots["r_0"].episode_success == rt.robots["r_0"].episode_success
    assert (lock.robots["r_0"].steps, rt.robots["r_0"].missed_ticks) == (
        rt.robots["r_0"].steps, 0)
    far = {"profile": "ideal", "delay_ms": 30.0}
    slow = fleet_topology(1, nodes={
        "edge_a": {"tier": "edge", "speed": 0.5, "max_batch": 4, "parent": "cloud",
                   "link": far},
        "edge_b": {"tier": "edge", "speed": 1.0, "max_batch": 4, "parent": "cloud",
                   "link": far},
        "cloud": {"tier": "cloud", "speed": 2.0, "max_batch": 8}})
    lock, _ = run_fleet(ee, "cloud_only", slow, {}, episodes=1)
    rt, _ = run_fleet(ee, "cloud_only", slow, {}, episodes=1, control=Clock("realtime"))
    assert lock.robots["r_0"].missed_ticks == 0
    r = rt.robots["r_0"]  # ~70 ms answers: the first tick holds, then each applies the
    assert r.missed_ticks >= 1 and r.stale_ticks >= r.steps - r.missed_ticks - 1  # last state's
