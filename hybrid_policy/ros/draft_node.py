"""Robot side: the draft policy, the action deviation and the skip decision of one mode.

Per observation the node calls the mode's ``plan`` (core.modes: draft, Δ, skip rule),
sends the request if there is one, and publishes the action that ``resolve`` gives once the
verdict is back, or the draft's own action when it is not back within ``deadline_ms``.
A verdict that arrives after its step was resolved, or that answers no step, is dropped by
stamp and reported on ``events``: it is never applied to a later step.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

import numpy as np
import torch
from diagnostic_msgs.msg import DiagnosticStatus
from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.node import Node
from rclpy.timer import Timer
from sensor_msgs.msg import JointState

from sim_envs import task_spec
from sim_envs.spec import ACTION_FIELDS
from hybrid_policy.core.evaluator import episode_rng
from hybrid_policy.core.modes import (
    MODE_NAMES, NEEDS_THRESHOLDS, Plan, Thresholds, make_mode, parse_modes,
)
from hybrid_policy.core.protocol import Response
from hybrid_policy.core.stepmetrics import FIELDS, rejected
from hybrid_policy.policies import load_policy, read_policy_card
from hybrid_policy.policies.runtime import DEFAULT_TEMPERATURE
from hybrid_policy.ros import messages, qos
from hybrid_policy.ros.graph import uses_server
from hybrid_policy.ros.node_main import run
from hybrid_policy.ros.params import require
from hybrid_policy.ros.readiness import ReadyGate


@dataclass
class Pending:
    plan: Plan
    stamp: object  # builtin_interfaces/Time of the observation
    episode: int
    step: int
    received: float  # time.monotonic() when the observation arrived
    timer: Timer


class DraftNode(Node):
    def __init__(self) -> None:
        super().__init__("draft_node")
        self.task = task_spec(require(self, "task", ""))
        mode = require(self, "mode", "")
        if parse_modes(mode) != [mode]:  # "all" or a list: one node runs one mode
            raise ValueError(f"mode must be one of {', '.join(MODE_NAMES)}, got {mode!r}")
        self.seed = int(self.declare_parameter("seed", 0).value)
        temperature = float(self.declare_parameter("temperature", DEFAULT_TEMPERATURE).value)
        self.deadline_s = float(self.declare_parameter("deadline_ms", 100.0).value) / 1e3
        if not self.deadline_s > 0:
            raise ValueError(f"deadline_ms must be > 0, got {self.deadline_s * 1e3}")
        thresholds = Thresholds(float(self.declare_parameter("tau", 0.0).value),
                                float(self.declare_parameter("uncertainty_tau", 0.0).value),
                                float(self.declare_parameter("random_skip", 0.0).value))
        torch.set_num_threads(int(self.declare_parameter("threads", 1).value))
        draft = load_policy(require(self, "draft", ""), role="draft", task=self.task.name,
                            temperature=temperature)
        target_path = self.declare_parameter("target", "").value
        if uses_server(mode) and not target_path:
            raise ValueError(f"mode {mode} needs parameter 'target' (the target checkpoint: "
                             "only its config.json is read on the robot)")
        card = read_policy_card(target_path, "target", self.task.name) if target_path else draft
        self.mode = make_mode(mode, draft, card,
                              thresholds if mode in NEEDS_THRESHOLDS else None)

        self._warm_up()
        control, telemetry = qos.declare(self, "control"), qos.declare(self, "telemetry")
        # realtime: the control topics carry a DDS deadline of two periods, on both ends
        control_deadline_ms = float(self.declare_parameter("control_deadline_ms", 0.0).value)
        callbacks = None
        if control_deadline_ms > 0:
            control = qos.with_deadline(control, control_deadline_ms / 1e3)
            callbacks = SubscriptionEventCallbacks(deadline=self._on_observation_deadline)
        self.act_pub = self.create_publisher(JointState, "action", control)
        self.req_pub = self.create_publisher(JointState, "uplink/request",
                                             qos.declare(self, "uplink"))
        self.step_pub = self.create_publisher(JointState, "step", telemetry)
        self.events = self.create_publisher(DiagnosticStatus, "events", telemetry)
        self.create_subscription(JointState, "downlink/response", self.on_response,
                                 qos.declare(self, "downlink"))
        self.pending: dict[int, Pending] = {}
        self.episode: int | None = None
        self.rng = episode_rng(self.seed, 0)
        self.counts = {"steps": 0, "uplink": 0, "fallbacks": 0, "stale": 0, "rejected": 0,
                       "silent": 0}
        self.create_subscription(JointState, "observation", self.on_observation, control,
                                 event_callbacks=callbacks)
        self.gate = ReadyGate(self, {"action": self.act_pub, "uplink/request": self.req_pub,
                                     "step": self.step_pub, "events": self.events})
        self.get_logger().info(
            f"{mode} on {self.task.name}: draft {draft.model.num_parameters():,} parameters, "
            f"tau {thresholds.tau:.4g}, deadline {self.deadline_s * 1e3:.0f} ms")

    def _warm_up(self, rounds: int = 5) -> None:
        """Plan a few times on a zero observation so the first real step is not slow."""
        rng = np.random.default_rng(0)  # not the episode's stream
        for _ in range(rounds):
            self.mode.plan(np.zeros(self.task.obs_dim, np.float32), rng)
        self.mode.reset()

    # -- observation → plan → request or action ------------------------------------------
    def on_observation(self, msg: JointState) -> None:
        received = time.monotonic()
        try:
            episode, step, obs = messages.parse_observation(msg, self.task.obs_fields)
        except messages.MessageError as exc:
            self._reject("observation", msg.header.stamp, exc)
            return
        if episode is None:  # a robot without episodes: one continuous run
            episode, step = 0, self.counts["steps"]
        if episode != self.episode:
            self._new_episode(episode)
        plan = self.mode.plan(obs, self.rng)
        if plan.request is None:
            self._act(plan, msg.header.stamp, episode, step, received, None)
            return
        key = messages.stamp_key(msg.header.stamp)
        timer = self.create_timer(self.deadline_s, lambda: self._expire(key))
        self.pending[key] = Pending(plan, msg.header.stamp, episode, step, received, timer)
        self.req_pub.publish(messages.request_msg(msg.header.stamp, plan.request))

    def _on_observation_deadline(self, event) -> None:
        self.counts["silent"] += 1
        if self.counts["silent"] == 1:
            self.get_logger().warning("no observation for two control periods (DDS deadline)")

    def _new_episode(self, episode: int) -> None:
        for key in list(self.pending):  # steps of the last episode can no longer be acted on
            self._expire(key)
        self.mode.reset()
        self.rng = episode_rng(self.seed, episode)
        self.episode = episode

    # -- verdicts ------------------------------------------------------------------------
    def on_response(self, msg: JointState) -> None:
        key = messages.stamp_key(msg.header.stamp)
        pending = self.pending.get(key)
        if pending is None:
            self.counts["stale"] += 1
            self._reject("response", msg.header.stamp,
                         "answers no pending step (late, duplicate or unknown stamp): dropped")
            return
        try:
            response = messages.parse_response(msg)
            if len(response.action) != len(ACTION_FIELDS):
                raise messages.MessageError(f"response action has {len(response.action)} values, "
                                            f"expected {len(ACTION_FIELDS)}")
        except messages.MessageError as exc:
            self._reject("response", msg.header.stamp, exc)  # keep waiting: deadline decides
            return
        self._finish(key, response)

    def _expire(self, key: int) -> None:
        if key in self.pending:
            self.counts["fallbacks"] += 1
            self._finish(key, None)

    def _finish(self, key: int, response: Response | None) -> None:
        p = self.pending.pop(key)
        p.timer.cancel()
        self.destroy_timer(p.timer)
        self._act(p.plan, p.stamp, p.episode, p.step, p.received, response)

    def _act(self, plan: Plan, stamp, episode: int, step: int, received: float,
             response: Response | None) -> None:
        action = self.mode.resolve(plan, response)
        self.act_pub.publish(messages.action_msg(stamp, ACTION_FIELDS, action))
        latency_ms = (time.monotonic() - received) * 1e3
        self.counts["steps"] += 1
        req = plan.request
        verdict = rejected(req, response)
        self.counts["uplink"] += req is not None
        values = {
            "episode": episode, "step": step, "uplink": float(req is not None),
            "uplink_bytes": 0 if req is None else req.payload_bytes(),
            "deviation": plan.deviation, "uncertainty": plan.uncertainty,
            "verdict": float(response is not None),
            "accepted": np.nan if verdict is None else float(not verdict),
            "fallback": float(req is not None and response is None),
            "latency_ms": latency_ms,
        }
        self.step_pub.publish(messages.joint_state(stamp, FIELDS, [values[f] for f in FIELDS]))

    def _reject(self, what: str, stamp, reason: object) -> None:
        self.counts["rejected"] += 1
        self.get_logger().warning(f"rejected {what} {messages.stamp_key(stamp)}: {reason}")
        self.events.publish(messages.status("draft_node", 1, f"rejected {what}", {
            "stamp": messages.stamp_key(stamp), "reason": reason}))

    def close(self) -> str:
        return f"counts: {self.counts}"


def main(args: list[str] | None = None) -> int:
    return run(DraftNode, args)


if __name__ == "__main__":
    sys.exit(main())
