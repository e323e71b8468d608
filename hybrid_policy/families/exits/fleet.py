"""The early-exit modes in a fleet (``core.fleet``): the robot's plan names the node its
feature goes to; every node on the way runs its part of the net in its queue and either
answers (the answer crosses every link back to the robot) or forwards the feature to the
next node its offloading draws; link ``i`` of the transfer that carries the feature after
layer ``L`` draws ``packet_rng(seed, early_exit.feature_hop(L, i))``. ``dto_ee``
re-optimises its thresholds and offloading every ``reoptimise_ms`` of simulated time from
the request rates the robots were observed to send."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

from hybrid_policy.core.fleet import FleetEvaluator, FleetRobot, FleetWork, Pending, StepRef
from hybrid_policy.core.plan import Mode, Plan
from hybrid_policy.core.protocol import FeatureRequest, Response
from hybrid_policy.core.topology import Robot
from hybrid_policy.families.exits.early_exit import EarlyExitMode, serve_features
from hybrid_policy.families.exits.plan import ExitPlan, feature_hop


@dataclass
class ExitRun(FleetWork):
    """One early-exit mode's fleet run: the net, the plan (parts, thresholds, offloading;
    ``plan.mode`` names the mode), the parts' measured compute, and for ``dto_ee`` the
    online re-optimisation (called with each robot's observed request rate per ms)."""

    net: Any
    plan: ExitPlan
    compute: Any  # calibration.ExitCompute
    reoptimise: Callable[[dict[str, float]], None] | None = None
    reoptimise_ms: float = 2000.0
    steps_begun: Counter = field(default_factory=Counter)  # per robot: dto_ee's load

    def mode_for(self, spec: Robot) -> Mode:
        return EarlyExitMode(self.plan.mode, spec.name, self.net, self.plan)

    def robot_ms(self, fleet: FleetEvaluator, r: FleetRobot, plan: Plan) -> float:
        """The robot's part of the net, at its speed."""
        end = self.plan.ends[r.spec.name]
        return self.compute.part_ms(0, end, 1, fleet.compute.device_speed) if end else 0.0

    def batch_ms(self, fleet: FleetEvaluator, node: str, items: list[Pending]) -> float:
        """One operation on ``items`` (features after various layers) at ``node``."""
        end, speed = self.plan.ends[node], fleet.topology.nodes[node].speed
        sizes = Counter(p.request.layer for p in items)
        return sum(self.compute.part_ms(layer, end, n, speed) for layer, n in sizes.items())

    def attach(self, fleet: FleetEvaluator) -> dict:
        servers = {name: fleet.batch_server(
                       name, lambda items, n=name: self.batch_ms(fleet, n, items),
                       lambda items, n=name: self.serve(fleet, n, items),
                       lambda *a, n=name: self._served(fleet, n, *a))
                   for name in fleet.topology.nodes if name in self.plan.computing_nodes(
                       fleet.topology)}
        if self.reoptimise is not None:
            fleet.clock.at(self.reoptimise_ms, lambda: self._reoptimise(fleet))
        return servers

    def serve(self, fleet: FleetEvaluator, node: str, batch: list[Pending]) -> list:
        """One operation of an early-exit node: its part of the net on every feature."""
        for p in batch:
            p.server_op = True
        return serve_features(self.net, self.plan.ends[node],
                              self.plan.thresholds.get(node, 0.0),
                              self.plan.offload.get(node, {}), [p.request for p in batch])

    def _served(self, fleet: FleetEvaluator, node: str, p: Pending, outcome: tuple,
                waited_ms: float, service_ms: float) -> None:
        """An answer goes back; a feature the node's exit is not sure of goes on."""
        answer, next_node, _ = outcome
        if isinstance(answer, Response):
            fleet.served(p, answer, waited_ms, service_ms)
            return
        p.elapsed_ms += waited_ms + service_ms
        p.request = answer
        fleet.uplink(p, fleet.topology.links_between(node, next_node), next_node)

    def tick(self, fleet: FleetEvaluator, r: FleetRobot, ref: StepRef, since_ms: float) -> None:
        self.steps_begun[r.spec.name] += 1
        super().tick(fleet, r, ref, since_ms)

    def destination(self, fleet: FleetEvaluator, r: FleetRobot, plan: Plan):
        return plan.route_to, fleet.topology.links_between(r.spec, plan.route_to)

    def hop(self, p: Pending, i: int) -> int:
        if isinstance(p.request, FeatureRequest):
            return feature_hop(p.request.layer, i)
        return len(p.links)

    def resolved(self, fleet: FleetEvaluator, r: FleetRobot, plan: Plan,
                 response: Response | None, latency_ms: float) -> None:
        """Which exit acted: the answer's, else the robot's own."""
        r.result.answered_at[response.exit_layer if response is not None
                       else self.plan.ends[r.spec.name]] += 1

    def _reoptimise(self, fleet: FleetEvaluator) -> None:
        """dto_ee: every node re-optimises from the load it observed."""
        if fleet.done:
            return
        span = fleet.clock.now
        self.reoptimise({r.spec.name: self.steps_begun[r.spec.name] / span
                         for r in fleet.robots})
        fleet.clock.at(fleet.clock.now + self.reoptimise_ms, lambda: self._reoptimise(fleet))
