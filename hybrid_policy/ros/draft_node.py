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

What a step's request is and where it goes is the mode's family's
(``families.base.Family.robot_side``, ``ros.robot_side``): the draft/target modes send a
verification request to their server through a link node, or with the link applied here
(``link_in_node``, and ``step_time: modelled`` in ``sim_time`` graphs, where each step is
charged its modelled time: ``families/adahi/robot_ros.py``); the early exits send features
to the next node of their plan, RoCoIn a window to every device, the placement modes an
``act`` request to the node that holds the variant. The family's side declares and checks
its own parameters; this node names no family.
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
from rclpy.timer import Timer
from sensor_msgs.msg import JointState
from std_srvs.srv import Trigger

from sim_envs import task_spec
from sim_envs.spec import ACTION_FIELDS
from hybrid_policy.core import robot_map
from hybrid_policy.core.protocol import Response
from hybrid_policy.core.realtime import PERIOD_SHARE
from hybrid_policy.core.stepmetrics import FIELDS, rejected
from hybrid_policy.defaults import DEFAULT_DEADLINE_MS, DEFAULT_TEMPERATURE
from hybrid_policy.families import registry
from hybrid_policy.ros import messages, qos, robot_io
from hybrid_policy.ros.graph import INTERFACES
from hybrid_policy.ros.managed import ManagedNode
from hybrid_policy.ros.node_main import run
from hybrid_policy.ros.params import declare, require
from hybrid_policy.ros.readiness import ReadyGate
from hybrid_policy.ros.reporting import STEADY, Reporter

ACTIVE = "active"


@dataclass
class Pending:
    plan: Any  # core.modes.Plan
    stamp: object  # builtin_interfaces/Time of the observation
    episode: int
    step: int
    received: float  # time.monotonic() when the observation arrived
    timer: Timer
    finger_q: np.ndarray | None  # standard interface: finger positions the targets start from
    answers: object = None  # Time its commands carry: the state it answers (None: stamp)
    wire: Any = None  # what the family's side keeps for the step in flight


class DraftNode(ManagedNode):
    def __init__(self) -> None:
        super().__init__("draft_node")
        self.task = task_spec(require(self, "task", "", "task name (hybrid-policy tasks)"))
        self.mode_name = registry.check_mode(require(
            self, "mode", "", "one mode of any family: " + ", ".join(registry.all_modes())))
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
        self.deadline_ms = self.deadline_s = 0.0  # settled once the interface is known
        self.side = registry.family_of(self.mode_name).robot_side(self)
        self.control_deadline_ms = float(declare(
            self, "control_deadline_ms", 0.0, "DDS deadline on observation/action in ms "
            "(realtime graphs: two control periods; 0 = none)"))

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
        self.side.topics(readers, up, down)
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
        self.mode = None  # core.plan.Mode, from configure
        self.pending: dict[int, Pending] = {}
        self.episode: int | None = None
        self.last_key: int | None = None
        self.commanded_key: int | None = None  # stamp of the newest command published
        self.steps = self.run_steps = 0
        self.latencies: deque[float] = deque(maxlen=10_000)  # the close summary's figures
        self.rng = None
        self.get_logger().info(f"{self.mode_name} on {self.task.name}: unconfigured "
                               f"(thresholds {self.side.thresholds})")

    def _deadline_ms(self, given_ms: float) -> float:
        """The verdict wait: the given one, else derived as bringup and the launch file do
        for a robot that ticks on its own (a timer map): a share of its period, so the
        fallback still makes the tick (core.realtime.PERIOD_SHARE)."""
        if given_ms != -1.0:
            return given_ms
        if self.interface != "vector" and self.map.tick == "timer":
            return PERIOD_SHARE * 1e3 / self.map.rate_hz
        return DEFAULT_DEADLINE_MS

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
                                           aged_at_stamp=self.side.modelled)
        if self.map.tick == "timer":  # guarded like a subscription: a tick never kills it
            tick = self.report.guard("tick", lambda _: self.active and self.on_tick(
                self.inputs.timer_tick()))
            self.create_timer(1.0 / self.map.rate_hz, lambda: tick(None))
        self.get_logger().info(f"robot map {path}: {self.map.tick} ticks, max_age_ms "
                               f"{max_age:g}, twist {self.map.twist_scale:g} m/s per unit")

    # -- lifecycle (ros/managed.py) --------------------------------------------------------
    def load(self) -> str:
        """The mode (its family's models loaded), warmed up."""
        self.mode, summary = self.side.load()
        self._warm_up()
        self.side.loaded()
        return summary

    def unload(self) -> None:
        self.mode = None

    def activation_blocker(self) -> str | None:
        """Act only once the family's way to its servers is matched (``RobotSide.blocker``)
        and the expected readers are."""
        waiting = self.side.blocker()
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
        self.side.before_plan()
        plan = self.mode.plan(obs, self.rng)
        if plan.request is None:
            self._act(Pending(plan, stamp, episode, step, received, None, finger_q,
                              answers=answers), None)
            return
        timer = self.create_timer(self.side.wait_s(), lambda: self._expire(key), clock=STEADY)
        self.pending[key] = Pending(plan, stamp, episode, step, received, timer, finger_q,
                                    answers=answers)
        self.side.send(self.pending[key], key)

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
        self.finish(key, response)

    def _expire(self, key: int) -> None:
        if key in self.pending:
            p = self.pending[key]
            self.report.event("deadline fallback", {
                "stamp": key, "waited_ms": round((time.monotonic() - p.received) * 1e3, 2)},
                log=False)
            self.finish(key, None)

    def _expire_all(self) -> None:
        for key in list(self.pending):
            self._expire(key)

    def finish(self, key: int, response: Response | None, detail: Any = None) -> None:
        """Step ``key`` has its answer (``None``: none in time); ``detail``: what its family's
        side needs to charge it its modelled time."""
        p = self.pending.pop(key)
        p.timer.cancel()
        self.destroy_timer(p.timer)
        self._act(p, response, detail)

    def _act(self, p: Pending, response: Response | None, detail: Any = None) -> None:
        plan, stamp = p.plan, p.stamp
        action = self.mode.resolve(plan, response)
        key = messages.stamp_key(stamp)
        # modelled step time: steps resolve in order and the robot's actuator decides by
        # modelled arrival which command acts, so every command is published
        overtaken = (not self.side.modelled and self.commanded_key is not None
                     and key < self.commanded_key)
        if overtaken:
            self.report.event("command overtaken: a newer step's command was already "
                              "published; not published", {"stamp": key,
                                                          "newer": self.commanded_key})
        else:
            self._command(p.answers or stamp, action, p.finger_q)
            self.commanded_key = key
        latency_ms = self.side.latency_ms(p, detail)
        if latency_ms is None:
            latency_ms = (time.monotonic() - p.received) * 1e3
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
            "exit_layer": self.side.exit_layer(response),
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
        self.side.close()
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
