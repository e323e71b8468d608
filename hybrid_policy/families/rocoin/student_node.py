"""A device of a rocoin fleet (``core.rocoin``): one student (or, ``rocoin_target``, the
full target) on the windows the robots send it.

Each robot ``R`` of ``inputs`` sends its observation window, as a layer-0 feature, on
``exit/R/R/feature`` (``sensor_msgs/Image``, through its link node). Windows join one FIFO
queue; up to ``max_batch`` are answered together ``batch_window_ms`` after the first by
``core.rocoin.serve_students``, the call the in-process fleet makes, and each answer goes
back on ``exit/R/R/answer`` (``sensor_msgs/JointState``, ``name = [StudentAnswer.label()]``)
with the window's stamp. Operations are reported on ``server/batches``.

Faults are drawn on arrival by the same call as in process (``FaultConfig.fault`` with this
device's index in the layout and the ms since activation): a **crash** reports an event and
ends the process (exit status 70; bringup respawns it and the lifecycle manager brings it
back to active); a **timeout** answers ``slow_ms`` late. A malformed window is reported on
``events`` and dropped.

A managed (lifecycle) node: ``configure`` loads the student and warms it up.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np
from sensor_msgs.msg import Image

from hybrid_policy.core.protocol import FeatureRequest, ProtocolError
from hybrid_policy.defaults import DEFAULT_TEMPERATURE
from hybrid_policy.errors import HybridPolicyError
from hybrid_policy.ros import messages, qos
from hybrid_policy.ros.batch_queue import declare_batching, serve_flows, start_batching
from hybrid_policy.ros.delay_line import DelayLine
from hybrid_policy.ros.managed import ManagedNode
from hybrid_policy.ros.node_main import run
from hybrid_policy.ros.params import declare, require, string_list
from hybrid_policy.ros.reporting import ERROR, Reporter

CRASH_STATUS = 70


class StudentNode(ManagedNode):
    def __init__(self) -> None:
        from hybrid_policy.families.rocoin.rocoin import FaultConfig, Layout, RocoinError

        super().__init__("student_node")
        self.task = require(self, "task", "", "task name")
        self.layout = Layout.load(require(self, "layout", "", "the mode's layout JSON "
                                          "(bringup writes it: groups, codes, devices)"))
        self.device = require(self, "device", "", "this device's name in the layout")
        if self.device not in self.layout.devices:
            raise HybridPolicyError(f"device {self.device!r} is not in the layout (devices: "
                                    f"{', '.join(self.layout.devices)})")
        self.index = self.layout.devices.index(self.device)
        self.group = self.layout.group_of(self.device)
        self.students_path = declare(self, "students", "", "the students' checkpoint directory")
        self.target_path = declare(self, "target", "", "target checkpoint (rocoin_target only)")
        self.temperature = float(declare(self, "temperature", DEFAULT_TEMPERATURE,
                                         "the target's temperature (rocoin_target)"))
        if self.layout.mode == "rocoin_target" and not self.target_path:
            raise HybridPolicyError("rocoin_target needs parameter 'target'")
        if self.layout.mode != "rocoin_target" and not self.students_path:
            raise HybridPolicyError(f"{self.layout.mode} needs parameter 'students'")
        self.max_batch, self.window_s = declare_batching(self, "windows")
        self.run_seed = int(declare(self, "seed", 0, "the run's seed (per: episode faults)"))
        try:
            self.faults = FaultConfig(
                p=float(declare(self, "fault_p", 0.0, "probability a request fails")),
                per=declare(self, "fault_per", "request", "request | episode"),
                kind=declare(self, "fault_kind", "mixed", "crash | timeout | mixed"),
                slow_ms=float(declare(self, "slow_ms", 500.0, "a timed-out answer's delay")),
                episode_ms=float(declare(self, "episode_ms", 2000.0, "per: episode window")),
                devices=tuple(string_list(self, "fault_devices", "devices that may fail "
                                          "(unset: every device)")))
        except RocoinError as exc:
            raise HybridPolicyError(str(exc)) from None
        inputs = string_list(self, "inputs", "the robots that send this device windows")
        if not inputs:
            raise HybridPolicyError("parameter 'inputs' is required (robot names)")
        up, down = qos.declare(self, "uplink"), qos.declare(self, "downlink")
        telemetry = qos.declare(self, "telemetry")
        self.report = Reporter(self, telemetry)
        self.report.extra = lambda: {"state": self.state_label, "served": self.served}
        publishers = {"events": self.report.events}
        guarded = self.report.guard("feature", self.on_feature)
        serve_flows(self, [(r, r) for r in inputs], Image, "feature",
                    lambda msg, robot, pub, info: guarded(msg, pub, info), up, down, publishers)
        # queue: (stamp, window, answer publisher, late ms, arrival ns) in arrival order
        self.batch_pub, self.gate, self.queue = start_batching(self, telemetry, publishers,
                                                               self._serve_batch)
        self.delay = DelayLine()
        self.model = None
        self.served = 0
        self.activated_at = time.monotonic()
        self.get_logger().info(f"{self.layout.mode}: device {self.device} (index "
                               f"{self.index}), group {self.group}, faults {self.faults}: "
                               "unconfigured")

    def load(self) -> str:
        from hybrid_policy.families.rocoin.rocoin import TargetPart, serve_students

        if self.layout.mode == "rocoin_target":
            from hybrid_policy.policies import load_policy

            self.model = TargetPart(load_policy(self.target_path, role="target",
                                                task=self.task, temperature=self.temperature))
        else:
            from hybrid_policy.errors import CheckpointError
            from hybrid_policy.families.rocoin.students import load_students

            try:
                nets, _ = load_students(self.students_path, self.task)
            except CheckpointError as exc:
                raise HybridPolicyError(str(exc)) from None
            if len(nets) != len(self.layout.groups):
                raise HybridPolicyError(f"{self.students_path}: {len(nets)} students, the "
                                        f"layout has {len(self.layout.groups)} groups")
            self.model = nets[self.group]
        if list(self.model.codes) != list(self.layout.codes[self.group]):
            raise HybridPolicyError(f"the model holds codes {list(self.model.codes)}; group "
                                    f"{self.group} holds {self.layout.codes[self.group]}")
        window = np.zeros((self.model.history, self.model.obs_dim), np.float32)
        for i in range(3):  # warm up: the first torch calls are slow
            serve_students(self.model, self.group, [FeatureRequest(0, window, i)])
        return f"student {self.group} with codes {list(self.model.codes)}"

    def unload(self) -> None:
        self.model = None

    def activation_blocker(self) -> str | None:
        return f"readers not matched {self.gate.missing()}" if not self.gate.matched() else None

    def activated(self) -> None:
        self.activated_at = time.monotonic()

    def on_feature(self, msg: Image, pub, info: dict) -> None:
        from hybrid_policy.families.rocoin.rocoin import check_window

        if not self.active:
            raise messages.MessageError("student_node is not active: not served")
        req = messages.parse_feature(msg)
        try:
            check_window(self.model, req)
        except ProtocolError as exc:
            raise messages.MessageError(str(exc)) from None
        now_ms = (time.monotonic() - self.activated_at) * 1e3
        kind = self.faults.fault(req.seed, self.index, self.device, now_ms, self.run_seed)
        if kind == "crash":
            self._crash(msg)
        late_ms = self.faults.slow_ms if kind == "timeout" else 0.0
        if kind == "timeout":
            self.report.event("timeout fault", {"stamp": messages.stamp_key(msg.header.stamp),
                                                "slow_ms": late_ms}, log=False)
        self.queue.add((msg.header.stamp, req, pub, late_ms, info["received_timestamp"]))

    def _crash(self, msg: Image) -> None:
        """The fault model's crash: the process is gone (bringup respawns it)."""
        stamp = messages.stamp_key(msg.header.stamp)
        self.report.event("crash fault", {"stamp": stamp, "device": self.device},
                          level=ERROR, log=False)
        self.get_logger().error(f"crash fault on the window of stamp {stamp}: exiting "
                                f"(status {CRASH_STATUS})")
        time.sleep(0.2)  # let the event leave
        os._exit(CRASH_STATUS)

    def _serve_batch(self, batch: list) -> None:
        from hybrid_policy.families.rocoin.rocoin import serve_students

        answers = serve_students(self.model, self.group, [r for _, r, *_ in batch])
        for (stamp, _, pub, late_ms, _), ans in zip(batch, answers):
            out = messages.labelled_msg(stamp, ans)
            if late_ms > 0:
                self.delay.schedule(late_ms, lambda p=pub, m=out: p.publish(m))
            else:
                pub.publish(out)
        self.served += len(batch)

    def deactivated(self) -> None:
        self.queue.drop_all("windows")

    def close(self) -> str:
        self.delay.close()
        return f"served {self.served}; events: {dict(self.report.counts)}"


def main(args: list[str] | None = None) -> int:
    return run(StudentNode, args)


if __name__ == "__main__":
    sys.exit(main())
