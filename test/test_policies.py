"""Tokenizer, policy model, training, checkpoints and their bad inputs, on a tiny data set."""

import json

import numpy as np
import pytest
import torch

from hybrid_policy.errors import CheckpointError, HybridPolicyError, ObservationError
from hybrid_policy.policies import check_pair, load_policy
from hybrid_policy.policies.build import load_task_data, train_role
from hybrid_policy.policies.model import ObsHistory
from hybrid_policy.policies.tokenizer import TokenizerConfig, fit_tokenizer
from hybrid_policy.policies.training import TrainConfig, data_record, file_digest, history_windows

def test_tokenizer_codes_and_decodes_close_to_the_data(tiny):
    tok, ds = tiny["tok"], tiny["ds"]
    actions = torch.from_numpy(ds.actions)
    codes = tok.encode(actions)
    assert codes.shape == (len(actions), 2) and codes.dtype == torch.int64
    assert codes.min() >= 0 and codes.max() < 8
    err = (tok.decode(codes) - actions).abs().mean()
    spread = (actions - actions.mean(0)).abs().mean()
    assert err < 0.5 * spread  # the codes carry most of the action


def test_training_lowers_the_loss(tiny):
    for role in ("draft", "target"):
        losses = json.loads((tiny[role] / "config.json").read_text())["losses"]
        assert losses[-1] < 0.7 * losses[0], (role, losses)


def test_sizes_and_recorded_config(tiny):
    draft, target = load_policy(tiny["draft"]), load_policy(tiny["target"])
    assert draft.model.num_parameters() <= 100_000
    assert target.model.num_parameters() >= 10 * draft.model.num_parameters()
    info = draft.info
    assert info["task"] == "fetch_reach" and info["role"] == "draft"
    assert info["tokenizer_id"] == target.info["tokenizer_id"] == tiny["tok"].identity()
    assert info["data"]["sha256"] == file_digest(tiny["data"])
    assert info["data"]["episodes"] == tiny["ds"].num_episodes


def test_probabilities_are_valid_per_level(tiny):
    pol = load_policy(tiny["target"])
    obs = tiny["ds"].observations[:4]
    step = pol.begin(obs)
    rng = np.random.default_rng(0)
    for _ in range(5):
        codes = step.sample(rng)
        probs = step.level_probs(codes)
        assert probs.shape == (2, 8)
        assert np.all(probs >= 0) and np.allclose(probs.sum(1), 1.0)
        action = step.action(codes)
        assert action.shape == (4,) and np.all(np.abs(action) <= 1)
    # later levels are conditioned on the earlier code
    p1 = [step.probs((c,)) for c in range(8)]
    assert any(not np.allclose(p1[0], p) for p in p1[1:])


def test_checkpoint_round_trip_gives_identical_outputs(tiny, tmp_path):
    a = load_policy(tiny["draft"])
    b = load_policy(tiny["draft"])
    obs = tiny["ds"].observations[:2]
    sa, sb = a.begin(obs), b.begin(obs)
    assert np.array_equal(sa.probs(()), sb.probs(()))
    assert np.array_equal(sa.probs((3,)), sb.probs((3,)))
    assert np.array_equal(sa.action((1, 2)), sb.action((1, 2)))
    with torch.no_grad():
        for pa, pb in zip(a.model.state_dict().values(), b.model.state_dict().values()):
            assert torch.equal(pa, pb)


def test_history_windows_pad_with_the_first_observation(tiny):
    ds = tiny["ds"]
    w = history_windows(ds, 3)
    s, n = int(ds.episode_starts[1]), int(ds.episode_lengths[1])
    assert np.array_equal(w[s, 0], ds.observations[s]) and np.array_equal(w[s, 2], ds.observations[s])
    if n >= 3:
        assert np.array_equal(w[s + 2], ds.observations[s : s + 3])
    hist = ObsHistory(3, ds.observations.shape[1])
    for k in range(min(n, 3)):
        window = hist.push(ds.observations[s + k])
    assert np.array_equal(window, w[s + min(n, 3) - 1])


def test_wrong_observation_length_says_expected_and_got(tiny):
    pol = load_policy(tiny["draft"])
    with pytest.raises(ObservationError, match="has 5 elements, expected 13"):
        pol.begin(np.zeros((2, 5), np.float32))
    with pytest.raises(ObservationError, match="NaN"):
        pol.begin(np.full((2, 13), np.nan, np.float32))


def test_missing_and_corrupt_checkpoints_name_the_file(tiny, tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_policy(tmp_path / "nope")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text((tiny["draft"] / "config.json").read_text())
    with pytest.raises(CheckpointError, match=r"model.safetensors: missing"):
        load_policy(broken)
    data = (tiny["draft"] / "model.safetensors").read_bytes()
    (broken / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"broken/model.safetensors: corrupt"):
        load_policy(broken)
    (broken / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"broken/config.json: corrupt JSON"):
        load_policy(broken)
    with pytest.raises(CheckpointError, match="is a draft checkpoint, expected target"):
        load_policy(tiny["draft"], role="target")
    with pytest.raises(CheckpointError, match="trained for task 'fetch_reach', not 'fetch_push'"):
        load_policy(tiny["draft"], task="fetch_push")


def test_tokenizer_mismatch_is_refused(tiny, tmp_path):
    ds = tiny["ds"]
    other_tok = fit_tokenizer(ds.actions, TokenizerConfig(levels=2, codebook_size=8, steps=200,
                                                          seed=1))
    other = train_role(tmp_path / "target", "target", ds, data_record(ds, tiny["data"]), other_tok,
                       TrainConfig(epochs=1), progress=False)
    with pytest.raises(CheckpointError, match="different action tokenizers"):
        check_pair(load_policy(tiny["draft"]), load_policy(other))


def test_data_set_of_another_task_is_refused(tiny):
    with pytest.raises(HybridPolicyError, match="holds demonstrations of 'fetch_reach', not "
                                                "'fetch_push'"):
        load_task_data(tiny["data"], "fetch_push")


def test_codebook_decoder_equals_the_fitted_tokenizer(tiny):
    """Acting decodes with the saved codebooks (no vector-quantize-pytorch import): the same
    actions and the same identity as the tokenizer that was fitted."""
    import itertools

    import torch

    from hybrid_policy.policies import load_policy, load_tokenizer

    tok, _ = load_tokenizer(tiny["root"] / "tokenizer")
    policy = load_policy(tiny["draft"])
    cfg = tok.cfg
    codes = torch.tensor(list(itertools.product(range(cfg.codebook_size), repeat=cfg.levels)))
    torch.testing.assert_close(policy.tokenizer.decode(codes), tok.decode(codes))
    assert policy.tokenizer.identity() == tok.identity()
