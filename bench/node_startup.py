"""Start-up time of each node: process start → ready, and where the time goes.

Ready means: for the managed draft and target nodes, ``active`` (this script drives
``configure`` and ``activate`` through the standard lifecycle services as soon as the
services answer, as bringup's lifecycle manager does); for the link and simulator nodes,
their announcement on the latched ``ready`` topic. Phases: *up* (process start → the node
answers), *configure* (load the model and warm it up), *activate*. Then, in fresh
interpreters, the import cost of what each node imports at start-up and in configure.
Prints min / median / max over ``--runs``. Goal: draft_node ≤ 3 s to active.
Usage: ``python bench/node_startup.py [--task fetch_push] [--runs 5]``.
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
from diagnostic_msgs.msg import DiagnosticStatus
from rclpy.node import Node
from sensor_msgs.msg import JointState

from hybrid_policy.ros import qos
from hybrid_policy.ros.lifecycle_client import ACTIVATE, CONFIGURE, LifecycleClient
from hybrid_policy.ros.readiness import READY_QOS, READY_TOPIC

NS = "/startup"


class Probe(Node):
    def __init__(self) -> None:
        super().__init__("startup_probe", namespace=NS)
        self.ready: dict[str, float] = {}
        self.create_subscription(DiagnosticStatus, READY_TOPIC, lambda m: self.ready.setdefault(
            m.name, time.perf_counter()), READY_QOS)
        # readers for what the nodes publish, so activation finds its readers matched
        for topic, role in (("uplink/request", "uplink"), ("action", "control"),
                            ("server/response", "downlink"), ("observation", "control")):
            self.create_subscription(JointState, topic, lambda m: None, qos.profile(role))

    def wait(self, cond, timeout: float = 120.0) -> float:
        end = time.monotonic() + timeout
        while not cond():
            rclpy.spin_once(self, timeout_sec=0.01)
            if time.monotonic() > end:
                raise SystemExit("timed out")
        return time.perf_counter()


def managed(probe: Probe, name: str, cmd: list[str]) -> dict[str, float]:
    client = LifecycleClient(probe, name)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    try:
        client.state(timeout=120)  # the node answers its lifecycle services
        times = {"up": time.perf_counter() - t0}
        start = time.perf_counter()
        if not client.change(CONFIGURE):
            raise SystemExit(f"{name}: configure failed")
        times["configure"] = time.perf_counter() - start
        start = time.perf_counter()
        while not client.change(ACTIVATE):  # activation waits for its readers to match
            time.sleep(0.01)
        times["activate"] = time.perf_counter() - start
        times["total"] = time.perf_counter() - t0
        return times
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        client.destroy()


def announced(probe: Probe, name: str, cmd: list[str]) -> dict[str, float]:
    probe.ready.pop(name, None)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    try:
        probe.wait(lambda: name in probe.ready)
        return {"total": probe.ready[name] - t0}
    finally:
        proc.terminate()
        proc.wait(timeout=20)


IMPORTS = {
    "rclpy + messages": "import rclpy, rclpy.lifecycle, sensor_msgs.msg, diagnostic_msgs.msg",
    "sim_envs (MuJoCo tasks)": "import sim_envs",
    "draft_node module": "import hybrid_policy.ros.draft_node",
    "torch": "import torch",
    "policies (torch + model code)": "import hybrid_policy.families.adahi.modes",
}


def import_seconds(code: str, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        res = subprocess.run([sys.executable, "-c", "import time; t = time.perf_counter()\n"
                              f"{code}\nprint(time.perf_counter() - t)"],
                             capture_output=True, text=True, check=True)
        out.append(float(res.stdout.strip().splitlines()[-1]))
    return out


def row(name: str, values: list[float]) -> str:
    v = np.asarray(values)
    return f"{name:32} {v.min():7.2f} {np.median(v):7.2f} {v.max():7.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="fetch_push")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--models", type=Path, default=Path("models"))
    args = parser.parse_args()
    os.environ.setdefault("ROS_DOMAIN_ID", str(80 + os.getpid() % 10))
    from hybrid_policy.policies.build import ensure_default_models

    paths = ensure_default_models(args.task, args.models)
    base = [sys.executable, "-m"]
    ros = ["--ros-args", "-r", f"__ns:={NS}"]
    nodes = {
        "draft_node": (managed, base + ["hybrid_policy.ros.draft_node"] + ros + [
            "-p", f"task:={args.task}", "-p", "mode:=hybrid", "-p", f"draft:={paths.draft}",
            "-p", f"target:={paths.target}"]),
        "target_node": (managed, base + ["hybrid_policy.families.adahi.target_node"] + ros + [
            "-p", f"task:={args.task}", "-p", f"target:={paths.target}"]),
        "link_node": (announced, base + ["hybrid_policy.ros.link_node"] + ros + [
            "-p", "link:=5g_embb"]),
        "sim_node": (announced, base + ["hybrid_policy.ros.sim_node"] + ros + [
            "-p", f"task:={args.task}"]),
    }
    rclpy.init()
    probe = Probe()
    results: dict[str, list[dict[str, float]]] = {n: [] for n in nodes}
    try:
        for _ in range(args.runs):
            for name, (how, cmd) in nodes.items():
                results[name].append(how(probe, name, cmd))
    finally:
        probe.destroy_node()
        rclpy.shutdown()
    print(f"{args.task}: process start -> ready, seconds over {args.runs} runs "
          "(draft/target: ready = active)")
    print(f"{'':32} {'min':>7} {'median':>7} {'max':>7}")
    for name, runs in results.items():
        for phase in runs[0]:
            print(row(f"{name} {phase}", [r[phase] for r in runs]))
    print("\nimport cost in a fresh interpreter (what the phases spend it on):")
    for name, code in IMPORTS.items():
        print(row(name, import_seconds(code, args.runs)))
    draft = np.median([r["total"] for r in results["draft_node"]])
    print(f"\ngoal: draft_node <= 3 s to active (median {draft:.2f} s: "
          f"{'met' if draft <= 3 else 'MISSED'})")


if __name__ == "__main__":
    main()
