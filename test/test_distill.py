"""The distilled draft: its loss falls, the target accepts it more often than a draft trained
on the same demonstrations, and the default one is made once, kept and used by the CLI."""

import json

import numpy as np
import pytest

from hybrid_policy.families.adahi.calibration_file import default_draft_path, default_path
from hybrid_policy.families.adahi.speculative import rejection_prob
from hybrid_policy.errors import HybridPolicyError
from hybrid_policy.policies import load_policy
from hybrid_policy.families.adahi.distill import DistillConfig, agreement, distill_draft
from hybrid_policy.policies.runtime import Policy
from hybrid_policy.policies.training import (
    TrainConfig, history_windows, policy_config, train_policy,
)

TASK = "fetch_reach"


@pytest.fixture(scope="module")
def split(tiny):
    """Both drafts trained on 80% of the tiny demonstrations; the rest held out."""
    ds, tok = tiny["ds"], tiny["tok"]
    target = load_policy(tiny["target"], role="target")
    cut = int(0.8 * ds.num_episodes)
    train, held = ds.subset(range(cut)), ds.subset(range(cut, ds.num_episodes))
    cfg = policy_config("draft", ds.observations.shape[1], tok)
    demo, _ = train_policy(train, tok, cfg, TrainConfig(epochs=15, lr=3e-3), progress=False)
    distilled, losses = distill_draft(train, tok, target, cfg,
                                      DistillConfig(epochs=30, lr=5e-3, demo_weight=0.0),
                                      progress=False)
    as_policy = lambda m: Policy(m, tok, "draft", TASK, {}, target.temperature)  # noqa: E731
    return {"target": target, "demo": as_policy(demo), "distilled": as_policy(distilled),
            "losses": losses, "held": history_windows(held, target.history)}


def test_distillation_loss_falls(split):
    kl = [e["kl"] for e in split["losses"]]
    assert kl[-1] < 0.2 * kl[0]  # measured 2.04 -> 0.14
    assert kl[-1] <= 1.05 * min(kl)
    assert all(np.isfinite(e["offset"]) for e in split["losses"])


def test_distilled_draft_is_rejected_less_on_held_out_observations(split):
    target, held = split["target"], split["held"]
    demo = agreement(split["demo"], target, held)
    distilled = agreement(split["distilled"], target, held)
    assert distilled["rejection"] < demo["rejection"] - 0.05, (distilled, demo)
    assert distilled["windows"] == len(held)
    # the batch formula is the step-by-step exact rejection of core.speculative
    d = split["distilled"]
    exact = [rejection_prob(d.begin(w[-d.history:]), target.begin(w), d.levels)
             for w in held[::7]]
    batch = [agreement(d, target, held[i:i + 1])["rejection"] for i in range(0, len(held), 7)]
    assert np.allclose(exact, batch, atol=1e-5)
    # per-level acceptance multiplies back to the acceptance
    assert distilled["accept_level0"] * distilled["accept_level1"] == pytest.approx(
        1 - distilled["rejection"], rel=1e-5)


def test_the_demonstration_loss_can_be_mixed_in(tiny, split):
    ds, tok = tiny["ds"], tiny["tok"]
    cfg = policy_config("draft", ds.observations.shape[1], tok)
    _, losses = distill_draft(ds.subset(range(5)), tok, split["target"], cfg,
                              DistillConfig(epochs=2, demo_weight=0.5), progress=False)
    assert all(e["demo"] > 0 and e["loss"] > e["kl"] for e in losses)


def test_bad_settings_are_refused(tiny, split):
    from sim_envs.errors import DatasetError

    for bad in ([], [tiny["ds"].num_episodes], [-1]):
        with pytest.raises(DatasetError, match="episode indices"):
            tiny["ds"].subset(bad)
    part = tiny["ds"].subset([2, 0])  # episodes in the order asked, boundaries rebuilt
    assert part.num_episodes == 2 and part.episode_starts[1] == tiny["ds"].episode_lengths[2]
    part.validate("subset")
    with pytest.raises(HybridPolicyError, match="epochs"):
        DistillConfig(epochs=0)
    with pytest.raises(HybridPolicyError, match="demo_weight"):
        DistillConfig(demo_weight=-1)
    tok = tiny["tok"]
    long = policy_config("draft", tiny["ds"].observations.shape[1], tok)
    long = type(long)(**{**long.__dict__, "history": split["target"].history + 1})
    with pytest.raises(HybridPolicyError, match="must not exceed"):
        distill_draft(tiny["ds"], tok, split["target"], long, progress=False)
    hot = Policy(split["distilled"].model, tok, "draft", TASK, {}, 1.0)
    with pytest.raises(HybridPolicyError, match="one temperature"):
        agreement(hot, split["target"], split["held"])


def test_default_distilled_draft_is_made_once_and_used_by_the_cli(tmp_path, monkeypatch):
    from hybrid_policy import cli
    from hybrid_policy.policies import build, training
    from hybrid_policy.families.adahi import distill, setup

    # small settings for the default pipeline (the real components, fewer steps)
    monkeypatch.setitem(build.DEFAULT_DEMO_EPISODES, TASK, 20)
    monkeypatch.setitem(training.ROLE_TRAINING, "draft", TrainConfig(epochs=2))
    monkeypatch.setitem(training.ROLE_TRAINING, "target", TrainConfig(epochs=2))
    monkeypatch.setattr(distill, "DEFAULT_DISTILL",
                        DistillConfig(epochs=2, lr=2e-3, demo_weight=0.0))
    path = distill.ensure_distilled_draft(TASK, tmp_path)
    assert path == default_draft_path(tmp_path, TASK, "distilled")
    info = json.loads((path / "config.json").read_text())
    assert info["distill"]["epochs"] == 2 and info["role"] == "draft"
    stamp = (path / "model.safetensors").stat().st_mtime_ns
    assert distill.ensure_distilled_draft(TASK, tmp_path) == path  # up to date: kept
    assert (path / "model.safetensors").stat().st_mtime_ns == stamp
    draft = load_policy(path, role="draft", task=TASK)
    demo = load_policy(tmp_path / TASK / "draft", role="draft", task=TASK)
    assert draft.identity() != demo.identity()
    assert draft.model.num_parameters() == demo.model.num_parameters()
    # the CLI acts with it and keeps its calibrations apart from the demonstration draft's
    out = tmp_path / "eval.json"
    assert cli.main(["eval", "--task", TASK, "--models", str(tmp_path), "--draft-kind",
                     "distilled", "--modes", "draft_only", "--episodes", "2", "--json",
                     str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["draft"].endswith(default_draft_path(tmp_path, TASK, "distilled").name)
    args = cli.build_parser().parse_args(["calibrate", "--task", TASK, "--models",
                                          str(tmp_path), "--draft-kind", "distilled"])
    assert setup.calibration_path(args) == default_path(tmp_path, TASK, "5g_embb", "distilled")
    assert setup.models(args)[0].identity() == draft.identity()
    assert default_path(tmp_path, TASK, "5g_embb", "distilled") == \
        tmp_path / TASK / "calibration" / "distilled" / "5g_embb.json"
    with pytest.raises(HybridPolicyError, match="unknown draft kind"):
        default_path(tmp_path, TASK, "5g_embb", "bogus")
