"""Each scripted expert solves its task (these rates bound the demonstrations' quality)."""

import pytest

import sim_envs
from sim_envs.collect import collect_demos

MIN_SUCCESS = {"mw_peg_insert": 0.85}


@pytest.mark.parametrize("name", sim_envs.task_names())
def test_expert_success_rate(name):
    ds = collect_demos(name, episodes=20, seed=11, progress=False)
    rate = ds.meta["episodes_kept"] / 20
    assert rate >= MIN_SUCCESS.get(name, 0.95), f"{name}: expert solved {rate:.0%}"
    assert ds.num_episodes == ds.meta["episodes_kept"] == 20 - len(ds.meta["dropped_seeds"])
    # Successful episodes end early (success terminates) and never exceed the limit.
    assert ds.episode_lengths.max() <= sim_envs.task_spec(name).max_steps
