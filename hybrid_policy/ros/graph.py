"""The one description of the ROS graph: which nodes run for a mode, with which parameters.

``launch/hybrid_launch.py`` turns it into ``launch_ros`` Node actions; ``hybrid-policy
bringup`` turns it into OS processes. Neither keeps its own copy of which node gets which
parameter. No ROS imports here, so the launch file and the CLI can both use it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from hybrid_policy.core.modes import MODE_NAMES, parse_modes
from hybrid_policy.errors import HybridPolicyError
from hybrid_policy.policies.runtime import DEFAULT_TEMPERATURE

PACKAGE = "hybrid_policy"
NAMESPACE_DEFAULT = "/hybrid"


@dataclass(frozen=True)
class Topic:
    name: str  # relative to the graph namespace
    type: str  # ROS 2 type name, "pkg/msg/Type"
    role: str  # QoS role (hybrid_policy.ros.qos)
    publishers: tuple[str, ...]  # node names
    subscribers: tuple[str, ...]
    meaning: str


JOINT_STATE, STATUS = "sensor_msgs/msg/JointState", "diagnostic_msgs/msg/DiagnosticStatus"

TOPICS: dict[str, Topic] = {t.name: t for t in (
    Topic("observation", JOINT_STATE, "control", ("sim_node",), ("draft_node",),
          "robot observation; name = ['episode', 'step', *task obs fields]"),
    Topic("action", JOINT_STATE, "control", ("draft_node",), ("sim_node",),
          "action to execute; name = ['dx', 'dy', 'dz', 'gripper']; stamp = observation's"),
    Topic("uplink/request", JOINT_STATE, "uplink", ("draft_node",), ("link_node",),
          "request as sent by the robot (protocol.Request: label in name[0])"),
    Topic("server/request", JOINT_STATE, "uplink", ("link_node",), ("target_node",),
          "request as delivered to the server, after the modelled uplink"),
    Topic("server/response", JOINT_STATE, "downlink", ("target_node",), ("link_node",),
          "server's answer (protocol.Response); stamp = the request's"),
    Topic("downlink/response", JOINT_STATE, "downlink", ("link_node",), ("draft_node",),
          "answer as delivered to the robot, after the modelled downlink"),
    Topic("step", JOINT_STATE, "telemetry", ("draft_node",), (),
          "per-step metrics of the robot side (names in core.stepmetrics.FIELDS)"),
    Topic("episode", STATUS, "telemetry", ("sim_node",), (),
          "episode start/end events: episode, reset_seed, steps, success"),
    Topic("events", STATUS, "telemetry", ("draft_node", "link_node", "target_node"), (),
          "rejected messages and link losses, with the reason"),
)}

SERVER_NODES = ("link_node", "target_node")
CLOCKS = ("lockstep", "realtime")


@dataclass
class GraphConfig:
    """What a user chooses for one run of the graph (CLI flags or launch arguments)."""

    mode: str
    task: str
    link: str = "5g_embb"
    episodes: int = 10
    seed: int = 0
    draft: str = ""  # checkpoint directories
    target: str = ""
    tau: float = 0.0  # thresholds (from a calibration)
    uncertainty_tau: float = 0.0
    random_skip: float = 0.0
    temperature: float = DEFAULT_TEMPERATURE
    deadline_ms: float = 100.0
    clock: str = "lockstep"  # or "realtime": the simulator steps at rate_hz regardless
    rate_hz: float = 10.0  # control rate of the realtime clock
    bag: str = ""  # record to this directory ("" = no recorder)
    namespace: str = NAMESPACE_DEFAULT
    extra: dict[str, dict[str, Any]] = field(default_factory=dict)  # per-node overrides

    def __post_init__(self) -> None:
        parse_modes(self.mode)
        if self.mode == "all" or self.mode not in MODE_NAMES:
            raise ValueError(f"the graph runs one mode at a time, got {self.mode!r}")
        if self.clock not in CLOCKS:
            raise HybridPolicyError(f"clock {self.clock!r} is not one of {', '.join(CLOCKS)}")
        if not 0 < self.rate_hz <= 1000:
            raise HybridPolicyError(f"rate_hz must be in (0, 1000], got {self.rate_hz}")

    @property
    def step_deadline_ms(self) -> float:
        """The draft node's wait for a verdict: ``deadline_ms``, and in real time at most
        70% of the control period, so the fallback action still makes its tick."""
        if self.clock == "realtime":
            return min(self.deadline_ms, 0.7 * 1e3 / self.rate_hz)
        return self.deadline_ms


@dataclass(frozen=True)
class NodeSpec:
    executable: str  # console script installed in lib/hybrid_policy (ros2 run finds it)
    module: str  # python -m target, for bringup
    name: str
    parameters: dict[str, Any]
    respawn: bool = False  # restarted when it dies (server side: a crash is a fault to ride out)


def uses_server(mode: str) -> bool:
    return mode != "draft_only"


def nodes(cfg: GraphConfig) -> list[NodeSpec]:
    """The nodes of ``cfg``'s graph and their parameters."""
    common = {"task": cfg.task, "seed": cfg.seed}
    realtime = cfg.clock == "realtime"
    specs = [
        NodeSpec("sim_node", "hybrid_policy.ros.sim_node", "sim_node", {
            **common, "episodes": cfg.episodes, "clock": cfg.clock, "rate_hz": cfg.rate_hz,
            "wait_for": [n for n in running_nodes(cfg.mode) if n != "sim_node"]}),
        NodeSpec("draft_node", "hybrid_policy.ros.draft_node", "draft_node", {
            **common, "mode": cfg.mode, "draft": cfg.draft, "target": cfg.target,
            "tau": cfg.tau, "uncertainty_tau": cfg.uncertainty_tau,
            "random_skip": cfg.random_skip, "temperature": cfg.temperature,
            "deadline_ms": cfg.step_deadline_ms,
            "control_deadline_ms": 2e3 / cfg.rate_hz if realtime else 0.0}),
    ]
    if uses_server(cfg.mode):
        specs += [
            NodeSpec("link_node", "hybrid_policy.ros.link_node", "link_node", {
                "link": cfg.link}, respawn=True),
            NodeSpec("target_node", "hybrid_policy.ros.target_node", "target_node", {
                "task": cfg.task, "target": cfg.target, "temperature": cfg.temperature},
                respawn=True),
        ]
    if cfg.bag:
        specs.append(NodeSpec("recorder_node", "hybrid_policy.ros.recorder_node",
                              "recorder_node", {"bag": cfg.bag, "topics": recorded(cfg),
                                                "run_info": run_info(cfg)}))
    out = []
    for s in specs:
        params = {**s.parameters, **cfg.extra.get(s.name, {})}
        if s.name != "recorder_node":
            params["expect"] = expected_readers(cfg, s.name)
        out.append(NodeSpec(s.executable, s.module, s.name, params, s.respawn))
    return out


def running_nodes(mode: str) -> tuple[str, ...]:
    """The nodes that publish and subscribe in ``mode``'s graph (the recorder aside)."""
    return ("sim_node", "draft_node", *(SERVER_NODES if uses_server(mode) else ()))


def active_topics(mode: str) -> list[Topic]:
    """Topics with a publisher in this mode's graph."""
    return [t for t in TOPICS.values() if set(t.publishers) & set(running_nodes(mode))]


def recorded(cfg: GraphConfig) -> list[str]:
    """``name:type`` of every topic the recorder writes."""
    return [f"{t.name}:{t.type}" for t in active_topics(cfg.mode)]


def expected_readers(cfg: GraphConfig, node: str) -> list[str]:
    """``"topic count"`` for each topic ``node`` publishes: how many subscribers its
    publisher must have matched before the run starts (readiness handshake)."""
    running = set(running_nodes(cfg.mode))
    return [f"{t.name} {len(set(t.subscribers) & running) + (1 if cfg.bag else 0)}"
            for t in active_topics(cfg.mode) if node in t.publishers]


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> GraphConfig:
    """A ``GraphConfig`` from a YAML file like ``config/hybrid.yaml``, with ``overrides``
    (launch arguments) on top. Thresholds come from the file's ``calibration`` JSON unless
    ``tau`` >= 0 is given; the calibration must be of the same task, link and temperature."""
    try:
        doc = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise HybridPolicyError(f"{path}: cannot read the graph config ({exc})") from None
    settings = {**(doc.get("graph") or {}), **{k: v for k, v in (overrides or {}).items()
                                                if v not in (None, "")}}
    known = {f.name for f in fields(GraphConfig)} | {"calibration"}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise HybridPolicyError(f"{path}: unknown graph settings {unknown}; valid: "
                                f"{sorted(known)}")
    calibration = settings.pop("calibration", "")
    tau = float(settings.pop("tau", -1.0))
    types = {f.name: f.type for f in fields(GraphConfig)}
    cfg = GraphConfig(**{k: _typed(v, types[k]) for k, v in settings.items()},
                      extra=doc.get("nodes") or {})
    if cfg.mode in ("adahi", "uncertainty_skip", "random_skip"):
        if tau >= 0 and cfg.mode == "adahi":
            cfg.tau = tau
        else:
            cfg.tau, cfg.uncertainty_tau, cfg.random_skip = _calibrated(calibration, cfg)
            if tau >= 0:
                cfg.tau = tau
    return cfg


def _typed(value: Any, type_name: str) -> Any:
    return {"int": int, "float": float, "str": str}.get(str(type_name), lambda v: v)(value)


def _calibrated(path: str, cfg: GraphConfig) -> tuple[float, float, float]:
    if not path:
        raise HybridPolicyError(f"mode {cfg.mode} needs thresholds: set 'calibration' (from "
                                "`hybrid-policy calibrate`) or 'tau'")
    try:
        doc = json.loads(Path(path).read_text())
        t = doc["thresholds"]
    except (OSError, ValueError, KeyError) as exc:
        raise HybridPolicyError(f"{path}: no usable calibration ({exc}); run `hybrid-policy "
                                f"calibrate --task {cfg.task} --link {cfg.link}`") from None
    for key, want in (("task", cfg.task), ("link", cfg.link), ("temperature", cfg.temperature)):
        if doc.get(key) != want:
            raise HybridPolicyError(f"{path}: calibrated for {key} {doc.get(key)!r}, the graph "
                                    f"runs {want!r}")
    return float(t["tau"]), float(t["uncertainty_tau"]), float(t["random_skip"])


def run_info(cfg: GraphConfig) -> list[str]:
    """``key=value`` facts of the run, stored in the bag's metadata (``custom_data``) so
    ``hybrid-policy analyze`` knows what it reads."""
    keys = ("mode", "task", "link", "episodes", "seed", "tau", "uncertainty_tau",
            "random_skip", "temperature", "deadline_ms", "clock", "rate_hz", "draft", "target",
            "namespace")
    return [f"{k}={getattr(cfg, k)}" for k in keys]
