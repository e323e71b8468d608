"""Robot side: the MuJoCo task. Publishes each observation, applies the returned action.

Lockstep: the simulator waits for the action that answers its observation (matched by
stamp) before it steps, so a seeded run is reproducible. Episodes use the same reset seeds
as ``hybrid-policy eval`` for the same ``seed``. Before the first observation the node
waits until every topic of the graph shows its publishers and subscribers (``wait_for``),
so nothing is published into an unmatched topic. An action that is malformed or answers
no pending observation is logged, reported on ``events`` and never executed.
"""

from __future__ import annotations

import sys
import time

from diagnostic_msgs.msg import DiagnosticStatus
from rclpy.node import Node
from sensor_msgs.msg import JointState

import sim_envs
from sim_envs.collect import episode_seeds
from hybrid_policy.ros import messages, qos
from hybrid_policy.ros.node_main import Finished, run
from hybrid_policy.ros.params import require, string_list
from hybrid_policy.ros.readiness import ReadyGate, ReadyWaiter


class SimNode(Node):
    def __init__(self) -> None:
        super().__init__("sim_node")
        task = require(self, "task", "")
        self.env = sim_envs.make_task(task)
        self.spec = self.env.task_spec
        episodes = int(self.declare_parameter("episodes", 1).value)
        if episodes < 1:
            raise ValueError(f"episodes must be >= 1, got {episodes}")
        seed = int(self.declare_parameter("seed", 0).value)
        self.seeds = episode_seeds(seed, episodes, split="eval").tolist()
        self.waiter = ReadyWaiter(self, string_list(self, "wait_for"))
        self.action_timeout_s = float(self.declare_parameter("action_timeout_s", 60.0).value)
        control, telemetry = qos.declare(self, "control"), qos.declare(self, "telemetry")
        self.obs_pub = self.create_publisher(JointState, "observation", control)
        self.episode_pub = self.create_publisher(DiagnosticStatus, "episode", telemetry)
        self.events = self.create_publisher(DiagnosticStatus, "events", telemetry)
        self.create_subscription(JointState, "action", self.on_action, control)
        self.gate = ReadyGate(self, {"observation": self.obs_pub, "episode": self.episode_pub,
                                     "events": self.events})
        self.episode, self.step, self.successes = -1, 0, 0
        self.waiting_key: int | None = None
        self.sent_at = 0.0
        self._timer = self.create_timer(0.05, self._tick)
        self.get_logger().info(f"{task}: {episodes} episodes, seed {seed}, lockstep")

    # -- start-up and watchdog -----------------------------------------------------------
    def _tick(self) -> None:
        now = time.monotonic()
        if self.episode < 0:
            if self.gate.ready and self.waiter.done:
                self._start_episode(0)
            return
        if self.waiting_key is not None and now - self.sent_at > self.action_timeout_s:
            self.get_logger().error(f"no action for {self.action_timeout_s:.0f} s: giving up")
            raise Finished(1)

    # -- the loop ------------------------------------------------------------------------
    def _start_episode(self, episode: int) -> None:
        self.episode, self.step = episode, 0
        obs, _ = self.env.reset(seed=self.seeds[episode])
        self.episode_pub.publish(messages.status("sim_node", 0, "episode start", {
            "episode": episode, "reset_seed": self.seeds[episode]}))
        self._publish(obs)

    def _publish(self, obs) -> None:
        stamp = self.get_clock().now().to_msg()
        self.waiting_key = messages.stamp_key(stamp)
        self.sent_at = time.monotonic()
        self.obs_pub.publish(messages.observation_msg(stamp, self.episode, self.step,
                                                      self.spec.obs_fields, obs))

    def on_action(self, msg: JointState) -> None:
        key = messages.stamp_key(msg.header.stamp)
        try:
            if key != self.waiting_key:
                raise messages.MessageError("answers no pending observation: not executed")
            action = messages.parse_action(msg, self.spec.action_dim)
        except messages.MessageError as exc:
            self.get_logger().warning(f"rejected action {key}: {exc}")
            self.events.publish(messages.status("sim_node", 1, "rejected action", {
                "stamp": key, "reason": exc}))
            return
        self.waiting_key = None
        obs, _, terminated, truncated, info = self.env.step(action)
        self.step += 1
        if not (terminated or truncated):
            self._publish(obs)
            return
        success = bool(info["success"])
        self.successes += success
        self.episode_pub.publish(messages.status("sim_node", 0, "episode end", {
            "episode": self.episode, "steps": self.step, "success": int(success)}))
        self.get_logger().info(f"episode {self.episode + 1}/{len(self.seeds)}: "
                               f"{'success' if success else 'failure'} in {self.step} steps")
        if self.episode + 1 < len(self.seeds):
            self._start_episode(self.episode + 1)
        else:
            self.episode_pub.publish(messages.status("sim_node", 0, "done", {
                "episodes": len(self.seeds), "successes": self.successes}))
            self._timer.cancel()
            self.create_timer(0.3, self._finish)  # let the last messages reach their readers

    def _finish(self) -> None:
        raise Finished(0)

    def close(self) -> str:
        self.env.close()
        return f"{self.successes} successes in {self.episode + 1} episodes"


def main(args: list[str] | None = None) -> int:
    return run(SimNode, args)


if __name__ == "__main__":
    sys.exit(main())
