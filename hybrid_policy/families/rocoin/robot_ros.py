"""RoCoIn's side of the draft node (``ros.robot_side``): the robot runs the draft and sends
its observation window to every device of the layout (``rocoin_layout``, as ``bringup``
wrote it) on ``out/<device>/<robot>/feature``; each device's answer
(``rocoin.StudentAnswer``) comes back on ``out/<device>/<robot>/answer``. The first answer
per group counts (an answer that is not its group's part is reported and ignored); once
every group answered, the combined action is executed. Without them by the deadline the
draft acts. Parameters: ``rocoin_layout``, ``robot``, ``draft``, ``target`` (its card)."""

from __future__ import annotations

from typing import Any

from sensor_msgs.msg import Image

from hybrid_policy.policies.card import read_policy_card
from hybrid_policy.ros import messages
from hybrid_policy.ros.params import declare, require
from hybrid_policy.ros.robot_side import RobotSide

REMEMBERED = 256  # recently finished steps whose late replicas are dropped quietly


class RocoinSide(RobotSide):
    def __init__(self, node: Any) -> None:
        from hybrid_policy.families.rocoin.rocoin import Layout, RocoinError

        super().__init__(node)
        task = node.task.name
        self.draft_path = require(node, "draft", "", "draft checkpoint directory")
        target = declare(node, "target", "", "target checkpoint directory (its card: the "
                         "history length the students read)")
        self.target_card = (read_policy_card(target, "target", task) if target
                            else read_policy_card(self.draft_path, "draft", task))
        try:
            self.layout = Layout.load(require(node, "rocoin_layout", "", "the layout's JSON "
                                              "(bringup writes it: groups, codes, devices)"))
        except RocoinError as exc:
            raise ValueError(str(exc)) from None
        if self.layout.mode != node.mode_name:
            raise ValueError(f"the layout is for {self.layout.mode}, not {node.mode_name}")
        self.name = self.robot()
        self.answered: dict[int, None] = {}

    def topics(self, readers: dict[str, Any], up, down) -> None:
        """The window to every device, an answer from each."""
        self.flow_topics(readers, self.layout.devices, self.name, "feature", Image, up, down,
                         on_answer=self.on_answer)

    def load(self) -> tuple[Any, str]:
        from hybrid_policy.families.rocoin.rocoin import RocoinMode
        from hybrid_policy.policies import load_policy

        node = self.node
        draft = load_policy(self.draft_path, role="draft", task=node.task.name,
                            temperature=node.temperature)
        return RocoinMode(node.mode_name, draft, self.target_card.history, self.layout), (
            f"draft {draft.model.num_parameters():,} parameters, deadline "
            f"{node.deadline_ms:.0f} ms")

    def send(self, pending: Any, key: int) -> None:
        pending.wire = self.node.mode.gather(pending.plan)
        msg = messages.feature_msg(pending.stamp, pending.plan.request)
        for pub in self.pubs.values():
            pub.publish(msg)

    def on_answer(self, msg: Any, device: str) -> None:
        """A device's answer; the step acts once every group has answered."""
        from hybrid_policy.core.protocol import ProtocolError

        key = messages.stamp_key(msg.header.stamp)
        if key in self.answered:
            return  # a later replica of a group that had answered: not needed
        if key not in self.node.pending:
            raise messages.MessageError("answers no pending step (late, duplicate or unknown "
                                        "stamp): dropped")
        from hybrid_policy.families.rocoin.rocoin import StudentAnswer

        answer = messages.parse_labelled(msg, StudentAnswer, "student answer")
        gather = self.node.pending[key].wire
        try:
            gather.add(device, answer)
        except ProtocolError as exc:  # ignored for its group, reported
            raise messages.MessageError(str(exc)) from None
        if gather.complete:
            self.answered[key] = None
            while len(self.answered) > REMEMBERED:
                self.answered.pop(next(iter(self.answered)))
            self.node.finish(key, gather.response())
