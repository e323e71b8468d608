"""Every registered task resets reproducibly, steps, validates actions and ends its episodes."""

import gymnasium as gym
import numpy as np
import pytest

import sim_envs
from sim_envs import UnknownTaskError

TASKS = sim_envs.task_names()


def test_registry_has_the_six_tasks():
    assert TASKS == ["fetch_reach", "fetch_push", "fetch_pick_place", "mw_pick_place",
                     "mw_peg_insert", "mw_assembly"]


@pytest.mark.parametrize("name", TASKS)
def test_reset_is_reproducible_and_step_works(name):
    env = sim_envs.make_task(name)
    spec = env.task_spec
    o1, info = env.reset(seed=123)
    o2, _ = env.reset(seed=123)
    o3, _ = env.reset(seed=124)
    assert o1.dtype == np.float32 and o1.shape == (spec.obs_dim,)
    assert len(set(spec.obs_fields)) == spec.obs_dim  # every element named once
    assert np.array_equal(o1, o2)
    assert not np.array_equal(o1, o3), "a different seed must give a different scene"
    assert info["success"] is False
    # The same actions from the same seed give the same trajectory.
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, size=(5, 4)).astype(np.float32)
    trajs = []
    for _ in range(2):
        env.reset(seed=7)
        trajs.append(np.stack([env.step(a)[0] for a in actions]))
    assert np.array_equal(trajs[0], trajs[1])
    obs, reward, terminated, truncated, info = env.step(np.zeros(4))
    assert obs.shape == (spec.obs_dim,) and np.all(np.isfinite(obs))
    assert isinstance(info["success"], bool) and isinstance(reward, float)
    env.close()


def test_episode_truncates_at_max_steps():
    env = sim_envs.make_task("fetch_push")
    env.reset(seed=0)
    steps = 0
    while True:
        _, _, terminated, truncated, _ = env.step(np.zeros(4))  # a still arm never pushes
        steps += 1
        if terminated or truncated:
            break
    assert truncated and not terminated and steps == env.task_spec.max_steps == 50
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.zeros(4))


def test_bad_actions_are_refused_with_a_clear_error():
    env = sim_envs.make_task("fetch_reach")
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"4 elements .* got shape \(3,\)"):
        env.step(np.zeros(3))
    with pytest.raises(ValueError, match="NaN or inf"):
        env.step(np.array([0.0, np.nan, 0.0, 0.0]))


def test_unknown_task_lists_valid_names():
    with pytest.raises(UnknownTaskError) as err:
        sim_envs.make_task("fetch_pussh")
    assert "fetch_pussh" in str(err.value)
    for name in TASKS:
        assert name in str(err.value)


def test_gymnasium_make_ids():
    env = gym.make(sim_envs.gym_id("fetch_reach"))
    obs, _ = env.reset(seed=3)
    direct, _ = sim_envs.make_task("fetch_reach").reset(seed=3)
    assert np.array_equal(obs, direct)


@pytest.mark.parametrize("name", TASKS)
def test_control_period_matches_the_simulator(name):
    env = sim_envs.make_task(name)
    assert env.task_spec.control_period_ms == pytest.approx(env._env.dt * 1e3)
