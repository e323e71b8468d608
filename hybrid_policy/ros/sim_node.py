"""Robot side: the MuJoCo task. Publishes each observation, applies the returned action.

Three clocks (parameter ``clock``):

- ``lockstep``: the simulator waits for the action that answers its observation (matched
  by stamp) before it steps, so a seeded run is reproducible.
- ``realtime``: the simulator steps every ``1 / rate_hz`` seconds of wall time whether or
  not an action came, by ``core.realtime.Actuator``, the rule the in-process evaluator
  runs: each tick applies the command answering the newest state among those arrived since
  the last tick (an older state's late command too: a *stale tick*), never one older than
  a command already applied; with nothing new it holds still (zero action) and counts a
  *missed tick*. When the simulator itself was starved past a period it counts the overrun
  and keeps the period (no burst of catch-up steps).
- ``sim_time``: the same rule in simulated time, so a seeded run is reproducible and
  equals ``hybrid-policy eval`` in real time tick for tick. Tick ``n`` of the run is at
  simulated time 1 s + ``n / rate_hz``, published on ``/clock`` and stamped on the tick's
  observation. The draft node charges each step its modelled time (``step_time:
  modelled``) and reports it in its ``step`` record; the simulator waits (wall time) for
  the step's command and record, hands the command to the actuator at the step's time +
  that latency, and steps at the next tick. Nodes on ``use_sim_time`` (the recorder, for
  the bag's timeline) see the simulated time.

Two robot interfaces (parameter ``interface``), as the draft node's: ``standard`` publishes
what an arm driver and perception would (``joint_states``, ``ee_pose``, ``ee_twist``,
``object_pose``, ``object_twist``, ``goal``: one snapshot per step, every message with the
step's stamp, frame ``world``) and executes ``cmd_twist`` (TwistStamped) with
``gripper_command`` (finger targets, JointState); before each episode it calls the draft's
``reset`` service, since a robot has no episodes. ``vector`` publishes the flat observation
(with episode and step) and executes the flat action.

Episodes use the same reset seeds as ``hybrid-policy eval`` for the same ``seed``. Before
the first observation the node waits until its publishers are matched and every node in
``wait_for`` has announced itself ready (``readiness``). An action that is malformed or
answers no observation of the episode is logged, reported on ``events`` and never executed.
"""

from __future__ import annotations

import sys
import time

import numpy as np
from diagnostic_msgs.msg import DiagnosticStatus
from geometry_msgs.msg import TwistStamped
from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.node import Node
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import JointState
from std_srvs.srv import Trigger

import sim_envs
from sim_envs.collect import episode_seeds
from sim_envs.fetch import FINGER_JOINTS
from hybrid_policy.core.realtime import Actuator, tick_kind
from hybrid_policy.core.stepmetrics import FIELDS
from hybrid_policy.ros import messages, qos, robot_io
from hybrid_policy.ros.graph import CLOCKS, INTERFACES, TOPICS
from hybrid_policy.ros.node_main import Finished, run
from hybrid_policy.ros.params import declare, require, string_list
from hybrid_policy.ros.readiness import ReadyGate, ReadyWaiter
from hybrid_policy.ros.reporting import Reporter


FRAME = "world"  # the frame of every pose, twist and command of the simulated Fetch
SIM_START_NS = 1_000_000_000  # sim_time: the first tick's time (a stamp is never zero)
LATENCY = FIELDS.index("latency_ms")


class SimNode(Node):
    def __init__(self) -> None:
        super().__init__("sim_node")
        task = require(self, "task", "")
        self.env = sim_envs.make_task(task)
        self.spec = self.env.task_spec
        episodes = int(declare(self, "episodes", 1))
        if episodes < 1:
            raise ValueError(f"episodes must be >= 1, got {episodes}")
        seed = int(declare(self, "seed", 0))
        self.clock = declare(self, "clock", "lockstep")
        if self.clock not in CLOCKS:
            raise ValueError(f"clock {self.clock!r} is not one of {', '.join(CLOCKS)}")
        rate = float(declare(self, "rate_hz", -1.0, "control rate of the realtime and "
                             "sim_time clocks (-1 = the task's)"))
        if rate == -1.0:
            rate = 1e3 / self.spec.control_period_ms
        if not 0 < rate <= 1000:
            raise ValueError(f"rate_hz must be in (0, 1000] (or -1 for the task's), got {rate}")
        self.period_s = 1.0 / rate
        self.period_ms = 1e3 / rate  # the actuator's arithmetic, as in process
        first = int(declare(self, "first_episode", 0, "index of this robot's first episode in "
                            "the run's sequence (a fleet's robot i of E episodes: i·E)"))
        if first < 0:
            raise ValueError(f"first_episode must be >= 0, got {first}")
        self.seeds = episode_seeds(seed, first + episodes, split="eval").tolist()[first:]
        self.waiter = ReadyWaiter(self, string_list(self, "wait_for"))
        self.action_timeout_s = float(declare(self, "action_timeout_s", 60.0))
        control, telemetry = qos.declare(self, "control"), qos.declare(self, "telemetry")
        if self.clock == "realtime":  # DDS tells each end when the other goes quiet
            control = qos.with_deadline(control, 2 * self.period_s)
        self.interface = declare(self, "interface", "standard", "standard (driver and "
                                 "perception topics) | vector (flat observation/action)")
        if self.interface not in INTERFACES:
            raise ValueError(f"interface {self.interface!r} is not one of "
                             f"{', '.join(INTERFACES)}")
        self.episode_pub = self.create_publisher(DiagnosticStatus, "episode", telemetry)
        self.report = Reporter(self, telemetry)
        self.report.extra = lambda: {"episode": self.episode, "step": self.step,
                                     "missed_ticks": self.missed, "overruns": self.overruns}
        callbacks = (SubscriptionEventCallbacks(deadline=self._on_action_deadline)
                     if self.clock == "realtime" else None)
        readers = {"episode": self.episode_pub, "events": self.report.events}
        if self.interface == "vector":
            self.obs_pub = self.create_publisher(JointState, "observation", control)
            self.create_subscription(JointState, "action",
                                     self.report.guard("action", self.on_action), control,
                                     event_callbacks=callbacks)
            readers["observation"] = self.obs_pub
            self.reset_client = None
        else:
            if not hasattr(self.env, "measure"):
                raise ValueError(f"task {task} has no standard robot interface yet; use "
                                 "interface vector")
            self.robot_pubs = {
                name: self.create_publisher(robot_io.MESSAGE[TOPICS[name].type], name, control)
                for name in self.env.measure()}
            readers.update(self.robot_pubs)
            self.create_subscription(TwistStamped, "cmd_twist",
                                     self.report.guard("cmd_twist", self.on_twist), control,
                                     event_callbacks=callbacks)
            self.create_subscription(JointState, "gripper_command",
                                     self.report.guard("gripper_command", self.on_gripper),
                                     control)
            self.reset_client = self.create_client(Trigger, declare(
                self, "reset_service", "draft_node/reset", "the policy's reset service, "
                "called before each episode"))
        # realtime, sim_time: what the robot executes each tick (core.realtime)
        self.actuator = None if self.clock == "lockstep" else Actuator(self.spec.action_dim)
        if self.clock == "sim_time":
            self.clock_pub = self.create_publisher(Clock, "/clock", 10)
            self.create_subscription(JointState, "step",
                                     self.report.guard("step", self.on_step_record), telemetry)
            self.latency: dict[int, float] = {}  # sim_time: step records of this step
        self.sim_ns = SIM_START_NS  # sim_time: the simulated time of the next tick
        self.halves: dict[int, dict[str, np.ndarray]] = {}  # standard: twist, gripper by stamp
        self.states: dict[int, int] = {}  # realtime clocks: stamp → step, this episode
        self.resetting = False
        self.gate = ReadyGate(self, readers)
        self.episode, self.step, self.successes = -1, 0, 0
        self.missed = self.episode_missed = self.stale = self.episode_stale = 0
        self.silent = self.overruns = 0
        self.last_tick = 0.0  # time.monotonic() of the last realtime tick
        self.waiting_key: int | None = None  # the stamp of the step in progress
        self.received: np.ndarray | None = None  # lockstep, sim_time: that step's action
        self.sent_at = 0.0
        self._timer = self.create_timer(0.05, self._tick)
        self.get_logger().info(f"{task}: {episodes} episodes, seed {seed}, {self.clock}"
                               + (f" at {rate:g} Hz" if self.clock != "lockstep" else ""))

    # -- start-up and watchdog -----------------------------------------------------------
    def _tick(self) -> None:
        if self.clock == "sim_time" and self.episode < 0:  # nodes on sim time start at t0
            self.clock_pub.publish(Clock(clock=robot_io.time_msg(self.sim_ns)))
        if self.resetting:
            if time.monotonic() - self.sent_at > self.action_timeout_s:
                self.get_logger().error(f"the policy's reset service did not answer in "
                                        f"{self.action_timeout_s:.0f} s: giving up")
                raise Finished(1)
            return
        if self.episode < 0:
            if self.gate.ready and self.waiter.done and (
                    self.reset_client is None or self.reset_client.service_is_ready()):
                self._start_episode(0)
                if self.clock == "realtime":  # from now on, one step per period
                    self._timer.cancel()
                    self._timer = self.create_timer(self.period_s, self._realtime_tick)
            return
        if self.waiting_key is not None and time.monotonic() - self.sent_at > self.action_timeout_s:
            self.get_logger().error(f"no action for {self.action_timeout_s:.0f} s: giving up")
            raise Finished(1)

    def _on_action_deadline(self, event) -> None:
        self.silent += 1
        if self.silent == 1 or self.silent % 50 == 0:
            self.get_logger().warning(f"no action for {2 * self.period_s * 1e3:.0f} ms "
                                      f"(DDS deadline missed {self.silent} times)")

    # -- the loop ------------------------------------------------------------------------
    def _start_episode(self, episode: int) -> None:
        """Reset the task and, on the standard interface, the robot's policy (its reset
        service) before the first snapshot."""
        if self.reset_client is None:
            self._begin(episode)
            return
        self.resetting, self.sent_at = True, time.monotonic()
        self.reset_client.call_async(Trigger.Request()).add_done_callback(
            lambda future: self._on_reset(future, episode))

    def _on_reset(self, future, episode: int) -> None:
        self.resetting = False
        result = future.result()
        if result is None or not result.success:
            self.get_logger().error(f"the policy's reset failed: "
                                    f"{getattr(result, 'message', 'no answer')}")
            raise Finished(1)
        self._begin(episode)

    def _begin(self, episode: int) -> None:
        self.episode, self.step = episode, 0
        self.episode_missed = self.episode_stale = 0
        self.states.clear()
        self.halves.clear()
        if self.actuator is not None:
            self.actuator.reset()
        obs, _ = self.env.reset(seed=self.seeds[episode])
        self.episode_pub.publish(messages.status("sim_node", 0, "episode start", {
            "episode": episode, "reset_seed": self.seeds[episode]}))
        self._publish(obs)

    def _publish(self, obs) -> None:
        if self.clock == "sim_time":  # the tick's simulated time, on /clock and the stamp
            stamp = robot_io.time_msg(self.sim_ns)
            self.clock_pub.publish(Clock(clock=stamp))
            self.sim_ns += round(self.period_s * 1e9)
        else:
            stamp = self.get_clock().now().to_msg()
        self.waiting_key = messages.stamp_key(stamp)
        self.states[self.waiting_key] = self.step
        self.received = None
        # half a command that can no longer act is forgotten (real time: one in flight stays)
        applied = self.actuator.applied_state if self.actuator is not None else self.step - 1
        self.halves = {k: v for k, v in self.halves.items() if self.states.get(k, -1) > applied}
        self.sent_at = time.monotonic()
        if self.interface == "vector":
            self.obs_pub.publish(messages.observation_msg(stamp, self.episode, self.step,
                                                          self.spec.obs_fields, obs))
            return
        for name, reading in self.env.measure().items():
            self.robot_pubs[name].publish(robot_io.message_of(
                TOPICS[name].type, stamp, "" if name == "joint_states" else FRAME, reading))

    def on_action(self, msg: JointState) -> None:
        key = messages.stamp_key(msg.header.stamp)
        self._check_answers(key)
        self._execute(key, messages.parse_action(msg, self.spec.action_dim))

    def on_twist(self, msg: TwistStamped) -> None:
        self._command(msg, "twist", lambda: robot_io.parse_twist(msg, FRAME))

    def on_gripper(self, msg: JointState) -> None:
        self._command(msg, "gripper", lambda: robot_io.parse_gripper(msg, FINGER_JOINTS))

    def _command(self, msg, what: str, parse) -> None:
        """One half of a standard step's command; the command is whole once both halves
        answered the same snapshot (a robot told to hold still gets both too)."""
        key = messages.stamp_key(msg.header.stamp)
        self._check_answers(key)
        halves = self.halves.setdefault(key, {})
        if what in halves:
            raise messages.MessageError(f"a second {what} for one snapshot: not executed")
        halves[what] = parse()
        if len(halves) == 2:
            del self.halves[key]
            self._execute(key, self.env.action_from_command(halves["twist"], halves["gripper"]))

    def _check_answers(self, key: int) -> None:
        """A command must answer a snapshot of this episode that may still act: in lockstep
        the one in progress; in real time one newer than the last command applied."""
        if self.clock == "lockstep":
            ok = key == self.waiting_key and self.received is None
        else:
            ok = key in self.states and self.states[key] > self.actuator.applied_state
        if not ok:
            raise messages.MessageError("answers no pending snapshot (late, duplicate or of "
                                        "another episode): not executed")

    def _execute(self, key: int, action: np.ndarray) -> None:
        if self.clock == "lockstep":
            self._apply(action)
        elif self.clock == "realtime":  # arrives now; the next tick decides
            self.actuator.send(self.states[key], time.monotonic() * 1e3, action)
        else:
            if key != self.waiting_key or self.received is not None:
                raise messages.MessageError("sim_time: a command for another step than the "
                                            "one in progress: not executed")
            self.received = action
            self._advance()

    def on_step_record(self, msg: JointState) -> None:
        """sim_time: the draft node's record of a step, with its modelled latency."""
        if list(msg.name) != list(FIELDS):
            raise messages.MessageError(f"step record labels {list(msg.name)} are not "
                                        f"{list(FIELDS)}")
        self.latency[messages.stamp_key(msg.header.stamp)] = float(msg.position[LATENCY])
        self._advance()

    def _advance(self) -> None:
        """sim_time: once the step in progress has its command and its record, the command
        reaches the actuator at the step's time + its modelled latency and the next tick
        applies what the actuator says (as ``core.evaluator`` does in real time)."""
        key = self.waiting_key
        if key is None or self.received is None or key not in self.latency:
            return
        now = self.step * self.period_ms
        self.actuator.send(self.step, now + self.latency.pop(key), self.received)
        self._tick_actuator(now + self.period_ms)

    def _realtime_tick(self) -> None:
        # A timer that fell behind (the process was starved) fires back to back to catch
        # up; the simulator must not: it counts the periods it overran and realigns.
        now = time.monotonic()
        since = now - self.last_tick
        if since < 0.5 * self.period_s:
            return
        if since > 1.5 * self.period_s and self.last_tick > 0:
            self.overruns += int(since / self.period_s) - 1
        self.last_tick = now
        if self.waiting_key is None:
            return
        self._tick_actuator(now * 1e3)

    def _tick_actuator(self, now_ms: float) -> None:
        action, answered = self.actuator.tick(now_ms)
        missed, stale = tick_kind(answered, self.step)
        self.missed += missed
        self.episode_missed += missed
        self.stale += stale
        self.episode_stale += stale
        self._apply(action)

    def _apply(self, action: np.ndarray) -> None:
        self.waiting_key = None
        obs, _, terminated, truncated, info = self.env.step(action)
        self.step += 1
        if not (terminated or truncated):
            self._publish(obs)
            return
        success = bool(info["success"])
        self.successes += success
        self.episode_pub.publish(messages.status("sim_node", 0, "episode end", {
            "episode": self.episode, "steps": self.step, "success": int(success),
            "missed_ticks": self.episode_missed, "stale_ticks": self.episode_stale}))
        self.get_logger().info(f"episode {self.episode + 1}/{len(self.seeds)}: "
                               f"{'success' if success else 'failure'} in {self.step} steps"
                               + (f", {self.episode_missed} missed and {self.episode_stale} "
                                  "stale ticks" if self.clock != "lockstep" else ""))
        if self.episode + 1 < len(self.seeds):
            self._start_episode(self.episode + 1)
        else:
            self.episode_pub.publish(messages.status("sim_node", 0, "done", {
                "episodes": len(self.seeds), "successes": self.successes,
                "missed_ticks": self.missed, "stale_ticks": self.stale,
                "overruns": self.overruns}))
            self._timer.cancel()
            self.create_timer(0.3, self._finish)  # let the last messages reach their readers

    def _finish(self) -> None:
        raise Finished(0)

    def close(self) -> str:
        self.env.close()
        return (f"{self.successes} successes in {self.episode + 1} episodes, "
                f"{self.missed} missed and {self.stale} stale ticks, {self.overruns} "
                "overrun periods")


def main(args: list[str] | None = None) -> int:
    return run(SimNode, args)


if __name__ == "__main__":
    sys.exit(main())
