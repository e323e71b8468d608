"""A compute node of an early-exit fleet: its part of the net and its exit.

Each feature that reaches the node (``exit/<robot>/<sender>/feature``, a
``sensor_msgs/Image``; ``sender`` is the robot itself or the node before) joins one FIFO
queue; up to ``max_batch`` are run together ``batch_window_ms`` after the first, by
``core.early_exit.serve_features``, the same call the in-process fleet makes. A feature
whose exit is confident enough (``threshold``; the last part of the net always answers)
is answered on ``exit/<robot>/<sender>/answer`` with the request's stamp; the others go on
to the next node their offloading draws (``out/<dest>/<robot>/feature``), and that node's
answer, when it comes back on ``out/<dest>/<robot>/answer``, is relayed down the way the
request came. Every operation is reported on ``server/batches`` as a target node reports
its batches. A malformed feature is reported on ``events`` and not answered (the robot
acts on its own exit at its deadline).

A managed (lifecycle) node: ``configure`` loads the net and warms it up.
"""

from __future__ import annotations

import sys

import numpy as np
from sensor_msgs.msg import Image, JointState

from hybrid_policy.families.exits.early_exit import check_threshold
from hybrid_policy.core.protocol import FeatureRequest, ProtocolError, Response
from hybrid_policy.defaults import DEFAULT_TEMPERATURE
from hybrid_policy.errors import HybridPolicyError
from hybrid_policy.ros import messages, qos
from hybrid_policy.ros.managed import ManagedNode
from hybrid_policy.ros.node_main import run
from hybrid_policy.ros.params import declare, require, string_list
from hybrid_policy.ros.batch_queue import declare_batching, serve_flows, start_batching
from hybrid_policy.ros.reporting import Reporter


def _pairs(entries: list[str], what: str) -> list[tuple[str, str]]:
    out = []
    for e in entries:
        a, _, b = e.rpartition(":")
        if not a or not b:
            raise HybridPolicyError(f"{what} entry {e!r} is not 'name:value'")
        out.append((a, b))
    return out


class ExitNode(ManagedNode):
    def __init__(self) -> None:
        super().__init__("exit_node")
        self.task = require(self, "task", "", "task name")
        self.path = require(self, "early_exit", "", "early-exit net checkpoint directory")
        self.temperature = float(declare(self, "temperature", DEFAULT_TEMPERATURE,
                                         "sampling temperature of the code distributions"))
        self.end = int(declare(self, "end", 0, "the layer at which this node's part ends"))
        if self.end < 1:
            raise HybridPolicyError(f"parameter 'end' must be a layer >= 1, got {self.end}")
        self.threshold = check_threshold(float(declare(
            self, "threshold", 1.0, "confidence at which this node's exit answers")),
            "parameter 'threshold'")
        self.offload = {d: float(p) for d, p in _pairs(string_list(
            self, "offload", "dest:probability of each next node"), "offload")}
        if any(not 0 <= p <= 1 for p in self.offload.values()):
            raise HybridPolicyError(f"offload probabilities must be in [0, 1]: {self.offload}")
        self.max_batch, self.window_s = declare_batching(self, "features")
        inputs = _pairs(string_list(self, "inputs", "robot:sender of every flow reaching "
                                    "this node"), "inputs")
        if not inputs:
            raise HybridPolicyError("parameter 'inputs' is required (robot:sender entries)")
        up, down = qos.declare(self, "uplink"), qos.declare(self, "downlink")
        telemetry = qos.declare(self, "telemetry")
        self.report = Reporter(self, telemetry)
        self.report.extra = lambda: {"state": self.state_label, "served": self.served}
        publishers = {"events": self.report.events}
        guarded = self.report.guard("feature", self.on_feature)
        serve_flows(self, inputs, Image, "feature", guarded, up, down, publishers)
        self.forward: dict[tuple[str, str], object] = {}
        relay = self.report.guard("answer", self.on_answer)
        for robot in sorted({r for r, _ in inputs}):
            for dest in self.offload:
                name = f"out/{dest}/{robot}/"
                pub = self.create_publisher(Image, name + "feature", up)
                self.forward[(dest, robot)] = pub
                publishers[name + "feature"] = pub
                self.create_subscription(JointState, name + "answer",
                                         lambda msg, r=robot: relay(msg, r), down)
        # queue: (stamp, feature, robot, answer publisher, arrival ns) in arrival order
        self.batch_pub, self.gate, self.queue = start_batching(self, telemetry, publishers,
                                                               self._serve_batch)
        self.waiting: dict[tuple[str, int], object] = {}  # forwarded: where the answer goes
        self.net = None
        self.served = 0
        self.get_logger().info(f"part ending at layer {self.end}, threshold "
                               f"{self.threshold:.4f}, offload {self.offload}: unconfigured")

    def load(self) -> str:
        from hybrid_policy.families.exits.early_exit import serve_features
        from hybrid_policy.families.exits.net import load_early_exit

        self.net = load_early_exit(self.path, self.task, self.temperature)
        if self.end not in self.net.exits:
            raise HybridPolicyError(f"the net has no exit after layer {self.end}; exits: "
                                    f"{list(self.net.exits)}")
        window = np.zeros((self.net.history, self.net.obs_dim), np.float32)
        for i in range(3):  # warm up: the first torch calls are slow
            serve_features(self.net, self.end, 0.0, {}, [FeatureRequest(0, window, i)])
        return f"exit after layer {self.end} of {list(self.net.exits)}"

    def unload(self) -> None:
        self.net = None

    def activation_blocker(self) -> str | None:
        return f"readers not matched {self.gate.missing()}" if not self.gate.matched() else None

    def _shape(self, layer: int) -> tuple[int, int]:
        return (self.net.history, self.net.obs_dim if layer == 0 else self.net.d_model)

    def on_feature(self, msg: Image, robot: str, pub, info: dict) -> None:
        from hybrid_policy.families.exits.early_exit import check_feature

        if not self.active:
            raise messages.MessageError("exit_node is not active: not served")
        feature = messages.parse_feature(msg)
        try:
            check_feature(self.net, self.end, feature)
        except ProtocolError as exc:
            raise messages.MessageError(str(exc)) from None
        self.queue.add((msg.header.stamp, feature, robot, pub, info["received_timestamp"]))

    def _serve_batch(self, batch: list) -> None:
        from hybrid_policy.families.exits.early_exit import serve_features

        outcomes = serve_features(self.net, self.end, self.threshold, self.offload,
                                  [f for _, f, *_ in batch])
        for (stamp, _, robot, pub, _), (out, dest, _) in zip(batch, outcomes):
            if isinstance(out, Response):
                pub.publish(messages.response_msg(stamp, out))
            else:
                self.waiting[(robot, messages.stamp_key(stamp))] = pub
                self.forward[(dest, robot)].publish(messages.feature_msg(stamp, out))
        self.served += len(batch)

    def on_answer(self, msg: JointState, robot: str) -> None:
        """The next node's answer to a forwarded feature: down the way it came."""
        pub = self.waiting.pop((robot, messages.stamp_key(msg.header.stamp)), None)
        if pub is None:
            raise messages.MessageError("answer to no forwarded feature (late or duplicate)")
        pub.publish(msg)

    def deactivated(self) -> None:
        self.queue.drop_all("features")

    def close(self) -> str:
        return f"served {self.served}; events: {dict(self.report.counts)}"


def main(args: list[str] | None = None) -> int:
    return run(ExitNode, args)


if __name__ == "__main__":
    sys.exit(main())
