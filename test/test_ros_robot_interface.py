"""The draft node's standard robot interface over DDS: a snapshot becomes one TwistStamped
and one gripper command; stale, missing, non-finite and wrong-frame inputs make it hold
still and say why; the reset service starts a new run."""

import os
import subprocess
import time

import numpy as np
import pytest

os.environ.setdefault("ROS_DOMAIN_ID", str(40 + os.getpid() % 50))

import rclpy  # noqa: E402
from diagnostic_msgs.msg import DiagnosticStatus  # noqa: E402
from geometry_msgs.msg import TwistStamped  # noqa: E402
from rclpy.node import Node  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402

import sim_envs  # noqa: E402
from hybrid_policy.ros import messages, qos, robot_io  # noqa: E402
from hybrid_policy.ros.graph import TOPICS  # noqa: E402
from hybrid_policy.ros.readiness import READY_QOS, READY_TOPIC  # noqa: E402

import ros_helpers  # noqa: E402

NS = "/robot_if"
INPUTS = ("joint_states", "ee_pose", "ee_twist", "goal")  # fetch_reach's map
FINGERS = ["robot0:r_gripper_finger_joint", "robot0:l_gripper_finger_joint"]
MAX_AGE_MS = 400


class Robot(Node):
    """Plays a Fetch driver: publishes the map's inputs from a real Reach scene."""

    def __init__(self, namespace=NS, seed=1):
        super().__init__("robot", namespace=namespace)
        control = qos.profile("control")
        self.pubs = {t: self.create_publisher(robot_io.MESSAGE[TOPICS[t].type], t, control)
                     for t in INPUTS}
        self.got = {"cmd_twist": [], "gripper_command": [], "events": [], "step": [],
                    "ready": []}
        self.create_subscription(TwistStamped, "cmd_twist", self.got["cmd_twist"].append,
                                 control)
        self.create_subscription(JointState, "gripper_command",
                                 self.got["gripper_command"].append, control)
        self.create_subscription(JointState, "step", self.got["step"].append,
                                 qos.profile("telemetry"))
        self.create_subscription(DiagnosticStatus, "events", self.got["events"].append,
                                 qos.profile("telemetry"))
        self.create_subscription(DiagnosticStatus, READY_TOPIC, self.got["ready"].append,
                                 READY_QOS)
        self.reset = self.create_client(Trigger, "draft_node/reset")
        env = sim_envs.make_task("fetch_reach")
        env.reset(seed=seed)
        self.measured = env.measure()

    def publish(self, stamp_ns, skip=(), frame="world", nan=()):
        stamp = robot_io.time_msg(stamp_ns)
        for topic in INPUTS:
            if topic in skip:
                continue
            reading = dict(self.measured[topic])
            if topic in nan:
                reading = {k: np.full(len(v), np.nan) if k == "position" else v
                           for k, v in reading.items()}
            self.pubs[topic].publish(robot_io.message_of(
                TOPICS[topic].type, stamp, "" if topic == "joint_states" else frame, reading))

    def now_ns(self):
        return self.get_clock().now().nanoseconds

    def spin_until(self, cond, timeout=20.0):
        return ros_helpers.spin_until(self, cond, timeout)

    def answered(self, stamp_ns):
        """The twist and gripper command stamped ``stamp_ns``, once both came."""
        got = [next((m for m in self.got[t] if messages.stamp_key(m.header.stamp) == stamp_ns),
                    None) for t in ("cmd_twist", "gripper_command")]
        return got if all(m is not None for m in got) else None

    def step(self, stamp_ns):
        """The draft's step telemetry for ``stamp_ns``, once it came."""
        assert self.spin_until(lambda: any(messages.stamp_key(m.header.stamp) == stamp_ns
                                           for m in self.got["step"]))
        m = next(m for m in self.got["step"] if messages.stamp_key(m.header.stamp) == stamp_ns)
        return dict(zip(m.name, m.position))

    def holds(self):
        return [messages.status_values(m) for m in self.got["events"]
                if m.message == "hold: no usable observation"]

    def call_reset(self):
        future = self.reset.call_async(Trigger.Request())
        assert self.spin_until(future.done, timeout=10)
        return future.result()


@pytest.fixture(scope="module")
def robot(tiny):
    rclpy.init()
    node = Robot()
    procs = [
        subprocess.Popen(ros_helpers.node_cmd(
            "draft_node", NS, task="fetch_reach", mode="draft_only", draft=tiny["draft"],
            max_age_ms=float(MAX_AGE_MS), expect="['cmd_twist 1', 'gripper_command 1']")),
        subprocess.Popen(ros_helpers.node_cmd("lifecycle_manager", NS,
                                              node_names="['draft_node']")),
    ]
    assert node.spin_until(lambda: any(m.name.endswith("/lifecycle_manager")
                                       for m in node.got["ready"]),
                           timeout=90), "draft node did not become active"
    yield node
    ros_helpers.stop(procs)
    node.destroy_node()
    rclpy.shutdown()


def test_a_snapshot_becomes_one_twist_and_one_gripper_command(robot):
    stamp = robot.now_ns()
    robot.publish(stamp)
    assert robot.spin_until(lambda: robot.answered(stamp))
    twist, gripper = robot.answered(stamp)
    assert twist.header.frame_id == "world"
    linear = np.array([twist.twist.linear.x, twist.twist.linear.y, twist.twist.linear.z])
    assert np.any(linear != 0) and np.all(np.abs(linear) <= 1.25 + 1e-9)  # m/s, |action| ≤ 1
    assert list(gripper.name) == FINGERS and len(gripper.position) == 2
    step = robot.step(stamp)
    assert step["uplink"] == 0 and np.isfinite(step["deviation"])  # a policy step was taken


def _hold_for(robot, stamp):
    assert robot.spin_until(lambda: robot.answered(stamp))
    twist, gripper = robot.answered(stamp)
    linear = [twist.twist.linear.x, twist.twist.linear.y, twist.twist.linear.z]
    assert linear == [0.0, 0.0, 0.0]  # hold still
    q = robot.measured["joint_states"]
    np.testing.assert_allclose(  # the fingers stay where they are
        gripper.position, [q["position"][list(q["name"]).index(f)] for f in FINGERS])
    assert robot.spin_until(lambda: any(h["stamp"] == str(stamp) for h in robot.holds()))
    return next(h["reason"] for h in robot.holds() if h["stamp"] == str(stamp))


def test_a_stale_snapshot_means_hold_still_and_an_event(robot):
    time.sleep(3.2 * MAX_AGE_MS / 1e3)  # so that the stale stamp is still newer than the last
    stamp = robot.now_ns() - 3 * MAX_AGE_MS * 1_000_000
    robot.publish(stamp)
    reason = _hold_for(robot, stamp)
    assert "stale" in reason and f"max_age_ms {MAX_AGE_MS}" in reason
    robot.spin_until(lambda: False, timeout=0.3)
    assert not [m for m in robot.got["step"]  # no policy step on stale data
                if messages.stamp_key(m.header.stamp) == stamp]


def test_a_missing_input_means_hold_still_and_an_event(robot):
    first = robot.now_ns()
    robot.publish(first, skip=("goal",))
    time.sleep(0.05)
    robot.publish(first + 40_000_000)  # the next snapshot supersedes the incomplete one
    reason = _hold_for(robot, first)
    assert "incomplete snapshot" in reason and "goal" in reason
    assert robot.spin_until(lambda: robot.answered(first + 40_000_000))


def test_non_finite_input_means_hold_still_and_an_event(robot):
    stamp = robot.now_ns()
    robot.publish(stamp, nan=("ee_pose",))
    reason = _hold_for(robot, stamp)
    assert "ee_pose NaN or inf" in reason
    rejected = [messages.status_values(m) for m in robot.got["events"]
                if m.message == "rejected ee_pose"]
    assert any("NaN or inf" in r["reason"] for r in rejected)


def test_an_input_in_the_wrong_frame_is_reported_and_not_used(robot):
    stamp = robot.now_ns()
    robot.publish(stamp, frame="base_link")
    assert robot.spin_until(lambda: sum(m.message.startswith("rejected ") and "frame 'base_link'"
                                        in messages.status_values(m)["reason"]
                                        for m in robot.got["events"]) >= 3)
    robot.spin_until(lambda: False, timeout=0.5)
    assert robot.answered(stamp) is None  # no snapshot with this stamp was ever complete


def test_a_late_snapshot_is_reported_and_not_used(robot):
    stamp = robot.now_ns()
    robot.publish(stamp)
    assert robot.spin_until(lambda: robot.answered(stamp))
    robot.publish(stamp - 1_000_000)  # older than the snapshot just acted on
    assert robot.spin_until(lambda: sum("late or out of order" in messages.status_values(m)
                                        .get("reason", "") for m in robot.got["events"]) >= 4)
    assert robot.answered(stamp - 1_000_000) is None


def test_reset_starts_a_new_run_and_an_empty_run_is_not_reset_again(robot):
    before = robot.call_reset()
    assert before.success and before.message.startswith("run ")
    run = int(before.message.split()[1].rstrip(":"))
    again = robot.call_reset()  # no step since: nothing to clear, same run
    assert again.success and again.message == before.message
    stamp = robot.now_ns()
    robot.publish(stamp)
    assert robot.spin_until(lambda: robot.answered(stamp))
    step = robot.step(stamp)
    assert step["episode"] == run and step["step"] == 0  # the run's first step
    after = robot.call_reset()
    assert after.success and after.message.startswith(f"run {run + 1}:")


def test_a_bad_robot_map_refuses_to_start_with_its_line(tiny, tmp_path):
    from hybrid_policy.core.robot_map import default_path

    text = default_path("fetch_reach").read_text().replace("{from: goal, take: position}",
                                                           "{from: goal, take: euler}")
    bad = tmp_path / "map.yaml"
    bad.write_text(text)
    line = next(i for i, t in enumerate(text.splitlines(), 1) if "take: euler}" in t)
    out = subprocess.run(ros_helpers.node_cmd("draft_node", "/bad_map", task="fetch_reach",
                                              mode="draft_only", draft=tiny["draft"],
                                              robot_map=str(bad)),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert f"{bad}:{line}:" in out.stderr and "it gives position" in out.stderr


def test_a_timer_map_acts_at_its_rate_on_the_latest_inputs_until_they_age(robot, tiny,
                                                                           tmp_path):
    """tick: timer: the robot publishes once; the node acts on it every period while it is
    younger than max_age_ms, then holds still and says the inputs are stale."""
    from hybrid_policy.core.robot_map import default_path

    text = default_path("fetch_reach").read_text().replace("tick: snapshot", "tick: timer\n"
                                                           "rate_hz: 20")
    timer_map = tmp_path / "timer.yaml"
    timer_map.write_text(text)
    ns = "/robot_timer"
    node = Robot(ns, seed=2)  # rclpy is up: the module's robot fixture started it
    procs = [subprocess.Popen(ros_helpers.node_cmd(
                "draft_node", ns, task="fetch_reach", mode="draft_only", draft=tiny["draft"],
                robot_map=str(timer_map), max_age_ms=600.0)),
             subprocess.Popen(ros_helpers.node_cmd("lifecycle_manager", ns,
                                                   node_names="['draft_node']"))]
    try:
        assert node.spin_until(lambda: any(m.name.endswith("/lifecycle_manager")
                                           for m in node.got["ready"]), timeout=90)
        node.got["cmd_twist"].clear()

        def moving():
            return [m for m in node.got["cmd_twist"] if
                    (m.twist.linear.x, m.twist.linear.y, m.twist.linear.z) != (0.0, 0.0, 0.0)]

        sent = []
        for _ in range(5):  # inputs sent before DDS has matched every subscription are lost
            sent.append(node.now_ns())
            node.publish(sent[-1])
            if node.spin_until(lambda: moving(), timeout=2):
                break
        assert node.spin_until(lambda: node.holds() and "stale" in node.holds()[-1]["reason"],
                               timeout=10)
        moving = moving()
        assert len(moving) >= 3  # several ticks acted on the one set of inputs...
        # ...and each command names the state it answers: the inputs' own stamp
        answered = [messages.stamp_key(m.header.stamp) for m in moving]
        assert answered[-1] == sent[-1] and set(answered) <= set(sent)
        assert answered == sorted(answered)
        # each step is a tick of its own, stamped by the node with the tick's time, and
        # its latency runs from the inputs' stamp: it grows by a period a tick
        ticks = {messages.stamp_key(m.header.stamp): dict(zip(m.name, m.position))
                 for m in node.got["step"]}
        acted = [ticks[k]["latency_ms"] for k in sorted(ticks) if k > sent[-1]]
        assert len(acted) >= 3 and acted == sorted(acted)
        assert acted[-1] - acted[0] >= 0.8 * 50.0 * (len(acted) - 1)
    finally:
        ros_helpers.stop(procs)
        node.destroy_node()
