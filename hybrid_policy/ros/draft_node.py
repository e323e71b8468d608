"""Robot side: the draft policy, the action deviation and the skip decision of one mode.

The robot interface (parameter ``interface``): ``standard`` reads the inputs a robot
driver and perception publish (JointState, PoseStamped, PointStamped, TwistStamped, as
the ``robot_map`` YAML says) and commands a ``TwistStamped`` and a gripper ``JointState``;
``vector`` reads the task's flat observation from one JointState and answers with one
(fast, for benchmarks). With the standard interface an input that is missing, stale
(``max_age_ms``), in the wrong frame or non-finite means no policy step: the robot is told
to hold still (zero twist, fingers where they are) and the hold is reported on ``events``.
The ``~/reset`` service (``std_srvs/Trigger``) starts a new run: it clears the policy's
history and Δ state; a robot runs continuously without episodes.

A managed (lifecycle) node. Construction checks every parameter (and the calibration
against the checkpoints) and refuses to start on a bad one; ``configure`` loads the draft
and warms it up; ``activate`` starts acting once the uplink has a reader (in modes that ask
a server) and the verdicts have a writer, so a driver that waits for ``active`` loses no
step to a server path still being matched (the target, activated first, waits for its
link the same way: the path is matched end to end, also when nodes are started by hand).
Observations that arrive while the node is not active are reported and not acted on.

Per observation the node calls the mode's ``plan`` (core.modes: draft, Δ, skip rule),
sends the request if there is one, and publishes the action that ``resolve`` gives once the
verdict is back, or the draft's own action when it is not back within ``deadline_ms`` (a
*deadline fallback*, reported on ``events`` and counted on ``/diagnostics``). A verdict that
arrives after its step was resolved, or that answers no step, is dropped by stamp and
reported: it is never applied to a later step. Observations with a zero, duplicate or
backwards stamp are reported and dropped, since stamps pair requests, verdicts and actions.
Commands leave in stamp order: a step resolved after a newer step's command (or hold) was
published is *overtaken*: its command is never published (a driver applying the latest
command would run a stale one), it is reported on ``events`` and its ``step`` telemetry
is still published. Deadlines are measured on the steady clock, also under ``use_sim_time``.
A command carries the stamp of the state it answers (the observation's or snapshot's; a
timer tick's newest input's), so a driver pairs them in both tick modes; requests and
``step`` telemetry carry the step's own stamp (a timer tick's time, unique per step).

Step time (parameter ``step_time``): ``measured`` (the default) times each step on the
steady clock from its input to its command. ``modelled`` (``sim_time`` graphs, whose
simulator is the clock) charges each step what the in-process evaluator charges it: the
draft's ``draft_ms``, and for a verified step the link model's times (``link_in_node``:
this node applies the link) plus the server's ``target_ms``, or the deadline when a packet
is lost or the verdict would come after it (``core.realtime.round_trip_ms``). The verdict
is then used or not by that modelled time, not by when it came back; every step's command
is published, in step order, and its ``step`` record carries the modelled latency, from
which the simulator delivers the command at its tick (``sim_node``). Inputs are aged
against their own stamp: no simulated time passes while a snapshot is assembled.

Early-exit modes (``core.early_exit``): the robot runs its part of the early-exit net
(``early_exit``) by the plan ``exit_plan`` (its part, threshold and next nodes, as
``bringup`` solved it), and sends a feature it is not confident about as a
``sensor_msgs/Image`` on ``out/<node>/<robot>/feature`` to the node the plan draws; the
answer comes back on ``out/<node>/<robot>/answer``. Without one by the deadline the robot
acts on its own exit.

Rocoin modes (``core.rocoin``): the robot runs the draft and sends its observation window
to every device of the layout (``rocoin_layout``, as ``bringup`` wrote it) on
``out/<device>/<robot>/feature``; each device's answer (``core.rocoin.StudentAnswer``)
comes back on ``out/<device>/<robot>/answer``. The first answer per group counts (an
answer that is not its group's part is reported and ignored); once every group answered,
the combined action is executed. Without them by the deadline the draft acts.

Placement modes (``core.idn``): the robot's step is ``idn_serve.IdnMode``'s ``plan`` and
``resolve``, on a ``Placement`` view (``idn_node.PlacementView``) that says a variant of a node
on the robot's path is available while the node reports it loaded on ``ROOT/<node>/holdings``
and the latest allocation (``ROOT/placement/allocation``) still gives it; the robot's own
variants come from its own store, which follows the allocation too (``idn_node.Holder``,
loads and unloads reported on ``events``). A step the robot serves itself acts at once;
otherwise the window goes as an ``act`` request (``sensor_msgs/JointState``, the variant key
in ``header.frame_id``) on ``out/<node>/<robot>/request`` to the node the plan names, and the
answer comes back on ``out/<node>/<robot>/answer``; without one by the deadline ``resolve``
falls back (the robot's own variant, else holding still). The node does not activate before
the first allocation is loaded here and on every node of its path.
"""

from __future__ import annotations

import sys
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np
from geometry_msgs.msg import TwistStamped
from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.serialization import deserialize_message
from rclpy.timer import Timer
from sensor_msgs.msg import Image, JointState
from std_srvs.srv import Trigger

from sim_envs import task_spec
from sim_envs.spec import ACTION_FIELDS
from hybrid_policy.core import robot_map
from hybrid_policy.families.adahi import calibration_file
from hybrid_policy.core.mode_names import (
    EXIT_MODES, FROM_CALIBRATION, IDN_MODES, ROCOIN_MODES, check_mode,
)
from hybrid_policy.core.link import link_profile
from hybrid_policy.core.protocol import Response
from hybrid_policy.core.realtime import PERIOD_SHARE, round_trip_ms
from hybrid_policy.core.stepmetrics import FIELDS, rejected
from hybrid_policy.defaults import DEFAULT_DEADLINE_MS, DEFAULT_TEMPERATURE
from hybrid_policy.policies.card import read_policy_card
from hybrid_policy.ros import messages, qos, robot_io
from hybrid_policy.ros.delay_line import DelayLine
from hybrid_policy.ros.graph import INTERFACES, uses_server
from hybrid_policy.ros.managed import ManagedNode
from hybrid_policy.ros.node_main import run
from hybrid_policy.ros.packet_link import PacketLink, report_loss
from hybrid_policy.ros.params import declare, require
from hybrid_policy.ros.readiness import ReadyGate
from hybrid_policy.ros.reporting import STEADY, Reporter

ACTIVE = "active"
SERVER_GONE_S = 30.0  # modelled step time: a verdict not back by then (wall) falls back


@dataclass
class Pending:
    plan: Any  # core.modes.Plan
    stamp: object  # builtin_interfaces/Time of the observation
    episode: int
    step: int
    received: float  # time.monotonic() when the observation arrived
    timer: Timer
    finger_q: np.ndarray | None  # standard interface: finger positions the targets start from
    gather: Any = None  # rocoin modes: the step's answers so far (core.rocoin.Gather)
    answers: object = None  # Time its commands carry: the state it answers (None: stamp)
    up_ms: float | None = None  # modelled step time: the request's modelled uplink time


class DraftNode(ManagedNode):
    def __init__(self) -> None:
        super().__init__("draft_node")
        self.task = task_spec(require(self, "task", "", "task name (hybrid-policy tasks)"))
        self.mode_name = check_mode(require(
            self, "mode", "", "draft_only | target_only | hybrid | adahi | uncertainty_skip | "
            "random_skip"))
        self.seed = int(declare(self, "seed", 0, "seed of the per-episode sampling streams"))
        self.first_episode = int(declare(self, "first_episode", 0, "sampling stream of run 0 "
                                         "(a fleet's robot i of E episodes: i·E)"))
        if self.first_episode < 0:
            raise ValueError(f"first_episode must be >= 0, got {self.first_episode}")
        self.temperature = float(declare(self, "temperature", DEFAULT_TEMPERATURE,
                                         "sampling temperature of the code distributions"))
        given_deadline_ms = float(declare(
            self, "deadline_ms", -1.0, "ms to wait for a verdict before the draft acts (-1 = "
            f"derived: {PERIOD_SHARE:g} of the period of a timer robot map, else "
            f"{DEFAULT_DEADLINE_MS:g})"))
        if not (given_deadline_ms > 0 or given_deadline_ms == -1.0):
            raise ValueError(f"deadline_ms must be > 0 (or -1 to derive it), got "
                             f"{given_deadline_ms:g}")
        self.exits = self.mode_name in EXIT_MODES
        self.rocoin = self.mode_name in ROCOIN_MODES
        self.idn = self.mode_name in IDN_MODES
        if self.exits:
            self._exit_params()
        elif self.idn:
            self._idn_params()
        else:
            self.draft_path = require(self, "draft", "", "draft checkpoint directory")
            self.target_path = declare(self, "target", "", "target checkpoint directory (only "
                                       "its config.json and weights hash are read on the robot)")
            if uses_server(self.mode_name) and not self.target_path:
                raise ValueError(f"mode {self.mode_name} needs parameter 'target' (the target "
                                 "checkpoint: only its config.json is read on the robot)")
            self.draft_card = read_policy_card(self.draft_path, "draft", self.task.name)
            self.target_card = (read_policy_card(self.target_path, "target", self.task.name)
                                if self.target_path else self.draft_card)
            self.thresholds = self._rocoin_params() if self.rocoin else self._thresholds()
        self.control_deadline_ms = float(declare(
            self, "control_deadline_ms", 0.0, "DDS deadline on observation/action in ms "
            "(realtime graphs: two control periods; 0 = none)"))
        self.modelled = self._step_time()

        self.interface = declare(self, "interface", "standard", "standard (robot_map topics, "
                                 "TwistStamped out) | vector (flat observation/action)")
        if self.interface not in INTERFACES:
            raise ValueError(f"interface {self.interface!r} is not one of "
                             f"{', '.join(INTERFACES)}")

        control, telemetry = qos.declare(self, "control"), qos.declare(self, "telemetry")
        callbacks = None
        if self.control_deadline_ms > 0:  # realtime: DDS deadline on both ends
            control = qos.with_deadline(control, self.control_deadline_ms / 1e3)
            callbacks = SubscriptionEventCallbacks(deadline=self._on_observation_deadline)
        self.report = Reporter(self, telemetry)
        self.report.extra = lambda: {"state": self.state_label, "mode": self.mode_name,
                                     "steps": self.steps, "run": self.episode}
        self.step_pub = self.create_publisher(JointState, "step", telemetry)
        readers = {"step": self.step_pub, "events": self.report.events}
        up, down = qos.declare(self, "uplink"), qos.declare(self, "downlink")
        on_response = self.report.guard("response", self.on_response)
        if self.exits:  # one feature topic per next node, answers from each
            self.feature_pubs = {}
            for dest in self.plan.offload.get(self.robot, {}):
                name = f"out/{dest}/{self.robot}/"
                self.feature_pubs[dest] = readers[name + "feature"] = self.create_publisher(
                    Image, name + "feature", up)
                self.create_subscription(JointState, name + "answer", on_response, down)
        elif self.rocoin:  # the window to every device, an answer from each
            self.feature_pubs = {}
            on_answer = self.report.guard("answer", self.on_student_answer)
            for dev in self.layout.devices:
                name = f"out/{dev}/{self.robot}/"
                self.feature_pubs[dev] = readers[name + "feature"] = self.create_publisher(
                    Image, name + "feature", up)
                self.create_subscription(JointState, name + "answer",
                                         lambda msg, d=dev: on_answer(msg, d), down)
        elif self.idn:  # a request topic to each node of the path, an answer from each
            self._idn_topics(readers, up, down, on_response)
        else:
            self._server_topics(readers, up, down, on_response)
        if self.interface == "vector":
            self.act_pub = self.create_publisher(JointState, "action", control)
            self.create_subscription(JointState, "observation",
                                     self.report.guard("observation", self.on_observation),
                                     control, event_callbacks=callbacks)
            readers["action"] = self.act_pub
        else:
            self._standard_interface(control)
            readers.update({self.map.twist.topic: self.twist_pub,
                            self.map.gripper.topic: self.gripper_pub})
        self.deadline_ms = self._deadline_ms(given_deadline_ms)
        self.deadline_s = self.deadline_ms / 1e3
        self.get_logger().info(f"verdict deadline {self.deadline_ms:g} ms"
                               + (" (derived)" if given_deadline_ms == -1.0 else ""))
        self.create_service(Trigger, "~/reset", self.on_reset)
        self.gate = ReadyGate(self, readers, announce=False)
        self.mode = None  # core.modes object, from configure
        self.answered: dict[int, None] = {}  # rocoin: recently finished steps (late replicas)
        self.pending: dict[int, Pending] = {}
        self.episode: int | None = None
        self.last_key: int | None = None
        self.commanded_key: int | None = None  # stamp of the newest command published
        self.steps = self.run_steps = 0
        self.latencies: deque[float] = deque(maxlen=10_000)  # the close summary's figures
        self.rng = None
        self.get_logger().info(f"{self.mode_name} on {self.task.name}: unconfigured "
                               f"(thresholds {self.thresholds})")

    def _exit_params(self) -> None:
        """Early-exit modes: the net, the plan and this robot's name in it."""
        from hybrid_policy.families.exits.early_exit import ExitPlan
        from hybrid_policy.policies.card import read_config

        self.net_path = require(self, "early_exit", "", "early-exit net checkpoint directory")
        cfg = read_config(self.net_path)
        if cfg.get("role") != "early_exit" or cfg.get("task") != self.task.name:
            raise ValueError(f"{self.net_path}: not an early-exit net of {self.task.name}")
        self.plan = ExitPlan.load(require(self, "exit_plan", "", "the plan's JSON (bringup "
                                          "writes it: parts, thresholds, offloading)"))
        self.robot = require(self, "robot", "", "this robot's name in the plan")
        if self.robot not in self.plan.ends:
            raise ValueError(f"robot {self.robot!r} is not in the plan (robots and nodes: "
                             f"{', '.join(self.plan.ends)})")
        if self.plan.mode != self.mode_name:
            raise ValueError(f"the plan is for {self.plan.mode}, not {self.mode_name}")
        self.thresholds = {"threshold": self.plan.thresholds.get(self.robot)}

    def _idn_params(self) -> None:
        """Placement modes: the network (topology + catalogue), this robot and its cell."""
        from hybrid_policy.families.idn.idn import Where
        from hybrid_policy.families.idn.placement_node import idn_network

        self.robot = require(self, "robot", "", "this robot's name in the topology")
        self.network = idn_network(self)
        if self.robot not in self.network.robots:
            raise ValueError(f"robot {self.robot!r} is not in the topology (robots: "
                             f"{', '.join(self.network.robots)})")
        spec = self.network.robots[self.robot]
        if spec.task != self.task.name:
            raise ValueError(f"robot {self.robot} runs {spec.task} in the topology, not "
                             f"{self.task.name}")
        self.where = Where(spec.task, spec.access)
        self.models_root = require(self, "models", "", "root of the variants' models "
                                   "(MODELS/<task>/{draft,target,early_exit})")
        self.root = require(self, "root", "", "the graph's namespace (allocation, holdings)")
        self.thresholds = {}

    def _idn_topics(self, readers: dict, up, down, on_response) -> None:
        from hybrid_policy.families.idn.serve import NodeStore, VariantModels
        from hybrid_policy.families.idn.idn_node import Holder, PlacementView

        path = self.network.path(self.robot, self.where.access)[1:]
        self.feature_pubs = {}  # here: the act requests to each node of the path
        for node in path:
            name = f"out/{node}/{self.robot}/"
            self.feature_pubs[node] = readers[name + "request"] = self.create_publisher(
                JointState, name + "request", up)
            self.create_subscription(JointState, name + "answer", on_response, down)
        store = NodeStore(VariantModels(self.models_root))
        self.holder = Holder(self, self.network, self.robot, store, self.report, self.root)
        self.view = PlacementView(self, self.network, path, self.holder, self.report,
                                  self.root)

    def _rocoin_params(self) -> dict:
        """Rocoin modes: the layout and this robot's name (no thresholds)."""
        from hybrid_policy.families.rocoin.rocoin import Layout, RocoinError

        try:
            self.layout = Layout.load(require(self, "rocoin_layout", "", "the layout's JSON "
                                              "(bringup writes it: groups, codes, devices)"))
        except RocoinError as exc:
            raise ValueError(str(exc)) from None
        if self.layout.mode != self.mode_name:
            raise ValueError(f"the layout is for {self.layout.mode}, not {self.mode_name}")
        self.robot = require(self, "robot", "", "this robot's name in the fleet")
        return {}

    def _deadline_ms(self, given_ms: float) -> float:
        """The verdict wait: the given one, else derived as bringup and the launch file do
        for a robot that ticks on its own (a timer map): a share of its period, so the
        fallback still makes the tick (core.realtime.PERIOD_SHARE)."""
        if given_ms != -1.0:
            return given_ms
        if self.interface != "vector" and self.map.tick == "timer":
            return PERIOD_SHARE * 1e3 / self.map.rate_hz
        return DEFAULT_DEADLINE_MS

    def _step_time(self) -> tuple[float, float] | None:
        """``(draft_ms, target_ms)`` when steps are charged their modelled time
        (``step_time: modelled``), else ``None`` (measured on the steady clock)."""
        kind = declare(self, "step_time", "measured", "measured (steady clock, input to "
                       "command) | modelled (sim_time graphs: draft_ms + the link model + "
                       "target_ms, as the in-process evaluator charges a step)")
        draft_ms = float(declare(self, "draft_ms", -1.0, "modelled step time: the draft's "
                                 "compute per step in ms"))
        target_ms = float(declare(self, "target_ms", -1.0, "modelled step time: the server's "
                                  "compute per verification in ms"))
        if kind not in ("measured", "modelled"):
            raise ValueError(f"step_time must be measured or modelled, got {kind!r}")
        if kind == "measured":
            return None
        if not (draft_ms >= 0 and target_ms >= 0):
            raise ValueError(f"step_time modelled needs draft_ms and target_ms >= 0 (the "
                             f"compute times it charges), got {draft_ms:g} and {target_ms:g}")
        if self.exits or self.rocoin or self.idn:
            raise ValueError(f"step_time modelled is for the draft/target modes, not "
                             f"{self.mode_name}")
        return draft_ms, target_ms

    def _server_topics(self, readers: dict, up, down, on_response) -> None:
        """The request out and the verdict in: through a link node (``uplink/request``,
        ``downlink/response``), or with ``link_in_node`` straight to and from the server,
        the link's model applied here as the link node would (``packet_link``)."""
        self.link_in_node = bool(declare(
            self, "link_in_node", False, "apply the link model in this node: requests go to "
            "server/request after the modelled uplink, verdicts are taken from "
            "server/response after the modelled downlink (no link_node: a process and two "
            "DDS hops fewer)"))
        self.up_topic, self.down_topic = (("server/request", "server/response")
                                          if self.link_in_node else
                                          ("uplink/request", "downlink/response"))
        self.req_pub = readers[self.up_topic] = self.create_publisher(
            JointState, self.up_topic, up)
        if not self.link_in_node:
            if self.modelled is not None and uses_server(self.mode_name):
                raise ValueError("step_time modelled needs link_in_node: the link's modelled "
                                 "times are applied in this node")
            self.resp_sub = self.create_subscription(JointState, self.down_topic,
                                                     on_response, down)
            return
        name = self.get_parameter("link").value
        if not name:
            raise ValueError("link_in_node needs parameter 'link' (the link profile to apply)")
        self.packets = PacketLink(link_profile(name), lambda *loss: report_loss(self.report,
                                                                                *loss))
        self.delay = DelayLine()
        self.resp_sub = self.create_subscription(
            JointState, self.down_topic, self.report.guard(
                "response", lambda raw: self._on_link_response(raw, on_response)),
            down, raw=True)

    def _send_request(self, msg: JointState, key: int, seed: int) -> None:
        if not self.link_in_node:
            self.req_pub.publish(msg)
            return
        # the link is charged the request's CDR size as the protocol computes it (the size
        # eval charges; a ROS test checks it against rclpy's serialiser), so no step pays a
        # second serialisation; the message object is published from the delay line
        p = self.pending[key]
        up_ms = self.packets.up(p.plan.request.payload_bytes(), seed, key)
        if self.modelled is not None:  # the modelled uplink time is charged, not waited
            p.up_ms = up_ms
            if up_ms is None:
                self._finish(key, None)
            else:
                self.req_pub.publish(msg)
        elif up_ms is not None:
            self.delay.schedule(up_ms, lambda: self.req_pub.publish(msg))

    def _on_link_response(self, raw: bytes, on_response) -> None:
        """A verdict off the server, handed on after the modelled downlink (or lost)."""
        msg = deserialize_message(raw, JointState)
        if self.modelled is not None:
            self._modelled_verdict(msg)
            return
        delay = self.packets.down(len(raw), messages.stamp_key(msg.header.stamp))
        if delay is None:
            return
        timer = None

        def deliver() -> None:
            timer.cancel()
            self.destroy_timer(timer)
            on_response(msg)

        timer = self.create_timer(delay / 1e3, deliver, clock=STEADY)

    def _modelled_verdict(self, msg: JointState) -> None:
        """Modelled step time: the verdict counts if its modelled round trip beats the
        deadline (``core.realtime.round_trip_ms``, as in process); else the step falls back."""
        key = messages.stamp_key(msg.header.stamp)
        if key not in self.pending:
            raise messages.MessageError("answers no pending step (late, duplicate or unknown "
                                        "stamp): dropped")
        response = messages.parse_response(msg)  # malformed: reported, the guard timer acts
        down = self.packets.down(response.payload_bytes(), key)
        rtt = round_trip_ms(self.pending[key].up_ms, self.modelled[1], down, self.deadline_ms)
        self._finish(key, None if rtt is None else response, rtt)

    def _standard_interface(self, control) -> None:
        """Inputs and commands from the robot map (core.robot_map, ros/robot_io)."""
        path = declare(self, "robot_map", "", "robot interface YAML (\"\" = the package's "
                       "config/robot_<task>.yaml)") or str(robot_map.default_path(self.task.name))
        period_s = self.task.control_period_ms / 1e3
        self.map = robot_map.load(path, self.task.obs_fields, period_s, self.task.name)
        max_age = float(declare(self, "max_age_ms", -1.0, "oldest usable input in ms "
                                "(-1 = the robot map's max_age_ms)"))
        if max_age == -1.0:
            max_age = self.map.max_age_ms
        elif not max_age > 0:
            raise ValueError(f"max_age_ms must be > 0 (or -1 for the map's), got {max_age}")
        self.twist_pub = self.create_publisher(TwistStamped, self.map.twist.topic, control)
        self.gripper_pub = self.create_publisher(JointState, self.map.gripper.topic, control)
        self.inputs = robot_io.RobotInputs(self, self.map, self.task.obs_dim, max_age, control,
                                           self.report.guard, self.on_tick,
                                           aged_at_stamp=self.modelled is not None)
        if self.map.tick == "timer":  # guarded like a subscription: a tick never kills it
            tick = self.report.guard("tick", lambda _: self.active and self.on_tick(
                self.inputs.timer_tick()))
            self.create_timer(1.0 / self.map.rate_hz, lambda: tick(None))
        self.get_logger().info(f"robot map {path}: {self.map.tick} ticks, max_age_ms "
                               f"{max_age:g}, twist {self.map.twist_scale:g} m/s per unit")

    def _thresholds(self):
        """The mode's thresholds by the rule every entry point shares (core.calibration_file):
        explicit values, or the calibration (checked against the checkpoints' weights)."""
        given = {name: float(declare(self, name, FROM_CALIBRATION,
                                     f"{name}; {FROM_CALIBRATION:g} = from 'calibration'"))
                 for name in ("tau", "uncertainty_tau", "random_skip")}
        path = declare(self, "calibration", "", "calibration JSON (hybrid-policy calibrate) "
                       "giving the skipping threshold")
        link = declare(self, "link", "", "link profile the robot uses (checked against the "
                       "calibration's)")
        return calibration_file.thresholds_for_checkpoints(
            self.mode_name, given, path, self.task.name, link, self.temperature,
            self.draft_path, self.target_path)

    # -- lifecycle (ros/managed.py) --------------------------------------------------------
    def load(self) -> str:
        """The draft (early-exit modes: the net), warmed up."""
        from hybrid_policy.families.adahi.modes import make_mode
        from hybrid_policy.policies import load_policy

        if self.idn:
            from hybrid_policy.families.idn.idn import PLACERS
            from hybrid_policy.families.idn.serve import IdnMode

            self.mode = IdnMode(self.mode_name, self.robot, self.where, self.view.placement,
                                self.holder.store, PLACERS[self.mode_name].local_only)
            self._warm_up()
            self.holder.enable()  # its own variants, as the allocation says
            return (f"{self.robot} in {self.where.access}, path "
                    f"{', '.join(self.view.path)}, deadline {self.deadline_s * 1e3:.0f} ms")
        if self.exits:
            from hybrid_policy.families.exits.early_exit import EarlyExitMode
            from hybrid_policy.families.exits.net import load_early_exit

            net = load_early_exit(self.net_path, self.task.name, self.temperature)
            self.mode = EarlyExitMode(self.mode_name, self.robot, net, self.plan)
            self._warm_up()
            return (f"early-exit net, part up to layer {self.plan.ends[self.robot]}, deadline "
                    f"{self.deadline_s * 1e3:.0f} ms")

        draft = load_policy(self.draft_path, role="draft", task=self.task.name,
                            temperature=self.temperature)
        if self.rocoin:
            from hybrid_policy.families.rocoin.rocoin import RocoinMode

            self.mode = RocoinMode(self.mode_name, draft, self.target_card.history, self.layout)
        else:
            self.mode = make_mode(self.mode_name, draft, self.target_card, self.thresholds)
        self._warm_up()
        return (f"draft {draft.model.num_parameters():,} parameters, deadline "
                f"{self.deadline_s * 1e3:.0f} ms")

    def unload(self) -> None:
        self.mode = None

    def activation_blocker(self) -> str | None:
        """Act only once the uplink has a reader and the expected readers matched (placement
        modes: and the allocation in force is loaded on the robot's path)."""
        if self.exits or self.rocoin or self.idn:
            idle = [d for d, pub in self.feature_pubs.items() if pub.get_subscription_count() < 1]
            if idle:
                return (f"nothing reads the {'requests' if self.idn else 'features'} to "
                        f"{', '.join(idle)} (start the links first)")
        elif uses_server(self.mode_name):
            if self.req_pub.get_subscription_count() < 1:
                return f"nothing reads {self.up_topic} (start the link or target side first)"
            if self.resp_sub.get_publisher_count() < 1:
                return f"nothing publishes {self.down_topic} (start the link first)"
        waiting = self.view.blocker() if self.idn else None
        if waiting:
            return waiting
        return f"readers not matched {self.gate.missing()}" if not self.gate.matched() else None

    def activated(self) -> None:
        self._reset_history()
        self.run_steps = 0

    def deactivated(self) -> None:
        self._expire_all()

    def _warm_up(self, rounds: int = 5) -> None:
        """Plan a few times on a zero observation so the first real step is not slow."""
        rng = np.random.default_rng(0)  # not the episode's stream
        for _ in range(rounds):
            self.mode.plan(np.zeros(self.task.obs_dim, np.float32), rng)
        self.mode.reset()

    def _reset_history(self) -> None:
        from hybrid_policy.core.evaluator import episode_rng

        self.mode.reset()
        self.episode, self.last_key, self.commanded_key = None, None, None
        self.rng = episode_rng(self.seed, self.first_episode)

    # -- observation → plan → request or action ------------------------------------------
    def on_observation(self, msg: JointState) -> None:
        received = time.monotonic()
        self._require_active()
        episode, step, obs = messages.parse_observation(msg, self.task.obs_fields)
        key = self._check_stamp(msg.header.stamp)
        if episode is None:  # a robot without episodes: one continuous run
            episode, step = self.episode or 0, self.run_steps
        elif episode != self.episode:
            self._new_episode(episode)
        self._plan(msg.header.stamp, key, episode, step, obs, received, None)

    def on_tick(self, tick: robot_map.Tick) -> None:
        """One tick of the standard interface: a policy step, or a hold when an input is
        missing, stale or unusable. A timer tick's latency starts at its newest input's
        stamp: the wait for the tick is part of the step."""
        received = time.monotonic() - tick.waited_ms / 1e3
        stamp = robot_io.time_msg(tick.stamp_ns)
        self._require_active()
        if tick.obs is None:
            self._hold(stamp, tick)
            return
        key = self._check_stamp(stamp)
        self._plan(stamp, key, self.episode or 0, self.run_steps, tick.obs, received,
                   tick.finger_q, robot_io.time_msg(tick.answers_ns))

    def _require_active(self) -> None:
        if not self.active:
            raise messages.MessageError(f"draft_node is {self.state_label}, not active: "
                                        "not acted on (configure and activate it first)")

    def _hold(self, stamp, tick: robot_map.Tick) -> None:
        """Zero twist, fingers kept where they are: the robot holds still this tick."""
        self.commanded_key = max(self.commanded_key or 0, tick.stamp_ns)
        answers = robot_io.time_msg(tick.answers_ns)
        self.twist_pub.publish(robot_io.twist_msg(answers, self.map.twist.frame, np.zeros(3)))
        if tick.finger_q is not None:
            self.gripper_pub.publish(robot_io.gripper_msg(answers, self.map.gripper.joints,
                                                          tick.finger_q))
        self.report.event("hold: no usable observation", {
            "stamp": tick.stamp_ns, "reason": tick.hold_reason})

    def _plan(self, stamp, key: int, episode: int, step: int, obs: np.ndarray,
              received: float, finger_q: np.ndarray | None, answers=None) -> None:
        self.last_key = key
        self.run_steps += 1
        if self.idn:
            self.view.refresh()  # what is held and loaded now
        plan = self.mode.plan(obs, self.rng)
        if plan.request is None:
            self._act(Pending(plan, stamp, episode, step, received, None, finger_q,
                              answers=answers), None)
            return
        # modelled step time: the deadline is modelled; the timer only guards a server gone
        wait_s = self.deadline_s if self.modelled is None else max(SERVER_GONE_S,
                                                                   self.deadline_s)
        timer = self.create_timer(wait_s, lambda: self._expire(key), clock=STEADY)
        self.pending[key] = Pending(plan, stamp, episode, step, received, timer, finger_q,
                                    answers=answers)
        if self.exits:
            self.feature_pubs[plan.route_to].publish(messages.feature_msg(stamp, plan.request))
        elif self.idn:
            from hybrid_policy.families.idn.idn_node import act_request_msg

            self.feature_pubs[plan.route_to].publish(act_request_msg(stamp, plan.request,
                                                                     plan.variant))
        elif self.rocoin:
            self.pending[key].gather = self.mode.gather(plan)
            msg = messages.feature_msg(stamp, plan.request)
            for pub in self.feature_pubs.values():
                pub.publish(msg)
        else:
            self._send_request(messages.request_msg(stamp, plan.request), key,
                               plan.request.seed)

    def _check_stamp(self, stamp) -> int:
        """The observation's stamp as a key, refusing one that cannot pair its step."""
        key = messages.stamp_key(stamp)
        if key == 0:
            raise messages.MessageError("zero stamp: set header.stamp (it pairs the request, "
                                        "the verdict and the action of this step)")
        if key in self.pending or key == self.last_key:
            raise messages.MessageError("duplicate stamp: a step with this stamp is already "
                                        "in flight or done")
        if self.last_key is not None and key < self.last_key:
            raise messages.MessageError(f"stamp goes backwards ({self.last_key - key} ns before "
                                        "the last observation)")
        return key

    def _on_observation_deadline(self, event) -> None:
        self.report.event("no observation for two control periods (DDS deadline)", {},
                          log=True)

    def _new_episode(self, episode: int) -> None:
        from hybrid_policy.core.evaluator import episode_rng

        self._expire_all()  # steps of the last episode can no longer be acted on
        self.mode.reset()
        self.rng = episode_rng(self.seed, self.first_episode + episode)
        self.episode, self.run_steps = episode, 0

    def on_reset(self, request: Trigger.Request, response: Trigger.Response
                 ) -> Trigger.Response:
        """Start a new run: the policy's history and Δ state are cleared and the sampling
        stream moves on (run k uses the stream of episode k, as ``eval`` does). Steps in
        flight are resolved by the draft first. Resetting a run that has taken no step
        changes nothing, so a driver may reset before every episode, the first included."""
        if self.mode is None or not self.active:
            response.success = False
            response.message = f"draft_node is {self.state_label}: nothing to reset"
            return response
        run = self.episode or 0
        if self.run_steps > 0:
            run += 1
            self._new_episode(run)
        response.success = True
        response.message = f"run {run}: history cleared"
        return response

    # -- verdicts ------------------------------------------------------------------------
    def on_response(self, msg: JointState) -> None:
        key = messages.stamp_key(msg.header.stamp)
        if key not in self.pending:
            raise messages.MessageError("answers no pending step (late, duplicate or unknown "
                                        "stamp): dropped")
        response = messages.parse_response(msg)  # malformed: reported, the deadline decides
        if len(response.action) != len(ACTION_FIELDS):
            raise messages.MessageError(f"response action has {len(response.action)} values, "
                                        f"expected {len(ACTION_FIELDS)}")
        self._finish(key, response)

    def on_student_answer(self, msg: JointState, device: str) -> None:
        """Rocoin: a device's answer; the step acts once every group has answered."""
        from hybrid_policy.core.protocol import ProtocolError

        key = messages.stamp_key(msg.header.stamp)
        if key in self.answered:
            return  # a later replica of a group that had answered: not needed
        if key not in self.pending:
            raise messages.MessageError("answers no pending step (late, duplicate or unknown "
                                        "stamp): dropped")
        answer = messages.parse_student_answer(msg)
        gather = self.pending[key].gather
        try:
            gather.add(device, answer)
        except ProtocolError as exc:  # ignored for its group, reported
            raise messages.MessageError(str(exc)) from None
        if gather.complete:
            self.answered[key] = None
            while len(self.answered) > 256:
                self.answered.pop(next(iter(self.answered)))
            self._finish(key, gather.response())

    def _expire(self, key: int) -> None:
        if key in self.pending:
            p = self.pending[key]
            self.report.event("deadline fallback", {
                "stamp": key, "waited_ms": round((time.monotonic() - p.received) * 1e3, 2)},
                log=False)
            self._finish(key, None)

    def _expire_all(self) -> None:
        for key in list(self.pending):
            self._expire(key)

    def _finish(self, key: int, response: Response | None, rtt_ms: float | None = None) -> None:
        p = self.pending.pop(key)
        p.timer.cancel()
        self.destroy_timer(p.timer)
        self._act(p, response, rtt_ms)

    def _modelled_latency(self, plan, rtt_ms: float | None) -> float:
        """A step's modelled time, charged as the in-process evaluator charges it."""
        latency = self.modelled[0] if plan.draft_action is not None else 0.0
        if plan.request is not None:
            latency += self.deadline_ms if rtt_ms is None else rtt_ms
        return latency

    def _act(self, p: Pending, response: Response | None, rtt_ms: float | None = None) -> None:
        plan, stamp = p.plan, p.stamp
        action = self.mode.resolve(plan, response)
        key = messages.stamp_key(stamp)
        # modelled step time: steps resolve in order and the robot's actuator decides by
        # modelled arrival which command acts, so every command is published
        overtaken = (self.modelled is None and self.commanded_key is not None
                     and key < self.commanded_key)
        if overtaken:
            self.report.event("command overtaken: a newer step's command was already "
                              "published; not published", {"stamp": key,
                                                          "newer": self.commanded_key})
        else:
            self._command(p.answers or stamp, action, p.finger_q)
            self.commanded_key = key
        latency_ms = ((time.monotonic() - p.received) * 1e3 if self.modelled is None
                      else self._modelled_latency(plan, rtt_ms))
        self.steps += 1
        self.latencies.append(latency_ms)
        req = plan.request
        verdict = rejected(req, response)
        values = {
            "episode": p.episode, "step": p.step, "uplink": float(req is not None),
            "uplink_bytes": 0 if req is None else req.payload_bytes() * plan.copies,
            "deviation": plan.deviation, "uncertainty": plan.uncertainty,
            "verdict": float(response is not None),
            "accepted": np.nan if verdict is None else float(not verdict),
            "fallback": float(req is not None and response is None),
            "latency_ms": latency_ms,
            "exit_layer": (np.nan if not self.exits else float(
                response.exit_layer if response is not None else self.plan.ends[self.robot])),
        }
        self.step_pub.publish(messages.joint_state(stamp, FIELDS, [values[f] for f in FIELDS]))

    def _command(self, stamp, action: np.ndarray, finger_q: np.ndarray | None) -> None:
        """Publish the step's action on the robot interface."""
        if self.interface == "vector":
            self.act_pub.publish(messages.action_msg(stamp, ACTION_FIELDS, action))
            return
        linear, targets = self.map.command(action, finger_q)
        self.twist_pub.publish(robot_io.twist_msg(stamp, self.map.twist.frame, linear))
        if targets is not None:
            self.gripper_pub.publish(robot_io.gripper_msg(stamp, self.map.gripper.joints,
                                                          targets))

    def close(self) -> str:
        if getattr(self, "delay", None) is not None:
            self.delay.close()
        latency = ""
        if self.latencies:
            p50, p95 = np.percentile(self.latencies, [50, 95])
            latency = (f", latency ms p50 {p50:.1f} p95 {p95:.1f} max "
                       f"{max(self.latencies):.1f} (last {len(self.latencies)} steps)")
        return f"{self.steps} steps{latency}; events: {dict(self.report.counts)}"


def main(args: list[str] | None = None) -> int:
    return run(DraftNode, args)


if __name__ == "__main__":
    sys.exit(main())
