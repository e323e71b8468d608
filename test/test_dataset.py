"""Demonstration sets round-trip, reproduce byte for byte, and refuse bad files and dirs."""

import io
import zipfile

import numpy as np
import pytest

from sim_envs import DatasetError, dataset
from sim_envs.collect import collect_demos, episode_seeds


@pytest.fixture(scope="module")
def reach_demos():
    return collect_demos("fetch_reach", episodes=6, seed=3, progress=False)


def test_round_trip(tmp_path, reach_demos):
    path = dataset.write_to_dir(reach_demos, tmp_path, overwrite=False)
    assert path == tmp_path / "fetch_reach.demos.npz"
    back = dataset.load(tmp_path)  # a directory resolves to its one data set file
    for name in ("observations", "actions", "episode_starts", "episode_lengths", "episode_seeds"):
        assert np.array_equal(getattr(back, name), getattr(reach_demos, name)), name
    assert back.task == "fetch_reach" and back.obs_fields == reach_demos.obs_fields
    assert back.meta["versions"]["mujoco"] == "3.3.0"
    assert back.meta["seed"] == 3 and back.meta["episodes_requested"] == 6
    episodes = list(back.episodes())
    assert len(episodes) == back.num_episodes == 6
    assert sum(len(a) for _, a in episodes) == back.num_steps
    # plain numpy reads it too
    with np.load(path) as npz:
        assert np.array_equal(npz["actions"], reach_demos.actions)


def test_same_seed_same_bytes(tmp_path):
    a = dataset.save(collect_demos("fetch_push", 4, seed=5, progress=False), tmp_path / "a.npz")
    b = dataset.save(collect_demos("fetch_push", 4, seed=5, progress=False), tmp_path / "b.npz")
    c = dataset.save(collect_demos("fetch_push", 4, seed=6, progress=False), tmp_path / "c.npz")
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()


def test_episode_seeds_extend_and_splits_are_disjoint():
    assert np.array_equal(episode_seeds(0, 5), episode_seeds(0, 9)[:5])
    train, evals = episode_seeds(0, 1000), episode_seeds(0, 1000, split="eval")
    assert train.max() < evals.min()


def test_truncated_file_names_the_file(tmp_path, reach_demos):
    path = dataset.save(reach_demos, tmp_path / "fetch_reach.demos.npz")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError, match=str(path)):
        dataset.load(path)


def _replace_members(path, **members: bytes) -> None:
    with zipfile.ZipFile(path) as zf:
        content = {n: zf.read(n) for n in zf.namelist()}
    content.update(members)
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in content.items():
            zf.writestr(name, data)


@pytest.mark.parametrize("kind", ["garbage", "npz_without_meta", "foreign_meta", "bad_shapes"])
def test_foreign_files_are_refused(tmp_path, reach_demos, kind):
    path = tmp_path / "x.demos.npz"
    if kind == "garbage":
        path.write_bytes(b"this is not a zip file at all" * 10)
    elif kind == "npz_without_meta":
        np.savez(path, observations=np.zeros((2, 3)))
    else:
        dataset.save(reach_demos, path)
        if kind == "foreign_meta":
            _replace_members(path, **{"meta.json": b'{"format": "something.else"}'})
        else:
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.zeros((3, 4), np.float32))
            _replace_members(path, **{"actions.npy": buf.getvalue()})
    with pytest.raises(DatasetError) as err:
        dataset.load(path)
    assert str(path) in str(err.value)


def test_missing_path_and_ambiguous_dir(tmp_path, reach_demos):
    with pytest.raises(DatasetError, match="no such"):
        dataset.load(tmp_path / "nope.demos.npz")
    with pytest.raises(DatasetError, match="found 0"):
        dataset.load(tmp_path)


def test_dir_with_another_task_is_refused_unless_overwrite(tmp_path, reach_demos):
    dataset.write_to_dir(reach_demos, tmp_path, overwrite=False)
    push = collect_demos("fetch_push", 2, seed=0, progress=False)
    with pytest.raises(DatasetError, match="fetch_reach.*--overwrite"):
        dataset.write_to_dir(push, tmp_path, overwrite=False)
    assert (tmp_path / "fetch_reach.demos.npz").exists()  # nothing was touched
    dataset.write_to_dir(push, tmp_path, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fetch_push.demos.npz"]
    assert dataset.load(tmp_path).task == "fetch_push"
