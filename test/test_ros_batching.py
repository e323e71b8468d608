"""A batching target node over DDS: a burst of requests is verified in batches, and every
answer is the one the target gives that request alone."""

import ast
import os
import subprocess

import numpy as np
import pytest

os.environ.setdefault("ROS_DOMAIN_ID", str(40 + os.getpid() % 50))

import rclpy  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: E402
from rclpy.node import Node  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402

import ros_helpers  # noqa: E402
from hybrid_policy.families.adahi.timing import verify_requests  # noqa: E402
from hybrid_policy.families.adahi.server import serve  # noqa: E402
from hybrid_policy.policies import load_policy  # noqa: E402
from hybrid_policy.ros import messages, qos  # noqa: E402
from hybrid_policy.ros.readiness import READY_QOS, READY_TOPIC  # noqa: E402
from hybrid_policy.ros.robot_io import time_msg  # noqa: E402

NS = "/batching"
BURST = 8


class Robots(Node):
    """Plays many robots' link nodes: sends requests, keeps the answers."""

    def __init__(self):
        super().__init__("robots", namespace=NS)
        self.answers, self.ready, self.diagnostics = {}, [], []
        self.requests = self.create_publisher(JointState, "server/request",
                                              qos.profile("uplink"))
        self.create_subscription(
            JointState, "server/response",
            lambda m: self.answers.update({messages.stamp_key(m.header.stamp): m}),
            qos.profile("downlink"))
        self.create_subscription(DiagnosticStatus, READY_TOPIC, self.ready.append, READY_QOS)
        self.create_subscription(DiagnosticArray, "/diagnostics",
                                 lambda m: self.diagnostics.extend(m.status), 10)


@pytest.fixture(scope="module")
def robots(tiny):
    rclpy.init()
    node = Robots()
    procs = [subprocess.Popen(ros_helpers.node_cmd(
                 "target_node", NS, task="fetch_reach", target=tiny["target"], max_batch=BURST,
                 batch_window_ms=200.0, expect="['server/response 1']")),
             subprocess.Popen(ros_helpers.node_cmd("lifecycle_manager", NS,
                                                   node_names="['target_node']"))]
    assert ros_helpers.spin_until(node, lambda: any(m.name.endswith("/lifecycle_manager")
                                                    for m in node.ready), timeout=90)
    yield node
    ros_helpers.stop(procs)
    node.destroy_node()
    rclpy.shutdown()


def test_a_burst_is_verified_in_batches_with_single_answers(robots, tiny):
    draft = load_policy(tiny["draft"], role="draft")
    target = load_policy(tiny["target"], role="target")
    requests = verify_requests(draft, target, tiny["ds"].observations[:50], BURST)
    now = robots.get_clock().now().nanoseconds
    stamps = [now + i for i in range(BURST)]
    for stamp, req in zip(stamps, requests):
        robots.requests.publish(messages.request_msg(time_msg(stamp), req))
    assert ros_helpers.spin_until(robots, lambda: len(robots.answers) >= BURST, timeout=30)
    for stamp, req in zip(stamps, requests):
        got = messages.parse_response(robots.answers[stamp])
        alone = serve(target, req)
        assert (got.accepted, got.codes) == (alone.accepted, alone.codes)
        np.testing.assert_allclose(got.action, alone.action, atol=1e-5)

    def batched():
        for status in robots.diagnostics:
            values = messages.status_values(status)
            if status.name.endswith("target_node") and "batch_sizes" in values:
                sizes = ast.literal_eval(values["batch_sizes"])
                if sum(n * c for n, c in sizes.items()) >= BURST:
                    return sizes
        return None

    assert ros_helpers.spin_until(robots, lambda: batched() is not None, timeout=10)
    assert max(batched()) > 1  # the burst was verified in batches, not one by one

