"""Running the ROS graph from tests: bringup as a user runs it, and the same episodes in
process for comparison."""

import os
import re
import subprocess
import sys
import time

import numpy as np
import pytest
import rclpy

from hybrid_policy.families.adahi.server import answering
from hybrid_policy.core import evaluator
from hybrid_policy.core.compute import ComputeModel
from hybrid_policy.core.evaluator import Setting
from hybrid_policy.core.link import link_profile
from hybrid_policy.families.adahi.modes import Thresholds, make_mode
from hybrid_policy.core.realtime import Clock
from hybrid_policy.policies import load_policy
from hybrid_policy.ros.messages import stamp_key

# Keep the tests' DDS traffic apart from anything else on the machine.
os.environ.setdefault("ROS_DOMAIN_ID", str(40 + os.getpid() % 50))

TASK, SEED = "fetch_reach", 3


def node_module(executable):
    """The module behind the installed console script ``executable`` (``ros2 run``'s name)."""
    from importlib.metadata import entry_points

    (entry,) = [e for e in entry_points(group="console_scripts") if e.name == executable]
    return entry.value.partition(":")[0]


def node_cmd(executable, namespace, **params):
    """The node ``executable`` (``python -m`` its module) under ``namespace`` with ``-p``
    parameters."""
    cmd = [sys.executable, "-m", node_module(executable), "--ros-args", "-r",
           f"__ns:={namespace}"]
    for k, v in params.items():
        cmd += ["-p", f"{k}:={v}"]
    return cmd


def in_process(tiny, mode_name, link, episodes, tau=None, deadline_ms=5000.0,
               compute=ComputeModel(1.0, 1.0), clock=Clock()):
    """The evaluator's records and result for the tiny models on ``TASK``."""
    draft = load_policy(tiny["draft"], role="draft")
    target = load_policy(tiny["target"], role="target")
    mode = make_mode(mode_name, draft, target,
                     None if tau is None else Thresholds(tau, 0.0, 0.0))
    records = []
    setting = Setting(answering(target), link_profile(link), compute, deadline_ms, clock)
    res = evaluator.evaluate(TASK, [mode], episodes, SEED, setting, progress=False,
                             on_step=lambda _, rec: records.append(rec))
    return records, res[mode_name]


def bringup_args(cli, tiny, bag, mode, link, episodes, *extra):
    return [*cli, "bringup", "--mode", mode, "--task", TASK, "--link", link,
            "--episodes", str(episodes), "--seed", str(SEED), "--draft", str(tiny["draft"]),
            "--target", str(tiny["target"]), "--bag", str(bag), "--timeout", "240", *extra]


def run_bringup(cli, tiny, bag, mode, link, episodes, *extra):
    return subprocess.run(bringup_args(cli, tiny, bag, mode, link, episodes, *extra),
                          capture_output=True, text=True, timeout=300)


def node_pids(stderr_text):
    """``{node: pid}`` from bringup's log ("started x_node (pid N)", "restarted ...")."""
    return {name: int(pid) for name, pid in re.findall(r"(\w+_node) \(pid (\d+)\)", stderr_text)}


def start_bringup(args, until, timeout=120, preexec_fn=None):
    """Popen of bringup, read until a stderr line contains ``until``."""
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                            preexec_fn=preexec_fn)
    text = ""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        line = proc.stderr.readline()
        text += line
        if until in line:
            return proc, text
        if not line and proc.poll() is not None:
            break
    proc.kill()
    pytest.fail(f"bringup did not reach {until!r}: {text[-2000:]}")


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def finish(proc, timeout=60):
    """Wait for a ``start_bringup`` process to exit, draining its log; its exit status. On
    a timeout the process is killed and the failure shows the end of its log."""
    import threading

    chunks: list[str] = []
    reader = threading.Thread(target=lambda: chunks.extend(iter(proc.stderr.readline, "")),
                              daemon=True)  # node processes may hold the pipe: never join
    reader.start()
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail(f"bringup still running {timeout} s later; its log ends:\n"
                    f"{''.join(chunks)[-4000:]}")


def spin_until(node, cond, timeout=20.0):
    """Spin ``node`` until ``cond()`` holds (True) or ``timeout`` seconds pass (False)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        rclpy.spin_once(node, timeout_sec=0.05)
        if cond():
            return True
    return False


def stop(procs, timeout=20):
    """Terminate node processes and wait for each (killed if it does not exit)."""
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def robot_steps(topics, robot, recs):
    """One fleet robot's topics (names relative to it) and its step messages as dicts, after
    checking they match its in-process records ``recs`` one to one, uplink by uplink."""
    mine = {k[len(robot) + 1:]: v for k, v in topics.items() if k.startswith(robot + "/")}
    steps = [dict(zip(m.name, m.position)) for _, m in mine["step"]]
    assert len(steps) == len(recs) > 0
    assert [bool(s["uplink"]) for s in steps] == [r.plan.request is not None for r in recs]
    return mine, steps


def commanded(topics, interface, policy):
    """``(what the robot was told, what the policy's actions say it should be told)`` in
    normalised units: the flat action topic; or the standard commands divided by the robot
    map's documented scales (twist: 1.25 m/s per unit; finger target = finger position
    + 1 m per unit, clipped to [0, 0.2] m), the policy's gripper clipped the same way."""
    if interface == "vector":
        return np.array([m.position for _, m in topics["action"]]), policy
    names = ["robot0:r_gripper_finger_joint", "robot0:l_gripper_finger_joint"]
    fingers = {stamp_key(m.header.stamp): np.array([m.position[m.name.index(n)] for n in names])
               for _, m in topics["joint_states"]}
    grip = {stamp_key(m.header.stamp): np.array(m.position) for _, m in topics["gripper_command"]}
    told, expected = [], []
    for a, (_, m) in zip(policy, topics["cmd_twist"]):
        assert m.header.frame_id == "world"
        key = stamp_key(m.header.stamp)
        assert key in grip and key in fingers  # each command answers one snapshot
        t, q = m.twist.linear, fingers[key]
        told.append([t.x / 1.25, t.y / 1.25, t.z / 1.25, *(grip[key] - q)])
        expected.append([*a[:3], *(np.clip(q + a[3], 0.0, 0.2) - q)])
    return np.array(told), np.array(expected)
