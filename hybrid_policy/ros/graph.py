"""The one description of the ROS graph: which nodes run for a mode, with which parameters.

``launch/hybrid_launch.py`` turns it into ``launch_ros`` Node actions; ``hybrid-policy
bringup`` turns it into OS processes. Neither keeps its own copy of which node gets which
parameter. No ROS imports and no torch here (a test checks ``sys.modules``), so the launch
file shows its arguments at once.

Start-up follows the ROS lifecycle convention: the draft and target nodes are managed
nodes, and ``lifecycle_manager`` configures (loads the models) and activates them, the
server before the robot, re-driving a server that was respawned. The simulator starts its
first episode once the manager has announced every managed node active.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from hybrid_policy.core import robot_map
from hybrid_policy.families.adahi import calibration_file
from hybrid_policy.families import registry
from hybrid_policy.families.adahi.names import FROM_CALIBRATION, NEEDS_THRESHOLDS
from hybrid_policy.core.realtime import Clock
from hybrid_policy.defaults import (
    DEFAULT_DEADLINE_MS, DEFAULT_LINK, DEFAULT_MODELS, DEFAULT_TEMPERATURE,
)
from hybrid_policy.errors import HybridPolicyError

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
    interface: str = ""  # only with this robot interface ("" = always)


JOINT_STATE, STATUS = "sensor_msgs/msg/JointState", "diagnostic_msgs/msg/DiagnosticStatus"
POSE, POINT = "geometry_msgs/msg/PoseStamped", "geometry_msgs/msg/PointStamped"
TWIST = "geometry_msgs/msg/TwistStamped"
IMAGE = "sensor_msgs/msg/Image"
INTERFACES = ("standard", "vector")


def _robot(name: str, type_: str, meaning: str, to_robot: bool = False) -> Topic:
    """A topic of the standard robot interface (config/robot_<task>.yaml names them)."""
    ends = (("draft_node",), ("sim_node",)) if to_robot else (("sim_node",), ("draft_node",))
    return Topic(name, type_, "control", *ends, meaning, "standard")


TOPICS: dict[str, Topic] = {t.name: t for t in (
    _robot("joint_states", JOINT_STATE, "every robot joint: position (m|rad), velocity"),
    _robot("ee_pose", POSE, "end-effector (grip site) pose in frame world"),
    _robot("ee_twist", TWIST, "end-effector velocity (m/s, rad/s) in frame world"),
    _robot("object_pose", POSE, "the object's pose in frame world (object tasks)"),
    _robot("object_twist", TWIST, "the object's velocity in frame world (object tasks)"),
    _robot("goal", POINT, "the task's goal point in frame world"),
    _robot("cmd_twist", TWIST, "end-effector velocity command (m/s) in frame world; stamp = "
           "the snapshot's", to_robot=True),
    _robot("gripper_command", JOINT_STATE, "finger joint position targets (m); stamp = the "
           "snapshot's", to_robot=True),
    Topic("observation", JOINT_STATE, "control", ("sim_node",), ("draft_node",),
          "robot observation; name = ['episode', 'step', *task obs fields]", "vector"),
    Topic("action", JOINT_STATE, "control", ("draft_node",), ("sim_node",),
          "action to execute; name = ['dx', 'dy', 'dz', 'gripper']; stamp = observation's",
          "vector"),
    Topic("uplink/request", JOINT_STATE, "uplink", ("draft_node",), ("link_node",),
          "request as sent by the robot (protocol.Request: label in name[0])"),
    Topic("server/request", JOINT_STATE, "uplink", ("link_node",), ("target_node",),
          "request as delivered to the server, after the modelled uplink"),
    Topic("server/response", JOINT_STATE, "downlink", ("target_node",), ("link_node",),
          "server's answer (protocol.Response); stamp = the request's"),
    Topic("downlink/response", JOINT_STATE, "downlink", ("link_node",), ("draft_node",),
          "answer as delivered to the robot, after the modelled downlink"),
    Topic("step", JOINT_STATE, "telemetry", ("draft_node",), (),
          "per-step metrics of the robot side (names in core.stepmetrics.FIELDS); sim_time: "
          "the simulator reads latency_ms, the step's modelled time"),
    Topic("episode", STATUS, "telemetry", ("sim_node",), (),
          "episode start/end events: episode, reset_seed, steps, success"),
    Topic("events", STATUS, "telemetry", ("draft_node", "link_node", "target_node", "sim_node"),
          (), "rejected messages, deadline fallbacks and link losses, with the reason"),
)}

SERVER_NODES = ("link_node", "target_node")
MANAGED_NODES = ("target_node", "draft_node")  # lifecycle nodes, in activation order
MANAGER = "lifecycle_manager"
# lockstep: the simulator waits for each command; realtime: it ticks on the wall clock;
# sim_time: it ticks in simulated time (/clock), steps charged their modelled time, so a
# run equals the in-process real-time evaluator tick for tick (ros/sim_node.py)
CLOCKS = ("lockstep", "realtime", "sim_time")
GRAPH_LOOPS = ("wait", "period")  # core.realtime's loops the graph runs (draft_first: eval)


@dataclass
class GraphConfig:
    """What a user chooses for one run of the graph (CLI flags or launch arguments)."""

    mode: str
    task: str
    link: str = DEFAULT_LINK
    episodes: int = 10
    seed: int = 0
    models: str = DEFAULT_MODELS  # root of the default models and calibrations
    draft: str = ""  # checkpoint directories ("" = the default draft, MODELS/TASK/target)
    target: str = ""
    # the default draft and its calibrations: demonstrations (MODELS/TASK/draft) or
    # distilled (MODELS/TASK/draft_distilled, calibrations under calibration/distilled/)
    draft_kind: str = calibration_file.DRAFT_KINDS[0]
    calibration: str = ""  # "" = the default draft's for LINK (skipping modes only)
    tau: float = FROM_CALIBRATION  # thresholds: -1 = from the calibration
    uncertainty_tau: float = FROM_CALIBRATION
    random_skip: float = FROM_CALIBRATION
    temperature: float = DEFAULT_TEMPERATURE
    deadline_ms: float = DEFAULT_DEADLINE_MS
    clock: str = "lockstep"  # or "realtime" / "sim_time": it steps at rate_hz regardless
    # real-time clocks: how a verified step waits (core.realtime): period = a share of the
    # period, so the fallback makes its tick; wait = deadline_ms
    loop: str = "period"
    # sim_time: the compute times a step is charged (ms; -1: bringup measures this machine)
    draft_ms: float = -1.0
    target_ms: float = -1.0
    interface: str = "standard"  # robot interface: standard ROS messages, or "vector"
    robot_map: str = ""  # standard interface map ("" = config/robot_<task>.yaml)
    max_age_ms: float = -1.0  # oldest usable robot input (-1 = the robot map's)
    rate_hz: float = -1.0  # control rate of the real-time clocks (-1 = the task's)
    bag: str = ""  # record to this directory ("" = no recorder)
    recorder_nice: int = 10  # the recorder's CPU niceness (off the control path)
    # the draft node applies the link model itself (no link_node: a process and two DDS
    # hops fewer a verified step; the same link draws, ros/packet_link.py)
    link_in_draft: bool = False
    namespace: str = NAMESPACE_DEFAULT
    topology: str = ""  # a fleet (core.topology YAML): every robot runs ``mode`` (fleet_graph)
    early_exit: str = ""  # early-exit net ("" = MODELS/TASK/early_exit): early-exit modes
    exit_plan: str = ""  # the plan bringup wrote (parts, thresholds, offloading): idem
    rocoin_layout: str = ""  # rocoin modes: the layout bringup wrote (groups, codes, devices)
    students_path: str = ""  # rocoin modes: the students' checkpoint directory
    idn_catalogue: str = ""  # placement modes: the variants' catalogue JSON bringup wrote
    extra: dict[str, dict[str, Any]] = field(default_factory=dict)  # per-node overrides

    def __post_init__(self) -> None:
        family = registry.family_of(registry.check_mode(self.mode))
        if family.fleet_only and not self.topology:
            raise HybridPolicyError(f"mode {self.mode} ({family.summary}) runs on a topology "
                                    "(topology:=FILE)")
        if not 0 <= self.recorder_nice <= 19:
            raise HybridPolicyError(f"recorder_nice must be in 0..19, got {self.recorder_nice}")
        if self.link_in_draft and self.topology:
            raise HybridPolicyError("link_in_draft is for one robot's graph: a fleet's links "
                                    "are its topology's")
        calibration_file.check_given(self.thresholds_given)
        calibration_file.check_draft_kind(self.draft_kind)
        if self.clock not in CLOCKS:
            raise HybridPolicyError(f"clock {self.clock!r} is not one of {', '.join(CLOCKS)}")
        if not (0 < self.rate_hz <= 1000 or self.rate_hz == -1):
            raise HybridPolicyError(f"rate_hz must be in (0, 1000] (or -1 for the task's), "
                                    f"got {self.rate_hz}")
        if self.loop not in GRAPH_LOOPS:
            raise HybridPolicyError(f"loop {self.loop!r} is not one the graph runs "
                                    f"({', '.join(GRAPH_LOOPS)}; draft_first runs in eval)")
        if self.clock == "sim_time":
            self._check_sim_time()
        if self.interface not in INTERFACES:
            raise HybridPolicyError(f"interface {self.interface!r} is not one of "
                                    f"{', '.join(INTERFACES)}")
        if self.interface == "standard" and not Path(self.robot_map_path).exists():
            raise HybridPolicyError(f"task {self.task} has no robot map ({self.robot_map_path});"
                                    " give one with robot_map, or use interface vector")
        if not (self.max_age_ms == -1 or self.max_age_ms > 0):
            raise HybridPolicyError(f"max_age_ms must be > 0 (or -1 for the robot map's), got "
                                    f"{self.max_age_ms}")

    def _check_sim_time(self) -> None:
        """sim_time runs one robot's draft/target graph; its draft node applies the link
        itself, so that it knows every step's modelled time."""
        if self.topology:
            raise HybridPolicyError("clock sim_time runs one robot's graph; a fleet runs in "
                                    "real time in process (hybrid-policy eval --topology)")
        if not (self.draft_ms >= 0 and self.target_ms >= 0):
            raise HybridPolicyError(f"clock sim_time charges each step modelled compute: set "
                                    f"draft_ms and target_ms >= 0 (ms; `hybrid-policy eval` "
                                    f"logs this machine's), got {self.draft_ms:g} and "
                                    f"{self.target_ms:g}")
        self.link_in_draft = True

    @property
    def period_ms(self) -> float:
        """The control period of the real-time clocks."""
        from sim_envs import task_spec

        return task_spec(self.task).control_period_ms if self.rate_hz == -1 else \
            1e3 / self.rate_hz

    @property
    def robot_map_path(self) -> str:
        return self.robot_map or str(robot_map.default_path(self.task))

    @property
    def thresholds_given(self) -> dict[str, float]:
        return {"tau": self.tau, "uncertainty_tau": self.uncertainty_tau,
                "random_skip": self.random_skip}

    @property
    def draft_path(self) -> str:
        return self.draft or str(calibration_file.default_draft_path(self.models, self.task,
                                                                     self.draft_kind))

    @property
    def target_path(self) -> str:
        return self.target or str(Path(self.models) / self.task / "target")

    @property
    def early_exit_path(self) -> str:
        return self.early_exit or str(Path(self.models) / self.task / "early_exit")

    @property
    def calibration_path(self) -> str:
        return self.calibration or str(calibration_file.default_path(self.models, self.task,
                                                                     self.link, self.draft_kind))

    @property
    def step_deadline_ms(self) -> float:
        """The draft node's wait for a verdict: ``deadline_ms``; in the real-time clocks
        the loop's (``period``: 70% of the control period, so the fallback still makes its
        tick), as ``core.realtime.Clock.deadline_ms`` says in process."""
        if self.clock == "lockstep":
            return self.deadline_ms
        return Clock("realtime", self.period_ms, self.loop).deadline_ms(self.deadline_ms)


@dataclass(frozen=True)
class NodeSpec:
    executable: str  # console script installed in lib/hybrid_policy (ros2 run finds it)
    module: str  # python -m target, for bringup
    name: str
    parameters: dict[str, Any]
    respawn: bool = False  # restarted when it dies (server side: a crash is a fault to ride out)
    namespace: str = ""  # under the graph's namespace ("" = in it; a fleet: robot_0, edge_0)
    remaps: tuple[tuple[str, str], ...] = ()  # topic remappings (from, to)

    @property
    def key(self) -> str:
        """The node's name relative to the graph's namespace (unique in a graph)."""
        return f"{self.namespace}/{self.name}" if self.namespace else self.name

    def full_namespace(self, root: str) -> str:
        return f"{root.rstrip('/')}/{self.namespace}" if self.namespace else root


def uses_server(mode: str) -> bool:
    return mode != "draft_only"


def robot_specs(cfg: GraphConfig, wait_for: list[str]) -> list[NodeSpec]:
    """A robot's simulator (starting its first episode once the nodes of ``wait_for`` are
    ready) and its draft node, with what every family's robot takes; a family adds its own
    parameters to the draft node's."""
    common = {"task": cfg.task, "seed": cfg.seed}
    return [
        NodeSpec("sim_node", "hybrid_policy.ros.sim_node", "sim_node", {
            **common, "episodes": cfg.episodes, "clock": cfg.clock, "rate_hz": cfg.rate_hz,
            "interface": cfg.interface, "wait_for": wait_for}),
        NodeSpec("draft_node", "hybrid_policy.ros.draft_node", "draft_node", {
            **common, "mode": cfg.mode, "interface": cfg.interface,
            **({"robot_map": cfg.robot_map_path, "max_age_ms": cfg.max_age_ms}
               if cfg.interface == "standard" else {}),
            "temperature": cfg.temperature, "deadline_ms": cfg.step_deadline_ms,
            "control_deadline_ms": 2 * cfg.period_ms if cfg.clock == "realtime" else 0.0}),
    ]


def nodes(cfg: GraphConfig) -> list[NodeSpec]:
    """The nodes of one draft/target robot's graph and their parameters (a fleet's graph is
    its family's: ``fleet_graph.graph_nodes``)."""
    if cfg.topology:
        raise HybridPolicyError("a fleet's graph is its family's (ros.fleet_graph.graph_nodes)")
    sim, draft = robot_specs(cfg, [n for n in running_nodes(cfg.mode, cfg.link_in_draft)
                                   if n != "sim_node" and n not in MANAGED_NODES])
    draft.parameters.update({
        "draft": cfg.draft_path, "link": cfg.link,
        "target": cfg.target_path if uses_server(cfg.mode) else "",
        "calibration": cfg.calibration_path if cfg.mode in NEEDS_THRESHOLDS else "",
        **cfg.thresholds_given,
        **({"step_time": "modelled", "draft_ms": cfg.draft_ms, "target_ms": cfg.target_ms}
           if cfg.clock == "sim_time" else {}),
        **({"link_in_node": True} if cfg.link_in_draft and uses_server(cfg.mode) else {})})
    specs = [
        sim, draft,
        NodeSpec("lifecycle_manager", "hybrid_policy.ros.lifecycle_manager", MANAGER, {
            "node_names": list(managed_nodes(cfg.mode))}),
    ]
    if uses_server(cfg.mode):
        if not cfg.link_in_draft:
            specs.append(NodeSpec("link_node", "hybrid_policy.ros.link_node", "link_node", {
                "link": cfg.link}, respawn=True))
        specs += [
            NodeSpec("target_node", "hybrid_policy.families.adahi.target_node", "target_node", {
                "task": cfg.task, "target": cfg.target_path, "temperature": cfg.temperature},
                respawn=True),
        ]
    if cfg.bag:
        specs.append(NodeSpec("recorder_node", "hybrid_policy.ros.recorder_node",
                              "recorder_node", {"bag": cfg.bag, "topics": recorded(cfg),
                                                "run_info": run_info(cfg),
                                                "nice": cfg.recorder_nice,
                                                # sim_time: the bag's timeline is simulated
                                                "use_sim_time": cfg.clock == "sim_time"}))
    out = []
    for s in specs:
        params = {**s.parameters, **cfg.extra.get(s.name, {})}
        if s.name not in ("recorder_node", MANAGER):
            params["expect"] = expected_readers(cfg, s.name)
        out.append(NodeSpec(s.executable, s.module, s.name, params, s.respawn))
    return out


def running_nodes(mode: str, link_in_draft: bool = False) -> tuple[str, ...]:
    """The nodes that publish and subscribe in ``mode``'s graph (the recorder aside), and
    the lifecycle manager."""
    server = tuple(n for n in SERVER_NODES if not (link_in_draft and n == "link_node"))
    return ("sim_node", "draft_node", *(server if uses_server(mode) else ()), MANAGER)


def topic_ends(cfg: GraphConfig, t: Topic) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Who publishes and who reads ``t`` in ``cfg``'s graph: with ``link_in_draft`` the
    draft node takes the link node's place on the server's topics, and the robot's side of
    the link (``uplink/request``, ``downlink/response``) is gone; in ``sim_time`` the
    simulator reads ``step`` (each step's modelled latency)."""
    if t.name == "step" and cfg.clock == "sim_time":
        return t.publishers, (*t.subscribers, "sim_node")
    if not cfg.link_in_draft or "link_node" not in t.publishers + t.subscribers:
        return t.publishers, t.subscribers
    if t.name in ("uplink/request", "downlink/response"):
        return (), ()

    def swap(names: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(dict.fromkeys("draft_node" if n == "link_node" else n for n in names))
    return swap(t.publishers), swap(t.subscribers)


def managed_nodes(mode: str) -> tuple[str, ...]:
    """The lifecycle nodes of ``mode``'s graph, in the order they are activated."""
    return tuple(n for n in MANAGED_NODES if n in running_nodes(mode))


def active_topics(cfg: GraphConfig) -> list[Topic]:
    """Topics with a publisher in ``cfg``'s graph: for the standard interface, the robot
    topics its robot map names (Reach has no object topics)."""
    used = map_topics(cfg.robot_map_path) if cfg.interface == "standard" else set()
    running = set(running_nodes(cfg.mode, cfg.link_in_draft))
    return [t for t in TOPICS.values() if set(topic_ends(cfg, t)[0]) & running
            and (t.interface == "" or (t.interface == cfg.interface == "vector")
                 or (t.interface == cfg.interface and t.name in used))]


def map_topics(path: str) -> set[str]:
    """The topic names a robot map reads and commands (read, not validated: the draft node
    validates the map against its task)."""
    try:
        doc = yaml.safe_load(Path(path).read_text()) or {}
        return ({spec["topic"] for spec in doc["inputs"].values()}
                | {spec["topic"] for spec in doc["command"].values()})
    except (OSError, yaml.YAMLError, KeyError, TypeError, AttributeError) as exc:
        raise HybridPolicyError(f"{path}: cannot read the robot map's topics ({exc})") from None


def recorded(cfg: GraphConfig) -> list[str]:
    """``name:type`` of every topic the recorder writes."""
    return [f"{t.name}:{t.type}" for t in active_topics(cfg)]


def expected_readers(cfg: GraphConfig, node: str) -> list[str]:
    """``"topic count"`` for each topic ``node`` publishes: how many subscribers its
    publisher must have matched before the run starts (readiness handshake)."""
    running = set(running_nodes(cfg.mode, cfg.link_in_draft))
    ends = {t.name: topic_ends(cfg, t) for t in active_topics(cfg)}
    return [f"{name} {len(set(subs) & running) + (1 if cfg.bag else 0)}"
            for name, (pubs, subs) in ends.items() if node in pubs]


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> GraphConfig:
    """A resolved ``GraphConfig`` from a YAML file like ``config/hybrid.yaml``, with
    ``overrides`` (launch arguments; "" = keep the file's value) on top."""
    try:
        doc = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise HybridPolicyError(f"{path}: cannot read the graph config ({exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("graph") or {}, dict):
        raise HybridPolicyError(f"{path}: expected a mapping with a 'graph' section")
    settings = {**(doc.get("graph") or {}), **{k: v for k, v in (overrides or {}).items()
                                                if v not in (None, "")}}
    known = {f.name for f in fields(GraphConfig)} - {"extra"}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise HybridPolicyError(f"{path}: unknown graph settings {unknown}; valid: "
                                f"{sorted(known)}")
    types = {f.name: f.type for f in fields(GraphConfig)}
    typed = {}
    for k, v in settings.items():
        try:
            typed[k] = _typed(v, types[k])
        except (TypeError, ValueError):
            raise HybridPolicyError(f"{path}: setting {k!r} must be a {types[k]}, got "
                                    f"{v!r}") from None
    return resolve(GraphConfig(**typed, extra=doc.get("nodes") or {}))


def _typed(value: Any, type_name: str) -> Any:
    return {"int": int, "float": float, "str": str, "bool": _bool}.get(
        str(type_name), lambda v: v)(value)


def _bool(value: Any) -> bool:
    """A YAML bool, or a launch argument's ``true`` / ``false``."""
    if isinstance(value, bool):
        return value
    if str(value).lower() in ("true", "false"):
        return str(value).lower() == "true"
    raise ValueError(value)


def resolve(cfg: GraphConfig) -> GraphConfig:
    """``cfg`` with its skipping threshold settled before any process starts, by the same
    rule the draft node applies (``core.calibration_file``): explicit, or from the
    calibration of the chosen link, checked against the checkpoints' weights. A missing
    calibration is refused with the command that makes it."""
    if cfg.mode not in NEEDS_THRESHOLDS:
        return cfg
    t = calibration_file.thresholds_for_checkpoints(
        cfg.mode, cfg.thresholds_given, cfg.calibration_path, cfg.task, cfg.link,
        cfg.temperature, cfg.draft_path, cfg.target_path,
        calibration_file.calibrate_command(cfg.task, cfg.link, cfg.models, cfg.draft_kind))
    return replace(cfg, tau=t.tau, uncertainty_tau=t.uncertainty_tau,
                   random_skip=t.random_skip)


def run_info(cfg: GraphConfig) -> list[str]:
    """``key=value`` facts of the run, stored in the bag's metadata (``custom_data``) so
    ``hybrid-policy analyze`` knows what it reads."""
    keys = ("mode", "task", "link", "episodes", "seed", "tau", "uncertainty_tau",
            "random_skip", "temperature", "deadline_ms", "clock", "loop", "rate_hz",
            "draft_ms", "target_ms", "interface",
            "max_age_ms", "link_in_draft", "draft_kind", "draft_path",
            "target_path", "calibration_path", "namespace", "topology", "exit_plan",
            "rocoin_layout", "students_path", "idn_catalogue")
    return [f"{k.removesuffix('_path')}={getattr(cfg, k)}" for k in keys]
