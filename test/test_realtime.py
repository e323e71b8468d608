"""Real-time semantics in simulated time (core.realtime): late commands, the hold rule, and
lockstep when every answer beats the tick."""

from dataclasses import replace

import numpy as np

import pytest

from hybrid_policy.families.adahi.server import answering
from hybrid_policy.core import evaluator
from hybrid_policy.core.compute import ComputeModel
from hybrid_policy.core.link import PROFILES
from hybrid_policy.core.realtime import Actuator, Clock
from hybrid_policy.policies import load_policy


@pytest.fixture(scope="module")
def fetch_models(tiny):
    return load_policy(tiny["draft"], role="draft"), load_policy(tiny["target"], role="target")


@pytest.fixture(scope="module")
def fetch_setting(fetch_models):
    return evaluator.Setting(answering(fetch_models[1]), PROFILES["ideal"], ComputeModel(draft_ms=0.5,
                                                                              target_ms=3.0))


def test_late_command_applies_at_next_tick_and_hold_runs_between():
    act = Actuator(4)
    a0, a1 = np.full(4, 0.1, np.float32), np.full(4, 0.2, np.float32)
    act.send(0, 55.0, a0)  # answers tick 0, arrives after tick 1 (40 ms)
    action, answered = act.tick(40.0)
    assert answered is None and not action.any()  # hold still at tick 1
    act.send(1, 95.0, a1)  # tick 1's answer, later than tick 2
    action, answered = act.tick(80.0)
    assert answered == 0 and np.array_equal(action, a0)  # from the first tick after arrival
    action, answered = act.tick(120.0)
    assert answered == 1 and np.array_equal(action, a1)


def test_older_command_never_applied_after_newer():
    act = Actuator(4)
    act.send(1, 30.0, np.ones(4, np.float32))
    act.send(0, 35.0, np.full(4, 2.0, np.float32))
    assert act.tick(40.0)[1] == 1
    assert act.tick(80.0)[1] is None  # state 0's command is older than the applied one


def test_verdict_beats_draft_of_same_state():
    act = Actuator(4)
    act.send(0, 1.0, np.zeros(4, np.float32), priority=0)
    act.send(0, 20.0, np.ones(4, np.float32))
    assert act.tick(40.0)[0].all()


def _run(models, mode_names, setting, episodes=2):
    from hybrid_policy.families.adahi.modes import make_mode

    draft, target = models
    modes = [make_mode(n, draft, target) for n in mode_names]
    steps = {n: [] for n in mode_names}
    res = evaluator.evaluate(draft.task, modes, episodes, 0, setting, progress=False,
                             on_step=lambda n, rec: steps[n].append(rec.action.copy()))
    return res, steps


def test_realtime_is_lockstep_when_answers_beat_the_tick(fetch_models, fetch_setting):
    lock = replace(fetch_setting, link=PROFILES["ideal"])
    rt = replace(lock, clock=Clock("realtime", 40.0))
    (r1, s1), (r2, s2) = _run(fetch_models, ["hybrid"], lock), _run(fetch_models, ["hybrid"], rt)
    assert r1["hybrid"].episode_success == r2["hybrid"].episode_success
    assert all(np.array_equal(a, b) for a, b in zip(s1["hybrid"], s2["hybrid"]))
    assert r2["hybrid"].missed_ticks == 0


def test_slow_link_misses_ticks_in_realtime_only(fetch_models, fetch_setting):
    slow = replace(PROFILES["ideal"], name="slow", delay_ms=30.0)  # 60 ms round trip > 40 ms
    lock = replace(fetch_setting, link=slow)
    rt = replace(lock, clock=Clock("realtime", 40.0))
    r_lock, _ = _run(fetch_models, ["hybrid"], lock, episodes=1)
    r_rt, _ = _run(fetch_models, ["hybrid"], rt, episodes=1)
    assert r_lock["hybrid"].missed_ticks == 0
    # every verified step is late: each tick holds or applies the previous state's command
    assert r_rt["hybrid"].missed_ticks >= 1
    assert r_rt["hybrid"].stale_ticks >= r_rt["hybrid"].steps - r_rt["hybrid"].missed_ticks - 1


def test_calibration_checks_the_draft_alone_on_the_evaluation_clock(fetch_models, tmp_path):
    """calibrate's closed-loop check (draft alone against verifying every step) runs on the
    clock it is given: in real time a verification that outlasts the period costs what it
    costs there, so the quality bound is judged where the threshold will be used."""
    from hybrid_policy import cli
    from hybrid_policy.families.adahi import setup
    from hybrid_policy.families.adahi import calibration
    from hybrid_policy.families.adahi.modes import make_mode

    draft, target = fetch_models
    slow = replace(PROFILES["ideal"], name="slow", delay_ms=30.0)  # 60 ms round trip > 40 ms
    cfg = calibration.CalibrationConfig(episodes=2, sweep_episodes=1, sweep_points=2)
    for kind in ("lockstep", "realtime"):
        setting = evaluator.Setting(answering(target), slow, ComputeModel(0.5, 3.0),
                                    clock=Clock(kind, 40.0))
        doc = calibration.calibrate(draft.task, draft, target, setting, cfg, 40.0)
        assert doc["clock"] == {"kind": kind, "period_ms": 40.0, "loop": "wait"}
        res = evaluator.evaluate(draft.task, [make_mode("hybrid", draft, target)], cfg.episodes,
                                 cfg.seed, setting, progress=False)["hybrid"]
        assert doc["draft_alone"]["hybrid_successes"] == sum(res.episode_success)
        missed = res.missed_ticks
        assert (missed == 0) == (kind == "lockstep")
    # calibrate hands its clock (real time by default) to the calibration it runs
    for flags, kind in (([], "realtime"), (["--eval-clock", "lockstep"], "lockstep")):
        args = cli.build_parser().parse_args(
            ["calibrate", "--task", "fetch_reach", "--link", "6g_hrllc", "--calibration",
             str(tmp_path / f"{kind}.json"), "--sweep-episodes", "1", *flags])
        lockstep = evaluator.Setting(answering(target), PROFILES["6g_hrllc"], ComputeModel(0.5, 3.0))
        doc, _ = setup.run_calibration(args, draft, target, lockstep, 2)
        assert doc["clock"]["kind"] == kind
