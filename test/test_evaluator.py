"""The in-process evaluator and the modes it drives, on the tiny trained pair."""

import dataclasses

import numpy as np
import pytest

from hybrid_policy.families.adahi.server import answering
from hybrid_policy.core import evaluator, stepmetrics
from hybrid_policy.core.compute import ComputeModel
from hybrid_policy.core.evaluator import Setting
from hybrid_policy.core.link import UnknownLinkError, link_profile
from hybrid_policy.families.adahi.modes import MODE_NAMES, Thresholds, make_mode
from hybrid_policy.families.registry import UnknownModeError, parse_modes
from hybrid_policy.errors import CheckpointError, HybridPolicyError
from hybrid_policy.policies import load_policy

COMPUTE = ComputeModel(draft_ms=0.5, target_ms=3.0)
THRESHOLDS = Thresholds(tau=0.3, uncertainty_tau=1.0, random_skip=0.4)


@pytest.fixture(scope="module")
def pair(tiny):
    return load_policy(tiny["draft"], role="draft"), load_policy(tiny["target"], role="target")


def _run(pair, seed, names=MODE_NAMES, link="5g_embb", episodes=3, target=None):
    draft, tgt = pair
    modes = [make_mode(n, draft, target or tgt, THRESHOLDS) for n in names]
    setting = Setting(answering(target or tgt), link_profile(link), COMPUTE)
    return evaluator.evaluate("fetch_reach", modes, episodes, seed, setting, progress=False)


def test_evaluation_is_deterministic_for_a_seed(pair):
    a, b = _run(pair, 3), _run(pair, 3)
    for name in MODE_NAMES:
        assert a[name].episode_success == b[name].episode_success
        assert a[name].summary() == b[name].summary()
    c = _run(pair, 4)
    assert any(a[n].summary() != c[n].summary() for n in MODE_NAMES)


def test_report_has_every_field_the_issue_names(pair):
    doc = stepmetrics.report("fetch_reach", _run(pair, 0), {"seed": 0})
    for name in MODE_NAMES:
        m = doc["modes"][name]
        for key in ("success_rate", "success_vs_target", "uplink_tx_per_step",
                    "server_ops_per_step", "uplink_bytes_per_step", "latency_ms_mean",
                    "latency_ms_p95", "latency_vs_hybrid", "episodes"):
            assert key in m, (name, key)
    modes = doc["modes"]
    assert modes["target_only"]["uplink_tx_per_step"] == 1.0
    assert modes["hybrid"]["uplink_tx_per_step"] == 1.0
    assert modes["draft_only"]["uplink_tx_per_step"] == modes["draft_only"]["server_ops_per_step"] == 0
    assert modes["draft_only"]["latency_ms_mean"] == pytest.approx(COMPUTE.draft_ms)
    assert modes["hybrid"]["latency_vs_hybrid"] == 1.0
    # skipping modes send less and wait less than verifying every step
    for name in ("adahi", "random_skip"):
        assert modes[name]["uplink_tx_per_step"] < 1.0
        assert modes[name]["latency_vs_hybrid"] < 1.0
    # a verify request carries the draft's distributions: more bytes than target_only's
    assert modes["hybrid"]["uplink_bytes_per_step"] > modes["target_only"]["uplink_bytes_per_step"]
    assert "adahi" in stepmetrics.format_table(doc)


def test_adahi_skips_exactly_the_steps_below_tau(pair):
    records = []
    draft, target = pair
    mode = make_mode("adahi", draft, target, THRESHOLDS)
    evaluator.evaluate("fetch_reach", [mode], 2, 0, Setting(answering(target), link_profile("ideal"), COMPUTE),
                       progress=False, on_step=lambda _, rec: records.append(rec))
    assert records
    for rec in records:
        assert (rec.plan.request is None) == (rec.plan.deviation < THRESHOLDS.tau)
        assert rec.server_op == (rec.plan.request is not None)


def test_hybrid_with_identical_draft_and_target_accepts_every_step(pair):
    _, target = pair
    records = []
    mode = make_mode("hybrid", target, target)
    evaluator.evaluate("fetch_reach", [mode], 2, 0, Setting(answering(target), link_profile("ideal"), COMPUTE),
                       progress=False, on_step=lambda _, rec: records.append(rec))
    assert len(records) >= 2 * 10
    for rec in records:
        assert rec.response is not None and rec.response.accepted
        assert rec.response.codes == rec.plan.codes
        assert all(tv == 0.0 for tv in rec.response.level_tv)
        np.testing.assert_array_equal(rec.response.action, rec.plan.draft_action)


def test_lossy_link_falls_back_and_counts_it(pair):
    res = _run(pair, 0, names=("hybrid",), link="lossy_wifi", episodes=4)["hybrid"]
    assert res.fallbacks > 0  # 10% loss each way over ~200 requests
    assert res.server_ops >= res.uplink_tx - res.fallbacks
    assert res.episodes == 4


def test_modes_see_the_same_scenes(pair, monkeypatch):
    seen = []
    real = evaluator.run_episode

    def spy(env, mode, reset_seed, seed, episode, s, result, on_step=None):
        seen.append((mode.name, reset_seed, episode))
        return real(env, mode, reset_seed, seed, episode, s, result, on_step)

    monkeypatch.setattr(evaluator, "run_episode", spy)
    _run(pair, 5, names=("draft_only", "target_only"), episodes=4)
    draft = [s[1:] for s in seen if s[0] == "draft_only"]
    assert draft == [s[1:] for s in seen if s[0] == "target_only"] and len(draft) == 4


def test_unknown_mode_and_link_list_valid_ones():
    assert parse_modes("all") == list(MODE_NAMES)
    with pytest.raises(UnknownModeError, match="'warp'.*valid modes: draft_only, target_only"):
        parse_modes("draft_only,warp")
    with pytest.raises(UnknownLinkError, match="'carrier_pigeon'; valid profiles: 6g_hrllc"):
        link_profile("carrier_pigeon")


def test_bad_thresholds_are_refused():
    with pytest.raises(HybridPolicyError, match="finite number >= 0"):
        Thresholds(tau=-1.0, uncertainty_tau=0.0, random_skip=0.0)
    with pytest.raises(HybridPolicyError, match="finite number >= 0"):
        Thresholds(tau=float("nan"), uncertainty_tau=0.0, random_skip=0.0)
    with pytest.raises(HybridPolicyError, match=r"in \[0, 1\]"):
        Thresholds(tau=0.1, uncertainty_tau=0.0, random_skip=1.5)


def test_skipping_modes_need_thresholds(pair):
    with pytest.raises(HybridPolicyError, match="needs calibrated thresholds"):
        make_mode("adahi", *pair)


def test_pair_from_different_tasks_is_refused(pair):
    draft, target = pair
    other_task = dataclasses.replace(target, task="fetch_push")
    with pytest.raises(CheckpointError, match="same task"):
        make_mode("target_only", draft, other_task)
