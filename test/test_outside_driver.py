"""An outside driver of the draft node's standard robot interface.

The driver below is written only from docs/interfaces.md ("Standard robot interface",
"The robot map", "Time alignment, holds and resets") and config/robot_fetch_reach.yaml,
as a user with a robot of their own would write it. Its robot is a plain gymnasium
``FetchReach-v4`` read through MuJoCo; it imports nothing of the package's robot side
(``sim_envs``, ``sim_node``, ``robot_io``, ``core.robot_map``: a static check below).

Per control step the driver publishes one snapshot of the map's inputs (every robot
joint, the grip site's pose and velocity, the goal), all with one ``header.stamp``, waits
for the ``cmd_twist`` and ``gripper_command`` that carry that stamp, turns them back into
the env's normalised action (twist × control period / ``metres_per_unit``; gripper
(target − current finger position) / ``metres_per_unit``), clips it to [-1, 1] and steps
the env. It calls ``draft_node/reset`` before every episode. An episode ends on
``info["is_success"]`` (a success) or at the 50-step limit.

The driver runs two sets of 10 episodes against one draft node (``draft_only``, seed 0):

- first the reset seeds the docs give for ``eval`` with seed 0
  (``numpy.random.default_rng(0).integers(2**30, 2**31 - 1, size=10)``): the docs say a
  driver that resets the policy before each episode then reproduces ``eval``, so each
  episode must end as the in-process evaluator's episode does (success and step count);
- then reset seeds of its own (100..109), whose success rate is compared statistically.

Success-rate rule: the in-process evaluator (``core.evaluator.evaluate``, mode
``draft_only``) runs the same tiny draft for 10 episodes at each of the seeds 0, 1, 2;
with p the pooled in-process success rate and m = 2·sqrt(p(1 − p)/10) + 0.05, the
driver's rate over its 10 episodes (its own reset seeds) must lie in
[min(in-process rates) − m, max(in-process rates) + m].
"""

import ast
import math
import os
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

os.environ.setdefault("ROS_DOMAIN_ID", str(40 + os.getpid() % 50))

import gymnasium as gym  # noqa: E402
import gymnasium_robotics  # noqa: E402
import mujoco  # noqa: E402
import rclpy  # noqa: E402
from builtin_interfaces.msg import Time  # noqa: E402
from diagnostic_msgs.msg import DiagnosticStatus  # noqa: E402
from geometry_msgs.msg import PointStamped, PoseStamped, TwistStamped  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402

# Harness only (starting the node under test, its readiness, the in-process reference):
# the driver class below uses none of these.
import ros_helpers  # noqa: E402
from hybrid_policy.families.adahi.server import answering
from hybrid_policy.core import evaluator  # noqa: E402
from hybrid_policy.core.compute import ComputeModel  # noqa: E402
from hybrid_policy.core.link import link_profile  # noqa: E402
from hybrid_policy.families.adahi.modes import make_mode  # noqa: E402
from hybrid_policy.policies import load_policy  # noqa: E402
from hybrid_policy.ros.readiness import READY_QOS, READY_TOPIC  # noqa: E402

gym.register_envs(gymnasium_robotics)

REPO = Path(__file__).resolve().parents[1]
MAP_FILE = REPO / "config" / "robot_fetch_reach.yaml"
NS = f"/outside_{os.getpid()}"  # apart from any other run sharing the ROS domain
MODE = "draft_only"
DRIVER_SEEDS = list(range(100, 110))  # the driver's own reset seeds: 10 episodes
IN_PROCESS_SEEDS = (0, 1, 2)
EPISODES = len(DRIVER_SEEDS)
# docs/interfaces.md, "Reset seeds": episode i of a run with `seed` (here 0, the draft
# node's default, whose run k samples as eval's episode k)
EVAL_SEEDS = [int(s) for s in np.random.default_rng(0).integers(2**30, 2**31 - 1,
                                                                  size=EPISODES)]
MAX_STEPS = 50  # FetchReach-v4's TimeLimit
CONTROL_PERIOD_S = yaml.safe_load(MAP_FILE.read_text())["control_period_ms"] / 1e3
MAX_AGE_MS = 5000.0  # generous: a loaded CI machine must not turn steps into holds
ANSWER_TIMEOUT_S = 60.0

# docs/interfaces.md, "QoS profiles": control = reliable, volatile, keep last 10;
# telemetry = reliable, volatile, keep last 200.
CONTROL_QOS = QoSProfile(reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.VOLATILE,
                         history=HistoryPolicy.KEEP_LAST, depth=10)
TELEMETRY_QOS = QoSProfile(reliability=ReliabilityPolicy.RELIABLE,
                           durability=DurabilityPolicy.VOLATILE,
                           history=HistoryPolicy.KEEP_LAST, depth=200)
MESSAGE_TYPES = {"sensor_msgs/msg/JointState": JointState,
                 "geometry_msgs/msg/PoseStamped": PoseStamped,
                 "geometry_msgs/msg/PointStamped": PointStamped,
                 "geometry_msgs/msg/TwistStamped": TwistStamped}
FORBIDDEN = ("sim_envs", "hybrid_policy.ros.sim_node", "hybrid_policy.ros.robot_io",
             "hybrid_policy.core.robot_map")


# ------------------------------------------------------------------ the outside driver
def stamp_ns(t: Time) -> int:
    return t.sec * 1_000_000_000 + t.nanosec


class FetchRobot:
    """The robot: a gymnasium FetchReach env, read the way an arm driver reports state."""

    def __init__(self) -> None:
        self.env = gym.make("FetchReach-v4")
        u = self.env.unwrapped
        self.u = u
        self.joint_names = [n for n in u._model_names.joint_names if n.startswith("robot")]
        assert math.isclose(u.dt, CONTROL_PERIOD_S), u.dt  # the docs' control period

    def reset(self, seed: int) -> None:
        self.env.reset(seed=seed)

    def step(self, action: np.ndarray) -> tuple[bool, bool]:
        _, _, terminated, truncated, info = self.env.step(action)
        return bool(info["is_success"]), bool(terminated or truncated)

    def joints(self) -> tuple[list[str], np.ndarray, np.ndarray]:
        """Every robot joint: position (m or rad), velocity (m/s or rad/s)."""
        u, m, d = self.u, self.u.model, self.u.data
        q = [np.ravel(u._utils.get_joint_qpos(m, d, n)) for n in self.joint_names]
        v = [np.ravel(u._utils.get_joint_qvel(m, d, n)) for n in self.joint_names]
        assert all(len(x) == 1 for x in q + v), "the Fetch's robot joints are 1-dof"
        return list(self.joint_names), np.concatenate(q), np.concatenate(v)

    def site_pose(self, site: str) -> tuple[np.ndarray, np.ndarray]:
        """Position (m) and orientation quaternion (x, y, z, w) of a site, world frame."""
        u = self.u
        wxyz = np.empty(4)
        mujoco.mju_mat2Quat(wxyz, np.ravel(u._utils.get_site_xmat(u.model, u.data, site)))
        return (np.array(u._utils.get_site_xpos(u.model, u.data, site), np.float64),
                np.array([wxyz[1], wxyz[2], wxyz[3], wxyz[0]]))

    def site_twist(self, site: str) -> tuple[np.ndarray, np.ndarray]:
        """Linear (m/s) and angular (rad/s) velocity of a site, world frame."""
        u = self.u
        return (np.array(u._utils.get_site_xvelp(u.model, u.data, site), np.float64),
                np.array(u._utils.get_site_xvelr(u.model, u.data, site), np.float64))

    def goal(self) -> np.ndarray:
        return np.array(self.u.goal, np.float64)

    def close(self) -> None:
        self.env.close()


class OutsideDriver(Node):
    """Publishes the robot map's inputs as one snapshot per step and executes the
    commands that answer it, as docs/interfaces.md describes the standard interface."""

    def __init__(self, robot_map: dict, namespace: str) -> None:
        super().__init__("outside_driver", namespace=namespace)
        assert robot_map["tick"] == "snapshot"  # one stamp per snapshot, commands answer it
        self.map = robot_map
        self.inputs = robot_map["inputs"]
        self.pubs = {name: self.create_publisher(MESSAGE_TYPES[spec["type"]], spec["topic"],
                                                 CONTROL_QOS)
                     for name, spec in self.inputs.items()}
        cmd = robot_map["command"]
        self.twist_spec, self.gripper_spec = cmd["twist"], cmd["gripper"]
        self.received = {"twist": [], "gripper": []}  # every command, in arrival order
        self.create_subscription(TwistStamped, self.twist_spec["topic"],
                                 self.received["twist"].append, CONTROL_QOS)
        self.create_subscription(JointState, self.gripper_spec["topic"],
                                 self.received["gripper"].append, CONTROL_QOS)
        self.events: list[DiagnosticStatus] = []
        self.telemetry: list[JointState] = []
        self.create_subscription(DiagnosticStatus, "events", self.events.append, TELEMETRY_QOS)
        self.create_subscription(JointState, "step", self.telemetry.append, TELEMETRY_QOS)
        self.reset_client = self.create_client(Trigger, "draft_node/reset")
        self.last_stamp = 0
        self.sent: list[int] = []  # every snapshot's stamp, in order
        self.answers: dict[int, tuple[TwistStamped, JointState]] = {}

    # -- ROS plumbing --------------------------------------------------------------------
    def spin_until(self, cond, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if cond():
                return True
            rclpy.spin_once(self, timeout_sec=0.05)
        return bool(cond())

    def wait_for_graph(self, timeout: float) -> None:
        """Our publishers matched the draft node's readers and back, so no snapshot or
        command is lost to DDS discovery."""
        def matched():
            return (all(p.get_subscription_count() >= 1 for p in self.pubs.values())
                    and all(self.count_publishers(self._full(t)) >= 1 for t in
                            (self.twist_spec["topic"], self.gripper_spec["topic"], "events",
                             "step"))
                    and self.reset_client.service_is_ready())
        assert self.spin_until(matched, timeout), "the draft node's topics did not match"

    def _full(self, topic: str) -> str:
        return topic if topic.startswith("/") else f"{self.get_namespace().rstrip('/')}/{topic}"

    def reset_policy(self) -> Trigger.Response:
        future = self.reset_client.call_async(Trigger.Request())
        assert self.spin_until(future.done, 30.0), "draft_node/reset did not answer"
        return future.result()

    def next_stamp(self) -> Time:
        ns = max(self.get_clock().now().nanoseconds, self.last_stamp + 1)  # strictly newer
        self.last_stamp = ns
        return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)

    # -- one control step ------------------------------------------------------------------
    def publish_snapshot(self, robot: FetchRobot) -> tuple[int, dict[str, float]]:
        """Every input of the map, one stamp; the finger positions the snapshot holds."""
        stamp = self.next_stamp()
        names, q, v = robot.joints()
        for name, spec in self.inputs.items():
            msg = MESSAGE_TYPES[spec["type"]]()
            msg.header.stamp = stamp
            msg.header.frame_id = spec.get("frame", "")
            if name == "joints":
                msg.name, msg.position, msg.velocity = names, q.tolist(), v.tolist()
            elif name == "ee_pose":
                p, quat = robot.site_pose("robot0:grip")
                msg.pose.position.x, msg.pose.position.y, msg.pose.position.z = p.tolist()
                o = msg.pose.orientation
                o.x, o.y, o.z, o.w = quat.tolist()
            elif name == "ee_twist":
                lin, ang = robot.site_twist("robot0:grip")
                msg.twist.linear.x, msg.twist.linear.y, msg.twist.linear.z = lin.tolist()
                msg.twist.angular.x, msg.twist.angular.y, msg.twist.angular.z = ang.tolist()
            elif name == "goal":
                msg.point.x, msg.point.y, msg.point.z = robot.goal().tolist()
            else:
                raise AssertionError(f"the driver has no reading for input {name!r}")
            self.pubs[name].publish(msg)
        key = stamp_ns(stamp)
        self.sent.append(key)
        return key, dict(zip(names, q.tolist()))

    def _answer(self, key: int):
        tw = next((m for m in self.received["twist"] if stamp_ns(m.header.stamp) == key), None)
        gr = next((m for m in self.received["gripper"] if stamp_ns(m.header.stamp) == key),
                  None)
        return (tw, gr) if tw is not None and gr is not None else None

    def action_of(self, twist: TwistStamped, gripper: JointState,
                  fingers_now: dict[str, float]) -> np.ndarray:
        """The env's normalised action that executes the commands over one period."""
        assert twist.header.frame_id == self.twist_spec["frame"]
        lin = np.array([twist.twist.linear.x, twist.twist.linear.y, twist.twist.linear.z])
        ang = [twist.twist.angular.x, twist.twist.angular.y, twist.twist.angular.z]
        assert ang == [0.0, 0.0, 0.0]  # the Fetch keeps its wrist
        a = np.zeros(4)
        a[:3] = lin * CONTROL_PERIOD_S / self.twist_spec["metres_per_unit"]
        assert list(gripper.name) == list(self.gripper_spec["joints"])
        targets = np.array(gripper.position)
        current = np.array([fingers_now[j] for j in gripper.name])
        low, high = self.gripper_spec["range"]
        if np.all(targets >= high):  # docs: a clipped target means fully open / closed
            a[3] = 1.0
        elif np.all(targets <= low):
            a[3] = -1.0
        else:
            a[3] = float(np.mean(targets - current)) / self.gripper_spec["metres_per_unit"]
        return np.clip(a, -1.0, 1.0).astype(np.float32)

    def step(self, robot: FetchRobot) -> tuple[bool, bool]:
        key, q = self.publish_snapshot(robot)
        assert self.spin_until(lambda: self._answer(key) is not None, ANSWER_TIMEOUT_S), \
            f"no twist + gripper command answered stamp {key}"
        twist, gripper = self._answer(key)
        self.answers[key] = (twist, gripper)
        return robot.step(self.action_of(twist, gripper, q))

    def episode(self, robot: FetchRobot, seed: int) -> tuple[bool, int]:
        reply = self.reset_policy()
        assert reply.success, reply.message
        robot.reset(seed)
        for n in range(1, MAX_STEPS + 1):
            success, over = self.step(robot)
            if success or over:
                return success, n
        return False, MAX_STEPS


# ------------------------------------------------------------------ harness
def _ready_seen(node: Node, timeout: float) -> bool:
    seen = []
    sub = node.create_subscription(DiagnosticStatus, READY_TOPIC, seen.append, READY_QOS)
    try:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if any(m.name.endswith("/lifecycle_manager") for m in seen):
                return True
            rclpy.spin_once(node, timeout_sec=0.1)
        return False
    finally:
        node.destroy_subscription(sub)


@pytest.fixture(scope="module")
def driven(tiny):
    """The driver's runs against a draft node in ``draft_only``: ``eval``'s 10 scenes of
    seed 0 (runs 0..9), then 10 of its own (runs 10..19)."""
    robot_map = yaml.safe_load(MAP_FILE.read_text())
    rclpy.init()
    driver = OutsideDriver(robot_map, NS)
    procs = [
        subprocess.Popen(ros_helpers.node_cmd(
            "draft_node", NS, task="fetch_reach", mode=MODE, draft=tiny["draft"],
            max_age_ms=MAX_AGE_MS, expect="['cmd_twist 1', 'gripper_command 1']")),
        subprocess.Popen(ros_helpers.node_cmd("lifecycle_manager", NS,
                                              node_names="['draft_node']")),
    ]
    robot = FetchRobot()
    try:
        assert _ready_seen(driver, 120.0), "draft node did not become active"
        driver.wait_for_graph(60.0)
        episodes = []
        for seed in EVAL_SEEDS + DRIVER_SEEDS:
            first = len(driver.sent)
            success, steps = driver.episode(robot, seed)
            episodes.append({"seed": seed, "success": success, "steps": steps,
                             "stamps": driver.sent[first:]})
        # the step telemetry of the last snapshots may still be on its way
        driver.spin_until(lambda: len({stamp_ns(m.header.stamp) for m in driver.telemetry})
                          >= len(driver.sent), 30.0)
        driver.spin_until(lambda: False, 0.3)  # anything stray or duplicated shows up now
        yield {"eval": episodes[:EPISODES], "own": episodes[EPISODES:],
               "all": episodes, "driver": driver}
    finally:
        robot.close()
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=10)
        driver.destroy_node()
        rclpy.shutdown()


@pytest.fixture(scope="module")
def in_process(tiny):
    """The in-process evaluator, 10 episodes per seed: ``rates`` ``{seed: success rate}``
    and ``episodes`` ``{seed: [(success, steps) per episode]}``."""
    draft = load_policy(tiny["draft"], role="draft")
    target = load_policy(tiny["target"], role="target")
    setting = evaluator.Setting(answering(target), link_profile("6g_hrllc"), ComputeModel(1.0, 1.0),
                                5000.0)
    rates, episodes = {}, {}
    for seed in IN_PROCESS_SEEDS:
        mode = make_mode(MODE, draft, target, None)
        steps = []
        res = evaluator.evaluate("fetch_reach", [mode], EPISODES, seed, setting,
                                 progress=False, on_step=lambda _, rec: steps.append(rec.step))
        lengths = [s + 1 for s, after in zip(steps, steps[1:] + [0]) if after == 0]
        rates[seed] = res[MODE].success_rate
        episodes[seed] = list(zip(res[MODE].episode_success, lengths))
    return {"rates": rates, "episodes": episodes}


# ------------------------------------------------------------------ tests
def test_the_driver_imports_nothing_of_the_package_robot_side():
    tree = ast.parse(Path(__file__).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            imported.add(base)
            imported.update(f"{base}.{a.name}" for a in node.names)
    bad = sorted(i for i in imported for f in FORBIDDEN if i == f or i.startswith(f + "."))
    assert not bad, f"the outside driver must not import {bad}"


def test_every_episode_steps_and_every_command_answers_its_snapshot(driven):
    driver, episodes = driven["driver"], driven["all"]
    assert len(episodes) == 2 * EPISODES
    for ep in episodes:
        assert 1 <= ep["steps"] == len(ep["stamps"]) <= MAX_STEPS, ep
    sent = driver.sent
    assert len(set(sent)) == len(sent) and sent == sorted(sent)  # strictly newer stamps
    assert sorted(driver.answers) == sorted(sent)  # each snapshot got its pair of commands
    for kind in ("twist", "gripper"):  # no command answers anything else, none twice
        stamps = [stamp_ns(m.header.stamp) for m in driver.received[kind]]
        assert sorted(stamps) == sorted(sent), kind
    holds = [e for e in driver.events if e.message.startswith("hold")]
    assert not holds, [(e.message, [(v.key, v.value) for v in e.values]) for e in holds[:3]]
    # the draft took a policy step on every snapshot, each episode one run (reset works)
    telemetry = {stamp_ns(m.header.stamp): dict(zip(m.name, m.position))
                 for m in driver.telemetry}
    for i, ep in enumerate(episodes):
        for n, key in enumerate(ep["stamps"]):
            assert key in telemetry, (i, n)
            assert (telemetry[key]["episode"], telemetry[key]["step"]) == (i, n)


def test_on_evals_scenes_the_driver_reproduces_eval_episode_by_episode(driven, in_process):
    driver = [(ep["success"], ep["steps"]) for ep in driven["eval"]]
    assert driver == in_process["episodes"][0]


def test_the_drivers_success_rate_matches_the_in_process_evaluator(driven, in_process):
    episodes, in_process_rates = driven["own"], in_process["rates"]
    rate = sum(ep["success"] for ep in episodes) / len(episodes)
    rates = list(in_process_rates.values())
    p = float(np.mean(rates))
    margin = 2 * math.sqrt(p * (1 - p) / EPISODES) + 0.05
    low, high = min(rates) - margin, max(rates) + margin
    print(f"driver {rate:.2f}, in process {in_process_rates}")
    assert low <= rate <= high, (
        f"driver {rate:.2f} over seeds {DRIVER_SEEDS[0]}..{DRIVER_SEEDS[-1]} "
        f"({[(ep['seed'], ep['success'], ep['steps']) for ep in episodes]}); in process "
        f"{in_process_rates}, allowed [{low:.2f}, {high:.2f}]")
