"""The draft/target modes in a fleet (``core.fleet``): each robot's request goes over its
route to its server, which verifies (or, for ``target_only``, samples) a batch of them with
its task's target in the time of the measured batch curve (``ComputeModel.target_batch``)."""

from __future__ import annotations

from collections import defaultdict
from typing import Callable

from hybrid_policy.core import fleet
from hybrid_policy.core.compute import ComputeModel
from hybrid_policy.core.evaluator import StepRecord
from hybrid_policy.core.fleet import FleetEvaluator, FleetResult, FleetWork, Pending
from hybrid_policy.core.plan import Mode
from hybrid_policy.core.protocol import Response
from hybrid_policy.core.realtime import Clock
from hybrid_policy.core.topology import Robot, Topology
from hybrid_policy.families.adahi.server import serve_batch
from hybrid_policy.policies import Policy


class TargetWork(FleetWork):
    """``modes`` makes each robot's mode; ``targets`` holds the target of each task."""

    def __init__(self, modes: Callable[[Robot], Mode], targets: dict[str, Policy]) -> None:
        self.modes, self.targets = modes, targets

    def mode_for(self, spec: Robot) -> Mode:
        return self.modes(spec)

    def batch_ms(self, fleet: FleetEvaluator, node: str, items: list[Pending]) -> float:
        return fleet.compute.target_batch(len(items), fleet.topology.nodes[node].speed)

    def serve(self, fleet: FleetEvaluator, node: str, batch: list[Pending]) -> list[Response]:
        """One server operation: the batch's requests, grouped by task (one model each)."""
        answers: dict[int, Response] = {}
        by_task: dict[str, list[int]] = defaultdict(list)
        for i, p in enumerate(batch):
            p.server_op = True
            by_task[p.robot.spec.task].append(i)
        for task, idx in by_task.items():
            for i, resp in zip(idx, serve_batch(self.targets[task],
                                                [batch[i].plan.request for i in idx])):
                answers[i] = resp
        return [answers[i] for i in range(len(batch))]


def evaluate_fleet(topology: Topology, modes: Callable[[Robot], Mode],
                   targets: dict[str, Policy], compute: ComputeModel, deadline_ms: float,
                   episodes: int, seed: int, progress: bool | None = None,
                   on_step: Callable[[str, StepRecord], None] | None = None,
                   phases: str = "random", control: Clock = Clock()) -> FleetResult:
    """``core.fleet.evaluate_fleet`` of the draft/target modes ``modes`` makes, each task's
    requests served by its target in ``targets``."""
    return fleet.evaluate_fleet(topology, TargetWork(modes, targets), compute, deadline_ms,
                                episodes, seed, progress, on_step, phases, control)
