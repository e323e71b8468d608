"""``dto_ee``: the fleet's early-exit plan as a ``core.dto_ee`` problem, solved, and
re-solved online from the load the robots were observed to put on it.

The problem's nodes are the fleet's: each group of alike robots (same reach, link and
task) is one source sending a step per control period; each computing node serves at its
speed (batch-1 time of its part: conservative where it batches). A hop's cost is the
expected time of a feature up and an answer down every link between the two nodes. The
accuracy constraint is the one ``early_exit`` meets with the same loss budget: dto_ee's
mean loss (TV to the full net over all steps) may not exceed the loss the model predicts
for ``early_exit``'s plan, so the two modes are compared at equal modelled accuracy and
dto_ee spends that accuracy on delay.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import TYPE_CHECKING

import numpy as np

from hybrid_policy.families.exits import dto_ee
from hybrid_policy.families.exits.early_exit import build_plan
from hybrid_policy.core.link import expected_ms
from hybrid_policy.core.protocol import FeatureRequest, Response

if TYPE_CHECKING:
    from hybrid_policy.families.exits.calibration import ExitModels
    from hybrid_policy.families.exits.fleet import ExitRun
    from hybrid_policy.core.topology import Topology

log = logging.getLogger(__name__)


def robot_groups(topology: Topology) -> dict[str, list[str]]:
    """Alike robots (same reach, link and task) as one source, named after the first."""
    groups: dict[tuple, list[str]] = defaultdict(list)
    for r in topology.robots:
        groups[(r.reach, r.link, r.task, r.access)].append(r.name)
    return {names[0]: names for names in groups.values()}


def build_problem(topology: Topology, models: ExitModels, plan, rates: dict[str, float],
                  device_speed: float) -> dto_ee.Problem:
    """The problem of ``plan``'s placement with each robot sending ``rates[robot]`` steps
    per ms; next hops: every computing node a sender reaches (``plan.offload`` keys)."""
    net, compute, exits = models.net, models.compute, tuple(models.net.exits)
    feature = FeatureRequest(1, np.zeros((net.history, net.d_model)), 2**31 - 1,
                             plan.encoding).payload_bytes()
    answer = Response(np.zeros(4, np.float32), (0,) * net.levels, True, net.levels, (),
                      exits[-1]).payload_bytes()
    robots = {r.name: r for r in topology.robots}
    nodes = []
    for name, members in robot_groups(topology).items():
        end = plan.ends[name]
        nodes.append(dto_ee.Node(
            name, exits.index(end), compute.part_ms(0, end, 1, device_speed),
            sum(rates[m] for m in members),
            {n: expected_ms(topology.links_between(robots[name], n), feature, answer)
             for n in plan.offload[name]}, queued=False))
    for name in plan.computing_nodes(topology):
        end, stage = plan.ends[name], exits.index(plan.ends[name])
        nodes.append(dto_ee.Node(
            name, stage, compute.part_ms(exits[stage - 1], end, 1, topology.nodes[name].speed),
            0.0, {n: expected_ms(topology.links_between(name, n), feature, answer)
                  for n in plan.offload.get(name, {})}))
    samples = dto_ee.Samples(models.samples.confidence, models.samples.loss)
    return dto_ee.Problem(samples, tuple(nodes))


def attach(run: ExitRun, topology: Topology, models: ExitModels, loss_budget: float,
           period_ms: float, device_speed: float) -> None:
    """Solve ``run``'s plan (a ``dto_ee`` plan with every reachable next hop) for the
    robots at their control rate, write the solution into the plan, and have the fleet
    re-solve it every ``run.reoptimise_ms`` from the observed step rates."""
    plan = run.plan
    rates = {r.name: 1.0 / period_ms for r in topology.robots}
    nearest = build_plan("early_exit", topology, tuple(models.net.exits),
                         plan.info["per_exit"], plan.encoding)
    problem = build_problem(topology, models, plan, rates, device_speed)
    groups = robot_groups(topology)
    reference = dto_ee.evaluate(problem, _for_problem(nearest.thresholds, groups),
                                _for_problem(_nearest_offload(nearest, plan), groups), 0.0)
    budget = reference.mean_loss
    solution, price = dto_ee.solve_for_loss(problem, budget)
    if reference.stable and reference.mean_delay_ms < solution.evaluation.mean_delay_ms:
        # a price reaches only the convex hull of the delay-loss curve (method doc §8):
        # where early_exit's own plan, which meets the budget, is faster, start from it
        start = dto_ee.Solution(dict(solution.thresholds) | _for_problem(
            nearest.thresholds, groups), _for_problem(_nearest_offload(nearest, plan), groups),
            reference, 0, True, ())
        solution = dto_ee.reoptimise(problem, start, price=price)
        if solution.evaluation.mean_loss > budget + 1e-12 or not solution.evaluation.stable:
            solution = dto_ee.Solution(start.thresholds, start.offload, reference, 0, True, ())
    state = {"solution": solution, "price": price}
    _write(plan, solution, groups)
    plan.info.update({"loss_constraint": budget, "price": price,
                      "modelled": solution.evaluation.as_dict(),
                      "early_exit_modelled": reference.as_dict(), "reoptimised": 0})
    log.info("dto_ee: modelled mean delay %.2f ms (early_exit's plan: %.2f ms) at mean loss "
             "%.4f <= %.4f; price %.3g", solution.evaluation.mean_delay_ms,
             reference.mean_delay_ms, solution.evaluation.mean_loss, budget, price)

    def reoptimise(observed: dict[str, float]) -> None:
        new = build_problem(topology, models, plan, {k: max(v, 1e-6) for k, v in
                                                     observed.items()}, device_speed)
        state["solution"] = dto_ee.reoptimise(new, state["solution"], price=state["price"])
        _write(plan, state["solution"], groups)
        plan.info["reoptimised"] += 1

    run.reoptimise = reoptimise


def _nearest_offload(nearest, plan) -> dict[str, dict[str, float]]:
    """early_exit's choices on dto_ee's hop sets (the nearest node gets everything)."""
    return {s: {n: float(n in nearest.offload[s]) for n in hops}
            for s, hops in plan.offload.items()}


def _for_problem(per_sender: dict, groups: dict[str, list[str]]) -> dict:
    return {k: v for k, v in per_sender.items() if k in groups or not _is_robot(k, groups)}


def _is_robot(name: str, groups: dict[str, list[str]]) -> bool:
    return any(name in members for members in groups.values())


def _write(plan, solution: dto_ee.Solution, groups: dict[str, list[str]]) -> None:
    """The solution into the plan, in place (robots and nodes hold these dicts)."""
    for name, theta in solution.thresholds.items():
        for member in groups.get(name, [name]):
            plan.thresholds[member] = float(theta)
    for name, probs in solution.offload.items():
        for member in groups.get(name, [name]):
            plan.offload[member].clear()
            plan.offload[member].update({k: float(v) for k, v in probs.items()})
