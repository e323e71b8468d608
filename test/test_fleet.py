"""The in-process fleet: one robot is eval exactly, runs are deterministic, the queue
behaves as queueing theory says, batches answer as single requests do."""

from conftest import run_cli
import json

import numpy as np
import pytest
import yaml

from hybrid_policy.families.adahi.server import answering
from hybrid_policy.core import evaluator, topology
from hybrid_policy.core.compute import ComputeModel
from hybrid_policy.families.adahi.timing import verify_requests
from hybrid_policy.core.events import BatchServer, Clock
from hybrid_policy.families.adahi.fleet import evaluate_fleet
from hybrid_policy.core.link import link_profile
from hybrid_policy.families.adahi.modes import Thresholds, make_mode
from hybrid_policy.families.adahi.server import serve, serve_batch
from hybrid_policy.policies import load_policy

TASK = "fetch_reach"
COMPUTE = ComputeModel(0.8, 3.0, batch_ms=((1, 3.0), (2, 3.6), (4, 4.5), (8, 6.5)))


@pytest.fixture(scope="module")
def models(tiny):
    return load_policy(tiny["draft"], role="draft"), load_policy(tiny["target"], role="target")


def fleet(n, link="5g_embb", max_batch=8, window_ms=0.0):
    return topology.parse({
        "nodes": {"edge": {"tier": "edge", "max_batch": max_batch,
                           "batch_window_ms": window_ms}},
        "robots": [{"name": "r", "count": n, "task": TASK, "mode": "hybrid", "access": "edge",
                    "link": link}]})


@pytest.mark.parametrize("mode_name,link", [("hybrid", "lossy_wifi"), ("adahi", "5g_embb")])
def test_one_robot_is_exactly_the_single_robot_evaluator(models, mode_name, link):
    """Same plans, verdicts, actions, latencies, server operations and successes; the lossy
    link exercises lost packets and deadline fallbacks on both sides."""
    draft, target = models
    thresholds = Thresholds(0.05, 0.0, 0.0)
    single, grouped = [], []
    res = evaluator.evaluate(TASK, [make_mode(mode_name, draft, target, thresholds)], 6, 1,
                             evaluator.Setting(answering(target), link_profile(link), COMPUTE, 100.0),
                             progress=False, on_step=lambda _, r: single.append(r))[mode_name]
    run = evaluate_fleet(fleet(1, link), lambda _: make_mode(mode_name, draft, target,
                                                             thresholds),
                         {TASK: target}, COMPUTE, 100.0, 6, 1, progress=False,
                         on_step=lambda _, r: grouped.append(r))
    one = run.robots["r_0"]
    assert len(single) == len(grouped) > 0
    for a, b in zip(single, grouped):
        assert (a.plan.request is None) == (b.plan.request is None)
        np.testing.assert_array_equal(a.action, b.action)
        assert (a.latency_ms, a.server_op, a.lost) == (b.latency_ms, b.server_op, b.lost)
    assert (res.successes, res.steps, res.uplink_tx, res.server_ops, res.fallbacks) == (
        one.successes, one.steps, one.uplink_tx, one.server_ops, one.fallbacks)
    assert res.latencies == one.latencies and res.episode_success == one.episode_success
    if link == "lossy_wifi":
        assert res.fallbacks > 0  # the comparison covered losses


def test_the_fleet_is_deterministic_and_robots_share_the_server(models):
    draft, target = models
    runs = [evaluate_fleet(fleet(6), lambda _: make_mode("hybrid", draft, target),
                           {TASK: target}, COMPUTE, 100.0, 2, 0, progress=False)
            for _ in range(2)]
    a, b = runs
    assert {k: v.latencies for k, v in a.robots.items()} == {
        k: v.latencies for k, v in b.robots.items()}
    assert a.servers == b.servers
    s = a.servers["edge"]
    assert s["requests"] == a.total().server_ops > 0
    assert sum(int(n) * c for n, c in s["batch_sizes"].items()) == s["requests"]
    # robot 0 of a fleet runs eval's first episodes: same successes as a fleet of one
    alone = evaluate_fleet(fleet(1), lambda _: make_mode("hybrid", draft, target),
                           {TASK: target}, COMPUTE, 100.0, 2, 0, progress=False)
    assert a.robots["r_0"].episode_success == alone.robots["r_0"].episode_success


def test_robots_start_out_of_phase_unless_asked_to_start_evenly(models):
    """Evenly spaced robots whose server keeps up never meet in its queue; robots at
    random phases (the default, drawn from the seed) do; an unknown choice is refused."""
    draft, target = models
    runs = {phases: evaluate_fleet(fleet(6, max_batch=1), lambda _: make_mode(
                "hybrid", draft, target), {TASK: target}, COMPUTE, 100.0, 1, 0,
                progress=False, phases=phases)
            for phases in ("even", "random")}
    assert runs["even"].servers["edge"]["queueing_ms_mean"] == 0.0
    assert runs["random"].servers["edge"]["queueing_ms_mean"] > 0.0
    with pytest.raises(ValueError, match="phases 'sync' is not one of random, even"):
        evaluate_fleet(fleet(2), lambda _: make_mode("hybrid", draft, target), {TASK: target},
                       COMPUTE, 100.0, 1, 0, progress=False, phases="sync")


def test_a_loaded_server_batches_and_queues(models):
    """Eight robots in phase behind a slow server: requests wait, and batches form."""
    draft, target = models
    slow = ComputeModel(0.8, 30.0, batch_ms=((1, 30.0), (8, 40.0)))
    run = evaluate_fleet(fleet(8, max_batch=8), lambda _: make_mode("hybrid", draft, target),
                         {TASK: target}, slow, 500.0, 1, 0, progress=False)
    s = run.servers["edge"]
    assert max(int(n) for n in s["batch_sizes"]) > 1 and s["queueing_ms_p95"] > 0
    assert s["operations"] < s["requests"]


def test_the_queue_matches_the_m_d_1_mean_wait():
    """Poisson arrivals, deterministic service, one at a time: the mean wait in queue is
    ρD / (2(1 − ρ)) (Pollaczek-Khinchine) within 5%."""
    for rho in (0.5, 0.8):
        service, clock = 2.0, Clock()
        server = BatchServer(clock, 1, 0.0, lambda items: service, lambda items: items,
                             lambda *_: None)
        rng = np.random.default_rng(0)
        t = 0.0
        for _ in range(100_000):
            t += rng.exponential(service / rho)
            clock.at(t, lambda: server.arrive(None))
        clock.run()
        expected = rho * service / (2 * (1 - rho))
        assert server.stats.summary()["queueing_ms_mean"] == pytest.approx(expected, rel=0.05)
        assert server.stats.summary()["utilisation"] == pytest.approx(rho, rel=0.02)


def test_a_batching_window_holds_a_lone_request_for_the_window():
    clock, done = Clock(), []
    server = BatchServer(clock, 4, 5.0, lambda items: 1.0, lambda items: items,
                         lambda item, answer, waited, service: done.append((clock.now, waited)))
    clock.at(10.0, lambda: server.arrive("a"))
    clock.at(12.0, lambda: server.arrive("b"))
    clock.at(100.0, lambda: [server.arrive(x) for x in "cdef"])  # a full batch: no wait
    clock.run()
    assert done[:2] == [(16.0, 5.0), (16.0, 3.0)]  # served together when the window ended
    assert [w for _, w in done[2:]] == [0.0] * 4
    assert server.stats.batches == {2: 1, 4: 1}


def test_batched_answers_equal_single_answers(models, tiny):
    draft, target = models
    requests = verify_requests(draft, target, tiny["ds"].observations[:40], 12)
    for single, batched in zip([serve(target, r) for r in requests],
                               serve_batch(target, requests)):
        assert (single.accepted, single.codes) == (batched.accepted, batched.codes)
        np.testing.assert_allclose(single.action, batched.action, atol=1e-5)


def test_the_batch_curve_scales_compute_time():
    assert COMPUTE.target_batch(1) == COMPUTE.target() == 3.0
    assert COMPUTE.target_batch(3) == pytest.approx(4.05)  # between the measured 2 and 4
    assert COMPUTE.target_batch(4, speed=2.0) == pytest.approx(2.25)
    assert COMPUTE.target_batch(16) == pytest.approx(6.5 + 8 * 6.5 / 8)  # beyond: per request
    assert ComputeModel(1.0, 2.0).target_batch(3) == 6.0  # no curve: separate passes
    with pytest.raises(ValueError, match="batch_ms must start at batch 1"):
        ComputeModel(1.0, 2.0, batch_ms=((2, 3.0),))


def test_eval_topology_writes_robots_and_servers(cli, tiny, tmp_path):
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump({
        "nodes": {"edge": {"tier": "edge", "max_batch": 4}},
        "robots": [{"name": "r", "count": 3, "task": TASK, "mode": "hybrid", "access": "edge",
                    "link": "5g_embb"}]}))
    out = run_cli("eval", "--task", TASK, "--draft", str(tiny["draft"]),
                          "--target", str(tiny["target"]), "--modes", "draft_only,hybrid",
                          "--episodes", "2", "--topology", str(path), "--json",
                          str(tmp_path / "f.json"))
    assert out.returncode == 0, out.stderr[-2000:]
    doc = json.loads((tmp_path / "f.json").read_text())
    hybrid = doc["modes"]["hybrid"]
    assert [r["robot"] for r in hybrid["robots"]] == ["r_0", "r_1", "r_2"]
    assert hybrid["episodes"] == 6 and hybrid["servers"]["edge"]["requests"] > 0
    assert doc["modes"]["draft_only"]["servers"]["edge"]["requests"] == 0
    assert [n for n, _ in doc["compute"]["batch_ms"]] == [1, 2, 4]
    assert "utilisation" in out.stdout and "r_2" in out.stdout


def test_requests_past_their_deadline_are_dropped_unserved():
    clock, done = Clock(), []
    server = BatchServer(clock, 1, 0.0, lambda n: 10.0, lambda items: items,
                         lambda item, *_: done.append(item),
                         expired=lambda item, now: now >= item + 15.0)  # item = its send time
    for t in (0.0, 0.0, 0.0):
        clock.at(t, lambda t=t: server.arrive(t))
    clock.run()
    # the first is served at once, the second starts at 10 (< 15), the third would start
    # at 20: past its deadline, it is dropped
    assert done == [0.0, 0.0] and server.stats.summary()["expired"] == 1


def _slow(n, delay_ms=30.0):
    """A fleet whose round trip (2 × ``delay_ms``) outlasts fetch_reach's 40 ms period."""
    return topology.parse({
        "nodes": {"edge": {"tier": "edge"}},
        "robots": [{"name": "r", "count": n, "task": TASK, "mode": "hybrid", "access": "edge",
                    "link": {"profile": "ideal", "delay_ms": delay_ms}}]})


@pytest.mark.parametrize("loop", ["wait", "period", "draft_first"])
def test_one_robot_in_real_time_is_the_single_robot_evaluator_in_real_time(models, loop):
    """The fleet's real time is the evaluator's: where every verified step is late (60 ms
    round trip, 40 ms period) both apply the same commands at the same ticks, so the
    missed and stale ticks, latencies and successes agree."""
    import sim_envs

    from hybrid_policy.core.realtime import clock_for

    draft, target = models
    topo = _slow(1)
    control = clock_for("realtime", sim_envs.task_spec(TASK).control_period_ms, loop=loop)
    single, grouped = [], []
    setting = evaluator.Setting(answering(target), topo.robots[0].link, COMPUTE, 100.0, clock=control)
    res = evaluator.evaluate(TASK, [make_mode("hybrid", draft, target)], 3, 1, setting,
                             progress=False, on_step=lambda _, r: single.append(r))["hybrid"]
    run = evaluate_fleet(topo, lambda _: make_mode("hybrid", draft, target), {TASK: target},
                         COMPUTE, 100.0, 3, 1, progress=False, control=control,
                         on_step=lambda _, r: grouped.append(r))
    one = run.robots["r_0"]
    # the link binds: ``wait`` holds and then applies the previous state's verdict,
    # ``period`` falls back to the draft at 70% of the period, ``draft_first`` acts on the
    # draft at once while every verdict is overtaken
    assert (res.missed_ticks > 0, res.stale_ticks > 0) == {
        "wait": (True, True), "period": (False, False), "draft_first": (False, False)}[loop]
    assert res.fallbacks > 0 or loop != "period"
    assert (res.successes, res.steps, res.missed_ticks, res.stale_ticks, res.fallbacks) == (
        one.successes, one.steps, one.missed_ticks, one.stale_ticks, one.fallbacks)
    assert sorted(res.latencies) == sorted(one.latencies)
    assert res.episode_success == one.episode_success
    for a, b in zip(single, grouped):  # same arrival order: latencies are all equal
        np.testing.assert_array_equal(a.action, b.action)


def test_a_slow_link_costs_ticks_in_real_time_and_none_in_lockstep(models):
    """Lockstep waits for every answer; real time ticks on, holds where nothing arrived,
    and applies the newest command — every robot of a fleet, each at its own phase."""
    from hybrid_policy.core.realtime import Clock as ControlClock

    draft, target = models
    runs = {kind: evaluate_fleet(_slow(3), lambda _: make_mode("hybrid", draft, target),
                                 {TASK: target}, COMPUTE, 100.0, 1, 0, progress=False,
                                 control=ControlClock(kind, 40.0))
            for kind in ("lockstep", "realtime")}
    for name, r in runs["lockstep"].robots.items():
        assert r.missed_ticks == r.stale_ticks == 0
        rt = runs["realtime"].robots[name]
        assert rt.missed_ticks >= 1 and rt.stale_ticks >= rt.steps // 2
    # lockstep spends two periods a verified step; real time one, so its episode is shorter
    # in time: the same number of ticks covers it
    lock, rt = runs["lockstep"].total(), runs["realtime"].total()
    assert rt.server_ops >= lock.server_ops
