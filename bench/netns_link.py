"""A real kernel network path between the robot side and the server side, shaped by tc.

Two network namespaces joined by a veth pair; the server namespace runs the real
``target_node``, the robot namespace runs ``netns_probe.py``, which sends protocol requests
of two sizes and times the responses. Fast DDS is forced onto UDP (no shared memory across
the namespaces). Run as root:

    python bench/netns_link.py --target models/fetch_push/target --task fetch_push

prints the median round trip of a small and a ~61 KB larger request on the plain veth and
with the robot's veth shaped to 4 Mb/s by ``tbf``, next to what the rate predicts.
``test/test_netns.py`` uses the same ``NamespacePair`` and ``probe``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from sim_envs import task_spec

HERE = Path(__file__).resolve().parent
SMALL, LARGE = 4, 600  # observation-window rows of the two request sizes
RATE_MBIT = 4


def sh(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, check=check)


class NamespaceError(RuntimeError):
    """Namespaces cannot be made here (not root, no iproute2)."""


class NamespacePair:
    """Robot and server namespaces joined by a veth pair, with ``target_node`` running on
    the server side. A context manager: everything is deleted on exit."""

    def __init__(self, task: str, target: str, tag: str | None = None) -> None:
        tag = tag or str(os.getpid() % 100000)
        self.task, self.target = task, target
        self.robot, self.server = f"hpr{tag}", f"hps{tag}"
        self.dev, self._peer = f"vr{tag}", f"vs{tag}"
        self.env = {**os.environ, "FASTDDS_BUILTIN_TRANSPORTS": "UDPv4",  # no shared memory
                    "ROS_DOMAIN_ID": str(60 + os.getpid() % 30)}
        self._node: subprocess.Popen | None = None

    def __enter__(self) -> "NamespacePair":
        made = sh("ip", "netns", "add", self.robot, check=False)
        if made.returncode != 0:
            raise NamespaceError(f"cannot create network namespaces here: {made.stderr.strip()}")
        try:
            sh("ip", "netns", "add", self.server)
            sh("ip", "link", "add", self.dev, "type", "veth", "peer", "name", self._peer)
            for ns, dev, ip in ((self.robot, self.dev, "10.203.0.1"),
                                (self.server, self._peer, "10.203.0.2")):
                sh("ip", "link", "set", dev, "netns", ns)
                sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", dev)
                sh("ip", "-n", ns, "link", "set", "lo", "up")
                sh("ip", "-n", ns, "link", "set", dev, "up")
                sh("ip", "-n", ns, "route", "add", "224.0.0.0/4", "dev", dev)  # DDS discovery
            self._node = subprocess.Popen(
                ["ip", "netns", "exec", self.server, sys.executable, "-m",
                 "hybrid_policy.families.adahi.target_node", "--ros-args", "-r", "__ns:=/netns",
                 "-p", f"task:={self.task}", "-p", f"target:={self.target}"],
                env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self._node is not None:
            self._node.terminate()
            self._node.wait(timeout=20)
        sh("ip", "netns", "del", self.robot, check=False)
        sh("ip", "netns", "del", self.server, check=False)

    def qdisc(self, *spec: str, check: bool = True) -> subprocess.CompletedProcess:
        """``tc qdisc add dev <robot veth> root <spec>`` in the robot namespace."""
        return sh("ip", "netns", "exec", self.robot, "tc", "qdisc", "add", "dev", self.dev,
                  "root", *spec, check=check)

    def clear_qdisc(self) -> None:
        sh("ip", "netns", "exec", self.robot, "tc", "qdisc", "del", "dev", self.dev, "root",
           check=False)

    def probe(self, rows: tuple[int, ...] = (SMALL, LARGE),
              repeats: int = 5) -> dict[int, tuple[int, float]]:
        """``{rows: (payload bytes, median round trip ms)}`` from the robot namespace."""
        out = subprocess.run(
            ["ip", "netns", "exec", self.robot, sys.executable, str(HERE / "netns_probe.py"),
             "/netns", str(task_spec(self.task).obs_dim), ",".join(map(str, rows)),
             str(repeats)], capture_output=True, text=True, env=self.env, timeout=180)
        if out.returncode != 0:
            raise RuntimeError(f"probe failed: {out.stdout}{out.stderr[-2000:]}")
        doc = json.loads(out.stdout.strip().splitlines()[-1])
        return {int(k): (v["bytes"], sorted(v["rtt_ms"])[len(v["rtt_ms"]) // 2])
                for k, v in doc.items()}


def predicted_ms(small_bytes: int, large_bytes: int, rate_mbit: float = RATE_MBIT) -> float:
    """Extra uplink time of the larger request at ``rate_mbit``."""
    return (large_bytes - small_bytes) * 8 / (rate_mbit * 1e3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="fetch_push")
    parser.add_argument("--target", default="models/fetch_push/target")
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    with NamespacePair(args.task, str(Path(args.target).resolve())) as net:
        plain = net.probe(repeats=args.repeats)
        net.qdisc("tbf", "rate", f"{RATE_MBIT}mbit", "burst", "32kbit", "latency", "1s")
        try:
            shaped = net.probe(repeats=args.repeats)
        finally:
            net.clear_qdisc()
    (small_b, _), (large_b, _) = plain[SMALL], plain[LARGE]
    print(f"requests of {small_b} and {large_b} bytes, median of {args.repeats} round trips")
    for name, res in (("plain veth", plain), (f"tbf {RATE_MBIT} Mb/s", shaped)):
        extra = res[LARGE][1] - res[SMALL][1]
        print(f"{name:14} small {res[SMALL][1]:7.1f} ms  large {res[LARGE][1]:7.1f} ms  "
              f"larger takes {extra:6.1f} ms more")
    print(f"predicted by the rate: {predicted_ms(small_b, large_b):.1f} ms more")


if __name__ == "__main__":
    main()
