"""INFIDA placement (core.idn_place): DepRound keeps capacity and marginals (its one bias
measured), the projection is the Bregman projection, gain and supergradient agree, mirror
ascent reaches a brute-force optimum and follows a shift, and bad input is refused."""

import itertools

import numpy as np
import pytest
from scipy.optimize import minimize

from hybrid_policy.families.idn.place import (
    DEFAULT_ETA, DEFAULT_FLOOR, Demand, Infida, NodeSlots, PlacementError, demand,
    depround, depround_detail, gain, project, served, subgradient,
)


def draws(y, sizes, capacity, n, seed):
    rng = np.random.default_rng(seed)
    return [depround_detail(y, sizes, capacity, rng) for _ in range(n)]


def within_se(mean, y, n, slack=0.0, k=4.0):
    """|mean - y| <= k standard errors of a Bernoulli(y) mean (+ slack), per entry."""
    se = np.sqrt(np.maximum(y * (1 - y), 1e-12) / n)
    return np.abs(mean - y) <= k * se + slack


# --------------------------------------------------------------------------- DepRound


def test_depround_equal_sizes_exact_count_and_marginals():
    rng = np.random.default_rng(0)
    sizes = np.full(7, 2.0)
    y = project(rng.random(7) + 0.05, sizes, 6.0)  # 3 of 7 on the set
    out = draws(y, sizes, 6.0, 20000, seed=1)
    x = np.array([o.x for o in out])
    assert np.all(x.sum(axis=1) == 3)  # capacity used exactly, every draw
    assert all(o.leftover == -1 and not o.dropped for o in out)
    assert np.all(within_se(x.mean(axis=0), y, len(x))), (x.mean(axis=0), y)


def test_depround_sizes_equal_within_node_unbiased():
    """Equal sizes within a node and capacity a multiple of the size: the kept sum s y is
    a multiple of s, so no entry can stay fractional (no leftover, no bias)."""
    nodes = [NodeSlots("a", np.arange(4), np.full(4, 3.0), 6.0),
             NodeSlots("b", np.arange(4, 9), np.full(5, 1.5), 4.5)]
    inf = Infida(nodes, 9)
    rng = np.random.default_rng(2)
    for _ in range(5):  # a non-uniform y on the set
        inf.step(rng.normal(size=9))
    x = np.array([inf.sample(rng) for _ in range(10000)])
    assert np.all(x[:, :4].sum(axis=1) == 2) and np.all(x[:, 4:].sum(axis=1) == 3)
    assert np.all(within_se(x.mean(axis=0), inf.y, len(x))), (x.mean(axis=0), inf.y)


def test_depround_unequal_sizes_capacity_never_exceeded():
    rng = np.random.default_rng(3)
    for _ in range(30):
        n = int(rng.integers(2, 9))
        sizes = rng.choice([0.5, 1.0, 2.0, 3.7, 5.0], n)
        cap = float(rng.uniform(0.2, 0.9) * sizes.sum())
        y = project(rng.random(n) + 0.01, sizes, cap)
        y = y * rng.choice([1.0, rng.uniform(0.5, 1.0)])  # on the set, or with slack
        for _ in range(200):
            x = depround(y, sizes, cap, rng)
            assert set(np.unique(x)) <= {0, 1}
            assert sizes @ x <= cap * (1 + 1e-9)


def test_depround_heterogeneous_bias_is_the_dropped_leftover():
    """The dropped leftover is the only bias: E[x_k + leftover_y 1{dropped at k}] = y_k
    exactly, so that sum must pass 4 SE; the plain marginals may be off by at most the
    drop frequency (leftover_y <= 1). Sizes 1/2/3/5 with capacity 9.4: sum s y = 9.4 is
    never a sum of sizes, so a leftover is left (and cannot fit) in every draw."""
    sizes = np.array([5.0, 3.0, 3.0, 2.0, 2.0, 1.0, 1.0, 1.0])
    cap = 9.4
    y = project(np.array([0.9, 0.5, 0.7, 0.2, 0.6, 0.3, 0.8, 0.4]), sizes, cap)
    out = draws(y, sizes, cap, 20000, seed=4)
    x = np.array([o.x for o in out], dtype=float)
    dropped = np.zeros_like(x)
    for row, o in enumerate(out):
        if o.dropped:
            dropped[row, o.leftover] = o.leftover_y
    drop_freq = np.mean([o.dropped for o in out])
    assert drop_freq == 1.0  # measured and argued above
    assert np.all(sizes @ x.T <= cap)
    corrected = (x + dropped).mean(axis=0)
    se = (x + dropped).std(axis=0) / np.sqrt(len(x))
    assert np.all(np.abs(corrected - y) <= 4 * se + 1e-12), (corrected, y)
    assert np.all(within_se(x.mean(axis=0), y, len(x), slack=drop_freq))
    assert np.all(x.mean(axis=0) <= y + 4 * np.sqrt(y * (1 - y) / len(x)))  # downward only


def test_depround_leftover_with_slack_is_rounded_up():
    """Below capacity the leftover fits and is rounded up with probability y: no bias."""
    sizes, cap = np.array([2.0, 1.0]), 10.0
    out = draws(np.array([0.5, 0.5]), sizes, cap, 8000, seed=5)
    x = np.array([o.x for o in out])
    assert all(not o.dropped for o in out) and any(o.leftover >= 0 for o in out)
    assert np.all(within_se(x.mean(axis=0), np.array([0.5, 0.5]), len(x)))


# --------------------------------------------------------------------------- projection


def test_project_lands_on_the_set_and_fits_all():
    rng = np.random.default_rng(6)
    for _ in range(50):
        n = int(rng.integers(2, 12))
        sizes = rng.uniform(0.1, 5.0, n)
        cap = float(rng.uniform(0.05, 0.95) * sizes.sum())
        z = np.exp(rng.normal(scale=5.0, size=n))
        y = project(z, sizes, cap)
        assert abs(sizes @ y - cap) <= 1e-9 * cap
        assert np.all(y >= DEFAULT_FLOOR) and np.all(y <= 1.0)
    assert np.all(project(np.array([0.1, 3.0]), np.array([1.0, 2.0]), 3.0) == 1.0)


def bregman(y, z, sizes, cap):
    return float(np.sum(sizes / cap * (y * np.log(y / z) - y + z)))


def test_project_is_the_bregman_projection():
    rng = np.random.default_rng(7)
    sizes = np.array([1.0, 2.0, 0.5, 3.0, 1.5, 1.0])
    cap, floor = 4.0, 1e-3
    z = np.array([3.0, 0.2, 1.5, 0.9, 0.05, 2.5])
    y = project(z, sizes, cap, floor)
    # KKT: y = clip(c z, floor, 1) with one c
    free = (y > floor) & (y < 1)
    c = y[free] / z[free]
    assert np.ptp(c) <= 1e-12 * c.mean() and free.sum() >= 2
    assert np.all(c[0] * z[y >= 1] >= 1 - 1e-12) and np.all(c[0] * z[y <= floor] <= floor)
    best = None
    for _ in range(3):
        start = project(rng.random(6) + 0.1, sizes, cap, floor)
        res = minimize(bregman, start, args=(z, sizes, cap), method="SLSQP",
                       bounds=[(floor, 1.0)] * 6, options={"ftol": 1e-14, "maxiter": 500},
                       constraints=[{"type": "eq", "fun": lambda v: sizes @ v - cap}])
        best = res if best is None or res.fun < best.fun else best
    assert bregman(y, z, sizes, cap) <= best.fun + 1e-9
    assert np.allclose(y, best.x, atol=1e-4)


# --------------------------------------------------------------------------- gain


def random_demands(rng, n_slots, n_demands):
    out = []
    for _ in range(n_demands):
        k = int(rng.integers(1, 5))
        slots = rng.choice(n_slots, k, replace=False)
        gains = rng.choice([0.2, 0.5, 0.5, 0.8, 1.0], k)  # ties included
        out.append(demand(float(rng.uniform(0, 3)), list(zip(slots.tolist(), gains)), 0.3,
                          n_slots))
    return out


def test_gain_of_integral_allocation_is_best_held_option():
    rng = np.random.default_rng(8)
    demands = random_demands(rng, 8, 30)
    for _ in range(50):
        x = rng.integers(0, 2, 8).astype(float)
        want = 0.0
        for d in demands:
            pos = served(x, d)
            held = [g for s, g in zip(d.slots, d.gains) if x[s] == 1]
            assert pos == (-1 if not held else int(np.flatnonzero(x[d.slots] == 1)[0]))
            want += d.weight * (max(held) if held else d.base)
        assert gain(x, demands) == pytest.approx(want, rel=1e-12)


def test_demand_drops_options_no_better_than_base_and_sorts():
    d = demand(2.0, [(3, 0.4), (1, 0.9), (7, 0.1), (2, 0.6)], base=0.4)
    assert d.slots.tolist() == [1, 2] and d.gains.tolist() == [0.9, 0.6]
    assert gain(np.zeros(8), [d]) == pytest.approx(0.8)
    assert subgradient(np.zeros(8), [d]).tolist() == pytest.approx(
        [0, 2 * (0.3 + 0.2), 2 * 0.2, 0, 0, 0, 0, 0])


def test_subgradient_is_a_supergradient_and_gain_concave():
    rng = np.random.default_rng(9)
    demands = random_demands(rng, 10, 25)
    for _ in range(300):
        x, x2 = rng.random(10), rng.random(10)
        if rng.random() < 0.3:  # integral and capped points too
            x = rng.integers(0, 2, 10).astype(float)
        g = subgradient(x, demands)
        assert gain(x2, demands) <= gain(x, demands) + g @ (x2 - x) + 1e-9
        mid = gain(0.5 * (x + x2), demands)
        assert mid >= 0.5 * (gain(x, demands) + gain(x2, demands)) - 1e-9


def test_subgradient_is_the_gradient_where_smooth():
    rng = np.random.default_rng(10)
    demands = random_demands(rng, 6, 10)
    x = rng.uniform(0.05, 0.3, 6)
    g, h = subgradient(x, demands), 1e-7
    fd = [(gain(x + h * e, demands) - gain(x - h * e, demands)) / (2 * h) for e in np.eye(6)]
    assert np.allclose(g, fd, atol=1e-6)


# --------------------------------------------------------------------------- mirror ascent

GA, GP = 1.0, 0.5  # gain served at the access node, at its parent; the cloud gives 0
W1 = [0.5, 0.25, 0.1, 0.1, 0.05]  # requests per model (normalised: sum 1)
W2 = W1[::-1]


def path_nodes():
    """Access holds 2 of 5 equal-size models (slots 0-4), its parent 3 (slots 5-9)."""
    return [NodeSlots("access", np.arange(5), np.ones(5), 2.0),
            NodeSlots("parent", np.arange(5, 10), np.ones(5), 3.0)]


def path_demands(weights):
    return [demand(w, [(m, GA), (5 + m, GP)], 0.0, 10) for m, w in enumerate(weights)]


def allocations():
    """Every integral allocation that fills both nodes (100 of them)."""
    for a in itertools.combinations(range(5), 2):
        for p in itertools.combinations(range(5, 10), 3):
            x = np.zeros(10)
            x[list(a) + list(p)] = 1
            yield x


def brute_force(demands):
    return max(((gain(x, demands), x) for x in allocations()), key=lambda gx: gx[0])


def normalised_grad(inf, demands):
    return subgradient(inf.y, demands) / sum(d.weight for d in demands)


def test_brute_force_optima_are_unique_and_differ():
    for w in (W1, W2):
        values = sorted(gain(x, path_demands(w)) for x in allocations())
        assert values[-1] - values[-2] >= 0.02  # a unique optimum, by a margin
    x1, x2 = brute_force(path_demands(W1))[1], brute_force(path_demands(W2))[1]
    assert x1.tolist() == [1, 1, 0, 0, 0, 0, 0, 1, 1, 1]
    assert x2.tolist() == [0, 0, 0, 1, 1, 1, 1, 1, 0, 0]


def test_mirror_ascent_converges_to_brute_force_optimum():
    """Measured with DEFAULT_ETA 0.5: within 0.05 of the optimum from period ~110 on."""
    demands = path_demands(W1)
    opt, x_opt = brute_force(demands)
    inf = Infida(path_nodes(), 10, DEFAULT_ETA)
    rng = np.random.default_rng(11)
    sampled = []
    for t in range(1, 301):
        inf.step(normalised_grad(inf, demands))
        if t >= 200:
            assert np.abs(inf.y - x_opt).max() < 0.05, (t, inf.y)
            sampled.append(gain(inf.sample(rng), demands))
    assert np.mean(sampled) >= 0.98 * opt


def test_mirror_ascent_follows_a_shift():
    """Reversed popularity at T = 300: measured within 0.05 of the new optimum after ~260
    periods with DEFAULT_ETA (the old held models must first lose their cap)."""
    inf = Infida(path_nodes(), 10, DEFAULT_ETA)
    d1, d2 = path_demands(W1), path_demands(W2)
    x2 = brute_force(d2)[1]
    for _ in range(300):
        inf.step(normalised_grad(inf, d1))
    assert np.abs(inf.y - x2).max() > 0.9
    for t in range(1, 401):
        inf.step(normalised_grad(inf, d2))
        if t >= 320:
            assert np.abs(inf.y - x2).max() < 0.05, (t, inf.y)


def test_step_keeps_every_node_on_its_set():
    nodes = [NodeSlots("a", np.array([0, 2, 4]), np.array([1.0, 2.0, 4.0]), 3.5),
             NodeSlots("b", np.array([1, 3]), np.array([1.0, 1.0]), 5.0)]  # fits all
    inf = Infida(nodes, 5, eta=2.0)
    rng = np.random.default_rng(12)
    for _ in range(50):
        inf.step(rng.normal(scale=50.0, size=5))  # large steps must not overflow
        assert abs(nodes[0].sizes @ inf.y[[0, 2, 4]] - 3.5) <= 1e-9 * 3.5
        assert inf.y[1] == inf.y[3] == 1.0 and np.all(inf.y >= DEFAULT_FLOOR)


# --------------------------------------------------------------------------- bad input


def one_node(**kw):
    args = dict(name="n", slots=np.arange(3), sizes=np.ones(3), capacity=2.0) | kw
    return NodeSlots(**args)


@pytest.mark.parametrize("build, message", [
    (lambda: demand(1.0, [(0, float("nan"))], 0.0), "gain nan for slot 0 must be finite"),
    (lambda: demand(-1.0, [(0, 1.0)], 0.0), "weight -1.0 must be >= 0"),
    (lambda: demand(1.0, [(-1, 1.0)], 0.0), r"\[-1\]: slot indices must be in 0\.\."),
    (lambda: demand(1.0, [(5, 1.0)], 0.0, n_slots=5), r"must be in 0\.\.4"),
    (lambda: demand(1.0, [(1.5, 1.0)], 0.0), "slot 1.5 must be an integer index"),
    (lambda: demand(1.0, [(1, 1.0), (1, 0.5)], 0.0), "slot indices must be unique"),
    (lambda: demand(1.0, [(0, 1.0)], float("inf")), "base gain inf must be finite"),
    (lambda: Demand(1.0, np.array([0, 1]), np.array([0.5, 0.9]), 0.0), "must be descending"),
    (lambda: gain(np.zeros(3), [demand(1.0, [(4, 1.0)], 0.0)]), r"slot 4 is outside"),
    (lambda: one_node(sizes=np.array([1.0, 0.0, 1.0])), "finite values > 0"),
    (lambda: one_node(sizes=np.array([1.0, np.nan, 1.0])), "finite values > 0"),
    (lambda: one_node(sizes=np.ones(2)), "2 sizes for 3 slots"),
    (lambda: one_node(capacity=-1.0), "capacity -1.0 must be > 0"),
    (lambda: one_node(capacity=float("nan")), "capacity nan must be finite"),
    (lambda: one_node(slots=np.array([0, 0, 1])), "slot indices must be unique"),
    (lambda: one_node(slots=np.array([], dtype=int), sizes=np.ones(0)), "has no slots"),
    (lambda: Infida([one_node(), one_node(name="m", slots=np.array([2, 3, 4]))], 5, 0.5),
     r"slots \[2\] of node 'm' are owned by another node"),
    (lambda: Infida([one_node()], 5, 0.5), r"slots \[3, 4\] are owned by no node"),
    (lambda: Infida([one_node()], 2, 0.5), r"slot 2 is outside 0\.\.1"),
    (lambda: Infida([one_node()], 3, 0.0), "eta 0.0 must be > 0"),
    (lambda: Infida([one_node()], 3, float("nan")), "eta nan must be finite"),
    (lambda: Infida([one_node()], 3, 0.5, y0=np.array([1.0, 1.0, 1.0])),
     "fills 3.0 of capacity 2.0: it must fill exactly 2.0"),
    (lambda: Infida([one_node()], 3, 0.5, y0=np.array([1.5, 0.5, 0.0])), r"in \[0, 1\]"),
    (lambda: Infida([one_node()], 3, 0.5).step(np.zeros(2)), "grad must be 3 finite"),
    (lambda: project(np.array([1.0, -1.0]), np.ones(2), 1.0), "z must be finite, >= 0"),
    (lambda: project(np.ones(3), np.ones(3), 1.0, floor=0.5), "floor 0.5 must be in"),
    (lambda: depround(np.array([0.9, 0.9]), np.ones(2), 1.0, np.random.default_rng()),
     r"sum size \* y = 1.8 must be <= capacity 1.0"),
])
def test_bad_input_is_refused_with_a_message(build, message):
    with pytest.raises(PlacementError, match=message):
        build()


def test_placement_error_is_a_value_error():
    from hybrid_policy.errors import HybridPolicyError
    assert issubclass(PlacementError, HybridPolicyError) and issubclass(PlacementError,
                                                                        ValueError)
