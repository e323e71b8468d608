"""Server side: the target policy answers each request (verify the draft, or act).

A managed (lifecycle) node: ``configure`` loads the target and warms it up, ``activate``
starts serving; requests that arrive while it is not active are reported and not answered
(the robot falls back at its deadline). The work is ``core.server.serve``: the node only
decodes the request, calls it and encodes the response with the request's stamp. A
malformed request is logged, reported on ``events`` and not answered.
"""

from __future__ import annotations

import sys
import time

import numpy as np
from sensor_msgs.msg import JointState

from hybrid_policy.core.protocol import ProtocolError, Request
from hybrid_policy.defaults import DEFAULT_TEMPERATURE
from hybrid_policy.policies.card import read_policy_card
from hybrid_policy.ros import messages, qos
from hybrid_policy.ros.managed import ManagedNode
from hybrid_policy.ros.node_main import run
from hybrid_policy.ros.params import declare, require
from hybrid_policy.ros.readiness import ReadyGate
from hybrid_policy.ros.reporting import Reporter


class TargetNode(ManagedNode):
    def __init__(self) -> None:
        super().__init__("target_node")
        self.task = require(self, "task", "", "task name (hybrid-policy tasks)")
        self.path = require(self, "target", "", "target checkpoint directory")
        self.temperature = float(declare(self, "temperature", DEFAULT_TEMPERATURE,
                                         "sampling temperature of the code distributions"))
        read_policy_card(self.path, "target", self.task)  # refuse a wrong checkpoint now
        self.target = None
        self.served = 0
        self.busy_ms = {"parse": 0.0, "serve": 0.0, "reply": 0.0}  # summed over requests
        self.report = Reporter(self, qos.declare(self, "telemetry"))
        self.report.extra = lambda: {"state": self.state_label,
                                     "served": self.served, **self._mean_ms()}
        self.pub = self.create_publisher(JointState, "server/response",
                                         qos.declare(self, "downlink"))
        self.create_subscription(JointState, "server/request",
                                 self.report.guard("request", self.on_request),
                                 qos.declare(self, "uplink"))
        self.gate = ReadyGate(self, {"server/response": self.pub, "events": self.report.events},
                              announce=False)
        self.get_logger().info(f"{self.task} target {self.path}: unconfigured")

    def load(self) -> str:
        """The target, warmed up."""
        from hybrid_policy.policies import load_policy

        self.target = load_policy(self.path, role="target", task=self.task,
                                  temperature=self.temperature)
        self._warm_up()
        return f"{self.target.model.num_parameters():,} parameters, serving when active"

    def unload(self) -> None:
        self.target = None

    def activation_blocker(self) -> str | None:
        return f"readers not matched {self.gate.missing()}" if not self.gate.matched() else None

    def _warm_up(self, rounds: int = 5) -> None:
        """Run the model a few times before serving: the first calls of a torch model are
        several times slower, and the robot's first deadline should not pay for them."""
        from hybrid_policy.core.server import serve

        t = self.target
        window = np.zeros((t.history, t.obs_dim), np.float32)
        probs = np.full((t.levels, t.codebook_size), 1.0 / t.codebook_size)
        for i in range(rounds):
            serve(t, Request("verify", window, i, (0,) * t.levels, probs))
            serve(t, Request("act", window, i))

    def on_request(self, msg: JointState) -> None:
        from hybrid_policy.core.server import serve

        if not self.active:
            raise messages.MessageError("target_node is not active: not served")
        t0 = time.perf_counter()
        try:
            req = messages.parse_request(msg)
            t1 = time.perf_counter()
            resp = serve(self.target, req)
        except ProtocolError as exc:
            raise messages.MessageError(str(exc)) from None
        t2 = time.perf_counter()
        self.served += 1
        self.pub.publish(messages.response_msg(msg.header.stamp, resp))
        t3 = time.perf_counter()
        self.busy_ms["parse"] += (t1 - t0) * 1e3
        self.busy_ms["serve"] += (t2 - t1) * 1e3
        self.busy_ms["reply"] += (t3 - t2) * 1e3

    def _mean_ms(self) -> dict[str, float]:
        """Mean ms per served request spent parsing, serving and replying."""
        return {f"{k}_ms": round(v / max(self.served, 1), 3) for k, v in self.busy_ms.items()}

    def close(self) -> str:
        return f"served {self.served} ({self._mean_ms()}); events: {dict(self.report.counts)}"


def main(args: list[str] | None = None) -> int:
    return run(TargetNode, args)


if __name__ == "__main__":
    sys.exit(main())
