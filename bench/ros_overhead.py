"""What ROS 2 adds to a verification step: draft → target → draft over DDS on loopback, with
no emulated delay, against the same step in process, in one run.

The target runs as the real ``target_node`` in its own process; this process plays the
robot: it plans real steps (``core.modes``, hybrid), publishes each request, waits for
the response, and also serves the same request in process with its own copy of the
target. Overhead = ROS round trip − in-process ``serve`` time of the same request.
Prints p50 and p99 of the overhead (goal on the 2-core machine: p50 ≤ 1 ms, p99 ≤ 3 ms).
Usage: ``python bench/ros_overhead.py [--task fetch_push] [--steps 1000]``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import rclpy
from rclpy.executors import SingleThreadedExecutor
import torch
from rclpy.node import Node
from sensor_msgs.msg import JointState

from hybrid_policy.core.compute import sample_observations
from hybrid_policy.core.modes import make_mode
from hybrid_policy.core.server import serve
from hybrid_policy.policies import load_policy
from hybrid_policy.policies.build import ensure_default_models
from hybrid_policy.ros import messages, qos
from hybrid_policy.ros.lifecycle_client import LifecycleClient

NS = "/overhead"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="fetch_push")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--models", type=Path, default=Path("models"))
    args = parser.parse_args()
    os.environ.setdefault("ROS_DOMAIN_ID", str(90 + os.getpid() % 10))
    paths = ensure_default_models(args.task, args.models)
    torch.set_num_threads(1)
    draft = load_policy(paths.draft, role="draft", task=args.task)
    target = load_policy(paths.target, role="target", task=args.task)
    mode = make_mode("hybrid", draft, target)
    observations = sample_observations(args.task, steps=200)

    server = subprocess.Popen(
        [sys.executable, "-m", "hybrid_policy.ros.target_node", "--ros-args", "-r",
         f"__ns:={NS}", "-p", f"task:={args.task}", "-p", f"target:={paths.target}"],
        stderr=None if os.environ.get("BENCH_DEBUG") else subprocess.DEVNULL)
    rclpy.init()
    node = Node("overhead_robot", namespace=NS)
    executor = SingleThreadedExecutor()  # as the nodes spin (ros/node_main.py)
    executor.add_node(node)
    arrived: dict[int, float] = {}
    node.create_subscription(
        JointState, "server/response",
        lambda m: arrived.setdefault(messages.stamp_key(m.header.stamp), time.perf_counter()),
        qos.profile("downlink"))
    pub = node.create_publisher(JointState, "server/request", qos.profile("uplink"))
    try:
        LifecycleClient(node, "target_node", executor).bring_up(timeout=120)  # configure + activate
        end = time.monotonic() + 60
        while not pub.get_subscription_count():
            executor.spin_once(timeout_sec=0.1)
            if time.monotonic() > end:
                raise SystemExit("target_node does not read server/request")
        rng = np.random.default_rng(0)
        rtt, local = [], []
        for i in range(args.steps + 50):
            plan = mode.plan(observations[i % len(observations)], rng)
            stamp = node.get_clock().now().to_msg()
            key = messages.stamp_key(stamp)
            t0 = time.perf_counter()
            pub.publish(messages.request_msg(stamp, plan.request))
            while key not in arrived:
                executor.spin_once(timeout_sec=0.005)
                if time.perf_counter() - t0 > 5:
                    raise SystemExit(f"no response to step {i}")
            t1 = time.perf_counter()
            serve(target, plan.request)  # the same request, in process
            t2 = time.perf_counter()
            if i >= 50:  # warm-up done
                rtt.append((arrived[key] - t0) * 1e3)
                local.append((t2 - t1) * 1e3)
    finally:
        node.destroy_node()
        rclpy.shutdown()
        server.terminate()
        server.wait(timeout=20)
    rtt_a, local_a = np.asarray(rtt), np.asarray(local)
    over = rtt_a - local_a
    print(f"{args.task}: {args.steps} verification steps, loopback, no emulated delay, "
          f"torch threads 1")
    print(f"{'':24} {'p50 ms':>8} {'p99 ms':>8}")
    for name, v in (("ROS round trip", rtt_a), ("in-process serve", local_a),
                    ("overhead (ROS - local)", over)):
        print(f"{name:24} {np.percentile(v, 50):8.3f} {np.percentile(v, 99):8.3f}")
    print(f"goal: overhead p50 <= 1 ms ({'met' if np.percentile(over, 50) <= 1 else 'MISSED'}), "
          f"p99 <= 3 ms ({'met' if np.percentile(over, 99) <= 3 else 'MISSED'})")


if __name__ == "__main__":
    main()
