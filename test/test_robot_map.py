"""The robot map (core.robot_map): validation with the YAML's line, the observation derived
from standard readings, time alignment (stale, missing, NaN, wrong frame), commands."""

import dataclasses

import numpy as np
import pytest

import sim_envs
from hybrid_policy.core import robot_map
from hybrid_policy.core.robot_map import Assembler, InputError, RobotMapError

FETCH_TASKS = ("fetch_reach", "fetch_push", "fetch_pick_place")
MS = 1_000_000  # ns


def load(task, path=None):
    spec = sim_envs.task_spec(task)
    return robot_map.load(path or robot_map.default_path(task), spec.obs_fields,
                          spec.control_period_ms / 1e3, task)


def put_all(asm, measured, stamp_ns):
    """Every input of the map from the simulator's own measurement, with one stamp."""
    for name, spec in asm.rmap.inputs.items():
        asm.put(name, stamp_ns, spec.frame, measured[spec.topic])


@pytest.mark.parametrize("task", FETCH_TASKS)
def test_observation_from_standard_readings_equals_the_task_observation(task):
    """The simulator's measurements in SI units, through the shipped map, give the task's
    observation bit for bit; its commands, executed by the simulator, give the same next
    state as the policy's action given to the task directly."""
    rmap = load(task)
    direct, robot = sim_envs.make_task(task), sim_envs.make_task(task)
    expert = sim_envs.make_expert(task)
    rng = np.random.default_rng(0)
    steps = 0
    for episode in range(2):
        obs, _ = direct.reset(seed=episode)
        robot.reset(seed=episode)
        done = False
        while not done:
            asm = Assembler(rmap, len(obs), max_age_ms=100)
            put_all(asm, robot.measure(), 1000 * MS)
            (tick,) = asm.snapshot_ticks(1000 * MS)
            np.testing.assert_array_equal(tick.obs, obs)
            action = np.clip(expert(obs) + rng.normal(0, 0.5, 4), -1, 1).astype(np.float32)
            linear, targets = rmap.command(action, tick.finger_q)
            np.testing.assert_allclose(linear, action[:3].astype(float) * 0.05 / 0.04)
            obs, _, term, trunc, _ = direct.step(action)
            robot_obs, *_ = robot.step(robot.action_from_command(linear, targets))
            np.testing.assert_array_equal(robot_obs, obs)
            done, steps = term or trunc, steps + 1
    assert steps > 5  # several steps of two episodes were compared


def test_euler_matches_the_tasks_convention():
    from gymnasium_robotics.utils import rotations

    rng = np.random.default_rng(1)
    for _ in range(200):
        q = rng.normal(size=4)
        q /= np.linalg.norm(q)
        wxyz = np.array([q[3], *q[:3]])
        np.testing.assert_allclose(robot_map.euler_from_quaternion(q),
                                   rotations.mat2euler(rotations.quat2mat(wxyz)), atol=1e-9)


@pytest.fixture
def push():
    rmap = load("fetch_push")
    env = sim_envs.make_task("fetch_push")
    env.reset(seed=0)
    return rmap, env.measure()


def test_snapshot_waits_for_every_input_of_one_stamp(push):
    rmap, measured = push
    asm = Assembler(rmap, 28, max_age_ms=100)
    names = list(rmap.inputs)
    for name in names[:-1]:
        asm.put(name, 5 * MS, rmap.inputs[name].frame, measured[rmap.inputs[name].topic])
        assert asm.snapshot_ticks(5 * MS) == []
    last = rmap.inputs[names[-1]]
    asm.put(names[-1], 5 * MS, last.frame, measured[last.topic])
    (tick,) = asm.snapshot_ticks(6 * MS)
    assert tick.stamp_ns == 5 * MS and tick.obs is not None
    assert asm.snapshot_ticks(6 * MS) == []  # a snapshot is acted on once


def test_a_snapshot_superseded_before_it_is_complete_is_a_hold(push):
    rmap, measured = push
    asm = Assembler(rmap, 28, max_age_ms=100)
    for name, spec in rmap.inputs.items():
        if name != "object_pose":
            asm.put(name, 5 * MS, spec.frame, measured[spec.topic])
    asm.put("joints", 45 * MS, "", measured["joint_states"])  # the next snapshot begins
    (hold,) = asm.snapshot_ticks(45 * MS)
    assert hold.stamp_ns == 5 * MS and hold.obs is None
    assert "incomplete snapshot" in hold.hold_reason and "object_pose" in hold.hold_reason
    assert hold.finger_q is not None  # the hold keeps the fingers where they are


def test_stale_snapshot_is_a_hold_not_an_observation(push):
    rmap, measured = push
    asm = Assembler(rmap, 28, max_age_ms=100)
    put_all(asm, measured, 5 * MS)
    (tick,) = asm.snapshot_ticks(5 * MS + 150 * MS)
    assert tick.obs is None and "stale (150 ms, max_age_ms 100)" in tick.hold_reason


def test_timer_ticks_use_the_latest_of_each_input_no_older_than_max_age(push):
    rmap, measured = push
    rmap = dataclasses.replace(rmap, tick="timer", rate_hz=25.0)
    asm = Assembler(rmap, 28, max_age_ms=100)
    assert "missing" in asm.timer_tick(10 * MS).hold_reason  # nothing yet
    put_all(asm, measured, 10 * MS)
    tick = asm.timer_tick(60 * MS)
    assert tick.obs is not None and tick.waited_ms == 50.0  # the inputs waited for the tick
    spec = rmap.inputs["ee_pose"]
    asm.put("ee_pose", 100 * MS, spec.frame, measured[spec.topic])  # only one input refreshed
    tick = asm.timer_tick(140 * MS)
    assert tick.obs is None and tick.hold_reason.count("stale") == len(rmap.inputs) - 1
    assert "ee_pose" not in tick.hold_reason
    assert "ahead of the clock" in asm.timer_tick(-200 * MS + 100 * MS).hold_reason


def test_nan_input_means_no_action_until_a_finite_one_replaces_it(push):
    rmap, measured = push
    asm = Assembler(rmap, 28, max_age_ms=100)
    put_all(asm, measured, 5 * MS)
    asm.snapshot_ticks(5 * MS)
    bad = {**measured["object_pose"], "position": [np.nan, 0.0, 0.0]}
    for name, spec in rmap.inputs.items():
        reading = bad if name == "object_pose" else measured[spec.topic]
        if name == "object_pose":
            with pytest.raises(InputError, match="NaN or inf"):
                asm.put(name, 15 * MS, spec.frame, reading)
        else:
            asm.put(name, 15 * MS, spec.frame, reading)
    (tick,) = asm.snapshot_ticks(15 * MS)
    assert tick.obs is None and "object_pose NaN or inf" in tick.hold_reason


def test_wrong_frame_and_missing_joints_are_refused_and_not_stored(push):
    rmap, measured = push
    asm = Assembler(rmap, 28, max_age_ms=100)
    with pytest.raises(InputError, match="frame 'base_link', the map expects 'world'"):
        asm.put("ee_pose", 5 * MS, "base_link", measured["ee_pose"])
    assert "ee_pose" not in asm.latest
    with pytest.raises(InputError, match="joints .* missing"):
        asm.put("joints", 5 * MS, "", {"name": ["a"], "position": [0.0], "velocity": [0.0]})
    no_velocity = {**measured["joint_states"], "velocity": []}
    with pytest.raises(InputError, match=r"0 velocity values .*\(the map reads velocity\)"):
        asm.put("joints", 5 * MS, "", no_velocity)
    with pytest.raises(InputError, match="zero stamp"):
        asm.put("goal", 0, "world", measured["goal"])


def test_gripper_targets_start_from_the_fingers_and_stay_in_range(push):
    rmap, _ = push
    q = np.array([0.02, 0.03])
    np.testing.assert_allclose(rmap.gripper_targets(0.01, q), [0.03, 0.04])
    np.testing.assert_allclose(rmap.gripper_targets(-1.0, q), [0.0, 0.0])
    np.testing.assert_allclose(rmap.gripper_targets(1.0, q), [0.2, 0.2])
    assert rmap.twist_scale == pytest.approx(1.25)


SHIPPED = robot_map.default_path("fetch_push").read_text()


@pytest.mark.parametrize("edit,line,message", [
    (("  object_rot:", "  object_spin:"), "object_spin:",
     "unknown observation field 'object_spin' for fetch_push; valid: "),
    (("{from: object_pose, take: euler}", "{from: goal, take: euler}"), "object_rot:",
     "a geometry_msgs/msg/PointStamped cannot give 'euler'; it gives position"),
    (("type: geometry_msgs/msg/PointStamped", "type: std_msgs/msg/Float64"),
     "type: std_msgs", "type 'std_msgs/msg/Float64' is not one of sensor_msgs/msg/JointState"),
    (("{from: ee_twist, take: linear_per_step}", "{from: ee_speed, take: linear_per_step}"),
     "grip_velp:", "no input named 'ee_speed'"),
    (("  goal:                   {from: goal, take: position}", ""), "observation:",
     "observation fields not mapped: goal_x, goal_y, goal_z"),
    (("max_age_ms: 200", "max_age_ms: -5"), "max_age_ms:", "max_age_ms must be a number > 0"),
    (("control_period_ms: 40", "control_period_ms: 50"), "control_period_ms:",
     "control_period_ms 50 is not fetch_push's control period (40 ms)"),
    (("    frame: world\n    metres_per_unit: 0.05", "    frame: world\n    scale: 0.05"),
     "    scale: 0.05", "unknown key 'scale'"),
])
def test_a_bad_map_is_refused_with_its_line_and_what_is_valid(tmp_path, edit, line, message):
    old, new = edit
    assert old in SHIPPED
    text = SHIPPED.replace(old, new, 1)
    path = tmp_path / "map.yaml"
    path.write_text(text)
    expected_line = next(i for i, t in enumerate(text.splitlines(), 1) if line in t)
    with pytest.raises(RobotMapError) as err:
        load("fetch_push", path)
    assert f"{path}:{expected_line}:" in str(err.value)
    assert message in str(err.value)


def test_a_map_for_another_task_is_refused(tmp_path):
    with pytest.raises(RobotMapError, match="map is for task 'fetch_push', not 'fetch_reach'"):
        load("fetch_reach", robot_map.default_path("fetch_push"))


def test_a_late_message_is_refused_in_snapshot_maps(push):
    rmap, measured = push
    asm = Assembler(rmap, 28, max_age_ms=100)
    put_all(asm, measured, 10 * MS)
    asm.snapshot_ticks(10 * MS)
    with pytest.raises(InputError, match="late or out of order"):
        asm.put("ee_pose", 10 * MS, "world", measured["ee_pose"])


def test_a_task_without_a_robot_map_needs_the_vector_interface():
    from hybrid_policy.errors import HybridPolicyError
    from hybrid_policy.ros.graph import GraphConfig, recorded

    with pytest.raises(HybridPolicyError, match="has no robot map .* use interface vector"):
        GraphConfig(mode="draft_only", task="mw_pick_place")
    cfg = GraphConfig(mode="draft_only", task="mw_pick_place", interface="vector")
    assert "observation:sensor_msgs/msg/JointState" in recorded(cfg)


@pytest.mark.parametrize("task,robot_topics", [
    ("fetch_reach", {"joint_states", "ee_pose", "ee_twist", "goal", "cmd_twist",
                     "gripper_command"}),
    ("fetch_push", {"joint_states", "ee_pose", "ee_twist", "object_pose", "object_twist",
                    "goal", "cmd_twist", "gripper_command"}),
])
def test_the_graph_records_the_robot_topics_its_map_names(task, robot_topics):
    from hybrid_policy.ros.graph import GraphConfig, recorded

    topics = {entry.split(":")[0] for entry in recorded(GraphConfig(mode="hybrid", task=task))}
    assert robot_topics <= topics and not {"observation", "action"} & topics
    env = sim_envs.make_task(task)
    env.reset(seed=0)
    assert set(env.measure()) == robot_topics - {"cmd_twist", "gripper_command"}
