"""The robot interface: standard ROS message contents → the policy's observation, and the
policy's action → standard commands, as a YAML map says (``config/robot_<task>.yaml``).

No ROS imports: ``ros/robot_io.py`` turns messages into the plain readings used here, so
the rules are tested without DDS, and every derivation (relative positions, per-step
velocities, Euler angles) exists once, in this module. Units: metres, radians, seconds;
"per step" means multiplied by the task's control period (what the task's observation
holds). docs/interfaces.md describes the map for users.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from hybrid_policy.errors import HybridPolicyError

JOINT_STATE = "sensor_msgs/msg/JointState"
POSE = "geometry_msgs/msg/PoseStamped"
POINT = "geometry_msgs/msg/PointStamped"
TWIST = "geometry_msgs/msg/TwistStamped"

# What each input type can give (``take``), and how many values one take yields.
TAKES: dict[str, tuple[str, ...]] = {
    JOINT_STATE: ("position", "velocity_per_step"),
    POSE: ("position", "euler"),
    POINT: ("position",),
    TWIST: ("linear_per_step", "angular_per_step"),
}
TICKS = ("snapshot", "timer")
ACTION_SIZE = 4  # dx, dy, dz, gripper (sim_envs.spec.ACTION_FIELDS)


class RobotMapError(HybridPolicyError, ValueError):
    """A map that cannot be used: the message names the file, the line and what is valid."""


class InputError(HybridPolicyError, ValueError):
    """One input message that cannot be used (wrong frame, missing joints, NaN): reported."""


# --------------------------------------------------------------------------- the map
@dataclass(frozen=True)
class InputSpec:
    name: str
    type: str
    topic: str
    frame: str  # required header.frame_id ("" = not checked: JointState)
    joints: tuple[str, ...] = ()  # JointState: the joints this map reads, in this order
    static: bool = False  # set once (a goal): never stale, not part of a snapshot


@dataclass(frozen=True)
class ObsEntry:
    """Task observation fields ``indices`` ← ``take`` of input ``source`` (minus ``minus``)."""

    key: str
    indices: tuple[int, ...]
    source: str
    take: str
    joint: str = ""
    minus: str = ""


@dataclass(frozen=True)
class TwistOut:
    topic: str
    frame: str
    metres_per_unit: float  # end-effector displacement per control step for action 1.0


@dataclass(frozen=True)
class GripperOut:
    topic: str
    joints: tuple[str, ...]
    metres_per_unit: float  # finger target = position + metres_per_unit * action[3]
    low: float  # target range of each finger (m)
    high: float
    state_input: str  # the JointState input whose positions the targets start from


@dataclass(frozen=True)
class RobotMap:
    path: str
    task: str
    tick: str
    rate_hz: float
    max_age_ms: float
    inputs: dict[str, InputSpec]
    observation: tuple[ObsEntry, ...]
    twist: TwistOut
    gripper: GripperOut
    period_s: float  # the task's control period

    @property
    def twist_scale(self) -> float:
        """m/s of the commanded twist per unit of normalised action."""
        return self.twist.metres_per_unit / self.period_s

    def gripper_targets(self, action_gripper: float, finger_q: np.ndarray) -> np.ndarray:
        g = self.gripper
        return np.clip(np.asarray(finger_q, np.float64) + g.metres_per_unit
                       * float(action_gripper), g.low, g.high)

    def command(self, action: np.ndarray, finger_q: np.ndarray | None
                ) -> tuple[np.ndarray, np.ndarray | None]:
        """``(twist linear m/s, finger targets m | None)`` for a normalised action."""
        a = np.asarray(action, np.float64)
        linear = a[:3] * self.twist_scale
        return linear, None if finger_q is None else self.gripper_targets(a[3], finger_q)


def default_path(task: str) -> Path:
    """The map shipped for ``task``: config/robot_<task>.yaml of the source tree, or of the
    package's share directory after ``colcon build``."""
    here = Path(__file__).resolve()
    name = f"robot_{task}.yaml"
    candidates = [here.parents[2] / "config" / name]
    if len(here.parents) > 5:  # <prefix>/lib/pythonX.Y/site-packages/hybrid_policy/core
        candidates.append(here.parents[5] / "share" / "hybrid_policy" / "config" / name)
    return next((p for p in candidates if p.exists()), candidates[0])


def load(path: str | Path, obs_fields: tuple[str, ...], period_s: float,
         task: str) -> RobotMap:
    """The validated map at ``path`` for ``task`` (its observation fields and control
    period); every error names the line of the YAML and what is valid."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise RobotMapError(f"{path}: cannot read the robot map ({exc.strerror})") from None
    try:
        doc, lines = _parse(text)
    except yaml.YAMLError as exc:
        raise RobotMapError(f"{path}: not valid YAML ({exc})") from None
    return _Builder(path, lines, obs_fields, period_s, task).build(doc)


def _parse(text: str) -> tuple[Any, dict[tuple, int]]:
    """The document and the line (1-based) of every mapping key, by its path of keys."""
    doc = yaml.safe_load(text)
    lines: dict[tuple, int] = {}

    def walk(node, prefix: tuple) -> None:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                key = prefix + (k.value,)
                lines[key] = k.start_mark.line + 1
                walk(v, key)

    root = yaml.compose(text)
    if root is not None:
        walk(root, ())
    return doc, lines


class _Builder:
    def __init__(self, path: Path, lines: dict[tuple, int], obs_fields: tuple[str, ...],
                 period_s: float, task: str) -> None:
        self.path, self.lines, self.fields = path, lines, obs_fields
        self.period_s, self.task = period_s, task

    def fail(self, where: tuple, what: str) -> RobotMapError:
        line = self.lines.get(where)
        while line is None and where:
            where = where[:-1]
            line = self.lines.get(where)
        at = f"{self.path}:{line}" if line else str(self.path)
        return RobotMapError(f"{at}: {what}")

    def section(self, doc: dict, key: str, where: tuple = ()) -> dict:
        value = doc.get(key)
        if not isinstance(value, dict) or not value:
            raise self.fail(where + (key,), f"'{'.'.join(where + (key,))}' must be a non-empty "
                            "mapping")
        return value

    def keys(self, doc: dict, where: tuple, required: set[str], optional: set[str]) -> None:
        unknown = sorted(set(doc) - required - optional)
        if unknown:
            raise self.fail(where + (unknown[0],), f"unknown key {unknown[0]!r} in "
                            f"'{'.'.join(where) or 'top level'}'; valid: "
                            f"{', '.join(sorted(required | optional))}")
        missing = sorted(required - set(doc))
        if missing:
            raise self.fail(where, f"'{'.'.join(where) or 'top level'}' lacks {missing[0]!r}")

    def build(self, doc: Any) -> RobotMap:
        if not isinstance(doc, dict):
            raise RobotMapError(f"{self.path}: expected a mapping (task, inputs, observation, "
                                "command)")
        self.keys(doc, (), {"task", "control_period_ms", "inputs", "observation", "command"},
                  {"tick", "rate_hz", "max_age_ms"})
        if doc["task"] != self.task:
            raise self.fail(("task",), f"map is for task {doc['task']!r}, not {self.task!r}")
        period_ms = self.number(doc, "control_period_ms", ())
        if abs(period_ms - self.period_s * 1e3) > 1e-9:
            raise self.fail(("control_period_ms",), f"control_period_ms {period_ms:g} is not "
                            f"{self.task}'s control period ({self.period_s * 1e3:g} ms)")
        tick = doc.get("tick", "snapshot")
        if tick not in TICKS:
            raise self.fail(("tick",), f"tick {tick!r} is not one of {', '.join(TICKS)}")
        rate = self.number(doc, "rate_hz", (), 1e3 / (self.period_s * 1e3))
        max_age = self.number(doc, "max_age_ms", (), 100.0)
        inputs = {name: self.input(name, spec)
                  for name, spec in self.section(doc, "inputs").items()}
        observation = self.observation(self.section(doc, "observation"), inputs)
        command = self.section(doc, "command")
        self.keys(command, ("command",), {"twist", "gripper"}, set())
        return RobotMap(str(self.path), self.task, tick, rate, max_age, inputs, observation,
                        self.twist(command["twist"]), self.gripper(command["gripper"], inputs),
                        self.period_s)

    def number(self, doc: dict, key: str, where: tuple, default: float | None = None) -> float:
        value = doc.get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise self.fail(where + (key,), f"{key} must be a number > 0, got {value!r}")
        return float(value)

    def text(self, doc: dict, key: str, where: tuple, default: str | None = None) -> str:
        value = doc.get(key, default)
        if not isinstance(value, str):
            raise self.fail(where + (key,), f"{key} must be a string, got {value!r}")
        return value

    def names(self, doc: dict, key: str, where: tuple) -> tuple[str, ...]:
        value = doc.get(key)
        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            raise self.fail(where + (key,), f"{key} must be a non-empty list of joint names")
        return tuple(value)

    def input(self, name: str, spec: Any) -> InputSpec:
        where = ("inputs", name)
        if not isinstance(spec, dict):
            raise self.fail(where, f"input {name!r} must be a mapping (type, topic, frame)")
        kind = spec.get("type")
        if kind not in TAKES:
            raise self.fail(where + ("type",), f"input {name!r}: type {kind!r} is not one of "
                            f"{', '.join(TAKES)}")
        if kind == JOINT_STATE:
            self.keys(spec, where, {"type", "topic", "joints"}, {"static"})
            joints = self.names(spec, "joints", where)
            frame = ""
        else:
            self.keys(spec, where, {"type", "topic", "frame"}, {"static"})
            joints, frame = (), self.text(spec, "frame", where)
        static = spec.get("static", False)
        if not isinstance(static, bool):
            raise self.fail(where + ("static",), f"static must be true or false, got {static!r}")
        return InputSpec(name, kind, self.text(spec, "topic", where), frame, joints, static)

    def observation(self, doc: dict, inputs: dict[str, InputSpec]) -> tuple[ObsEntry, ...]:
        index = {f: i for i, f in enumerate(self.fields)}
        grouped = [f for f in self.fields if f[-2:] in ("_x", "_y", "_z")]
        valid = [*sorted({f[:-2] for f in grouped}), *(f for f in self.fields if f not in grouped)]
        entries, covered = [], set()
        for key, spec in doc.items():
            where = ("observation", key)
            if key in index:
                indices = (index[key],)
            elif f"{key}_x" in index:
                indices = tuple(index[f"{key}_{a}"] for a in "xyz")
            else:
                raise self.fail(where, f"unknown observation field {key!r} for {self.task}; "
                                f"valid: {', '.join(valid)}")
            if not isinstance(spec, dict):
                raise self.fail(where, f"{key}: expected a mapping (from, take[, joint, minus])")
            self.keys(spec, where, {"from", "take"}, {"joint", "minus"})
            entry = ObsEntry(key, indices, str(spec["from"]), str(spec["take"]),
                             str(spec.get("joint", "")), str(spec.get("minus", "")))
            for other in filter(None, (entry.source, entry.minus)):
                self.check_take(where, entry, inputs, other, len(indices))
            if covered & set(indices):
                raise self.fail(where, f"{key}: its fields are already mapped")
            covered |= set(indices)
            entries.append(entry)
        missing = [f for i, f in enumerate(self.fields) if i not in covered]
        if missing:
            raise self.fail(("observation",), f"observation fields not mapped: "
                            f"{', '.join(missing)}")
        return tuple(entries)

    def check_take(self, where: tuple, entry: ObsEntry, inputs: dict[str, InputSpec],
                   source: str, size: int) -> None:
        if source not in inputs:
            raise self.fail(where, f"{entry.key}: no input named {source!r}; inputs: "
                            f"{', '.join(inputs)}")
        spec = inputs[source]
        if entry.take not in TAKES[spec.type]:
            raise self.fail(where + ("take",), f"{entry.key}: a {spec.type} cannot give "
                            f"{entry.take!r}; it gives {', '.join(TAKES[spec.type])}")
        if spec.type == JOINT_STATE:
            if entry.joint not in spec.joints:
                raise self.fail(where, f"{entry.key}: joint {entry.joint!r} is not among input "
                                f"{source!r}'s joints {list(spec.joints)}")
            if size != 1:
                raise self.fail(where, f"{entry.key}: a joint gives one value; the field "
                                f"{entry.key} has {size}")
        elif size != 3:
            raise self.fail(where, f"{entry.key}: {entry.take} gives 3 values (x, y, z); "
                            f"use it for an _x/_y/_z field group")

    def twist(self, spec: Any) -> TwistOut:
        where = ("command", "twist")
        if not isinstance(spec, dict):
            raise self.fail(where, "command.twist must be a mapping (topic, frame, "
                            "metres_per_unit)")
        self.keys(spec, where, {"topic", "frame", "metres_per_unit"}, set())
        return TwistOut(self.text(spec, "topic", where), self.text(spec, "frame", where),
                        self.number(spec, "metres_per_unit", where))

    def gripper(self, spec: Any, inputs: dict[str, InputSpec]) -> GripperOut:
        where = ("command", "gripper")
        if not isinstance(spec, dict):
            raise self.fail(where, "command.gripper must be a mapping (topic, joints, "
                            "metres_per_unit, range, state)")
        self.keys(spec, where, {"topic", "joints", "metres_per_unit", "range", "state"}, set())
        joints = self.names(spec, "joints", where)
        rng = spec["range"]
        if (not isinstance(rng, list) or len(rng) != 2
                or not all(isinstance(v, (int, float)) for v in rng) or not rng[0] < rng[1]):
            raise self.fail(where + ("range",), f"range must be [low, high] in metres with "
                            f"low < high, got {rng!r}")
        state = self.text(spec, "state", where)
        if state not in inputs or inputs[state].type != JOINT_STATE:
            raise self.fail(where + ("state",), f"state must name a {JOINT_STATE} input; "
                            f"inputs: {', '.join(inputs)}")
        lacking = [j for j in joints if j not in inputs[state].joints]
        if lacking:
            raise self.fail(where + ("joints",), f"joints {lacking} are not read by input "
                            f"{state!r} (its joints: {list(inputs[state].joints)})")
        return GripperOut(self.text(spec, "topic", where), joints,
                          self.number(spec, "metres_per_unit", where), float(rng[0]),
                          float(rng[1]), state)


# --------------------------------------------------------------------------- derivations
def euler_from_quaternion(q_xyzw: np.ndarray) -> np.ndarray:
    """Euler angles (rad) in the convention of the Fetch tasks' ``object_rot`` (the
    rotation matrix's angles as gymnasium-robotics computes them)."""
    x, y, z, w = (float(v) for v in q_xyzw)
    n = x * x + y * y + z * z + w * w
    s = 2.0 / n if n > 0 else 0.0
    m = np.array([
        [1 - s * (y * y + z * z), s * (x * y - z * w), s * (x * z + y * w)],
        [s * (x * y + z * w), 1 - s * (x * x + z * z), s * (y * z - x * w)],
        [s * (x * z - y * w), s * (y * z + x * w), 1 - s * (x * x + y * y)],
    ])
    cy = np.hypot(m[2, 2], m[1, 2])
    if cy > 16 * np.finfo(np.float64).eps:
        return np.array([-np.arctan2(m[1, 2], m[2, 2]), -np.arctan2(-m[0, 2], cy),
                         -np.arctan2(m[0, 1], m[0, 0])])
    return np.array([0.0, -np.arctan2(-m[0, 2], cy), -np.arctan2(-m[1, 0], m[1, 1])])


def _take(reading: dict[str, np.ndarray], spec: InputSpec, entry: ObsEntry,
          period_s: float) -> np.ndarray:
    if spec.type == JOINT_STATE:
        j = spec.joints.index(entry.joint)
        if entry.take == "position":
            return reading["position"][j : j + 1]
        return reading["velocity"][j : j + 1] * period_s
    if entry.take == "position":
        return reading["position"]
    if entry.take == "euler":
        return euler_from_quaternion(reading["orientation"])
    if entry.take == "linear_per_step":
        return reading["linear"] * period_s
    return reading["angular"] * period_s  # angular_per_step


def observation(rmap: RobotMap, readings: dict[str, dict[str, np.ndarray]],
                size: int) -> np.ndarray:
    """The task's float32 observation from one reading per input."""
    obs = np.empty(size, np.float64)
    for e in rmap.observation:
        value = _take(readings[e.source], rmap.inputs[e.source], e, rmap.period_s)
        if e.minus:
            value = value - _take(readings[e.minus], rmap.inputs[e.minus], e, rmap.period_s)
        obs[list(e.indices)] = value
    return obs.astype(np.float32)


# --------------------------------------------------------------------------- time alignment
@dataclass
class Latest:
    stamp_ns: int
    reading: dict[str, np.ndarray] | None  # None: the message held NaN/inf
    problem: str = ""


@dataclass(frozen=True)
class Tick:
    """One control tick: the observation to act on, or why the robot holds still."""

    stamp_ns: int
    obs: np.ndarray | None
    hold_reason: str  # "" when obs is set
    finger_q: np.ndarray | None  # latest gripper joint positions (for targets and holds)
    waited_ms: float = 0.0  # timer maps: from the newest input's stamp to the tick
    state_ns: int = 0  # timer maps: the newest input's stamp (0: the tick's own stamp)

    @property
    def answers_ns(self) -> int:
        """The stamp a command of this tick carries: the state it answers (the snapshot's
        stamp; a timer tick's newest input), so a driver pairs command and state in both
        tick modes."""
        return self.state_ns or self.stamp_ns


@dataclass
class Assembler:
    """Keeps the latest message of each input and turns them into ticks.

    ``snapshot`` maps (a simulator, a synchronised driver) tick when every non-static input
    holds a message of one stamp; a newer stamp arriving while an older snapshot is still
    incomplete ends it as a hold. ``timer`` maps tick when the node's timer says so, on the
    latest of each input. Either way an input that is missing, older than ``max_age_ms``
    (non-static inputs), or held NaN/inf means a hold, never an observation from it.
    """

    rmap: RobotMap
    obs_size: int
    max_age_ms: float
    latest: dict[str, Latest] = field(default_factory=dict)
    last_tick_ns: int = 0
    arrived: dict[int, set[str]] = field(default_factory=dict)  # snapshot: stamp → inputs

    def put(self, name: str, stamp_ns: int, frame: str, reading: dict[str, Any]) -> None:
        """Store one message's reading (``ros/robot_io`` converts messages to readings).
        Raises ``InputError`` for a message that is not used; a NaN/inf one is kept as a
        poisoned latest value (the next tick holds) and reported."""
        spec = self.rmap.inputs[name]
        if stamp_ns <= 0:
            raise InputError(f"{name} ({spec.topic}): zero stamp; set header.stamp")
        if spec.frame and frame != spec.frame:
            raise InputError(f"{name} ({spec.topic}): frame {frame!r}, the map expects "
                             f"{spec.frame!r}: not used (transform it upstream)")
        if self.rmap.tick == "snapshot" and not spec.static and stamp_ns <= self.last_tick_ns:
            raise InputError(f"{name} ({spec.topic}): stamp not newer than the last snapshot "
                             "acted on (late or out of order): not used")
        reading = self._select(spec, reading)
        finite = all(np.all(np.isfinite(v)) for v in reading.values())
        self.latest[name] = Latest(stamp_ns, reading if finite else None,
                                   "" if finite else "NaN or inf")
        if not spec.static:
            self.arrived.setdefault(stamp_ns, set()).add(name)
        if not finite:
            raise InputError(f"{name} ({spec.topic}): NaN or inf: no action until a finite "
                             "message replaces it")

    def _select(self, spec: InputSpec, reading: dict[str, Any]) -> dict[str, np.ndarray]:
        if spec.type != JOINT_STATE:
            return {k: np.asarray(v, np.float64) for k, v in reading.items()}
        names = list(reading["name"])
        lacking = [j for j in spec.joints if j not in names]
        if lacking:
            raise InputError(f"{spec.name} ({spec.topic}): joints {lacking} missing from "
                             f"name[] {names[:6]}: not used")
        idx = [names.index(j) for j in spec.joints]
        needs_velocity = any(e.take == "velocity_per_step" and spec.name in (e.source, e.minus)
                             for e in self.rmap.observation)
        out = {}
        for key in ("position", "velocity"):
            values = np.asarray(reading[key], np.float64)
            if len(values) == len(names):
                out[key] = values[idx]
            elif len(values) or key == "position" or needs_velocity:
                raise InputError(f"{spec.name} ({spec.topic}): {len(values)} {key} values "
                                 f"for {len(names)} names (the map reads {key}): not used")
        return out

    def snapshot_ticks(self, now_ns: int | None) -> list[Tick]:
        """Ticks that the messages put so far complete (snapshot maps), oldest first; ages
        are measured at ``now_ns`` (``None``: each snapshot at its own stamp, as in
        simulated time, where none passes while a snapshot is assembled)."""
        needed = {n for n, s in self.rmap.inputs.items() if not s.static}
        ticks = []
        for stamp in sorted(self.arrived):
            if stamp <= self.last_tick_ns:
                del self.arrived[stamp]
                continue
            have = self.arrived[stamp]
            newer = any(s > stamp for s in self.arrived)
            if have >= needed and all(self.latest[n].stamp_ns == stamp for n in needed):
                ticks.append(self._tick(stamp, stamp if now_ns is None else now_ns))
            elif newer:  # superseded before it was complete
                missing = sorted(needed - have)
                ticks.append(self._hold(stamp, f"incomplete snapshot (no {', '.join(missing)} "
                                               "with its stamp)"))
            else:
                break
        for stamp in [s for s in self.arrived if s <= self.last_tick_ns]:
            del self.arrived[stamp]
        return ticks

    def timer_tick(self, now_ns: int) -> Tick:
        """The tick at ``now_ns`` from the latest of each input (timer maps); ``waited_ms``:
        how long the newest input waited for it (the timer is not synchronised with the
        inputs, so up to a period), which belongs to the step's latency."""
        stamps = [latest.stamp_ns for name, latest in self.latest.items()
                  if not self.rmap.inputs[name].static]
        newest = max(stamps, default=0)
        waited = max(0.0, (now_ns - newest) / 1e6) if stamps else 0.0
        return replace(self._tick(now_ns, now_ns), waited_ms=waited, state_ns=newest)

    def _tick(self, stamp_ns: int, now_ns: int) -> Tick:
        self.last_tick_ns = max(self.last_tick_ns, stamp_ns)
        problems = []
        for name, spec in self.rmap.inputs.items():
            latest = self.latest.get(name)
            if latest is None:
                problems.append(f"{name} missing")
            elif latest.reading is None:
                problems.append(f"{name} {latest.problem}")
            elif not spec.static:
                age_ms = (now_ns - latest.stamp_ns) / 1e6
                if abs(age_ms) > self.max_age_ms:
                    problems.append(f"{name} {'stale' if age_ms > 0 else 'ahead of the clock'}"
                                    f" ({age_ms:.0f} ms, max_age_ms {self.max_age_ms:g})")
        if problems:
            return Tick(stamp_ns, None, "; ".join(problems), self.finger_q())
        readings = {n: self.latest[n].reading for n in self.rmap.inputs}
        return Tick(stamp_ns, observation(self.rmap, readings, self.obs_size), "",
                    self.finger_q())

    def _hold(self, stamp_ns: int, reason: str) -> Tick:
        self.last_tick_ns = max(self.last_tick_ns, stamp_ns)
        return Tick(stamp_ns, None, reason, self.finger_q())

    def finger_q(self) -> np.ndarray | None:
        g = self.rmap.gripper
        latest = self.latest.get(g.state_input)
        if latest is None or latest.reading is None:
            return None
        spec = self.rmap.inputs[g.state_input]
        return latest.reading["position"][[spec.joints.index(j) for j in g.joints]]
