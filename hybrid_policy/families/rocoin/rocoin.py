"""RoCoIn's per-step logic (docs/method.md, "Redundant distilled students"), shared by the
in-process fleet and the ROS nodes: the layout of students on device groups, the robot's
``plan``/``resolve``, what a device answers, and how the robot gathers the answers.

Each step the robot runs its draft (the fallback) and sends its observation window, as a
layer-0 feature, to **every** device of the layout. Device ``d`` of group ``j`` answers with
student ``j``'s part of the distribution (``StudentAnswer``). Per group the first answer
counts; once every group has answered, ``Gather.response`` combines them into the action
(codes drawn from the step's seed, so where an answer came from does not change the
action). A group with no answer by the deadline means the step falls back to the draft.

Modes (``layout``): ``rocoin`` (groups and shares from ``rocoin_assign.solve``),
``rocoin_single`` (no redundancy: the same students, each on its group's fastest device),
``rocoin_random`` (the same students on a random grouping of the devices, drawn from the
run's seed) and ``rocoin_target`` (the full target on the fastest device).

Faults (``FaultConfig``): a device fails a request with probability ``p``, drawn from the
request's seed and the device's index (``fault``), by a **crash** (the process is gone: it
answers nothing for ``restart_ms``, its queue is lost) or a **timeout** (the answer comes
``slow_ms`` late, then the device is back); ``per: episode`` fails a device for a whole
window of ``episode_ms`` instead.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from sim_envs.spec import ACTION_DIM
from hybrid_policy.core.link import HEADER_BYTES, joint_state_bytes
from hybrid_policy.families.rocoin.names import MODES as ROCOIN_MODES
from hybrid_policy.core.plan import Plan
from hybrid_policy.core.protocol import FeatureRequest, ProtocolError, Response, _check
from hybrid_policy.families.rocoin.assign import (
    AssignmentError, CostModel, Device, integer_shares, solve,
)
from hybrid_policy.core.topology import Topology, TopologyError, check_keys
from hybrid_policy.errors import HybridPolicyError
from hybrid_policy.policies.runtime import sample_categorical

FAULT_KINDS = ("crash", "timeout", "mixed")
FALLBACKS = ("draft", "hold")
_ANSWER = re.compile(r"^student:s(\d+):n(\d+):k(\d+):a(\d+)$")


class RocoinError(HybridPolicyError, ValueError):
    """A rocoin block, layout or fault setting that cannot be used."""


def device_hop(device: int) -> int:
    """Packet randomness of the copy sent to device ``device`` (its index in the layout):
    each copy crosses the air on its own (``link.packet_rng(seed, hop)``, as the ROS link
    node of that device draws)."""
    return 2000 + device


# -- settings from the topology ------------------------------------------------------------
@dataclass(frozen=True)
class FaultConfig:
    p: float = 0.0  # probability that a device fails a request (per: request) or a window
    per: str = "request"  # request | episode
    kind: str = "mixed"  # crash | timeout | mixed (half each)
    restart_ms: float = 1000.0  # a crashed device answers nothing for this long
    slow_ms: float = 500.0  # a timed-out answer comes this much late
    episode_ms: float = 2000.0  # per: episode, the window a failure lasts
    devices: tuple[str, ...] = ()  # the devices that may fail (empty: every device)

    def __post_init__(self) -> None:
        if not 0.0 <= self.p <= 1.0:
            raise RocoinError(f"faults.p must be a probability in [0, 1], got {self.p!r}")
        if self.per not in ("request", "episode"):
            raise RocoinError(f"faults.per must be request or episode, got {self.per!r}")
        if self.kind not in FAULT_KINDS:
            raise RocoinError(f"faults.kind must be one of {', '.join(FAULT_KINDS)}, got "
                              f"{self.kind!r}")
        object.__setattr__(self, "devices", tuple(self.devices))
        for key in ("restart_ms", "slow_ms", "episode_ms"):
            if not getattr(self, key) > 0:
                raise RocoinError(f"faults.{key} must be > 0, got {getattr(self, key)!r}")

    def fault(self, seed: int, device: int, name: str, now_ms: float = 0.0,
              run_seed: int = 0) -> str:
        """"" (answers), "crash" or "timeout" for device ``name`` (index ``device`` in the
        layout) on the request of ``seed`` arriving at ``now_ms``; the same draw wherever
        it is made."""
        if self.p <= 0 or (self.devices and name not in self.devices):
            return ""
        key = ([run_seed, 0xFA17, device, int(now_ms // self.episode_ms)]
               if self.per == "episode" else [seed, 0xFA17, device])
        u, v = np.random.default_rng(key).random(2)
        if u >= self.p:
            return ""
        return self.kind if self.kind != "mixed" else ("crash" if v < 0.5 else "timeout")


@dataclass(frozen=True)
class RocoinConfig:
    """The topology's ``rocoin`` block: ``students`` (k), ``replicas`` (the least devices
    per group), ``devices`` (the topology's nodes that serve students), optional fixed
    ``groups`` (lists of devices, instead of the solver's), ``fallback`` (what a step with a
    group missing does: ``draft``, the robot's draft acts, or ``hold``, it holds still: a
    robot with no model of its own, as in the paper) and ``faults``."""

    students: int
    replicas: int
    devices: tuple[str, ...]
    groups: tuple[tuple[str, ...], ...] = ()
    faults: FaultConfig = field(default_factory=FaultConfig)
    fallback: str = "draft"


def parse_config(topo: Topology, doc: Any) -> RocoinConfig:
    where = f"{topo.path}: rocoin"
    if not isinstance(doc, dict):
        raise TopologyError(f"{where}: expected a mapping (students, replicas, devices, groups, "
                            "faults)")
    check_keys(doc, where, set(), {"students", "replicas", "devices", "groups", "faults",
                                   "fallback"})
    fallback = doc.get("fallback", "draft")
    if fallback not in FALLBACKS:
        raise TopologyError(f"{where}: fallback must be one of {', '.join(FALLBACKS)}, got "
                            f"{fallback!r}")
    k, r = doc.get("students", 2), doc.get("replicas", 2)
    for key, v in (("students", k), ("replicas", r)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise TopologyError(f"{where}: {key} must be a whole number >= 1, got {v!r}")
    devices = doc.get("devices", [n for n, node in topo.nodes.items() if node.tier == "edge"])
    if not isinstance(devices, list) or not devices:
        raise TopologyError(f"{where}: devices must list the nodes that run students")
    for d in devices:
        if d not in topo.nodes:
            raise TopologyError(f"{where}: unknown device {d!r}; nodes: {', '.join(topo.nodes)}")
    if len(devices) < k:
        raise TopologyError(f"{where}: {len(devices)} devices cannot run {k} students (one "
                            "device at least per student)")
    groups = doc.get("groups", [])
    if groups:
        if not isinstance(groups, list) or len(groups) != k:
            raise TopologyError(f"{where}: groups must list {k} groups (one per student), got "
                                f"{groups!r}")
        for j, g in enumerate(groups):
            if not isinstance(g, list) or not g:
                raise TopologyError(f"{where}: group {j} is empty: every student needs a device")
            for d in g:
                if d not in devices:
                    raise TopologyError(f"{where}: group {j}: unknown device {d!r}; devices: "
                                        f"{', '.join(devices)}")
        flat = [d for g in groups for d in g]
        if len(flat) != len(set(flat)):
            raise TopologyError(f"{where}: a device is in two groups: {groups}")
    faults = doc.get("faults", {})
    if not isinstance(faults, dict):
        raise TopologyError(f"{where}: faults must be a mapping (p, per, kind, restart_ms, "
                            "slow_ms, episode_ms)")
    bad = [d for d in faults.get("devices", []) if d not in devices]
    if bad:
        raise TopologyError(f"{where}: faults.devices: unknown device {bad[0]!r}; devices: "
                            f"{', '.join(devices)}")
    try:
        fc = FaultConfig(**faults)
    except TypeError as exc:
        raise TopologyError(f"{where}: faults: {exc}") from None
    except RocoinError as exc:
        raise TopologyError(f"{where}: {exc}") from None
    for robot in topo.robots:
        if robot.mode in ROCOIN_MODES and set(devices) - set(robot.reach):
            raise TopologyError(f"{where}: robot {robot.name} must reach every device (reach: "
                                f"{', '.join(devices)})")
    return RocoinConfig(k, r, tuple(devices), tuple(tuple(g) for g in groups), fc, fallback)


def config_of(topo: Topology, doc: dict) -> RocoinConfig:
    if "rocoin" not in doc:
        raise TopologyError(f"{topo.path}: the rocoin modes need a 'rocoin' block (students, "
                            "replicas, devices)")
    return parse_config(topo, doc["rocoin"])


# -- the layout of one mode ---------------------------------------------------------------
@dataclass
class Layout:
    """Which device runs which student: ``groups[j]`` runs student ``j`` (``codes[j]``, its
    level-0 codes; ``rocoin_target``: one group, the full target). ``devices`` names every
    device a robot sends to, in index order (``device_hop``, ``FaultConfig.fault``);
    ``fallback`` is the topology's (what the robot does with a group missing)."""

    mode: str
    groups: list[list[str]]
    codes: list[list[int]]
    devices: list[str]
    fallback: str = "draft"
    latency_ms: float = float("nan")  # the solver's predicted slowest group
    shares: list[float] = field(default_factory=list)

    def group_of(self, device: str) -> int:
        for j, g in enumerate(self.groups):
            if device in g:
                return j
        raise RocoinError(f"{device!r} is not a device of this layout ({', '.join(self.devices)})")

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=1))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Layout":
        try:
            return cls(**json.loads(Path(path).read_text()))
        except (OSError, ValueError, TypeError) as exc:
            raise RocoinError(f"{path}: not a rocoin layout ({exc})") from None


def device_list(topo: Topology, cfg: RocoinConfig, rtt_ms: float) -> list[Device]:
    return [Device(d, topo.nodes[d].speed, rtt_ms) for d in cfg.devices]


def plan_students(topo: Topology, cfg: RocoinConfig, cost: CostModel, codebook: int,
                  rtt_ms: float) -> tuple[list[list[str]], list[int], float]:
    """The joint partition + assignment: device groups, level-0 codes per student (whole
    numbers from the shares) and the predicted latency. Fixed ``groups`` skip the solver:
    shares then follow the groups' slowest speeds."""
    devices = device_list(topo, cfg, rtt_ms)
    try:
        if cfg.groups:
            speeds = [min(topo.nodes[d].speed for d in g) for g in cfg.groups]
            shares = [s / sum(speeds) for s in speeds]
            return ([list(g) for g in cfg.groups], list(integer_shares(shares, codebook)),
                    float("nan"))
        a = solve(devices, cfg.students, cfg.replicas, cost)
        return [list(g) for g in a.groups], list(integer_shares(a.shares, codebook)), a.latency_ms
    except AssignmentError as exc:
        raise RocoinError(f"{topo.path}: rocoin: {exc}") from None


def layout(mode: str, topo: Topology, cfg: RocoinConfig, groups: Sequence[Sequence[str]],
           codes: Sequence[Sequence[int]], codebook: int, seed: int = 0) -> Layout:
    """The layout of ``mode`` (module doc) from the students' groups and codes."""
    if mode not in ROCOIN_MODES:
        raise RocoinError(f"{mode} is not a rocoin mode ({', '.join(ROCOIN_MODES)})")
    speed = {d: topo.nodes[d].speed for d in cfg.devices}
    fastest = lambda g: max(g, key=lambda d: (speed[d], -list(cfg.devices).index(d)))  # noqa
    codes = [list(c) for c in codes]
    if mode == "rocoin":
        out = [list(g) for g in groups]
    elif mode == "rocoin_single":
        out = [[fastest(g)] for g in groups]
    elif mode == "rocoin_random":
        rng = np.random.default_rng([seed, 0x4A4D])
        order = list(rng.permutation(list(cfg.devices)))
        k = len(groups)
        cuts = np.sort(rng.choice(np.arange(1, len(order)), k - 1, replace=False))
        out = [[str(d) for d in part] for part in np.split(np.array(order), cuts)]
    else:
        out, codes = [[fastest(cfg.devices)]], [list(range(codebook))]
    devices = [d for d in cfg.devices if any(d in g for g in out)]
    return Layout(mode, out, codes, devices, cfg.fallback)


# -- messages ------------------------------------------------------------------------------
@dataclass(frozen=True)
class StudentAnswer:
    """Device → robot: student ``student``'s part for one window: its level-0 ``codes``
    [n], ``scores`` [n], ``cond`` = log p(c1 | c0) [n, K], ``actions`` [n, K, A].
    Layout ``"student:s<j>:n<n>:k<K>:a<A>"`` → ``[codes, scores, cond, actions]``, carried
    as ``sensor_msgs/JointState`` (``name = [label]``) with the observation's stamp."""

    student: int
    codes: tuple[int, ...]
    scores: np.ndarray
    cond: np.ndarray
    actions: np.ndarray

    def label(self) -> str:
        n, k, a = self.actions.shape
        return f"student:s{self.student}:n{n}:k{k}:a{a}"

    def to_vector(self) -> np.ndarray:
        return np.concatenate([np.asarray(self.codes, float), self.scores.ravel(),
                               self.cond.ravel(), self.actions.ravel()]).astype(np.float64)

    @classmethod
    def from_vector(cls, label: str, vec: np.ndarray) -> "StudentAnswer":
        m = _ANSWER.match(label)
        if not m:
            raise ProtocolError(f"student answer label {label!r} is not "
                                "'student:s<j>:n<n>:k<K>:a<A>'")
        j, n, k, a = map(int, m.groups())
        if n < 1 or k < 1 or a != ACTION_DIM or n > k:
            raise ProtocolError(f"student answer {label!r}: needs 1 <= n <= K and a{ACTION_DIM}")
        vec = _check(vec, n * (2 + k + k * a), "student answer", label)
        codes = vec[:n]
        if np.any(codes != np.round(codes)) or np.any(codes < 0) or np.any(codes >= k) \
                or len(set(codes.tolist())) != n:
            raise ProtocolError(f"student answer {label!r}: codes {codes.tolist()} are not "
                                f"distinct whole numbers in 0..{k - 1}")
        cond = vec[2 * n:2 * n + n * k].reshape(n, k)
        actions = vec[2 * n + n * k:].reshape(n, k, a)
        if np.any(cond > 1e-9) or np.any(np.abs(np.exp(cond).sum(1) - 1) > 1e-3):
            raise ProtocolError(f"student answer {label!r}: log p(c1 | c0) rows are not "
                                "log-probabilities")
        if np.any(np.abs(actions) > 1 + 1e-6):
            raise ProtocolError(f"student answer {label!r}: actions outside [-1, 1]")
        return cls(j, tuple(int(c) for c in codes), vec[n:2 * n], cond, actions)

    def payload_bytes(self) -> int:
        return joint_state_bytes([self.label()], self.to_vector().size)


def check_answer(layout: Layout, device: str, ans: StudentAnswer) -> int:
    """The group ``ans`` answers for, or ``ProtocolError`` if it is not the part this
    device's group holds (a wrong student, or codes of another partition)."""
    j = layout.group_of(device)
    if ans.student != j or list(ans.codes) != list(layout.codes[j]):
        raise ProtocolError(f"answer from {device} is student {ans.student} with codes "
                            f"{list(ans.codes)}; its group {j} holds codes {layout.codes[j]}")
    return j


def combine(parts: Sequence[StudentAnswer], seed: int) -> Response:
    """The action from every group's part: c0 from the softmax over all scores side by
    side, c1 and the action from c0's owner; both drawn from the step's seed."""
    codes = np.concatenate([p.codes for p in parts])
    scores = np.concatenate([p.scores for p in parts])
    p0 = np.exp(scores - scores.max())
    rng = np.random.default_rng(seed)
    i = sample_categorical(p0 / p0.sum(), rng)
    owner, row = _locate(parts, i)
    c1 = sample_categorical(np.exp(owner.cond[row]), rng)
    return Response(owner.actions[row, c1].astype(np.float32), (int(codes[i]), c1), True, 2,
                    ())


def _locate(parts: Sequence[StudentAnswer], i: int) -> tuple[StudentAnswer, int]:
    for p in parts:
        if i < len(p.codes):
            return p, i
        i -= len(p.codes)
    raise IndexError(i)


class Gather:
    """One step's answers: the first per group counts (``add`` says whether this one did);
    ``response`` once every group has one."""

    def __init__(self, layout: Layout, seed: int) -> None:
        self.layout, self.seed = layout, seed
        self.parts: dict[int, StudentAnswer] = {}
        self.answered: dict[int, str] = {}  # group -> the device whose answer counted

    def add(self, device: str, ans: StudentAnswer) -> bool:
        j = check_answer(self.layout, device, ans)
        if j in self.parts:
            return False
        self.parts[j], self.answered[j] = ans, device
        return True

    @property
    def complete(self) -> bool:
        return len(self.parts) == len(self.layout.groups)

    def response(self) -> Response:
        return combine([self.parts[j] for j in range(len(self.layout.groups))], self.seed)


# -- the robot and the devices -------------------------------------------------------------
class RocoinMode:
    """The robot side: every step's window goes to every device of the layout; when no
    combined answer comes, the draft acts (layout ``fallback="draft"``) or the robot holds
    still (``"hold"``: the draft is not run at all)."""

    def __init__(self, name: str, draft, history: int, layout: Layout,
                 encoding: str = "32FC1") -> None:
        from hybrid_policy.policies import ObsHistory

        if name not in ROCOIN_MODES or layout.mode != name:
            raise RocoinError(f"layout for {layout.mode!r} given to mode {name!r}")
        if layout.fallback not in FALLBACKS:
            raise RocoinError(f"fallback must be one of {', '.join(FALLBACKS)}, got "
                              f"{layout.fallback!r}")
        self.name, self.draft, self.layout, self.history = name, draft, layout, history
        self.encoding = encoding
        self._history = ObsHistory(max(history, draft.history), draft.obs_dim)

    def reset(self) -> None:
        self._history.reset()

    def plan(self, obs: np.ndarray, rng: np.random.Generator) -> Plan:
        window = self._history.push(obs)
        action, codes = None, ()
        if self.layout.fallback == "draft":
            step = self.draft.begin(window[-self.draft.history:])
            codes = step.sample(rng)
            action = step.action(codes)
        seed = int(rng.integers(2**31))
        req = FeatureRequest(0, window[-self.history:].copy(), seed, self.encoding)
        return Plan(action, req, codes=codes, window=window.copy(),
                    copies=len(self.layout.devices))

    def gather(self, plan: Plan) -> Gather:
        return Gather(self.layout, plan.request.seed)

    def resolve(self, plan: Plan, response: Response | None) -> np.ndarray:
        if response is not None:
            return response.action
        return plan.draft_action if plan.draft_action is not None else np.zeros(
            ACTION_DIM, np.float32)


def check_window(model, req: FeatureRequest) -> None:
    shape = (model.history, model.obs_dim)
    if req.layer != 0 or req.data.shape != shape:
        raise ProtocolError(f"a device needs the observation window (layer 0, {shape[0]}x"
                            f"{shape[1]}), got layer {req.layer} {req.data.shape[0]}x"
                            f"{req.data.shape[1]}")


def serve_students(model, student: int, requests: Sequence[FeatureRequest]
                   ) -> list[StudentAnswer]:
    """One device operation: student ``student`` (a ``StudentNet``, or ``TargetPart`` for
    ``rocoin_target``) on a batch of windows. Raises ``ProtocolError`` for an unusable one."""
    for req in requests:
        check_window(model, req)
    scores, cond, actions = model.answer(np.stack([r.data for r in requests]))
    return [StudentAnswer(student, tuple(model.codes), scores[i], cond[i], actions[i])
            for i in range(len(requests))]


class TargetPart:
    """The full target as one 'student' owning every code (``rocoin_target``)."""

    def __init__(self, target) -> None:
        self.target = target
        self.history, self.obs_dim = target.history, target.obs_dim
        self.codes = tuple(range(target.codebook_size))

    def answer(self, windows: np.ndarray):
        import torch

        from hybrid_policy.policies.teacher import teacher_targets

        k = self.target.codebook_size
        logp0, cond, off = teacher_targets(self.target, windows)
        table = torch.from_numpy(self.target.code_table.reshape(k, k, -1)).float()
        actions = (table + off * self.target.tokenizer.action_std).clamp(-1.0, 1.0)
        return logp0.double().numpy(), cond.double().numpy(), actions.double().numpy()


def rtt_ms(link, request_bytes: int, answer_bytes: int) -> float:
    """Expected round trip of one request and answer on ``link`` (no jitter, no loss)."""
    up = link.delay_ms + (request_bytes + HEADER_BYTES) * 8 / (link.uplink_mbps * 1e3)
    down = link.delay_ms + (answer_bytes + HEADER_BYTES) * 8 / (link.downlink_mbps * 1e3)
    return up + down
