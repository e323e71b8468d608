"""Robot side and server side in two network namespaces joined by a veth pair, so their DDS
traffic (forced onto UDP) crosses a real kernel network path that ``tc`` can shape.

The server namespace runs the real ``target_node``; the robot namespace runs a probe that
sends real protocol requests of two sizes and times the responses
(``test/netns_probe.py``). Skipped with the reason where namespaces cannot be made (not
root, no iproute2).
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
RATE_MBIT = 4
SMALL, LARGE = 4, 600  # observation-window rows of the two request sizes (fetch_reach: 13 wide)


def sh(*cmd, check=True):
    return subprocess.run(cmd, capture_output=True, text=True, check=check)


@pytest.fixture(scope="module")
def netns(tiny):
    if shutil.which("ip") is None or shutil.which("tc") is None:
        pytest.skip("iproute2 (ip, tc) is not installed")
    tag = str(os.getpid() % 100000)
    robot, server = f"hpr{tag}", f"hps{tag}"
    made = sh("ip", "netns", "add", robot, check=False)
    if made.returncode != 0:
        pytest.skip(f"cannot create network namespaces here: {made.stderr.strip()}")
    try:
        sh("ip", "netns", "add", server)
        sh("ip", "link", "add", f"vr{tag}", "type", "veth", "peer", "name", f"vs{tag}")
        for ns, dev, ip in ((robot, f"vr{tag}", "10.203.0.1"), (server, f"vs{tag}", "10.203.0.2")):
            sh("ip", "link", "set", dev, "netns", ns)
            sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", dev)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "-n", ns, "link", "set", dev, "up")
            sh("ip", "-n", ns, "route", "add", "224.0.0.0/4", "dev", dev)  # DDS discovery
        env = {**os.environ, "FASTDDS_BUILTIN_TRANSPORTS": "UDPv4",  # no shared memory
               "ROS_DOMAIN_ID": str(60 + os.getpid() % 30)}
        target = subprocess.Popen(
            ["ip", "netns", "exec", server, sys.executable, "-m", "hybrid_policy.ros.target_node",
             "--ros-args", "-r", "__ns:=/netns", "-p", "task:=fetch_reach",
             "-p", f"target:={tiny['target']}"], env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        yield {"robot": robot, "dev": f"vr{tag}", "env": env}
        target.terminate()
        target.wait(timeout=20)
    finally:
        sh("ip", "netns", "del", robot, check=False)
        sh("ip", "netns", "del", server, check=False)


def probe(net, rows=(SMALL, LARGE), repeats=5):
    out = subprocess.run(
        ["ip", "netns", "exec", net["robot"], sys.executable, str(HERE / "netns_probe.py"),
         "/netns", "13", ",".join(map(str, rows)), str(repeats)],
        capture_output=True, text=True, env=net["env"], timeout=180)
    assert out.returncode == 0, out.stdout + out.stderr[-2000:]
    doc = json.loads(out.stdout.strip().splitlines()[-1])
    return {int(k): (v["bytes"], sorted(v["rtt_ms"])[len(v["rtt_ms"]) // 2]) for k, v in doc.items()}


def test_shaped_link_time_grows_with_payload_as_the_rate_predicts(netns):
    base = probe(netns)
    (small_bytes, small_rtt), (large_bytes, large_rtt) = base[SMALL], base[LARGE]
    assert large_rtt - small_rtt < 30  # unshaped veth: size barely matters
    sh("ip", "netns", "exec", netns["robot"], "tc", "qdisc", "add", "dev", netns["dev"], "root",
       "tbf", "rate", f"{RATE_MBIT}mbit", "burst", "32kbit", "latency", "1s")
    try:
        shaped = probe(netns)
    finally:
        sh("ip", "netns", "exec", netns["robot"], "tc", "qdisc", "del", "dev", netns["dev"], "root")
    predicted = (large_bytes - small_bytes) * 8 / (RATE_MBIT * 1e3)  # ms, uplink only
    measured = shaped[LARGE][1] - shaped[SMALL][1]
    assert predicted > 100  # the test has power: ~61 KB more at 4 Mb/s
    assert 0.7 * predicted < measured < 1.4 * predicted, (predicted, measured, base, shaped)


def test_configured_delay_with_netem(netns):
    added = sh("ip", "netns", "exec", netns["robot"], "tc", "qdisc", "add", "dev", netns["dev"],
               "root", "netem", "delay", "20ms", "2ms", check=False)
    if added.returncode != 0:
        pytest.skip(f"this kernel has no netem qdisc ({added.stderr.strip()}): the delay part "
                    "needs sch_netem; the rate part above uses tbf")
    try:
        delayed = probe(netns, rows=(SMALL,))
    finally:
        sh("ip", "netns", "exec", netns["robot"], "tc", "qdisc", "del", "dev", netns["dev"], "root")
    plain = probe(netns, rows=(SMALL,))
    extra = delayed[SMALL][1] - plain[SMALL][1]
    assert 14 < extra < 30, extra  # 20 ms ± a few, one way
