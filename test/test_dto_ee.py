"""DTO-EE (core.dto_ee): the exact cost of a policy, the joint optimum of thresholds and
offloading against brute force, the loss budget, the queue's marginal cost, warm starts
and the errors for bad input."""

import dataclasses
import math

import numpy as np
import pytest

from hybrid_policy.families.exits.dto_ee import (
    RHO_CAP, DtoEeError, Node, Problem, Samples, check_threshold, evaluate, modelled_marginal,
    modelled_wait, optimise, reoptimise, solve_for_loss,
)
from hybrid_policy.families.adahi.load_threshold import marginal_delay, md1_wait

# 8 calibration samples, stages robot / edge / cloud (the cloud answers all: loss 0)
CONF = np.array([[0.94, 0.53], [0.13, 0.62], [0.80, 0.21], [0.56, 0.90],
                 [0.45, 0.79], [0.40, 0.96], [0.22, 0.62], [0.94, 0.68]])
LOSS = np.array([[0.104, 0.144], [0.390, 0.229], [0.083, 0.406], [0.269, 0.059],
                 [0.323, 0.056], [0.290, 0.057], [0.355, 0.160], [0.001, 0.148]])


def instance(arrivals=0.4):
    """One robot, a fast edge with a short path to the cloud and a slow one, one cloud."""
    conf = np.column_stack([CONF, np.ones(len(CONF))])
    loss = np.column_stack([LOSS, np.zeros(len(LOSS))])
    return Problem(Samples(conf, loss), (
        Node("robot", 0, 2.0, arrivals, {"edge_a": 2.0, "edge_b": 1.0}),
        Node("edge_a", 1, 2.0, next_hops={"cloud": 4.0}),
        Node("edge_b", 1, 3.5, next_hops={"cloud": 7.0}),
        Node("cloud", 2, 1.0)))


def trap():
    """An instance where the distributed iteration alone stops in a local optimum: from
    either start the robot sends few requests to edge_b and both edges send everything on;
    the optimum sends more, splits them and answers the confident ones at the edges."""
    conf = np.array([[0.91, 0.08], [0.62, 0.93], [0.63, 0.78], [0.75, 0.88], [0.79, 0.06],
                     [0.77, 0.07], [0.39, 0.33], [0.84, 0.01], [0.64, 0.48], [0.68, 0.06]])
    loss = np.array([[0.074, 0.997], [0.45, 0.039], [0.019, 0.07], [0.165, 0.064],
                     [0.114, 0.15], [0.261, 0.572], [0.354, 0.2], [0.03, 0.119],
                     [0.058, 0.424], [0.178, 0.228]])
    return Problem(Samples(np.column_stack([conf, np.ones(10)]),
                           np.column_stack([loss, np.zeros(10)])), (
        Node("robot", 0, 1.4, 0.28, {"edge_a": 7.8, "edge_b": 3.2}),
        Node("edge_a", 1, 4.3, next_hops={"cloud": 6.3}),
        Node("edge_b", 1, 5.0, next_hops={"cloud": 6.3}),
        Node("cloud", 2, 1.3)))


def brute_force(problem, price, budget=None):
    """The optimum over every candidate threshold of every node (0, 1 and the sample
    confidences) and the robot's offloading to edge_a in steps of 0.01, written out from
    the cost's definition: min J, or with ``budget`` min delay s.t. mean loss ≤ budget.
    Returns (value, mean delay, mean loss)."""
    c, loss = problem.samples.confidence, problem.samples.loss
    robot, a, b, cloud = problem.nodes
    lam, n = robot.arrivals_per_ms, len(c)
    p = np.linspace(0.0, 1.0, 101)

    def queue(rate, s):  # λ (S + W_q), M/D/1; ∞ at ρ ≥ 1
        rho = rate * s
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(rho < 1, rate * (s + rho * s / (2 * (1 - rho))), np.inf)

    best = (np.inf, None, None)
    cands = [np.unique(np.r_[c[:, k], 0.0, 1.0]) for k in (0, 1)]
    for t0 in cands[0]:
        w = np.full(n, lam / n)
        go = np.where(c[:, 0] >= t0, 0.0, w)
        loss0 = (w * (c[:, 0] >= t0) * loss[:, 0]).sum()
        per_edge = {}
        for t1 in cands[1]:
            stay = c[:, 1] >= t1
            per_edge[t1] = ((go * ~stay).sum(), (go * stay * loss[:, 1]).sum()
                            + (go * ~stay * loss[:, 2]).sum())
        for on1, l1 in per_edge.values():
            for on2, l2 in per_edge.values():
                to_cloud = p * on1 + (1 - p) * on2
                delay = (lam * robot.service_ms
                         + go.sum() * (p * robot.next_hops["edge_a"]
                                       + (1 - p) * robot.next_hops["edge_b"])
                         + queue(p * go.sum(), a.service_ms)
                         + queue((1 - p) * go.sum(), b.service_ms)
                         + p * on1 * a.next_hops["cloud"] + (1 - p) * on2 * b.next_hops["cloud"]
                         + queue(to_cloud, cloud.service_ms)) / lam
                mean_loss = (loss0 + p * l1 + (1 - p) * l2) / lam
                value = delay + price * mean_loss if budget is None else \
                    np.where(mean_loss <= budget + 1e-12, delay, np.inf)
                i = int(np.argmin(value))
                if value[i] < best[0]:
                    best = (float(value[i]), float(delay[i]), float(mean_loss[i]))
    return best


def test_evaluate_by_hand():
    # sample 0 answers at the robot (0.9 ≥ 0.5); sample 1 goes on, 1/4 to a (answers:
    # 0.8 ≥ 0.7), 3/4 to b (goes on to f: 0.8 < 0.9)
    problem = Problem(
        Samples([[0.9, 0.5, 1.0], [0.3, 0.8, 1.0]], [[0.2, 0.1, 0.0], [0.6, 0.05, 0.0]]),
        (Node("s", 0, 1.0, 0.1, {"a": 2.0, "b": 3.0}), Node("a", 1, 2.0, next_hops={"f": 4.0}),
         Node("b", 1, 1.0, next_hops={"f": 5.0}), Node("f", 2, 2.0)))
    ev = evaluate(problem, {"s": 0.5, "a": 0.7, "b": 0.9, "f": 0.99},  # f answers anyway
                  {"s": {"a": 0.25, "b": 0.75}, "f": {}}, 10.0)
    lam = {"s": 0.1, "a": 0.0125, "b": 0.0375, "f": 0.0375}
    rho = {"s": 0.1, "a": 0.025, "b": 0.0375, "f": 0.075}
    wait = {"s": 0.0, "a": 0.025 * 2 / (2 * 0.975), "b": 0.0375 / (2 * 0.9625),
            "f": 0.075 * 2 / (2 * 0.925)}
    delay = (0.1 * 1.0 + 0.05 * (0.25 * 2.0 + 0.75 * 3.0)  # robot's step, its links
             + 0.0125 * (2.0 + wait["a"]) + 0.0375 * (1.0 + wait["b"]) + 0.0375 * 5.0
             + 0.0375 * (2.0 + wait["f"])) / 0.1
    loss = (0.05 * 0.2 + 0.0125 * 0.05) / 0.1
    assert ev.mean_delay_ms == pytest.approx(delay, rel=1e-12)
    assert ev.mean_loss == pytest.approx(loss, rel=1e-12)
    assert ev.objective == pytest.approx(delay + 10.0 * loss, rel=1e-12)
    assert ev.arrivals_per_ms == pytest.approx(lam, rel=1e-12)
    assert ev.utilisation == pytest.approx(rho, rel=1e-12)
    assert ev.wait_ms == pytest.approx(wait, rel=1e-12)
    assert ev.exit_fraction == pytest.approx({"s": 0.5, "a": 1.0, "b": 0.0, "f": 1.0})
    assert ev.answered_by_stage == pytest.approx((0.5, 0.125, 0.375))
    assert ev.stable and ev.price == 10.0


@pytest.mark.parametrize("price", [10.0, 30.0, 60.0, 120.0])
def test_optimise_reaches_the_brute_force_optimum(price):
    problem = instance()
    sol = optimise(problem, price)
    best, _, _ = brute_force(problem, price)
    assert sol.converged
    # continuous offloading may beat the 0.01 grid a little, never the other way round
    assert best * (1 - 1e-3) <= sol.evaluation.objective <= best * (1 + 1e-9)
    again = evaluate(problem, sol.thresholds, sol.offload, price)
    assert again.objective == pytest.approx(sol.evaluation.objective, rel=1e-12)
    h = np.array(sol.history)
    assert np.all(np.diff(h) <= 1e-12 * h[0])  # J never rises
    assert h[-1] == pytest.approx(sol.evaluation.objective, rel=1e-12)


def test_the_search_escapes_a_local_optimum():
    problem, price = trap(), 200.0
    best, _, _ = brute_force(problem, price)
    assert optimise(problem, price, search=0).evaluation.objective > 1.1 * best
    sol = optimise(problem, price)
    assert best * (1 - 1e-3) <= sol.evaluation.objective <= best * (1 + 1e-9)
    assert np.all(np.diff(sol.history) <= 1e-12 * sol.history[0])


@pytest.mark.parametrize("hull_price", [30.0, 120.0])
def test_solve_for_loss_reaches_the_constrained_brute_force_optimum(hull_price):
    # a budget met by the optimum at some price: a point of the lower convex hull of the
    # delay–loss curve, where pricing the loss is exact (docs/method.md §7)
    problem = instance()
    _, _, budget = brute_force(problem, hull_price)
    least, _, _ = brute_force(problem, 0.0, budget=budget)
    sol, price = solve_for_loss(problem, budget)
    assert sol.evaluation.mean_loss <= budget + 1e-12
    # (the bisection stops within a relative 1e-4 of the price: a hair above the optimum)
    assert least * (1 - 1e-3) <= sol.evaluation.mean_delay_ms <= least * (1 + 1e-4)
    assert sol.evaluation.price == price > 0


def test_a_budget_the_robot_can_keep_costs_nothing():
    problem = instance()
    loose = optimise(problem, 0.0).evaluation.mean_loss
    sol, price = solve_for_loss(problem, loose + 0.01)
    assert price == 0.0 and sol.evaluation.mean_loss <= loose + 0.01


def test_an_impossible_budget_is_refused():
    # sample 0 has confidence 1 at the robot: it answers there at any threshold (loss 0.2)
    problem = Problem(Samples([[1.0, 1.0], [0.3, 1.0]], [[0.2, 0.0], [0.6, 0.0]]),
                      (Node("s", 0, 1.0, 0.1, {"f": 1.0}), Node("f", 1, 1.0)))
    with pytest.raises(DtoEeError, match=r"0\.05 cannot be reached.*least mean loss is 0\.1"):
        solve_for_loss(problem, 0.05, max_price=1e4)


@pytest.mark.parametrize("rho", [0.1, 0.5, 0.9, 0.985, 0.995, 1.3])
def test_the_queue_marginal_is_the_derivative_of_the_total_wait(rho):
    s, h = 2.5, 1e-6

    def total(r):  # ρ W: the wait of all requests, per unit of S
        return r * modelled_wait(r, s)

    slope = (total(rho + h) - total(rho - h)) / (2 * h)
    assert modelled_marginal(rho, s) == pytest.approx(slope, rel=1e-6)
    if rho < RHO_CAP:  # load_threshold's M/D/1, exactly
        assert modelled_wait(rho, s) == md1_wait(rho, s)
        assert modelled_marginal(rho, s) == marginal_delay(rho, s)


def two_edges(arrivals=0.7):
    """Every request goes on (the robot's answer is bad); a fast and a slow edge, equal
    links; the slow one alone would be overloaded (ρ = 2.1)."""
    n = 6
    conf = np.column_stack([np.linspace(0.1, 0.6, n), np.ones(n)])
    loss = np.column_stack([np.ones(n), np.zeros(n)])
    return Problem(Samples(conf, loss), (
        Node("robot", 0, 1.0, arrivals, {"fast": 1.0, "slow": 1.0}),
        Node("fast", 1, 1.0), Node("slow", 1, 3.0)))


def test_a_loaded_slow_edge_gets_less_traffic_than_a_fast_one():
    sol = optimise(two_edges(), 100.0)
    ev = sol.evaluation
    p = sol.offload["robot"]
    assert sol.converged and ev.stable and ev.answered_by_stage == pytest.approx((0.0, 1.0))
    assert p["fast"] > p["slow"] > 0
    # Gallager's condition: both used, so one more request costs the same either way
    cost = {m: s + marginal_delay(ev.utilisation[m], s) for m, s in (("fast", 1.0), ("slow", 3.0))}
    assert cost["fast"] == pytest.approx(cost["slow"], rel=1e-4)


def test_without_queues_everything_takes_the_cheaper_link():
    problem = Problem(Samples([[0.2, 1.0], [0.4, 1.0]], [[1.0, 0.0], [1.0, 0.0]]), (
        Node("robot", 0, 1.0, 0.5, {"a": 1.0, "b": 2.0}),
        Node("a", 1, 1.0, queued=False), Node("b", 1, 1.0, queued=False)))
    sol = optimise(problem, 100.0)
    assert sol.converged and sol.offload["robot"] == {"a": 1.0, "b": 0.0}
    assert sol.evaluation.mean_delay_ms == pytest.approx(3.0)


def test_from_an_overloaded_start_traffic_moves_away_and_J_never_rises():
    problem = two_edges()
    sol = optimise(problem, 100.0)
    overloaded = dataclasses.replace(sol, offload={"robot": {"fast": 0.0, "slow": 1.0}})
    assert not evaluate(problem, sol.thresholds, overloaded.offload, 100.0).stable
    again = reoptimise(problem, overloaded)
    h = np.array(again.history)
    assert math.isfinite(h[0]) and len(h) > 3 and np.all(np.diff(h) <= 1e-12 * h[0])
    assert again.evaluation.stable
    assert again.evaluation.objective == pytest.approx(sol.evaluation.objective, rel=1e-6)


def test_reoptimise_follows_a_new_load():
    sol = optimise(instance(0.4), 60.0)
    heavier = instance(0.6)
    again = reoptimise(heavier, sol)
    fresh = optimise(heavier, 60.0)
    stale = evaluate(heavier, sol.thresholds, sol.offload, 60.0)
    assert again.evaluation.price == 60.0 and again.converged
    assert again.evaluation.objective < stale.objective
    assert again.evaluation.objective == pytest.approx(fresh.evaluation.objective, rel=1e-6)
    assert again.offload["robot"]["edge_b"] > sol.offload["robot"]["edge_b"]  # spread out


def test_an_overloaded_policy_reports_it():
    problem = two_edges()
    ev = evaluate(problem, {"robot": 1.0}, {"robot": {"fast": 0.0, "slow": 1.0}}, 1.0)
    assert not ev.stable and ev.utilisation["slow"] == pytest.approx(2.1)
    assert math.isinf(ev.mean_delay_ms) and math.isinf(ev.wait_ms["slow"])
    assert ev.as_dict()["mean_delay_ms"] is None and ev.as_dict()["wait_ms"]["slow"] is None
    assert ev.exit_fraction["fast"] != ev.exit_fraction["fast"]  # nan: no arrivals


@pytest.mark.parametrize("x", [0, 0.25, 1, np.float64(0.5)])
def test_check_threshold_accepts_0_to_1(x):
    assert check_threshold(x) == float(x)


@pytest.mark.parametrize("x", [-0.01, 1.01, math.nan, math.inf, True, "0.5", None])
def test_check_threshold_refuses_the_rest(x):
    with pytest.raises(DtoEeError, match=r"finite number in \[0, 1\]"):
        check_threshold(x)


def nodes(**change):
    """The instance's nodes with one changed: name → Node."""
    base = {n.name: n for n in instance().nodes}
    base.update(change)
    return tuple(base.values())


S = Samples(np.column_stack([CONF, np.ones(8)]), np.column_stack([LOSS, np.zeros(8)]))


@pytest.mark.parametrize("build,match", [
    (lambda: Problem(S, nodes(robot=Node("robot", 0, 2.0, 0.4, {"edge_c": 1.0}))),
     "next hop 'edge_c' is not a node"),
    (lambda: Problem(S, nodes(edge_a=Node("edge_a", 1, 2.0, next_hops={"edge_b": 1.0}))),
     "next hop 'edge_b' is at stage 1; a next hop must be at a later stage"),
    (lambda: Problem(S, nodes(edge_a=Node("edge_a", 1, 2.0))), "has no next hops"),
    (lambda: Problem(S, nodes(cloud=Node("cloud", 2, 1.0, next_hops={"edge_a": 1.0}))),
     "final stage 2: its exit answers every request, so it takes no next hops"),
    (lambda: Problem(S, nodes(robot=Node("robot", 0, 2.0, 0.0, {"edge_a": 1.0}))),
     "source 'robot' .* has no arrivals"),
    (lambda: Problem(S, nodes(cloud=Node("cloud", 2, 1.0, 0.1))),
     "external requests arrive at stage-0 sources only"),
    (lambda: Problem(S, nodes(cloud=Node("cloud", 3, 1.0))), r"stage 3 does not exist"),
    (lambda: Node("edge_a", 1, 2.0, next_hops={"cloud": -1.0}),
     "the link cost to 'cloud' must be a finite number >= 0"),
    (lambda: Node("edge_a", 1, -2.0), "service_ms must be a finite number >= 0"),
    (lambda: Node("edge_a", -1, 2.0), "stage must be an integer >= 0"),
    (lambda: Samples([[0.5, 1.2]], [[0.1, 0.0]]), r"confidences must lie in \[0, 1\]"),
    (lambda: Samples([[0.5, 1.0]], [[-0.1, 0.0]]), "losses must be >= 0"),
    (lambda: Samples([[0.5, 1.0]], [[0.1, 0.0, 0.0]]), "must have the same shape"),
    (lambda: Samples([[0.5, math.nan]], [[0.1, 0.0]]), "must be finite"),
    (lambda: Problem(S, nodes() + (Node("cloud", 2, 1.0),)), "'cloud' repeats"),
])
def test_a_bad_problem_is_refused(build, match):
    with pytest.raises(DtoEeError, match=match):
        build()


@pytest.mark.parametrize("thresholds,offload,price,match", [
    ({"robot": 1.2, "edge_a": 0.5, "edge_b": 0.5}, {"robot": {"edge_a": 1.0}}, 1.0,
     r"'robot': a confidence threshold must be a finite number in \[0, 1\]"),
    ({"robot": 0.5, "edge_a": 0.5}, {"robot": {"edge_a": 1.0}}, 1.0,
     "node 'edge_b' has none"),
    ({"robot": 0.5, "edge_a": 0.5, "edge_b": 0.5, "cloud": 1.5}, {"robot": {"edge_a": 1.0}},
     1.0, r"'cloud': a confidence threshold must be a finite number in \[0, 1\]"),
    ({"robot": 0.5, "edge_a": 0.5, "edge_b": 0.5}, {"robot": {"edge_a": 1.0},
                                                   "cloud": {"edge_a": 1.0}},
     1.0, "'cloud' is a final-stage node: it answers every request and has no next hops"),
    ({"robot": 0.5, "edge_a": 0.5, "edge_b": 0.5, "robot_2": 0.5}, {"robot": {"edge_a": 1.0}},
     1.0, "thresholds: no node 'robot_2'"),
    ({"robot": 0.5, "edge_a": 0.5, "edge_b": 0.5}, {}, 1.0,
     "'robot' has 2 next hops .* needs a distribution"),
    ({"robot": 0.5, "edge_a": 0.5, "edge_b": 0.5}, {"robot": {"edge_a": 0.5, "edge_b": 0.4}},
     1.0, "probabilities must sum to 1, got 0.9"),
    ({"robot": 0.5, "edge_a": 0.5, "edge_b": 0.5}, {"robot": {"cloud": 1.0}}, 1.0,
     "'cloud' is not a next hop of 'robot'"),
    ({"robot": 0.5, "edge_a": 0.5, "edge_b": 0.5}, {"robot": {"edge_a": 1.5, "edge_b": -0.5}},
     1.0, "must be a finite number >= 0"),
    ({"robot": 0.5, "edge_a": 0.5, "edge_b": 0.5}, {"robot": {"edge_a": 1.0}}, -1.0,
     "the price of accuracy must be a finite number >= 0"),
])
def test_a_bad_policy_is_refused(thresholds, offload, price, match):
    with pytest.raises(DtoEeError, match=match):
        evaluate(instance(), thresholds, offload, price)


def test_bad_solver_arguments_are_refused():
    problem = instance()
    with pytest.raises(DtoEeError, match="the loss budget must be a finite number >= 0"):
        solve_for_loss(problem, -0.1)
    with pytest.raises(DtoEeError, match="max_iterations must be an integer >= 1"):
        optimise(problem, 1.0, max_iterations=0)
    with pytest.raises(DtoEeError, match="the price of accuracy"):
        optimise(problem, math.nan)
    # another topology's solution
    with pytest.raises(DtoEeError, match="thresholds: no node 'edge_a'"):
        reoptimise(two_edges(), optimise(problem, 1.0, search=0))
