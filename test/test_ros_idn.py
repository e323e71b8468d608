"""The inference delivery network over ROS 2 (``bringup --topology`` with a placement mode):
the placement node publishes each period's allocation, every compute node on a robot's path
runs an ``idn_node`` that loads and unloads what the allocation gives it and serves the
robots' act requests, each robot's draft node runs ``IdnMode`` on what its path reports
held and loaded. In lockstep ``idn_static`` acts as the in-process fleet does, step for step;
placements that change while the fleet runs are followed by loads and unloads and move the
steps; a malformed allocation is reported and ignored."""

import subprocess
from collections import Counter

import numpy as np
import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from ros_helpers import SEED, commanded, finish, robot_steps, spin_until, start_bringup

from hybrid_policy.bag_analysis import read_bag
from hybrid_policy.core import topology
from hybrid_policy.families.idn import idn
from hybrid_policy.families.idn import setup as idn_setup
from hybrid_policy.ros.messages import stamp_key, status, status_values

DEADLINE_MS = 3000.0
TASK = "fetch_reach"

# Two cells under a regional node under the cloud (the repository), robots' links wifi.
TOPOLOGY = """
nodes:
  cell_a: {{tier: edge, speed: 0.5, max_batch: 4, memory_params: {cell}, parent: regional,
           link: {{profile: 5g_urllc, delay_ms: 5}}}}
  cell_b: {{tier: edge, speed: 0.5, max_batch: 4, memory_params: {cell}, parent: regional,
           link: {{profile: 5g_urllc, delay_ms: 5}}}}
  regional: {{tier: regional, speed: 1.0, max_batch: 8, memory_params: {big}, parent: cloud,
             link: {{profile: 5g_embb, delay_ms: 20}}}}
  cloud: {{tier: cloud, speed: 4.0, max_batch: 16}}
robots:
{robots}
idn:
  period_ms: 200
  latency_weight: 0.01
  robot_params: {robot}
  load_ms_per_mparam: 0
  eta: 100  # idn: moves within a period or two, so a short run sees its placements change
"""
# one robot in each cell (lockstep); one robot in cell_a (placements that change)
ROBOT = "  - {{name: {}, count: 1, task: fetch_reach, mode: idn, access: {}, link: wifi}}"
TWO_CELLS = "\n".join([ROBOT.format("ra", "cell_a"), ROBOT.format("rb", "cell_b")])
ONE_ROBOT = ROBOT.format("robot", "cell_a")


def write_topology(tiny_idn, tmp_path, robots, small_cells):
    """Cells that hold only the draft (``small_cells``: the best placement is regional's
    target, two hops away) or any one variant; regional holds the largest."""
    sizes = {v.name: v.params for v in tiny_idn["catalogue"].variants}
    path = tmp_path / "idn_ros.yaml"
    path.write_text(TOPOLOGY.format(cell=sizes["draft" if small_cells else "target"],
                                    big=sizes["target"], robot=sizes["draft"], robots=robots))
    catalogue = tiny_idn["catalogue"].save(tmp_path / "catalogue.json")
    return path, catalogue


def bringup_args(cli, tiny_idn, topo, catalogue, bag, mode, episodes):
    return [*cli, "bringup", "--topology", str(topo), "--mode", mode, "--episodes",
            str(episodes), "--seed", str(SEED), "--models", str(tiny_idn["root"]),
            "--catalogue", str(catalogue), "--bag", str(bag), "--deadline-ms",
            str(DEADLINE_MS), "--max-age-ms", "60000", "--timeout", "240"]


def run_ros(args):
    out = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-5000:]
    return out


def served_at(topics, robot):
    """``{step stamp: node}`` of every request the robot sent (its ``out/<node>`` topics)."""
    prefix = f"{robot}/out/"
    return {stamp_key(m.header.stamp): k[len(prefix):].split("/")[0]
            for k, msgs in topics.items() if k.startswith(prefix) and k.endswith("/request")
            for _, m in msgs}


def steps_of(topics, robot):
    """``[(stamp, step values)]`` in order, and the node that served each (robot = itself)."""
    sent = served_at(topics, robot)
    steps = [(stamp_key(m.header.stamp), dict(zip(m.name, m.position)))
             for _, m in topics[f"{robot}/step"]]
    return steps, [sent.get(k, robot) if s["uplink"] else robot for k, s in steps]


def allocations(topics):
    """``[(period, {node: set of variant keys})]`` the placement node published."""
    out = []
    for _, msg in topics["placement/allocation"]:
        out.append((int(msg.status[0].message.split()[1]),
                    {st.name: set(status_values(st)) for st in msg.status}))
    return out


def events(topics, node, message):
    return [status_values(m) for _, m in topics.get(f"{node}/events", []) if m.message == message]


def every_step_acted(topics, robot, episodes):
    """Each episode's steps all acted, and on an answer unless the request was lost on a link
    or refused by a node that had just dropped its variant (both reported with the stamp)."""
    steps = [(stamp_key(m.header.stamp), dict(zip(m.name, m.position)))
             for _, m in topics[f"{robot}/step"]]
    ends = [status_values(m) for _, m in topics[f"{robot}/episode"]
            if m.message == "episode end"]
    assert len(ends) == episodes
    assert len(steps) == sum(int(e["steps"]) for e in ends) > 0
    explained = {int(e["stamp"]) for name in topics if name.endswith("/events")
                 for _, m in topics[name] for e in [status_values(m)]
                 if m.message.startswith(("lost on", "refused")) and e.get("stamp")}
    assert {k for k, s in steps if s["fallback"]} <= explained
    return steps


# -- lockstep ---------------------------------------------------------------------------------
def test_idn_static_over_ros_acts_as_the_in_process_fleet(cli, tiny_idn, tmp_path):
    """Same actions, same serving node and same uplink bytes per step, robot by robot; both
    robots are served two hops away (regional), in batches that mix their requests."""
    topo_path, catalogue = write_topology(tiny_idn, tmp_path, TWO_CELLS, small_cells=True)
    bag, episodes = tmp_path / "bag", 2
    run_ros(bringup_args(cli, tiny_idn, topo_path, catalogue, bag, "idn_static", episodes))

    doc = topology.read(topo_path)
    topo = topology.parse(doc, str(topo_path))
    records: dict[str, list] = {}
    idn_setup.fleet_run("idn_static", topo, idn.config_of(topo, doc), tiny_idn["catalogue"],
                        tiny_idn["root"], episodes, SEED, deadline_ms=DEADLINE_MS,
                        progress=False,
                        on_step=lambda robot, rec: records.setdefault(robot, []).append(rec))

    info, topics = read_bag(bag)
    assert info["mode"] == "idn_static" and info["repository"] == "cloud"
    assert (tmp_path / "bag.catalogue.json").exists()  # what the nodes read
    routes = set()
    for robot in ("ra_0", "rb_0"):
        recs = records[robot]
        mine, _ = robot_steps(topics, robot, recs)
        steps, nodes = steps_of(topics, robot)
        assert nodes == [r.plan.route_to for r in recs]
        assert [int(s["uplink_bytes"]) for _, s in steps] == [
            0 if r.plan.request is None else r.plan.request.payload_bytes() for r in recs]
        assert [s["fallback"] for _, s in steps] == [
            float(r.plan.request is not None and r.response is None) for r in recs]
        told, expected = commanded(mine, "standard", np.array([r.action for r in recs]))
        np.testing.assert_allclose(told, expected, atol=1e-5)
        routes |= set(nodes)
    assert routes == {"regional"}, routes
    # hybrid-policy analyze counts a request reaching a node of the path as a server op
    from hybrid_policy.bag_analysis import analyze

    ops = sum(r.server_op for recs in records.values() for r in recs)
    assert analyze(bag)["modes"]["idn_static"]["counts"]["server_ops"] == ops > 0
    # the one allocation, applied before the robots started: regional holds the target
    placed = allocations(topics)
    assert placed and all(p == placed[0][1] for _, p in placed)
    assert placed[0][1]["regional"] == {"fetch_reach/target"}
    loaded = events(topics, "regional", "loaded")
    assert [e["variant"] for e in loaded] == ["fetch_reach/target"] and not events(
        topics, "regional", "unloaded")


# -- placements that change while the fleet runs ------------------------------------------------
def in_force(placed, times, t):
    """The allocations in force at bag time ``t``: the latest one published and the two before
    it (a robot reads the allocation a little after the bag does)."""
    i = max((j for j, when in enumerate(times) if when <= t), default=0)
    return [p for _, p in placed[max(0, i - 2):i + 1]]


def test_infida_placements_change_while_running_and_nodes_follow_them(cli, tiny_idn, tmp_path):
    """``idn`` every 200 ms: the allocation changes while the robot runs; every node on its
    path loads and unloads exactly what each allocation adds and drops (events with the
    allocation's period), and every request goes to a node and variant that an allocation
    in force gave it, so the steps move with the placement. Every step acts."""
    topo_path, catalogue = write_topology(tiny_idn, tmp_path, ONE_ROBOT, small_cells=False)
    bag, episodes = tmp_path / "bag", 2
    run_ros(bringup_args(cli, tiny_idn, topo_path, catalogue, bag, "idn", episodes))
    _, topics = read_bag(bag)
    placed = allocations(topics)
    times = [t for t, _ in topics["placement/allocation"]]
    assert [p for p, _ in placed] == list(range(len(placed)))
    assert len({tuple(sorted((n, tuple(sorted(v))) for n, v in p.items()))
                for _, p in placed}) >= 2
    changes = 0
    for node in ("cell_a", "regional"):  # every change of its entry, loaded or unloaded
        expected = {("loaded", v, 0) for v in placed[0][1].get(node, ())}
        for (_, before), (p, after) in zip(placed, placed[1:]):
            a, b = before.get(node, set()), after.get(node, set())
            expected |= {("loaded", v, p) for v in b - a} | {("unloaded", v, p) for v in a - b}
        seen = {(kind, e["variant"], int(e["period"])) for kind in ("loaded", "unloaded")
                for e in events(topics, node, kind)}
        assert seen == expected, node
        changes += sum(1 for kind, _, p in seen if p > 0)
    assert changes >= 2  # nodes loaded and unloaded while the robot ran
    every_step_acted(topics, "robot_0", episodes)
    for name, msgs in topics.items():
        if name.startswith("robot_0/out/") and name.endswith("/request"):
            node = name.split("/")[2]
            for t, m in msgs:  # the repository (cloud) holds every variant
                assert node == "cloud" or any(m.header.frame_id in p.get(node, ())
                                              for p in in_force(placed, times, t)), (node, t)
    # the steps moved with the placement: served by two places or more, the robot's own
    # draft among them (which of them the timing of the periods decides)
    _, where = steps_of(topics, "robot_0")
    assert len(set(where)) >= 2, Counter(where)


# -- a bad allocation ----------------------------------------------------------------------------
BAD = (  # each would make cell_a drop its target for the draft, were it applied
    [("cell_a", {"fetch_reach/draft": 1}), ("mars", {"fetch_reach/draft": 1})],
    [("cell_a", {"fetch_reach/draft": 1}), ("cell_a", {"fetch_reach/exit9": 1})],
)


def test_a_bad_allocation_is_reported_and_ignored_while_greedy_moves_the_steps(
        cli, tiny_idn, tmp_path):
    """``idn_greedy``: its first allocation holds nothing, so the first steps go three links
    up to the repository (cloud); then cell_a loads the target and serves the rest. Two
    malformed allocations sent meanwhile (an unknown node, an unknown variant) are reported
    by every node and ignored: nothing is unloaded, and cell_a keeps serving."""
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

    topo_path, catalogue = write_topology(tiny_idn, tmp_path, ONE_ROBOT, small_cells=False)
    bag, episodes = tmp_path / "bag", 4
    rclpy.init()
    node = rclpy.create_node("idn_test_injector", namespace="/hybrid")
    try:  # matched while the graph starts, so the messages go out at once
        pub = node.create_publisher(DiagnosticArray, "placement/allocation", QoSProfile(
            depth=10, reliability=ReliabilityPolicy.RELIABLE,
            durability=DurabilityPolicy.TRANSIENT_LOCAL))
        proc, _ = start_bringup(bringup_args(cli, tiny_idn, topo_path, catalogue, bag,
                                             "idn_greedy", episodes), "all active", timeout=150)
        assert spin_until(node, lambda: pub.get_subscription_count() >= 5, 20.0)
        for entries in BAD:
            msg = DiagnosticArray()
            msg.status = [status(n, 0, "period 0", values) for n, values in entries]
            pub.publish(msg)
        spin_until(node, lambda: False, 0.5)
    finally:
        node.destroy_node()
        rclpy.shutdown()
    assert finish(proc, timeout=240) == 0
    _, topics = read_bag(bag)
    for name in ("cell_a", "regional", "cloud", "robot_0"):
        reasons = [e["reason"] for e in events(topics, name, "rejected placement")]
        assert any("node 'mars'" in r for r in reasons), (name, reasons)
        assert any("'fetch_reach/exit9' on cell_a" in r for r in reasons), (name, reasons)
        assert not events(topics, name, "unloaded"), name
    steps = every_step_acted(topics, "robot_0", episodes)
    _, nodes = steps_of(topics, "robot_0")
    assert nodes[0] == "cloud" and nodes[-1] == "cell_a", Counter(nodes)
    assert "cloud" not in nodes[nodes.index("cell_a"):]
    assert len(steps) == len(nodes)
    # cell_a served after it had refused the bad allocations
    refused = max(t for t, m in topics["cell_a/events"] if m.message == "rejected placement")
    assert any(t > refused for t, _ in topics["cell_a/exit/robot_0/robot_0/request"])
    # the first requests crossed three links to the cloud and their answers came back
    sent = {k for k, n in served_at(topics, "robot_0").items() if n == "cloud"}
    assert sent and sent <= {stamp_key(m.header.stamp)
                             for _, m in topics["robot_0/out/cloud/robot_0/answer"]}


# -- the graph, without DDS ----------------------------------------------------------------------
def test_the_placement_graph_wires_every_path(tiny_idn, tmp_path):
    from hybrid_policy.core.link import link_spec
    from hybrid_policy.ros.fleet_graph import graph_nodes as nodes
    from hybrid_policy.ros.graph import GraphConfig

    topo_path, catalogue = write_topology(tiny_idn, tmp_path, TWO_CELLS, small_cells=True)
    specs = {s.key: s for s in nodes(GraphConfig(
        mode="idn", task=TASK, topology=str(topo_path), idn_catalogue=str(catalogue),
        models=str(tiny_idn["root"]), bag=str(tmp_path / "bag")))}
    topo = topology.load(topo_path)
    paths = {"ra_0": ["cell_a", "regional", "cloud"], "rb_0": ["cell_b", "regional", "cloud"]}
    for robot, path in paths.items():
        spec = next(r for r in topo.robots if r.name == robot)
        for i, node in enumerate(path):
            link = specs[f"{robot}/link_to_{node}"].parameters
            assert link["carries"] == "act" and link["flows"] == [f"{robot}:{robot}:{node}"]
            assert link["links"] == [link_spec(k) for k in topo.links_between(spec, node)]
            assert len(link["links"]) == i + 1  # wifi, then each uplink on the way
        draft = specs[f"{robot}/draft_node"].parameters
        assert draft["mode"] == "idn" and draft["robot"] == robot and "draft" not in draft
        assert f"out/{path[0]}/{robot}/request 2" in draft["expect"]  # link + recorder
        assert "step 2" in draft["expect"]  # the placement node counts them, and the bag
    for node in ("cell_a", "cell_b", "regional", "cloud"):
        assert specs[f"{node}/idn_node"].respawn
    assert specs["regional/idn_node"].parameters["inputs"] == ["ra_0", "rb_0"]
    placement = specs["placement/placement_node"].parameters
    assert placement["mode"] == "idn" and "allocation 7" in placement["expect"]
    recorded = specs["recorder_node"].parameters["topics"]
    for topic in ("placement/allocation:diagnostic_msgs/msg/DiagnosticArray",
                  "regional/holdings:diagnostic_msgs/msg/DiagnosticStatus",
                  "ra_0/out/regional/ra_0/request:sensor_msgs/msg/JointState",
                  "regional/exit/ra_0/ra_0/request:sensor_msgs/msg/JointState",
                  "ra_0/out/regional/ra_0/answer:sensor_msgs/msg/JointState"):
        assert topic in recorded, topic


def test_shifts_are_refused_over_ros(tiny_idn, tmp_path):
    from hybrid_policy.errors import HybridPolicyError
    from hybrid_policy.ros.fleet_graph import graph_nodes as nodes
    from hybrid_policy.ros.graph import GraphConfig

    catalogue = tiny_idn["catalogue"].save(tmp_path / "catalogue.json")
    with pytest.raises(HybridPolicyError, match="shifts .* run in process only"):
        nodes(GraphConfig(mode="idn", task=TASK, topology=str(tiny_idn["topology"]),
                          idn_catalogue=str(catalogue), models=str(tiny_idn["root"])))


# -- a node's holdings and a robot's view, in process ------------------------------------------
def test_holdings_load_for_their_time_drop_at_once_and_feed_the_robots_view(tiny_idn, tmp_path):
    """``Holder`` loads what the allocation gives its node, usable after the topology's load
    time; what a later allocation drops goes at once, and a robot's view stops routing to it
    at once even while the node still reports it loaded; a bad allocation changes nothing."""
    from dataclasses import replace

    from hybrid_policy.families.idn.serve import NodeStore, VariantModels
    from hybrid_policy.ros import messages, qos
    from hybrid_policy.families.idn.idn_node import Holder, PlacementView, holdings_msg
    from hybrid_policy.families.idn.placement_node import allocation_msg
    from hybrid_policy.ros.reporting import Reporter

    topo_path, _ = write_topology(tiny_idn, tmp_path, ONE_ROBOT, small_cells=False)
    doc = topology.read(topo_path)
    topo = topology.parse(doc, str(topo_path))
    target = tiny_idn["catalogue"].find(TASK, "target")
    cfg = replace(idn.config_of(topo, doc), load_ms_per_mparam=300.0 / (target.params / 1e6))
    net = idn.IdnNetwork(topo, tiny_idn["catalogue"], cfg)  # the target loads in 300 ms
    slot = net.slot_of[("cell_a", target.key)]
    x = np.zeros(len(net.slots), np.int8)
    x[slot] = 1
    rclpy.init()
    node = rclpy.create_node("holder_test")
    try:
        report = Reporter(node, qos.profile("telemetry"))
        store = NodeStore(VariantModels(tiny_idn["root"]))
        cell = Holder(node, net, "cell_a", store, report, "/holder_test")
        robot = Holder(node, net, "robot_0", NodeStore(VariantModels(tiny_idn["root"])),
                       report, "/holder_test")
        view = PlacementView(node, net, ["cell_a", "regional", "cloud"], robot, report,
                             "/holder_test")
        first = allocation_msg(net, x, 0, node.get_clock().now().to_msg())
        cell.offer(first)
        assert not store.held  # not enabled yet: the allocation waits
        cell.enable()
        assert cell.state() == {target.key: "loading"} and not cell.complete
        assert not cell.available()[slot]
        assert spin_until(node, lambda: cell.complete, 5.0)
        assert cell.available()[slot] and target.key in store.held
        # the robot routes to it once the node reports it loaded and the allocation gives it
        robot.offer(first)
        robot.enable()
        view.on_holdings(holdings_msg("cell_a", 0, cell.state()))
        assert view.blocker() is not None  # regional and cloud have not reported yet
        view.refresh()
        assert view.placement.available[slot]
        with pytest.raises(messages.MessageError, match="node 'mars'"):
            cell.offer(DiagnosticArray(status=[status("mars", 0, "period 1", {})]))
        assert cell.latest[0] == 0 and target.key in store.held  # ignored
        dropped = allocation_msg(net, np.zeros_like(x), 1, node.get_clock().now().to_msg())
        robot.offer(dropped)
        view.refresh()
        assert not view.placement.available[slot]  # at once, before cell_a reports
        cell.offer(dropped)
        assert not store.held and cell.state() == {} and cell.complete
    finally:
        node.destroy_node()
        rclpy.shutdown()


def test_a_link_node_loses_act_requests_as_the_fleet_does():
    """``carries: act`` over a chain of links: link ``i`` draws ``packet_rng(seed, i)``, as
    ``core.fleet`` does for a placement step, so the same requests are lost (10% per link)."""
    from builtin_interfaces.msg import Time
    from rclpy.serialization import serialize_message

    from hybrid_policy.core.link import link_profile, packet_rng
    from hybrid_policy.core.protocol import Request
    from hybrid_policy.families.idn.idn_node import act_request_msg
    from hybrid_policy.ros.link_node import LinkNode

    chain = [link_profile("lossy_wifi")] * 2
    rclpy.init(args=["--ros-args", "-p", "carries:=act", "-p", "root:=/link_test", "-p",
                     "flows:=['r:r:n']", "-p", "links:=['lossy_wifi','lossy_wifi']"])
    node = LinkNode()
    try:
        lost, sent = [], []
        node._report_loss = lambda direction, key, robot: lost.append(key - 1)

        class Out:
            publish = staticmethod(sent.append)

        seeds = range(300)
        for seed in seeds:
            msg = act_request_msg(Time(sec=0, nanosec=seed + 1), Request(
                "act", np.zeros((4, 13), np.float32), seed), "fetch_reach/target")
            node.on_feature(serialize_message(msg), "r", Out)
        expected = [s for s in seeds if any(link.deliver(500, True, packet_rng(s, i)) is None
                                            for i, link in enumerate(chain))]
        assert lost == expected and 20 < len(lost) < 100
    finally:
        node.close()
        node.destroy_node()
        rclpy.shutdown()
