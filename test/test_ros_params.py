"""Node processes against their parameters' types and against a stop signal: an integer
for a float parameter is taken, any other wrong type is refused (exit 2, the documented
message), and SIGINT/SIGTERM stop a running node with status 0, also when the signal
lands inside a timer callback that then publishes on the shut-down context."""

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

os.environ.setdefault("ROS_DOMAIN_ID", str(40 + os.getpid() % 50))

import ros_helpers  # noqa: E402

NS = "/params_probe"
STARTED = "fetch_reach: 1 episodes"  # sim_node's log line once it is built and spinning


def node_cmd(module, **params):
    return ros_helpers.node_cmd(module, NS, **params)


def run_node(module, **params):
    return subprocess.run(node_cmd(module, **params), capture_output=True, text=True,
                          timeout=60)


def start_until(cmd, until, timeout=30.0):
    """Popen of ``cmd``, its stderr read until a line contains ``until``; the text so far."""
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    watchdog = threading.Timer(timeout, proc.kill)  # a silent node cannot hang the test
    watchdog.start()
    text = ""
    try:
        for line in iter(proc.stderr.readline, ""):
            text += line
            if until in line:
                return proc, text
    finally:
        watchdog.cancel()
    proc.kill()
    proc.wait()
    pytest.fail(f"{cmd[2]} did not log {until!r}: {text[-2000:]}")


def signal_running(proc, sig):
    """Send ``sig`` to a node spinning (its constructor's last log line is out: let it
    return to the spin first) and wait for it; its exit status and the rest of its log."""
    time.sleep(0.3)
    proc.send_signal(sig)
    _, rest = proc.communicate(timeout=20)
    return proc.returncode, rest


def test_an_integer_for_a_float_parameter_is_taken():
    # the case: draft_node gets past deadline_ms=28 to the next check (no model)
    out = run_node("draft_node", task="fetch_reach", mode="draft_only", deadline_ms=28)
    assert out.returncode == 2, out.stderr[-2000:]
    assert "parameter 'draft' is required" in out.stderr
    assert "deadline_ms" not in out.stderr and "Traceback" not in out.stderr
    # and a node that runs on it reads it as the float: 25 Hz
    proc, text = start_until(node_cmd("sim_node", task="fetch_reach", clock="realtime",
                                      rate_hz=25, action_timeout_s=5), STARTED)
    code, rest = signal_running(proc, signal.SIGINT)
    assert "realtime at 25 Hz" in text
    assert code == 0, (text + rest)[-2000:]


@pytest.mark.parametrize("module, params, expected", [
    ("draft_node", {"task": "fetch_reach", "mode": "draft_only", "deadline_ms": "abc"},
     "parameter 'deadline_ms' must be a number (a float or an integer), given 'abc' "
     "(a string)"),
    ("sim_node", {"task": "fetch_reach", "rate_hz": "fast"},
     "parameter 'rate_hz' must be a number (a float or an integer), given 'fast' (a string)"),
    ("sim_node", {"task": "fetch_reach", "episodes": 2.5},
     "parameter 'episodes' must be an integer, given 2.5 (a float)"),
])
def test_a_wrong_type_is_refused_with_exit_2(module, params, expected):
    out = run_node(module, **params)
    assert out.returncode == 2, out.stderr[-2000:]
    assert f"refusing to start: {expected}" in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize("sig", [signal.SIGINT] * 4 + [signal.SIGTERM] * 2,
                         ids=lambda s: signal.Signals(s).name)
def test_a_running_node_stops_with_status_0(sig):
    proc, text = start_until(node_cmd("sim_node", task="fetch_reach", clock="realtime",
                                      rate_hz=25, action_timeout_s=5), STARTED)
    code, rest = signal_running(proc, sig)
    assert code == 0, (text + rest)[-2000:]
    assert "Traceback" not in rest
    assert "0 successes in 0 episodes" in rest  # close() ran and its summary was logged


# A node whose timer publishes after the signal has shut its context down: the race that
# made draft_node exit 1 ("publisher's context is invalid"), here on every run.
RACY = textwrap.dedent("""
    import os, signal, sys, time
    from rclpy.node import Node
    from std_msgs.msg import String
    from hybrid_policy.ros.node_main import run

    class Racy(Node):
        def __init__(self):
            super().__init__("racy", namespace="{ns}")
            self.pub = self.create_publisher(String, "racy", 10)
            self.create_timer(0.05, self.tick)

        def tick(self):
            os.kill(os.getpid(), signal.{sig})
            time.sleep(0.2)
            self.pub.publish(String(data="late"))

    sys.exit(run(Racy))
""")


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_a_signal_inside_a_publishing_callback_still_exits_0(sig):
    out = subprocess.run([sys.executable, "-c", RACY.format(ns=NS, sig=sig)],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize("tick,given,expected", [
    ("timer", None, "verdict deadline 35 ms (derived)"),  # 0.7 of a 20 Hz map's period
    ("timer", 50, "verdict deadline 50 ms"),
    ("snapshot", None, "verdict deadline 100 ms (derived)")])
def test_a_hand_started_draft_node_derives_its_deadline_from_its_map(tiny, tmp_path, tick,
                                                                   given, expected):
    """Started by hand (no bringup, no launch file), a timer-map robot's draft node waits
    for a verdict at most 70% of its own period, so the fallback makes the tick; a given
    deadline is kept; a snapshot map (the simulator's pace) keeps the default."""
    from hybrid_policy.core.robot_map import default_path

    text = default_path("fetch_reach").read_text()
    if tick == "timer":
        text = text.replace("tick: snapshot", "tick: timer\nrate_hz: 20")
    path = tmp_path / f"{tick}.yaml"
    path.write_text(text)
    params = {} if given is None else {"deadline_ms": given}
    proc, text = start_until(node_cmd("draft_node", task="fetch_reach", mode="draft_only",
                                      draft=tiny["draft"], robot_map=str(path), **params),
                             "verdict deadline")
    code, _ = signal_running(proc, signal.SIGINT)
    assert expected in text and code == 0
