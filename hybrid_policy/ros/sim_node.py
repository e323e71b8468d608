"""Robot side: the MuJoCo task. Publishes each observation, applies the returned action.

Two clocks (parameter ``clock``):

- ``lockstep``: the simulator waits for the action that answers its observation (matched
  by stamp) before it steps, so a seeded run is reproducible.
- ``realtime``: the simulator steps every ``1 / rate_hz`` seconds whether or not an action
  came. It applies the action that answered the last observation, or holds still (zero
  action) and counts a *missed tick* when none came in time; an action that arrives after
  its tick answers no pending observation and is dropped by stamp. When the simulator
  itself was starved past a period it counts the overrun and keeps the period (no burst
  of catch-up steps).

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
answers no pending observation is logged, reported on ``events`` and never executed.
"""

from __future__ import annotations

import sys
import time

import numpy as np
from diagnostic_msgs.msg import DiagnosticStatus
from geometry_msgs.msg import TwistStamped
from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_srvs.srv import Trigger

import sim_envs
from sim_envs.collect import episode_seeds
from sim_envs.fetch import FINGER_JOINTS
from hybrid_policy.ros import messages, qos, robot_io
from hybrid_policy.ros.graph import CLOCKS, INTERFACES, TOPICS
from hybrid_policy.ros.node_main import Finished, run
from hybrid_policy.ros.params import declare, require, string_list
from hybrid_policy.ros.readiness import ReadyGate, ReadyWaiter
from hybrid_policy.ros.reporting import Reporter


FRAME = "world"  # the frame of every pose, twist and command of the simulated Fetch


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
        rate = float(declare(self, "rate_hz", 10.0))
        if not 0 < rate <= 1000:
            raise ValueError(f"rate_hz must be in (0, 1000], got {rate}")
        self.period_s = 1.0 / rate
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
        self.commands: dict[str, np.ndarray] = {}  # standard: this step's twist and gripper
        self.resetting = False
        self.gate = ReadyGate(self, readers)
        self.episode, self.step, self.successes = -1, 0, 0
        self.missed = self.episode_missed = self.silent = self.overruns = 0
        self.last_tick = 0.0  # time.monotonic() of the last realtime tick
        self.waiting_key: int | None = None
        self.received: np.ndarray | None = None  # realtime: the action for waiting_key
        self.sent_at = 0.0
        self._timer = self.create_timer(0.05, self._tick)
        self.get_logger().info(f"{task}: {episodes} episodes, seed {seed}, {self.clock}"
                               + (f" at {rate:g} Hz" if self.clock == "realtime" else ""))

    # -- start-up and watchdog -----------------------------------------------------------
    def _tick(self) -> None:
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
        self.episode, self.step, self.episode_missed = episode, 0, 0
        obs, _ = self.env.reset(seed=self.seeds[episode])
        self.episode_pub.publish(messages.status("sim_node", 0, "episode start", {
            "episode": episode, "reset_seed": self.seeds[episode]}))
        self._publish(obs)

    def _publish(self, obs) -> None:
        stamp = self.get_clock().now().to_msg()
        self.waiting_key = messages.stamp_key(stamp)
        self.received = None
        self.commands = {}
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
        if key != self.waiting_key or self.received is not None:
            raise messages.MessageError("answers no pending observation (late or duplicate): "
                                        "not executed")
        self._execute(messages.parse_action(msg, self.spec.action_dim))

    def on_twist(self, msg: TwistStamped) -> None:
        self._command(msg, "twist", lambda: robot_io.parse_twist(msg, FRAME))

    def on_gripper(self, msg: JointState) -> None:
        self._command(msg, "gripper", lambda: robot_io.parse_gripper(msg, FINGER_JOINTS))

    def _command(self, msg, what: str, parse) -> None:
        """One half of a standard step's command; the step runs once both halves answered
        the waiting snapshot (a robot told to hold still gets both too)."""
        key = messages.stamp_key(msg.header.stamp)
        if key != self.waiting_key or what in self.commands or self.received is not None:
            raise messages.MessageError("answers no pending snapshot (late or duplicate): "
                                        "not executed")
        self.commands[what] = parse()
        if len(self.commands) == 2:
            self._execute(self.env.action_from_command(self.commands["twist"],
                                                       self.commands["gripper"]))

    def _execute(self, action: np.ndarray) -> None:
        if self.clock == "lockstep":
            self._apply(action)
        else:
            self.received = action  # applied at the next tick

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
        action = self.received
        if action is None:  # nothing in time: hold still, and count it
            self.missed += 1
            self.episode_missed += 1
            action = np.zeros(self.spec.action_dim, np.float32)
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
            "missed_ticks": self.episode_missed}))
        self.get_logger().info(f"episode {self.episode + 1}/{len(self.seeds)}: "
                               f"{'success' if success else 'failure'} in {self.step} steps"
                               + (f", {self.episode_missed} missed ticks"
                                  if self.clock == "realtime" else ""))
        if self.episode + 1 < len(self.seeds):
            self._start_episode(self.episode + 1)
        else:
            self.episode_pub.publish(messages.status("sim_node", 0, "done", {
                "episodes": len(self.seeds), "successes": self.successes,
                "missed_ticks": self.missed, "overruns": self.overruns}))
            self._timer.cancel()
            self.create_timer(0.3, self._finish)  # let the last messages reach their readers

    def _finish(self) -> None:
        raise Finished(0)

    def close(self) -> str:
        self.env.close()
        return (f"{self.successes} successes in {self.episode + 1} episodes, "
                f"{self.missed} missed ticks, {self.overruns} overrun periods")


def main(args: list[str] | None = None) -> int:
    return run(SimNode, args)


if __name__ == "__main__":
    sys.exit(main())
