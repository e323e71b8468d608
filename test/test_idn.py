"""The inference delivery network: catalogue, network and serving rule, placement policies,
loading, the trace simulator and the placement modes in the in-process fleet."""

from conftest import run_cli
from collections import Counter
from dataclasses import replace

import numpy as np
import pytest

from hybrid_policy.core import topology
from hybrid_policy.families.idn import idn
from hybrid_policy.families.idn import setup as idn_setup
from hybrid_policy.families.idn import sim as idn_sim
from hybrid_policy.families.idn.catalogue import Catalogue, CatalogueError, Variant, load, parse


def _net(tiny_idn, **cfg):
    doc = topology.read(tiny_idn["topology"])
    topo = topology.parse(doc, str(tiny_idn["topology"]))
    c = replace(idn.config_of(topo, doc), **cfg)
    return idn.IdnNetwork(topo, tiny_idn["catalogue"], c)


def test_fixture_catalogue_is_measured(tiny_idn):
    cat = tiny_idn["catalogue"]
    assert [v.name for v in cat.of("fetch_reach")] == ["draft", "exit1", "exit2", "target"]
    sizes = [v.params for v in cat.of("fetch_reach")]
    assert sizes[0] < sizes[1] < sizes[2] < sizes[3]
    assert all(v.ms > 0 and v.episodes == 3 for v in cat.variants)


# -- catalogue ------------------------------------------------------------------------------
def _variant(**kw):
    base = dict(name="draft", task="fetch_reach", params=10, success=0.5, episodes=3, ms=1.0,
                history=2)
    return Variant(**{**base, **kw})


@pytest.mark.parametrize("kw, words", [
    ({"name": "big"}, "draft, target or exit<L>"),
    ({"params": 0}, "params must be a positive integer"),
    ({"params": 1.5}, "params must be a positive integer"),
    ({"success": 1.2}, "success must be a rate in [0, 1]"),
    ({"episodes": 0}, "episodes must be a positive integer"),
    ({"ms": float("nan")}, "ms must be a positive time"),
    ({"ms": 0.0}, "ms must be a positive time"),
    ({"history": 0}, "history must be a positive integer"),
])
def test_bad_variant_is_refused_with_what_is_valid(kw, words):
    with pytest.raises(CatalogueError, match=words.replace("[", r"\[").replace("]", r"\]")):
        _variant(**kw)


def test_catalogue_refuses_duplicates_empty_and_unknown_lookups():
    with pytest.raises(CatalogueError, match="given twice"):
        Catalogue((_variant(), _variant(success=0.7)))
    with pytest.raises(CatalogueError, match="no variants"):
        Catalogue(())
    cat = Catalogue((_variant(), _variant(name="target", params=100)))
    with pytest.raises(CatalogueError, match="no variant of task 'fetch_push'.*fetch_reach"):
        cat.of("fetch_push")
    with pytest.raises(CatalogueError, match="no variant 'exit1'.*draft, target"):
        cat.find("fetch_reach", "exit1")


def test_catalogue_file_round_trip_and_bad_files(tmp_path):
    cat = Catalogue((_variant(), _variant(name="exit1", params=50, success=0.9)))
    path = cat.save(tmp_path / "c.json")
    assert load(path) == cat
    with pytest.raises(CatalogueError, match="version"):
        parse({"variants": []})
    with pytest.raises(CatalogueError, match=r"variants\[0\] must have exactly the keys"):
        parse({"version": 1, "variants": [{"name": "draft"}]})
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(CatalogueError, match="not valid JSON"):
        load(tmp_path / "bad.json")
    with pytest.raises(CatalogueError, match="cannot read"):
        load(tmp_path / "missing.json")


# -- the topology's idn block ------------------------------------------------------------
@pytest.mark.parametrize("block, words", [
    ({"speed": 1}, "unknown key 'speed'"),
    ({"period_ms": 0}, "period_ms must be a number > 0"),
    ({"latency_weight": -1}, "latency_weight must be a number >= 0"),
    ({"robot_params": -5}, "robot_params must be a whole number >= 0"),
    ({"eta": 0}, "eta must be a number > 0"),
    ({"shifts": [{"at_s": 1, "robots": ["nobody"], "access": "cell_b"}]},
     "robots must list robots of the topology"),
    ({"shifts": [{"at_s": 1, "robots": ["robot_0"], "task": "fly"}]}, "unknown task 'fly'"),
    ({"shifts": [{"at_s": 1, "robots": ["robot_0"], "access": "mars"}]},
     "access 'mars' is not a node"),
    ({"shifts": [{"at_s": 1, "robots": ["robot_0"]}]}, "changes the robots' task"),
    ({"shifts": [{"at_s": -1, "robots": ["robot_0"], "access": "cell_b"}]},
     "at_s must be a time"),
])
def test_bad_idn_block_names_the_entry(tiny_idn, block, words):
    doc = topology.read(tiny_idn["topology"])
    topo = topology.parse(doc, "t.yaml")
    with pytest.raises(idn.IdnError, match=words):
        idn.parse_config(topo, block)


def test_network_needs_one_repository_and_every_task_in_the_catalogue(tiny_idn):
    doc = topology.read(tiny_idn["topology"])
    two_tops = {**doc, "nodes": {**doc["nodes"], "cloud_2": {"tier": "cloud"}}}
    topo = topology.parse(two_tops, "t.yaml")
    with pytest.raises(idn.IdnError, match="one top node"):
        idn.IdnNetwork(topo, tiny_idn["catalogue"], idn.config_of(topo, doc))
    pushing = {**doc, "robots": [{**doc["robots"][0], "task": "fetch_push"}]}
    topo = topology.parse(pushing, "t.yaml")
    with pytest.raises(CatalogueError, match="no variant of task 'fetch_push'"):
        idn.IdnNetwork(topo, tiny_idn["catalogue"], idn.config_of(topo, doc))


# -- the network: options, gains, serving ------------------------------------------------
def test_options_gain_is_success_minus_weighted_latency_and_farther_is_slower(tiny_idn):
    net = _net(tiny_idn)
    where = idn.Where("fetch_reach", "cell_a")
    opts, base = net.options("robot_0", where)
    assert base.node == "cloud" and base.slot == -1
    assert [o.gain for o in opts] == sorted((o.gain for o in opts), reverse=True)
    for o in opts:
        assert o.gain == pytest.approx(o.variant.success - 0.01 * o.latency_ms)
    by = {(o.node, o.variant.name): o for o in opts}
    # the same variant farther up the path costs more latency (links) at these speeds
    assert by[("cell_a", "exit1")].latency_ms < by[("regional", "exit1")].latency_ms
    # on the robot: no link, only its compute; only the draft fits a robot
    assert {o.variant.name for o in opts if o.node == "robot_0"} == {"draft"}
    assert by[("robot_0", "draft")].latency_ms == pytest.approx(
        by[("robot_0", "draft")].variant.ms)
    # a robot's path never includes the other cell
    assert not any(o.node == "cell_b" for o in opts)


def test_serve_takes_the_best_option_held_and_loaded_else_the_repository(tiny_idn):
    net = _net(tiny_idn, latency_weight=0.0)  # gain = success: ties broken by list order
    where = idn.Where("fetch_reach", "cell_a")
    opts, base = net.options("robot_0", where)
    none = np.zeros(len(net.slots), bool)
    assert net.serve(none, "robot_0", where) == base
    better = [o for o in opts if o.gain > base.gain]
    if better:
        avail = none.copy()
        avail[better[-1].slot] = True
        assert net.serve(avail, "robot_0", where) == better[-1]
    draft = next(o for o in opts if o.node == "robot_0")
    avail = none.copy()
    avail[draft.slot] = True
    assert net.serve(avail, "robot_0", where, local_only=True) == draft
    assert net.serve(none, "robot_0", where, local_only=True) == base


def test_holdings_load_for_their_time_and_drop_at_once(tiny_idn):
    net = _net(tiny_idn, load_ms_per_mparam=1000.0)
    h = idn.Holdings(net)
    x = np.zeros(len(net.slots), np.int8)
    big = int(np.argmax([v.params for _, v in net.slots]))
    x[big] = 1
    assert h.apply(x, 100.0) == [big]
    ready = 100.0 + net.slots[big][1].params / 1e3
    assert not h.available(ready - 1e-6)[big] and h.available(ready)[big]
    assert h.apply(x, 200.0) == []  # held already: no second load
    assert h.loads == 1 and h.load_ms == pytest.approx(net.slots[big][1].params / 1e3)
    assert not h.apply(np.zeros_like(x), 300.0) and not h.available(1e9).any()


# -- placement policies ------------------------------------------------------------------
def _feasible(ns):
    """Every subset of a node's slots that fits its capacity, as index lists."""
    out = [[]]
    for i in range(len(ns.slots)):
        out += [s + [i] for s in out if ns.sizes[s + [i]].sum() <= ns.capacity]
    return out


def _brute_force(net, counts):
    from itertools import product

    from hybrid_policy.families.idn import place as idn_place

    demands = net.demands(counts)
    best, best_x = -np.inf, None
    for choice in product(*[_feasible(ns) for ns in net.nodes]):
        x = np.zeros(len(net.slots))
        for ns, idx in zip(net.nodes, choice):
            x[ns.slots[idx]] = 1
        g = idn_place.gain(x, demands)
        if g > best + 1e-12:
            best, best_x = g, x
    return best, best_x


def _mix(access):
    return Counter({("robot_0", "fetch_reach", access): 30, ("robot_1", "fetch_reach", access): 10})


def test_static_is_the_optimum_of_the_average_mix(tiny_idn):
    from hybrid_policy.families.idn import place as idn_place

    net = _net(tiny_idn)
    mix = _mix("cell_a")
    best, _ = _brute_force(net, mix)
    x = idn.optimise(net, mix, seed=0)
    assert idn_place.gain(x, net.demands(mix)) == pytest.approx(best, rel=1e-9)


def test_infida_reaches_the_optimum_and_follows_a_shift(tiny_idn):
    from hybrid_policy.families.idn import place as idn_place

    net = _net(tiny_idn)
    placer = idn.InfidaPlacer(net, seed=0)
    for access in ("cell_a", "cell_b"):  # the busy cell moves
        mix = _mix(access)
        best, best_x = _brute_force(net, mix)
        for _ in range(40):
            x = placer.decide(mix)
        # fractional allocation at the optimum, and its draw the optimum allocation
        assert idn_place.gain(x, net.demands(mix)) == pytest.approx(best, rel=1e-9)
        used = [s for s in range(len(x)) if best_x[s] and net.slots[s][0] in
                net.path("robot_0", access)[1:]]
        assert all(x[s] for s in used), "the optimum's models on the path are held"


def test_greedy_holds_the_most_requested_task_first(tiny_idn):
    net = _net(tiny_idn)
    greedy = idn.GreedyPlacer(net, seed=0)
    assert not greedy.decide(Counter()).any()  # nothing seen yet: nothing held
    x = greedy.decide(_mix("cell_a"))
    held = idn.Holdings(net)
    held.apply(x, 0.0)
    h = held.held()
    # on the path: every node holds the best-gain variant it could serve (one task here)
    opts, _ = net.options("robot_0", idn.Where("fetch_reach", "cell_a"))
    for node in ("cell_a", "regional"):
        mine = [o for o in opts if o.node == node]
        assert h[node] == [max(mine, key=lambda o: o.gain).variant.key]
    assert "cell_b" not in h  # no request passed it


def test_cloud_holds_nothing_and_robot_only_its_own_model(tiny_idn):
    net = _net(tiny_idn)
    assert not idn.CloudPlacer(net, 0).decide(_mix("cell_a")).any()
    held = idn.Holdings(net)
    held.apply(idn.RobotPlacer(net, 0).decide(_mix("cell_a")), 0.0)
    assert held.held() == {"robot_0": ["fetch_reach/draft"], "robot_1": ["fetch_reach/draft"]}


def test_static_without_a_mix_and_unknown_placer_are_refused(tiny_idn):
    net = _net(tiny_idn)
    with pytest.raises(idn.IdnError, match="average request mix"):
        idn.StaticPlacer(net, 0)
    with pytest.raises(idn.IdnError, match="unknown placement mode 'best'.*idn_greedy"):
        idn.make_placer("best", net, 0)


# -- trace simulation ---------------------------------------------------------------------
def test_trace_follows_the_moving_cell_and_counts_loads(tiny_idn):
    net = _net(tiny_idn)
    steps = {r: 5.0 for r in net.robots}  # per 200 ms period
    recs = {m: idn_sim.simulate(net, idn_setup.placer_for(m, net, 0, {r: 25.0 for r in
                                                                        net.robots}, 4.0),
                                20, steps, seed=0) for m in idn.PLACERS}
    assert all(len(r) == 20 for r in recs.values())
    cloud = recs["idn_cloud"]
    assert all(r.off_robot == 1.0 and r.loads == 0 for r in cloud)
    assert all(r.off_robot == 0.0 for r in recs["idn_robot"][1:])
    # INFIDA, once settled, gains at least as much as sending everything to the cloud, in
    # both cells (the shift at 1 s = period 5)
    for a, b in ((3, 5), (15, 20)):
        assert np.mean([r.gain for r in recs["idn"][a:b]]) >= \
            np.mean([r.gain for r in cloud[a:b]]) - 1e-9
    assert sum(r.loads for r in recs["idn"]) >= 1


def test_caught_up_measures_periods_until_a_mode_leads_for_good():
    def series(gains):
        return [idn_sim.PeriodRecord(i, i, 1, g, g, 0, 0, 0, 1) for i, g in enumerate(gains)]

    s = {"idn": series([0, 0, 1, 1, 1, 1]), "rival": series([0.5] * 6)}
    assert idn_sim.caught_up(s, "idn", ("rival",), 0, 6, window=1) == 2
    assert idn_sim.caught_up(s, "rival", ("idn",), 0, 6, window=1) is None


# -- serving, fallbacks and the fleet ------------------------------------------------------
def test_an_answer_is_the_same_wherever_it_is_served_and_a_missing_variant_is_refused(
        tiny_idn):
    from hybrid_policy.families.idn.serve import (
        NodeStore, VariantMissing, VariantModels, serve_variants,
    )
    from hybrid_policy.core.protocol import Request

    cat = tiny_idn["catalogue"]
    models = VariantModels(tiny_idn["root"])
    near, far = NodeStore(models), NodeStore(VariantModels(tiny_idn["root"]))
    for v in cat.variants:
        near.load(v)
        far.load(v)
    rng = np.random.default_rng(0)
    reqs = [Request("act", rng.normal(size=(4, 13)).astype(np.float32) * 0.1, s)
            for s in (1, 2, 3)]
    for v in cat.variants:
        a = serve_variants(near, [(v.key, r) for r in reqs])
        b = serve_variants(far, [(v.key, reqs[i]) for i in (2, 1, 0)])[::-1]
        assert all(np.array_equal(x.action, y.action) for x, y in zip(a, b))
    near.unload("fetch_reach/exit1")
    out = serve_variants(near, [("fetch_reach/exit1", reqs[0]), ("fetch_reach/draft", reqs[1])])
    assert isinstance(out[0], VariantMissing) and "does not hold fetch_reach/exit1" in str(out[0])
    assert not isinstance(out[1], VariantMissing)


def _fleet(tiny_idn, mode, episodes=4, control=None, **cfg):
    doc = topology.read(tiny_idn["topology"])
    topo = topology.parse(doc, str(tiny_idn["topology"]))
    c = replace(idn.config_of(topo, doc), **cfg)
    steps = []
    run = idn_setup.fleet_run(mode, topo, c, tiny_idn["catalogue"], tiny_idn["root"], episodes,
                              seed=0, progress=False,
                              **({} if control is None else {"control": control}),
                              on_step=lambda robot, rec: steps.append((robot, rec)))
    return run, steps


def test_fleet_serves_each_step_where_the_placement_says(tiny_idn):
    run, steps = _fleet(tiny_idn, "idn_static")
    assert sum(r.episodes for r in run.robots.values()) == 8
    routes = Counter(rec.plan.route_to for _, rec in steps)
    assert routes["cell_a"] > 0 and routes["cell_b"] > 0, routes
    for robot in ("robot_0", "robot_1"):  # it moved cell once, at 1 s
        mine = [rec.plan.route_to for r, rec in steps if r == robot]
        assert "cell_a" not in mine[mine.index("cell_b"):]
    # nothing refused (the static placement never drops a model); a wifi packet may be lost
    assert "refused" not in run.extra
    assert sum(rec.lost for _, rec in steps) <= 0.02 * len(steps)
    periods = run.extra["periods"]
    assert periods[0]["demand"] == 0 and sum(p["demand"] for p in periods[1:]) > 0


def test_cloud_only_sends_everything_up_and_robot_only_nothing(tiny_idn):
    cloud, steps = _fleet(tiny_idn, "idn_cloud", episodes=2)
    assert {rec.plan.route_to for _, rec in steps} == {"cloud"}
    assert cloud.total().summary()["uplink_tx_per_step"] == 1.0
    robot, steps = _fleet(tiny_idn, "idn_robot", episodes=2)
    assert all(rec.plan.request is None and rec.plan.route_to == r for r, rec in steps[2:])
    assert robot.extra["loads"] == 2  # one draft per robot


def test_a_lost_answer_falls_back_to_the_robots_own_model_else_holds_still(tiny_idn):
    from hybrid_policy.families.idn.serve import IdnMode, NodeStore, Placement, VariantModels

    net = _net(tiny_idn)
    placement = Placement(net)
    store = NodeStore(VariantModels(tiny_idn["root"]))
    mode = IdnMode("idn", "robot_0", idn.Where("fetch_reach", "cell_a"), placement, store)
    obs = np.zeros(13, np.float32)
    plan = mode.plan(obs, np.random.default_rng(0))
    assert plan.route_to == "cloud" and plan.request is not None
    assert not mode.resolve(plan, None).any()  # holds nothing: holds still
    draft = tiny_idn["catalogue"].find("fetch_reach", "draft")
    store.load(draft)
    placement.available[net.slot_of[("robot_0", draft.key)]] = True
    plan = mode.plan(obs, np.random.default_rng(0))
    # a draft on the robot may now serve (if its gain beats the cloud's) or fall back
    acted = mode.resolve(plan, None)
    own = store.serve(draft.key, [plan.request])[0].action if plan.request is not None \
        else plan.draft_action
    assert np.array_equal(acted, own)


def test_a_robot_kept_waiting_counts_every_control_period_it_waited(tiny_idn):
    """Placement demand is time, not sent requests: on the cloud (≥ 50 ms round trip, two
    control periods of 40 ms) each step stands for two periods of demand."""
    run, steps = _fleet(tiny_idn, "idn_cloud", episodes=2)
    demand = sum(p["demand"] for p in run.extra["periods"])
    slow = sum(rec.latency_ms > 40.0 for _, rec in steps)
    assert slow > 0.9 * len(steps)
    # each step waited ceil(latency / 40 ms) periods; the last period is never placed
    waited = sum(int(np.ceil(rec.latency_ms / 40.0 - 1e-9)) for _, rec in steps)
    assert len(steps) < demand <= waited


def test_placement_in_real_time_ticks_every_period_while_the_cloud_answers_late(tiny_idn):
    """Real time for the placement family: the robot ticks every 40 ms whatever the cloud's
    ≥ 50 ms answers do, so each tick is one period of demand and late answers show as held
    or stale ticks; robot_only (its own draft, no network) misses none."""
    from hybrid_policy.core.realtime import Clock

    run, steps = _fleet(tiny_idn, "idn_cloud", episodes=2, control=Clock("realtime"))
    total = run.total()
    assert total.missed_ticks > 0 and total.stale_ticks > 0
    assert total.missed_ticks + total.stale_ticks <= total.steps
    lock, _ = _fleet(tiny_idn, "idn_cloud", episodes=2)
    assert lock.total().missed_ticks == 0
    robot, _ = _fleet(tiny_idn, "idn_robot", episodes=2, control=Clock("realtime"))
    assert robot.total().missed_ticks == robot.total().stale_ticks == 0


def test_eval_refuses_placement_modes_without_a_topology_or_mixed_with_others(cli, tiny_idn):
    for extra, says in (([], "give them alone, with --topology"),
                        (["--topology", str(tiny_idn["topology"]), "--modes", "idn,hybrid"],
                         "belong to different families (adahi, idn)")):
        out = run_cli("eval", "--models", str(tiny_idn["root"]), "--episodes", "1",
                      *(extra or ["--modes", "placement"]))
        assert out.returncode == 2
        assert says in out.stderr, out.stderr


def test_eval_runs_every_placement_mode_from_the_command_line(cli, tiny_idn, tmp_path):
    import json

    (tiny_idn["root"] / "fetch_reach" / "catalogue.json").unlink(missing_ok=True)
    out = run_cli("eval", "--topology", str(tiny_idn["topology"]), "--modes",
                          "placement", "--models", str(tiny_idn["root"]), "--episodes", "1",
                          "--catalogue-episodes", "1", "--json", str(tmp_path / "idn.json"))
    assert out.returncode == 0, out.stderr
    doc = json.loads((tmp_path / "idn.json").read_text())
    assert sorted(doc["modes"]) == sorted(idn.PLACERS)
    for m in doc["modes"].values():
        assert m["episodes"] == 2 and sum(m["placement"]["served"].values()) > 0
    assert doc["modes"]["idn_cloud"]["placement"]["served"] == {
        "cloud": doc["modes"]["idn_cloud"]["placement"]["served"]["cloud"]}
    assert "gain/step" in out.stdout
