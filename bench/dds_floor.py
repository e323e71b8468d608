"""The floor under ``ros_overhead.py``: a round trip through a trivial echo node over the
same topics, QoS and executor, with the echo computing for 0 ms or for as long as the
target's ``serve`` (a busy loop, no torch), so no package code is on the path.

The round trip minus the busy time is what DDS delivery and two Python processes waking
up cost on this machine. Prints min / median / max over ``--runs`` of its p50 and p99.
Usage: ``python bench/dds_floor.py [--busy-ms 0,3.5] [--steps 500] [--runs 5]``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import numpy as np
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from sensor_msgs.msg import JointState

from hybrid_policy.ros import messages, qos

NS = "/dds_floor"


def echo(busy_ms: float) -> None:
    """The echo node: waits ``busy_ms`` (busy), then publishes the request back."""
    rclpy.init()
    node = Node("echo", namespace=NS)
    pub = node.create_publisher(JointState, "server/response", qos.profile("downlink"))

    def answer(msg: JointState) -> None:
        start = time.perf_counter()
        while time.perf_counter() - start < busy_ms / 1e3:
            pass
        pub.publish(msg)

    node.create_subscription(JointState, "server/request", answer, qos.profile("uplink"))
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        executor.spin()
    except Exception:  # noqa: BLE001  terminated by the bench
        pass


def measure(busy_ms: float, steps: int) -> np.ndarray:
    server = subprocess.Popen([sys.executable, __file__, "--serve", str(busy_ms)],
                              stderr=subprocess.DEVNULL)
    node = Node("floor_robot", namespace=NS)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    arrived: dict[int, float] = {}
    node.create_subscription(JointState, "server/response", lambda m: arrived.setdefault(
        messages.stamp_key(m.header.stamp), time.perf_counter()), qos.profile("downlink"))
    pub = node.create_publisher(JointState, "server/request", qos.profile("uplink"))
    try:
        while not (pub.get_subscription_count() and node.count_publishers("server/response")):
            executor.spin_once(timeout_sec=0.1)
        rng = np.random.default_rng(0)
        rtt = []
        for i in range(steps + 50):
            stamp = node.get_clock().now().to_msg()
            key = messages.stamp_key(stamp)
            msg = messages.joint_state(stamp, ["verify:h8x28:l2:k16"], rng.random(259))
            t0 = time.perf_counter()
            pub.publish(msg)
            while key not in arrived:
                executor.spin_once(timeout_sec=0.005)
            if i >= 50:
                rtt.append((arrived[key] - t0) * 1e3 - busy_ms)
    finally:
        node.destroy_node()
        server.terminate()
        server.wait(timeout=20)
    return np.asarray(rtt)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--busy-ms", default="0,3.5")
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--serve", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve is not None:
        echo(args.serve)
        return
    os.environ.setdefault("ROS_DOMAIN_ID", str(70 + os.getpid() % 10))
    rclpy.init()
    print(f"echo round trip minus the echo's busy time, ms; {args.steps} steps a run, "
          f"{args.runs} runs")
    print(f"{'':30} {'min':>7} {'median':>7} {'max':>7}")
    try:
        for busy in (float(b) for b in args.busy_ms.split(",")):
            runs = [measure(busy, args.steps) for _ in range(args.runs)]
            for q in (50, 99):
                v = np.array([np.percentile(r, q) for r in runs])
                print(f"{f'busy {busy:g} ms, p{q}':30} {v.min():7.3f} {np.median(v):7.3f} "
                      f"{v.max():7.3f}")
    finally:
        rclpy.shutdown()


if __name__ == "__main__":
    main()
