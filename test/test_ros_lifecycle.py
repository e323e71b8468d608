"""An outside driver brings the graph up the ROS way: nodes started by hand with no
graph-internal parameters, driven through the standard lifecycle services, and it publishes
as soon as the draft node says ``active``: no step is lost to a server path not yet up."""

import os
import subprocess
import time

import numpy as np
import pytest

os.environ.setdefault("ROS_DOMAIN_ID", str(40 + os.getpid() % 50))

import rclpy  # noqa: E402
from diagnostic_msgs.msg import DiagnosticStatus  # noqa: E402
from lifecycle_msgs.msg import State  # noqa: E402
from rclpy.node import Node  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402

from hybrid_policy.ros import messages, qos  # noqa: E402
from hybrid_policy.ros.lifecycle_client import (  # noqa: E402
    ACTIVATE, CONFIGURE, DEACTIVATE, LifecycleClient,
)
from ros_helpers import node_cmd, stop  # noqa: E402
from sim_envs import task_spec  # noqa: E402

NS = "/driver"
SPEC = task_spec("fetch_reach")


def _start(module, **params):
    return subprocess.Popen(node_cmd(module, NS, **params), stderr=subprocess.DEVNULL)


class Driver(Node):
    def __init__(self):
        super().__init__("driver", namespace=NS)
        self.actions, self.steps, self.events = {}, [], []
        self.obs = self.create_publisher(JointState, "observation", qos.profile("control"))
        self.create_subscription(JointState, "action", lambda m: self.actions.setdefault(
            messages.stamp_key(m.header.stamp), m), qos.profile("control"))
        self.create_subscription(JointState, "step", self.steps.append, qos.profile("telemetry"))
        self.create_subscription(DiagnosticStatus, "events", self.events.append,
                                 qos.profile("telemetry"))

    def step(self, stamp, obs):
        self.obs.publish(messages.observation_msg(stamp, 0, 0, SPEC.obs_fields, obs))
        key = messages.stamp_key(stamp)
        end = time.monotonic() + 10
        while key not in self.actions and time.monotonic() < end:
            rclpy.spin_once(self, timeout_sec=0.05)
        return self.actions.get(key)


@pytest.fixture
def driver():
    rclpy.init()
    node = Driver()
    yield node
    node.destroy_node()
    rclpy.shutdown()


def test_driver_waits_for_active_then_loses_no_step(tiny, driver):
    """The link comes last: until it is up neither node activates (the target has no
    writer on its requests, the draft no reader of its own); then no step falls back."""
    procs = [_start("draft_node", task="fetch_reach", mode="hybrid", interface="vector",
                    draft=tiny["draft"], target=tiny["target"], deadline_ms=2000.0),
             _start("target_node", task="fetch_reach", target=tiny["target"])]
    try:
        env_obs = np.zeros(SPEC.obs_dim)
        draft, target = LifecycleClient(driver, "draft_node"), LifecycleClient(driver, "target_node")
        assert draft.state() == State.PRIMARY_STATE_UNCONFIGURED
        early = driver.get_clock().now().to_msg()
        assert driver.step(early, env_obs) is None  # not active: reported, not acted on
        assert any(messages.status_values(e).get("reason", "").startswith(
            "draft_node is unconfigured, not active") for e in driver.events)
        for node in (target, draft):  # configure loads the model: then inactive
            assert node.change(CONFIGURE) and node.state() == State.PRIMARY_STATE_INACTIVE
        for node in (target, draft):  # no link yet: the server path is not there
            assert not node.change(ACTIVATE) and node.state() == State.PRIMARY_STATE_INACTIVE
        procs.append(_start("link_node", link="6g_hrllc"))
        for node in (target, draft):
            end = time.monotonic() + 30  # activation waits for the node's readers to match
            while not node.change(ACTIVATE):
                assert time.monotonic() < end, "never activated"
                time.sleep(0.1)
            assert node.state() == State.PRIMARY_STATE_ACTIVE
        rng = np.random.default_rng(0)
        for _ in range(40):  # publish at once, step after step
            stamp = driver.get_clock().now().to_msg()
            assert driver.step(stamp, rng.normal(0, 0.1, SPEC.obs_dim)) is not None
        end = time.monotonic() + 5
        while len(driver.steps) < 40 and time.monotonic() < end:
            rclpy.spin_once(driver, timeout_sec=0.05)
        steps = [dict(zip(m.name, m.position)) for m in driver.steps]
        assert len(steps) == 40
        assert all(s["uplink"] == 1 and s["verdict"] == 1 and s["fallback"] == 0 for s in steps)
        assert draft.change(DEACTIVATE) and draft.state() == State.PRIMARY_STATE_INACTIVE
    finally:
        stop(procs)
