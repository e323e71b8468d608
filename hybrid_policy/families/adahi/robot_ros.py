"""The draft/target modes' side of the draft node (``ros.robot_side``).

Parameters: ``draft`` and ``target`` (only the target's card is read on the robot), the
skipping thresholds or the ``calibration`` they come from (checked against the
checkpoints), ``link``, ``link_in_node`` and the modelled step time (``step_time``,
``draft_ms``, ``target_ms``). The request goes out on ``uplink/request`` and the verdict
comes back on ``downlink/response`` through a link node; with ``link_in_node`` they go
straight to and from the server (``server/request``, ``server/response``), the link's model
applied here as the link node would (``packet_link``: the same draws). With ``step_time:
modelled`` (``sim_time`` graphs) each step is charged what the in-process evaluator charges
it: the draft's ``draft_ms``, and for a verified step the link model's times plus the
server's ``target_ms``, or the deadline when a packet is lost or the verdict would come
after it (``core.realtime.round_trip_ms``); the verdict counts by that modelled time, not by
when it came back, and every step's command is published in step order.
"""

from __future__ import annotations

from typing import Any

from rclpy.serialization import deserialize_message
from sensor_msgs.msg import JointState

from hybrid_policy.core.link import link_profile
from hybrid_policy.core.realtime import round_trip_ms
from hybrid_policy.families.adahi import calibration_file
from hybrid_policy.families.adahi.names import FROM_CALIBRATION
from hybrid_policy.policies.card import read_policy_card
from hybrid_policy.ros import messages
from hybrid_policy.ros.delay_line import DelayLine
from hybrid_policy.ros.graph import uses_server
from hybrid_policy.ros.packet_link import PacketLink, report_loss
from hybrid_policy.ros.params import declare, require
from hybrid_policy.ros.reporting import STEADY
from hybrid_policy.ros.robot_side import RobotSide

SERVER_GONE_S = 30.0  # modelled step time: a verdict not back by then (wall) falls back


class DraftTargetSide(RobotSide):
    def __init__(self, node: Any) -> None:
        super().__init__(node)
        task = node.task.name
        self.draft_path = require(node, "draft", "", "draft checkpoint directory")
        self.target_path = declare(node, "target", "", "target checkpoint directory (only "
                                   "its config.json and weights hash are read on the robot)")
        if uses_server(node.mode_name) and not self.target_path:
            raise ValueError(f"mode {node.mode_name} needs parameter 'target' (the target "
                             "checkpoint: only its config.json is read on the robot)")
        self.draft_card = read_policy_card(self.draft_path, "draft", task)
        self.target_card = (read_policy_card(self.target_path, "target", task)
                            if self.target_path else self.draft_card)
        given = {name: float(declare(node, name, FROM_CALIBRATION,
                                     f"{name}; {FROM_CALIBRATION:g} = from 'calibration'"))
                 for name in ("tau", "uncertainty_tau", "random_skip")}
        path = declare(node, "calibration", "", "calibration JSON (hybrid-policy calibrate) "
                       "giving the skipping threshold")
        self.link = declare(node, "link", "", "link profile the robot uses (checked against "
                            "the calibration's)")
        # the thresholds by the rule every entry point shares (calibration_file)
        self._thresholds = calibration_file.thresholds_for_checkpoints(
            node.mode_name, given, path, task, self.link, node.temperature, self.draft_path,
            self.target_path)
        self.compute = self._step_time()
        self.modelled = self.compute is not None

    @property
    def thresholds(self) -> Any:
        return self._thresholds

    def _step_time(self) -> tuple[float, float] | None:
        """``(draft_ms, target_ms)`` when steps are charged their modelled time
        (``step_time: modelled``), else ``None`` (measured on the steady clock)."""
        kind = declare(self.node, "step_time", "measured", "measured (steady clock, input to "
                       "command) | modelled (sim_time graphs: draft_ms + the link model + "
                       "target_ms, as the in-process evaluator charges a step)")
        draft_ms = float(declare(self.node, "draft_ms", -1.0, "modelled step time: the "
                                 "draft's compute per step in ms"))
        target_ms = float(declare(self.node, "target_ms", -1.0, "modelled step time: the "
                                  "server's compute per verification in ms"))
        if kind not in ("measured", "modelled"):
            raise ValueError(f"step_time must be measured or modelled, got {kind!r}")
        if kind == "measured":
            return None
        if not (draft_ms >= 0 and target_ms >= 0):
            raise ValueError(f"step_time modelled needs draft_ms and target_ms >= 0 (the "
                             f"compute times it charges), got {draft_ms:g} and {target_ms:g}")
        return draft_ms, target_ms

    def topics(self, readers: dict[str, Any], up, down) -> None:
        """The request out and the verdict in (module doc)."""
        node = self.node
        self.link_in_node = bool(declare(
            node, "link_in_node", False, "apply the link model in this node: requests go to "
            "server/request after the modelled uplink, verdicts are taken from "
            "server/response after the modelled downlink (no link_node: a process and two "
            "DDS hops fewer)"))
        self.up_topic, self.down_topic = (("server/request", "server/response")
                                          if self.link_in_node else
                                          ("uplink/request", "downlink/response"))
        self.req_pub = readers[self.up_topic] = node.create_publisher(
            JointState, self.up_topic, up)
        on_response = node.report.guard("response", node.on_response)
        if not self.link_in_node:
            if self.modelled and uses_server(node.mode_name):
                raise ValueError("step_time modelled needs link_in_node: the link's modelled "
                                 "times are applied in this node")
            self.resp_sub = node.create_subscription(JointState, self.down_topic,
                                                     on_response, down)
            return
        if not self.link:
            raise ValueError("link_in_node needs parameter 'link' (the link profile to apply)")
        self.packets = PacketLink(link_profile(self.link),
                                  lambda *loss: report_loss(node.report, *loss))
        self.delay = DelayLine()
        self.resp_sub = node.create_subscription(
            JointState, self.down_topic, node.report.guard(
                "response", lambda raw: self._on_link_response(raw, on_response)),
            down, raw=True)

    def load(self) -> tuple[Any, str]:
        from hybrid_policy.families.adahi.modes import make_mode
        from hybrid_policy.policies import load_policy

        node = self.node
        draft = load_policy(self.draft_path, role="draft", task=node.task.name,
                            temperature=node.temperature)
        mode = make_mode(node.mode_name, draft, self.target_card, self._thresholds)
        return mode, (f"draft {draft.model.num_parameters():,} parameters, deadline "
                      f"{node.deadline_ms:.0f} ms")

    def blocker(self) -> str | None:
        if not uses_server(self.node.mode_name):
            return None
        if self.req_pub.get_subscription_count() < 1:
            return f"nothing reads {self.up_topic} (start the link or target side first)"
        if self.resp_sub.get_publisher_count() < 1:
            return f"nothing publishes {self.down_topic} (start the link first)"
        return None

    def wait_s(self) -> float:
        # modelled step time: the deadline is modelled; the timer only guards a server gone
        return max(SERVER_GONE_S, self.node.deadline_s) if self.modelled else self.node.deadline_s

    def send(self, pending: Any, key: int) -> None:
        request = pending.plan.request
        msg = messages.request_msg(pending.stamp, request)
        if not self.link_in_node:
            self.req_pub.publish(msg)
            return
        # the link is charged the request's CDR size as the protocol computes it (the size
        # eval charges; a ROS test checks it against rclpy's serialiser), so no step pays a
        # second serialisation; the message object is published from the delay line
        up_ms = self.packets.up(request.payload_bytes(), request.seed, key)
        if self.modelled:  # the modelled uplink time is charged, not waited
            pending.wire = up_ms
            if up_ms is None:
                self.node.finish(key, None)
            else:
                self.req_pub.publish(msg)
        elif up_ms is not None:
            self.delay.schedule(up_ms, lambda: self.req_pub.publish(msg))

    def _on_link_response(self, raw: bytes, on_response) -> None:
        """A verdict off the server, handed on after the modelled downlink (or lost)."""
        msg = deserialize_message(raw, JointState)
        if self.modelled:
            self._modelled_verdict(msg)
            return
        delay = self.packets.down(len(raw), messages.stamp_key(msg.header.stamp))
        if delay is None:
            return
        timer = None

        def deliver() -> None:
            timer.cancel()
            self.node.destroy_timer(timer)
            on_response(msg)

        timer = self.node.create_timer(delay / 1e3, deliver, clock=STEADY)

    def _modelled_verdict(self, msg: JointState) -> None:
        """Modelled step time: the verdict counts if its modelled round trip beats the
        deadline (``core.realtime.round_trip_ms``, as in process); else the step falls back."""
        node = self.node
        key = messages.stamp_key(msg.header.stamp)
        if key not in node.pending:
            raise messages.MessageError("answers no pending step (late, duplicate or unknown "
                                        "stamp): dropped")
        response = messages.parse_response(msg)  # malformed: reported, the guard timer acts
        down = self.packets.down(response.payload_bytes(), key)
        rtt = round_trip_ms(node.pending[key].wire, self.compute[1], down, node.deadline_ms)
        node.finish(key, None if rtt is None else response, rtt)

    def latency_ms(self, pending: Any, rtt_ms: Any) -> float | None:
        """A step's modelled time, charged as the in-process evaluator charges it."""
        if not self.modelled:
            return None
        plan = pending.plan
        latency = self.compute[0] if plan.draft_action is not None else 0.0
        if plan.request is not None:
            latency += self.node.deadline_ms if rtt_ms is None else rtt_ms
        return latency

    def close(self) -> None:
        if getattr(self, "delay", None) is not None:
            self.delay.close()
