"""The RoCoIn modes in a fleet (``core.fleet``): a tick sends a copy of the window to every
device of the layout, each over the robot's link with its own packet randomness
(``rocoin.device_hop``); a device that the fault model fails drops it (crash: and everything
else for ``restart_ms``, its queue included) or answers ``slow_ms`` late (timeout). The step
resolves when every group's first answer is back, or falls back to the draft at the
deadline."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from hybrid_policy.core.fleet import FleetEvaluator, FleetRobot, FleetWork, Pending, StepRef
from hybrid_policy.core.plan import Mode, Plan
from hybrid_policy.core.topology import Robot
from hybrid_policy.families.rocoin.rocoin import RocoinMode, device_hop, serve_students


@dataclass
class _Fanout:
    """One step: its copies travel to every device; the step resolves once every group
    answered (or at the deadline)."""

    robot: FleetRobot
    ref: StepRef
    plan: Plan
    draft_ms: float
    gather: Any  # rocoin.Gather
    server_op: bool = False
    resolved: bool = False


@dataclass
class _Copy(Pending):
    """The copy of a step's window that goes to one device."""

    fanout: _Fanout | None = None
    device: int = -1  # the device's index in the layout
    arrived_ms: float = 0.0  # when it reached the device
    late_ms: float = 0.0  # a timed-out device answers this much late


@dataclass
class StudentRun(FleetWork):
    """One RoCoIn mode's fleet run: the layout, the students (``setup.StudentModels``), the
    faults, and what each robot's mode drafts with (``draft``, ``history``: the target's
    history length)."""

    layout: Any  # rocoin.Layout
    models: Any  # setup.StudentModels
    faults: Any  # rocoin.FaultConfig
    draft: Any = None
    history: int = 0
    down_until: dict = field(default_factory=dict)
    crashed_at: dict = field(default_factory=dict)
    fault_counts: Counter = field(default_factory=Counter)  # (device, kind) -> count
    answers: Counter = field(default_factory=Counter)  # (group, device) -> answers counted

    def mode_for(self, spec: Robot) -> Mode:
        return RocoinMode(self.layout.mode, self.draft, self.history, self.layout)

    def attach(self, fleet: FleetEvaluator) -> dict:
        """One queue per device of the layout, with its fault state."""
        lay, sm = self.layout, self.models
        servers = {}
        for d in lay.devices:
            group, speed = lay.group_of(d), fleet.topology.nodes[d].speed
            servers[d] = fleet.batch_server(
                d, lambda items, g=group, s=speed: sm.service_ms(lay, g, len(items), s),
                lambda items, g=group: self._work(g, items),
                lambda *a, d=d: self._served(fleet, d, *a))
        self.down_until = {d: -1.0 for d in lay.devices}
        self.crashed_at = {d: -1.0 for d in lay.devices}
        return servers

    def tick(self, fleet: FleetEvaluator, r: FleetRobot, ref: StepRef, since_ms: float) -> None:
        plan = r.mode.plan(r.obs, r.rng)
        draft_ms = self.robot_ms(fleet, r, plan)
        fleet.send_draft(r, ref, plan, draft_ms)
        sent = fleet.clock.now + draft_ms
        g = _Fanout(r, ref, plan, draft_ms, r.mode.gather(plan))
        for i, d in enumerate(self.layout.devices):
            p = _Copy(r, ref, plan, draft_ms, sent, plan.request, fanout=g, device=i)
            link = fleet.topology.links_between(r.spec, d)
            fleet.clock.at(sent, lambda p=p, d=d, link=link, hop=device_hop(i): fleet.cross_up(
                p, link, lambda _: hop, lambda: self._reach(fleet, p, d)))
        fleet.clock.at(sent + r.deadline_ms, lambda: fleet.deadline(g))

    def _reach(self, fleet: FleetEvaluator, p: _Copy, device: str) -> None:
        """A copy reaches its device: down (crashed earlier), crashing now, slow, or queued."""
        now = fleet.clock.now
        if now < self.down_until[device]:
            self.fault_counts[(device, "down_drop")] += 1
            return
        kind = self.faults.fault(p.request.seed, p.device, device, now, fleet.seed)
        if kind == "crash":
            self.fault_counts[(device, "crash")] += 1
            self.down_until[device] = now + self.faults.restart_ms
            self.crashed_at[device] = now
            return
        if kind == "timeout":
            self.fault_counts[(device, "timeout")] += 1
            p.late_ms = self.faults.slow_ms
        p.arrived_ms = now
        fleet.servers[device].arrive(p)

    def _work(self, group: int, batch: list[_Copy]) -> list:
        for p in batch:
            p.fanout.server_op = True
        return serve_students(self.models.model(self.layout, group), group,
                              [p.request for p in batch])

    def _served(self, fleet: FleetEvaluator, device: str, p: _Copy, answer, waited_ms: float,
                service_ms: float) -> None:
        if self.crashed_at[device] >= p.arrived_ms:
            return  # the device crashed with this copy in its queue
        p.elapsed_ms += waited_ms + service_ms + p.late_ms
        if fleet.cross_down(p, answer.payload_bytes()) and p.elapsed_ms <= p.robot.deadline_ms:
            fleet.clock.at(p.sent_ms + p.elapsed_ms, lambda: self._answer(fleet, p, device,
                                                                          answer))

    def _answer(self, fleet: FleetEvaluator, p: _Copy, device: str, answer) -> None:
        g = p.fanout
        if g.resolved or not g.gather.add(device, answer):
            return
        self.answers[(self.layout.group_of(device), device)] += 1
        if g.gather.complete:
            g.resolved = True
            fleet.resolve(g.robot, g.ref, g.plan, g.gather.response(),
                          g.draft_ms + p.elapsed_ms, True)

    def summary(self, fleet: FleetEvaluator, servers: dict) -> dict:
        """Faults and counted answers per device, in its server's summary."""
        for (d, kind), n in self.fault_counts.items():
            servers[d][kind + "s"] = n
        for (g, d), n in self.answers.items():
            servers[d]["answers_counted"] = n
            servers[d]["group"] = g
        return {}
