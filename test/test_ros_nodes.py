"""Single nodes against a probe node in this process: malformed messages, bad parameters,
payload sizes, and the launch description where launch_ros exists."""

import os
import subprocess
import sys
import time

import numpy as np
import pytest

os.environ.setdefault("ROS_DOMAIN_ID", str(40 + os.getpid() % 50))

import rclpy  # noqa: E402
from diagnostic_msgs.msg import DiagnosticStatus  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.serialization import serialize_message  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402

from hybrid_policy.core.protocol import Request, Response  # noqa: E402
from hybrid_policy.ros import messages, qos  # noqa: E402
from hybrid_policy.ros.readiness import READY_QOS, READY_TOPIC  # noqa: E402
from sim_envs import task_spec  # noqa: E402

NS = "/probe"
SPEC = task_spec("fetch_reach")


def node_cmd(module, **params):
    cmd = [sys.executable, "-m", f"hybrid_policy.ros.{module}", "--ros-args", "-r",
           f"__ns:={NS}"]
    for k, v in params.items():
        cmd += ["-p", f"{k}:={v}"]
    return cmd


class Probe(Node):
    """Plays the simulator, the link and the recorder around a draft and a target node."""

    def __init__(self):
        super().__init__("probe", namespace=NS)
        self.got: dict[str, list] = {k: [] for k in
                                     ("action", "uplink/request", "step", "events",
                                      "server/response", "ready")}
        for topic, role in (("action", "control"), ("uplink/request", "uplink"),
                            ("step", "telemetry"), ("server/response", "downlink")):
            self.create_subscription(JointState, topic, self._keep(topic), qos.profile(role))
        self.create_subscription(DiagnosticStatus, "events", self._keep("events"),
                                 qos.profile("telemetry"))
        self.create_subscription(DiagnosticStatus, READY_TOPIC, self._keep("ready"), READY_QOS)
        self.obs = self.create_publisher(JointState, "observation", qos.profile("control"))
        self.down = self.create_publisher(JointState, "downlink/response", qos.profile("downlink"))
        self.server = self.create_publisher(JointState, "server/request", qos.profile("uplink"))

    def _keep(self, topic):
        return lambda msg: self.got[topic].append(msg)

    def spin_until(self, cond, timeout=20.0):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            rclpy.spin_once(self, timeout_sec=0.05)
            if cond():
                return True
        return False


@pytest.fixture(scope="module")
def graph(tiny):
    rclpy.init()
    probe = Probe()
    procs = [
        subprocess.Popen(node_cmd("draft_node", task="fetch_reach", mode="hybrid",
                                  draft=tiny["draft"], target=tiny["target"],
                                  deadline_ms=300.0, expect="['action 1', 'uplink/request 1']")),
        subprocess.Popen(node_cmd("target_node", task="fetch_reach", target=tiny["target"],
                                  expect="['server/response 1']")),
    ]
    ready = probe.spin_until(lambda: {m.name for m in probe.got["ready"]} >=
                             {"draft_node", "target_node"}, timeout=90)
    yield probe, ready
    for p in procs:
        p.terminate()
        p.wait(timeout=20)
    probe.destroy_node()
    rclpy.shutdown()


def _stamp(probe):
    return probe.get_clock().now().to_msg()


def _events_about(probe, stamp):
    key = str(messages.stamp_key(stamp))
    return [m for m in probe.got["events"] if messages.status_values(m).get("stamp") == key]


def test_malformed_observations_are_reported_and_never_acted_on(graph):
    probe, ready = graph
    assert ready, "draft and target nodes did not come up"
    short, nan = _stamp(probe), None
    probe.obs.publish(messages.joint_state(short, ["episode", "step", "x"], [0, 0, 1.0]))
    nan = _stamp(probe)
    probe.obs.publish(messages.observation_msg(nan, 0, 0, SPEC.obs_fields,
                                               np.full(SPEC.obs_dim, np.nan)))
    assert probe.spin_until(lambda: _events_about(probe, short) and _events_about(probe, nan))
    reason = messages.status_values(_events_about(probe, short)[0])["reason"]
    assert f"observation has 1 values, expected {SPEC.obs_dim}" in reason
    assert "NaN" in messages.status_values(_events_about(probe, nan)[0])["reason"]
    probe.spin_until(lambda: False, timeout=0.5)
    assert not probe.got["action"] and not probe.got["uplink/request"]


def test_bad_verdicts_fall_back_to_the_draft_at_the_deadline(graph):
    probe, _ = graph
    stamp = _stamp(probe)
    probe.obs.publish(messages.observation_msg(stamp, 0, 0, SPEC.obs_fields,
                                               np.zeros(SPEC.obs_dim)))
    assert probe.spin_until(lambda: probe.got["uplink/request"])
    req = probe.got["uplink/request"][-1]
    assert req.header.stamp == stamp  # the request echoes the observation's stamp
    bad = Response(np.full(4, np.nan, np.float32), (0, 0), True, 2, (0.0, 0.0))
    probe.down.publish(messages.joint_state(stamp, [bad.label()], bad.to_vector()))
    unknown = _stamp(probe)
    good = Response(np.zeros(4, np.float32), (0, 0), True, 2, (0.0, 0.0))
    probe.down.publish(messages.response_msg(unknown, good))
    assert probe.spin_until(lambda: probe.got["action"] and probe.got["step"], timeout=5)
    action = probe.got["action"][-1]
    assert action.header.stamp == stamp and np.all(np.isfinite(action.position))
    step = dict(zip(probe.got["step"][-1].name, probe.got["step"][-1].position))
    assert step["fallback"] == 1.0 and step["verdict"] == 0.0
    assert "NaN" in messages.status_values(_events_about(probe, stamp)[0])["reason"]
    assert probe.spin_until(lambda: _events_about(probe, unknown), timeout=5)
    assert "answers no pending step" in messages.status_values(
        _events_about(probe, unknown)[0])["reason"]
    # a verdict arriving after the deadline is dropped, not applied to a later step
    n_actions = len(probe.got["action"])
    probe.down.publish(messages.response_msg(stamp, good))
    assert probe.spin_until(lambda: len(_events_about(probe, stamp)) >= 2, timeout=5)
    assert len(probe.got["action"]) == n_actions


def test_target_refuses_a_malformed_request_and_answers_a_good_one(graph):
    probe, _ = graph
    bad = _stamp(probe)
    probe.server.publish(messages.joint_state(bad, ["teleport:h1x13:l0:k0"], [0.0] * 14))
    good = _stamp(probe)
    window = np.zeros((4, SPEC.obs_dim), np.float32)
    probe.server.publish(messages.request_msg(good, Request("act", window, seed=1)))
    assert probe.spin_until(lambda: probe.got["server/response"] and _events_about(probe, bad))
    assert [m.header.stamp for m in probe.got["server/response"]] == [good]
    assert "is not" in messages.status_values(_events_about(probe, bad)[0])["reason"]


@pytest.mark.parametrize("module,params,expected", [
    ("draft_node", {"task": "fetch_reach", "mode": "warp", "draft": "x"},
     "valid modes: draft_only, target_only"),
    ("link_node", {"link": "carrier_pigeon"}, "valid profiles: 6g_hrllc"),
    ("sim_node", {"task": "fetch_nothing"}, "valid tasks: fetch_reach"),
    ("target_node", {"task": "fetch_reach", "target": "/nonexistent"}, "no such checkpoint"),
    ("draft_node", {"task": "fetch_reach", "mode": "adahi", "draft": "x", "tau": -1.0},
     "finite number >= 0"),
    ("draft_node", {"task": "fetch_reach", "mode": "hybrid", "draft": "x"},
     "mode hybrid needs parameter 'target'"),
    ("draft_node", {"task": "fetch_reach", "mode": "draft_only", "draft": "x",
                    "deadline_ms": 0.0}, "deadline_ms must be > 0"),
    ("sim_node", {"task": "fetch_reach", "clock": "sundial"},
     "clock 'sundial' is not one of lockstep, realtime"),
    ("sim_node", {"task": "fetch_reach", "rate_hz": 0.0}, "rate_hz must be in (0, 1000]"),
    ("recorder_node", {"bag": "x", "topics": "['step:sensor_msgs/msg/JointState']"},
     "already exists"),
])
def test_bad_parameters_refuse_to_start(module, params, expected, tiny):
    params = {k: (str(tiny["draft"]) if v == "x" else v) for k, v in params.items()}
    out = subprocess.run(node_cmd(module, **params), capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr[-2000:]
    assert expected in out.stderr


def test_payload_model_matches_the_serialised_message():
    rng = np.random.default_rng(0)
    stamp = messages.Time(sec=1_700_000_000, nanosec=123)
    for req in (Request("verify", rng.random((4, 28)).astype(np.float32), 5, (3, 7),
                        rng.random((2, 16))),
                Request("act", rng.random((2, 13)).astype(np.float32), 9)):
        assert len(serialize_message(messages.request_msg(stamp, req))) == req.payload_bytes()
    resp = Response(np.zeros(4, np.float32), (1, 2), False, 1, (0.25,))
    assert len(serialize_message(messages.response_msg(stamp, resp))) == resp.payload_bytes()


def test_launch_description_builds_the_graph_nodes():
    pytest.importorskip("launch_ros", reason="launch_ros is not installed (no ROS 2 install; "
                        "the pip wheels do not include it): bringup covers the same graph")
    from launch import LaunchContext
    from launch_ros.actions import Node as LaunchNode
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "launch" / "hybrid_launch.py"
    spec = importlib.util.spec_from_file_location("hybrid_launch", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    ld = mod.generate_launch_description()
    ctx = LaunchContext()
    for action in ld.entities:
        action.visit(ctx)
    config = Path(__file__).resolve().parents[1] / "config" / "hybrid.yaml"
    ctx.launch_configurations.update({"config": str(config), "mode": "hybrid", "tau": ""})
    actions = mod._graph(ctx)
    names = {a.node_name.split("/")[-1] for a in actions if isinstance(a, LaunchNode)}
    assert names == {"sim_node", "draft_node", "link_node", "target_node"}


def test_interfaces_doc_names_every_topic():
    from pathlib import Path

    from hybrid_policy.ros.graph import TOPICS

    doc = (Path(__file__).resolve().parents[1] / "docs" / "interfaces.md").read_text()
    for topic in TOPICS.values():
        assert f"| `{topic.name}` | `{topic.type.replace('/msg/', '/')}` |" in doc, topic.name


def test_graph_config_refuses_bad_settings(tmp_path):
    from hybrid_policy.errors import HybridPolicyError
    from hybrid_policy.ros.graph import load_config

    cfg = tmp_path / "hybrid.yaml"
    cfg.write_text("graph:\n  mode: hybrid\n  task: fetch_push\n  speed: 11\n")
    with pytest.raises(HybridPolicyError, match=r"unknown graph settings \['speed'\]"):
        load_config(cfg)
    cal = tmp_path / "cal.json"
    cal.write_text('{"task": "fetch_push", "link": "wifi", "temperature": 0.5, '
                   '"thresholds": {"tau": 0.1, "uncertainty_tau": 1.0, "random_skip": 0.4}}')
    cfg.write_text(f"graph:\n  mode: adahi\n  task: fetch_push\n  link: 5g_embb\n"
                   f"  calibration: {cal}\n")
    with pytest.raises(HybridPolicyError, match="calibrated for link 'wifi', the graph runs "
                                                "'5g_embb'"):
        load_config(cfg)
    assert load_config(cfg, {"link": "wifi"}).tau == 0.1
    with pytest.raises(HybridPolicyError, match="clock 'sundial' is not one of"):
        load_config(cfg, {"link": "wifi", "clock": "sundial"})
