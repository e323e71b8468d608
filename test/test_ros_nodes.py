"""Single nodes against a probe node in this process: malformed messages, bad parameters,
payload sizes, and the launch description where launch_ros exists."""

import os
import subprocess

import numpy as np
import pytest

os.environ.setdefault("ROS_DOMAIN_ID", str(40 + os.getpid() % 50))

import rclpy  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.serialization import serialize_message  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402

from hybrid_policy.core.protocol import Request, Response  # noqa: E402
from hybrid_policy.ros import messages, qos  # noqa: E402
from hybrid_policy.ros.readiness import READY_QOS, READY_TOPIC  # noqa: E402
from sim_envs import task_spec  # noqa: E402

import ros_helpers  # noqa: E402

NS = "/probe"
SPEC = task_spec("fetch_reach")


def node_cmd(module, **params):
    return ros_helpers.node_cmd(module, NS, **params)


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
        self.got["diagnostics"] = []
        self.create_subscription(DiagnosticArray, "/diagnostics", self._keep("diagnostics"), 10)
        self.obs = self.create_publisher(JointState, "observation", qos.profile("control"))
        self.down = self.create_publisher(JointState, "downlink/response", qos.profile("downlink"))
        self.server = self.create_publisher(JointState, "server/request", qos.profile("uplink"))

    def _keep(self, topic):
        return lambda msg: self.got[topic].append(msg)

    def spin_until(self, cond, timeout=20.0):
        return ros_helpers.spin_until(self, cond, timeout)


@pytest.fixture(scope="module")
def graph(tiny):
    rclpy.init()
    probe = Probe()
    procs = [
        # under use_sim_time with no /clock: deadlines still run on the steady clock
        subprocess.Popen(node_cmd("draft_node", task="fetch_reach", mode="hybrid",
                                  interface="vector", draft=tiny["draft"],
                                  target=tiny["target"], use_sim_time="true",
                                  deadline_ms=300.0, expect="['action 1', 'uplink/request 1']")),
        subprocess.Popen(node_cmd("target_node", task="fetch_reach", target=tiny["target"],
                                  expect="['server/response 1']")),
        subprocess.Popen(node_cmd("lifecycle_manager",
                                  node_names="['target_node', 'draft_node']")),
    ]
    ready = probe.spin_until(lambda: {m.name.rsplit("/", 1)[-1] for m in probe.got["ready"]} >=
                             {"lifecycle_manager"}, timeout=90)
    yield probe, ready
    ros_helpers.stop(procs)
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
    ("draft_node", {"task": "fetch_reach", "mode": "adahi", "draft": "x", "target": "t",
                    "tau": -0.5}, "tau must be a finite number >= 0, or -1 to take it from"),
    ("draft_node", {"task": "fetch_reach", "mode": "adahi", "draft": "x", "target": "t"},
     "mode adahi skips verification below a threshold and none was given"),
    ("draft_node", {"task": "fetch_reach", "mode": "random_skip", "draft": "x", "target": "t",
                    "calibration": "/nonexistent.json", "link": "wifi"},
     "no calibration: run `hybrid-policy calibrate --task fetch_reach --link wifi` first"),
    ("draft_node", {"task": "fetch_reach", "mode": "adahi", "draft": "x", "target": "t",
                    "calibration": "cal", "link": "wifi"},
     "calibrated for other settings: link '6g_hrllc' (now 'wifi')"),
    ("draft_node", {"task": "fetch_reach", "mode": "adahi", "draft": "x", "target": "t",
                    "calibration": "cal"}, "give the link too (parameter 'link')"),
    ("lifecycle_manager", {"timeout_s": 5.0}, "parameter 'node_names' is empty"),
    ("draft_node", {"task": "fetch_reach", "mode": "hybrid", "draft": "x"},
     "mode hybrid needs parameter 'target'"),
    ("draft_node", {"task": "fetch_reach", "mode": "draft_only", "draft": "x",
                    "deadline_ms": 0.0}, "deadline_ms must be > 0"),
    ("sim_node", {"task": "fetch_reach", "clock": "sundial"},
     "clock 'sundial' is not one of lockstep, realtime"),
    ("sim_node", {"task": "fetch_reach", "rate_hz": 0.0}, "rate_hz must be in (0, 1000]"),
    ("recorder_node", {"bag": "x", "topics": "['step:sensor_msgs/msg/JointState']"},
     "already exists"),
    ("link_node", {"link": "wifi", "clients": "['robot_0']", "upstream": "/hybrid/regional"},
     "clients entry 'robot_0' is not 'robot:hop'"),
    ("link_node", {"link": "wifi", "clients": "['robot_0:1']"},
     "parameter 'upstream' is required with 'clients'"),
    ("link_node", {"link": "wifi", "uplink_mbps": 0.0},
     "parameter 'uplink_mbps' must be > 0 (delay_ms >= 0) or -1"),
    ("sim_node", {"task": "fetch_reach", "first_episode": -2}, "first_episode must be >= 0"),
])
def test_bad_parameters_refuse_to_start(module, params, expected, tiny, calibrations):
    subst = {"x": str(tiny["draft"]), "t": str(tiny["target"]),
             "cal": str(calibrations["6g_hrllc"])}
    params = {k: subst.get(v, v) if isinstance(v, str) else v for k, v in params.items()}
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
    assert names == {"sim_node", "draft_node", "link_node", "target_node", "lifecycle_manager"}


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
    cfg.write_text("graph:\n  mode: hybrid\n  task: fetch_push\n")
    with pytest.raises(HybridPolicyError, match="clock 'sundial' is not one of"):
        load_config(cfg, {"clock": "sundial"})
    with pytest.raises(HybridPolicyError, match="setting 'episodes' must be a int"):
        load_config(cfg, {"episodes": "many"})


def _reasons(probe, stamp):
    return [messages.status_values(m)["reason"] for m in _events_about(probe, stamp)]


def _observe(probe, stamp, episode=0, step=0):
    probe.obs.publish(messages.observation_msg(stamp, episode, step, SPEC.obs_fields,
                                               np.zeros(SPEC.obs_dim)))


def test_zero_duplicate_and_backwards_stamps_are_reported_and_dropped(graph):
    probe, _ = graph
    zero = messages.Time(sec=0, nanosec=0)
    _observe(probe, zero)
    assert probe.spin_until(lambda: _events_about(probe, zero))
    assert "zero stamp" in _reasons(probe, zero)[0]
    first, second = _stamp(probe), _stamp(probe)
    n_requests = len(probe.got["uplink/request"])
    _observe(probe, second)
    _observe(probe, second)  # duplicate while in flight
    _observe(probe, first)  # older than the last one
    assert probe.spin_until(lambda: _events_about(probe, first) and
                            any("duplicate" in r for r in _reasons(probe, second)))
    assert "stamp goes backwards" in _reasons(probe, first)[0]
    probe.spin_until(lambda: False, timeout=0.5)
    assert len(probe.got["uplink/request"]) == n_requests + 1  # only the first `second`


def test_deadline_fallback_is_an_event_and_a_diagnostics_count(graph):
    """Nobody answers the request: the draft acts at its deadline (on the steady clock,
    although the node runs under use_sim_time with no /clock), reports the fallback on
    `events` with its stamp, and counts it on /diagnostics."""
    probe, _ = graph
    stamp = _stamp(probe)
    _observe(probe, stamp, episode=7)
    assert probe.spin_until(lambda: any(m.message == "deadline fallback"
                                        for m in _events_about(probe, stamp)), timeout=5)
    assert probe.spin_until(lambda: any(
        s.name.endswith("draft_node") and int(messages.status_values(s).get(
            "deadline fallback", 0)) >= 1 for a in probe.got["diagnostics"] for s in a.status),
        timeout=5)


def test_garbage_on_every_input_is_reported_and_no_node_dies(graph):
    """Random labels and values on the draft's and the target's inputs, and a run-time
    parameter change: each message is reported, the nodes keep running and still act."""
    from rcl_interfaces.msg import Parameter as ParameterMsg, ParameterType
    from rcl_interfaces.srv import SetParameters

    probe, _ = graph
    rng = np.random.default_rng(0)
    labels = ["episode", "step", "", "verify:h4x13:l2:k8", "a4:l2:tv2", *SPEC.obs_fields]
    for i in range(60):
        n = int(rng.integers(0, 40))
        values = rng.choice([np.nan, np.inf, -1.0, 1e308, 0.5, 3.0, -2**40], size=n)
        names = list(rng.choice(labels, size=int(rng.integers(0, n + 1))))
        stamp = _stamp(probe)
        msg = messages.joint_state(stamp, names, values)
        (probe.obs, probe.down, probe.server)[i % 3].publish(msg)
        assert probe.spin_until(lambda: _events_about(probe, stamp), timeout=5), (i, names)

    client = probe.create_client(SetParameters, "draft_node/set_parameters")
    assert client.wait_for_service(timeout_sec=10)
    req = SetParameters.Request()
    value = ParameterMsg(name="tau").value
    value.type, value.double_value = ParameterType.PARAMETER_DOUBLE, 5.0
    req.parameters = [ParameterMsg(name="tau", value=value)]
    future = client.call_async(req)
    assert probe.spin_until(future.done, timeout=10)
    result = future.result().results[0]
    assert not result.successful and "read-only" in result.reason

    stamp = _stamp(probe)  # both nodes still act: a real step is requested and served
    _observe(probe, stamp, episode=8)
    assert probe.spin_until(lambda: any(m.header.stamp == stamp
                                        for m in probe.got["uplink/request"]), timeout=5)
    window = np.zeros((4, SPEC.obs_dim), np.float32)
    probe.server.publish(messages.request_msg(stamp, Request("act", window, seed=2)))
    assert probe.spin_until(lambda: any(m.header.stamp == stamp
                                        for m in probe.got["server/response"]), timeout=5)


def test_a_command_older_than_one_published_is_never_published(graph):
    """Two steps in flight, the newer verdict first: its action is published, the older
    step's verdict then resolves its step (telemetry, an event) but publishes no action, so
    a driver that applies the latest command never runs a stale one."""
    probe, _ = graph
    older, newer = _stamp(probe), None
    probe.obs.publish(messages.observation_msg(older, 0, 0, SPEC.obs_fields,
                                               np.zeros(SPEC.obs_dim)))
    newer = _stamp(probe)
    probe.obs.publish(messages.observation_msg(newer, 0, 1, SPEC.obs_fields,
                                               np.full(SPEC.obs_dim, 0.01)))
    assert probe.spin_until(lambda: {r.header.stamp.nanosec for r in probe.got["uplink/request"]}
                            >= {older.nanosec, newer.nanosec}, timeout=5)
    n_actions, n_steps = len(probe.got["action"]), len(probe.got["step"])
    good = Response(np.zeros(4, np.float32), (0, 0), True, 2, (0.0, 0.0))
    probe.down.publish(messages.response_msg(newer, good))
    assert probe.spin_until(lambda: len(probe.got["action"]) > n_actions, timeout=5)
    probe.down.publish(messages.response_msg(older, good))
    assert probe.spin_until(lambda: len(probe.got["step"]) >= n_steps + 2, timeout=5)
    assert probe.spin_until(lambda: any("overtaken" in m.message
                                        for m in _events_about(probe, older)), timeout=5)
    probe.spin_until(lambda: False, timeout=0.3)
    assert [a.header.stamp for a in probe.got["action"][n_actions:]] == [newer]
    stamps = [s.header.stamp for s in probe.got["step"][n_steps:]]
    assert stamps == [newer, older]  # nothing lost: both steps reported
