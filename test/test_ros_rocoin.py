"""RoCoIn over ROS 2 (``bringup --topology`` with a rocoin mode): the robot's draft node
sends each window to every device through its own link node, one student node per device
answers its part, the robot combines the first answer per group; in lockstep it acts as
the in-process fleet does, and devices that crash are respawned while their groups'
other replicas answer every step."""

import subprocess

import numpy as np
import pytest
from ros_helpers import SEED, TASK, bringup_args, commanded, robot_steps

from hybrid_policy.bag_analysis import read_bag
from hybrid_policy.core import topology
from hybrid_policy.core.compute import ComputeModel
from hybrid_policy.core.fleet import evaluate_fleet
from hybrid_policy.families.rocoin.fleet import StudentRun
from hybrid_policy.families.rocoin.rocoin import Layout, config_of
from hybrid_policy.families.rocoin.assign import CostModel
from hybrid_policy.families.rocoin.setup import StudentModels
from hybrid_policy.policies import load_policy
from hybrid_policy.families.rocoin.students import load_students
from hybrid_policy.ros.messages import stamp_key, status_values

LINK, DEADLINE_MS, ROBOT = "6g_hrllc", 5000.0, "robot_0"
GROUPS = [["d0", "d2"], ["d1", "d3"]]  # fixed: the solver's depend on measured timings

# One robot reaching four edge devices of different speed; two students, two replicas each.
FLEET = """
nodes:
  d0: {{tier: edge, speed: 0.5, max_batch: 2}}
  d1: {{tier: edge, speed: 0.4, max_batch: 2}}
  d2: {{tier: edge, speed: 0.3, max_batch: 2}}
  d3: {{tier: edge, speed: 0.2, max_batch: 2}}
robots:
  - {{name: robot, count: 1, task: {task}, mode: rocoin, access: d0,
     reach: [d0, d1, d2, d3], link: {link}}}
rocoin:
  students: 2
  replicas: 2
  groups: [[d0, d2], [d1, d3]]
  faults: {faults}
"""


def write_fleet(tmp_path, faults="{p: 0.0}"):
    path = tmp_path / "fleet.yaml"
    path.write_text(FLEET.format(task=TASK, link=LINK, faults=faults))
    return path


def run_ros(cli, tiny, tiny_students, fleet, bag, episodes):
    out = subprocess.run(
        bringup_args(cli, tiny, bag, "rocoin", LINK, episodes, "--models", str(tiny["root"]),
                     "--students", str(tiny_students["path"]), "--topology", str(fleet),
                     "--deadline-ms", str(DEADLINE_MS), "--max-age-ms", "60000"),
        capture_output=True, text=True, timeout=400)
    assert out.returncode == 0, out.stderr[-4000:]
    return out


def answers_by_device(topics, robot=ROBOT):
    """``{device: set of stamps}`` of the answers that reached the robot from each device."""
    prefix = f"{robot}/out/"
    return {k[len(prefix):].split("/")[0]: {stamp_key(m.header.stamp) for _, m in v}
            for k, v in topics.items() if k.startswith(prefix) and k.endswith("/answer")}


def test_a_ros_rocoin_fleet_decides_as_the_in_process_fleet(cli, tiny, tiny_students, tmp_path):
    fleet, bag, episodes = write_fleet(tmp_path), tmp_path / "bag", 2
    run_ros(cli, tiny, tiny_students, fleet, bag, episodes)
    lay = Layout.load(tmp_path / "bag.layout_rocoin.json")  # what the nodes ran
    assert lay.groups == GROUPS and lay.devices == ["d0", "d1", "d2", "d3"]

    doc = topology.read(fleet)
    topo = topology.parse(doc, str(fleet))
    cfg = config_of(topo, doc)
    draft = load_policy(tiny["draft"], role="draft")
    target = load_policy(tiny["target"], role="target")
    nets, _ = load_students(tiny_students["path"], TASK)
    sm = StudentModels(TASK, cfg, target, tiny_students["path"], nets, GROUPS,
                       CostModel(0.1, 1.0), [0.3, 0.3], 2.0)
    records: dict[str, list] = {}
    evaluate_fleet(topo, StudentRun(lay, sm, cfg.faults, draft, target.history),
                   ComputeModel(1.0, 1.0), DEADLINE_MS, episodes, SEED, progress=False,
                   on_step=lambda robot, rec: records.setdefault(robot, []).append(rec))

    info, topics = read_bag(bag)
    recs = records[ROBOT]
    assert all(r.response is not None for r in recs)  # in process every step was answered
    mine, steps = robot_steps(topics, ROBOT, recs)
    assert [s["fallback"] for s in steps] == [0.0] * len(recs)
    assert [s["verdict"] for s in steps] == [1.0] * len(recs)
    assert [int(s["uplink_bytes"]) for s in steps] == [
        r.plan.request.payload_bytes() * r.plan.copies for r in recs]
    assert recs[0].plan.copies == 4
    told, expected = commanded(mine, "standard", np.array([r.action for r in recs]))
    np.testing.assert_allclose(told, expected, atol=1e-5)
    # every device got every window; every step had an answer from each group
    stamps = {stamp_key(m.header.stamp) for _, m in mine["step"]}
    for d in lay.devices:
        assert len(topics[f"{d}/exit/{ROBOT}/{ROBOT}/feature"]) == len(recs), d
    by_device = answers_by_device(topics)
    for g in lay.groups:
        assert stamps <= set().union(*(by_device.get(d, set()) for d in g)), g
    assert info["layout"] == "d0|d2;d1|d3" and info["mode"] == "rocoin"


def test_crashing_replicas_are_respawned_and_their_groups_still_answer(cli, tiny,
                                                                       tiny_students, tmp_path):
    """d2 and d3 (one replica of each group) crash on every window they get: their processes
    exit, are respawned and brought back to active (and crash again), and every step is
    still answered by d0 and d1, with no fallback."""
    crashing = ["d2", "d3"]
    fleet = write_fleet(tmp_path, f"{{p: 1.0, kind: crash, devices: [{', '.join(crashing)}]}}")
    bag, episodes = tmp_path / "bag", 16
    out = run_ros(cli, tiny, tiny_students, fleet, bag, episodes)
    _, topics = read_bag(bag)
    steps = [dict(zip(m.name, m.position)) for _, m in topics[f"{ROBOT}/step"]]
    ends = [m for _, m in topics[f"{ROBOT}/episode"] if m.message == "episode end"]
    assert len(ends) == episodes and len(steps) > 0
    assert all(s["fallback"] == 0.0 and s["verdict"] == 1.0 for s in steps)  # no fallbacks
    stamps = {stamp_key(m.header.stamp) for _, m in topics[f"{ROBOT}/step"]}
    by_device = answers_by_device(topics)
    for g in GROUPS:
        answered = set().union(*(by_device.get(d, set()) for d in g))
        assert len(answered & stamps) >= len(steps), g
    for d in crashing:
        assert len(topics.get(f"{d}/exit/{ROBOT}/{ROBOT}/feature", [])) > 0, d  # it got some
        assert not by_device.get(d), d  # and answered none
        crashes = [status_values(m) for _, m in topics.get(f"{d}/events", [])
                   if m.message == "crash fault"]
        assert crashes, f"{d} reported no crash"
        assert f"{d}/student_node died (status 70)" in out.stderr, out.stderr[-3000:]
    for d in ("d0", "d1"):
        assert by_device[d] >= stamps, d
    # bringup respawned them and the lifecycle manager brought them back to active (how
    # often within the run depends on the machine's speed: at least one, once)
    assert any(out.stderr.count(f"{d}/student_node active") >= 2 for d in crashing), \
        out.stderr[-3000:]


@pytest.mark.parametrize("mode", ["rocoin", "rocoin_single"])
def test_the_rocoin_graph_wires_every_device(tiny, tiny_students, tmp_path, mode):
    """Without DDS: a link per device with its own packet randomness, a student node per
    device of the layout, and the robot's answers recorded per device."""
    from hybrid_policy.families.rocoin.rocoin import device_hop, layout
    from hybrid_policy.ros.fleet_graph import graph_nodes as nodes
    from hybrid_policy.ros.graph import GraphConfig

    fleet = write_fleet(tmp_path)
    doc = topology.read(fleet)
    topo = topology.parse(doc, str(fleet))
    cfg = config_of(topo, doc)
    lay = layout(mode, topo, cfg, GROUPS, [list(c) for c in tiny_students["codes"]], 8)
    lay.save(tmp_path / "layout.json")
    specs = {s.key: s for s in nodes(GraphConfig(
        mode=mode, task=TASK, link=LINK, topology=str(fleet), target=str(tiny["target"]),
        draft=str(tiny["draft"]), rocoin_layout=str(tmp_path / "layout.json"),
        students_path=str(tiny_students["path"]), bag=str(tmp_path / "bag")))}
    for i, d in enumerate(lay.devices):
        link = specs[f"{ROBOT}/link_to_{d}"].parameters
        assert link["packet_hop"] == device_hop(i) and link["flows"] == [f"{ROBOT}:{ROBOT}:{d}"]
        assert specs[f"{d}/student_node"].respawn
        assert specs[f"{d}/student_node"].parameters["device"] == d
    assert len([k for k in specs if k.endswith("/student_node")]) == len(lay.devices)
    topics = specs["recorder_node"].parameters["topics"]
    for d in lay.devices:
        assert f"{ROBOT}/out/{d}/{ROBOT}/answer:sensor_msgs/msg/JointState" in topics
    draft = specs[f"{ROBOT}/draft_node"].parameters
    assert draft["mode"] == mode and draft["robot"] == ROBOT and "calibration" not in draft
