"""Task registry: stable short names → task class and scripted expert.

Each task is also registered with gymnasium as ``hybrid_policy/<name>-v0`` for users who
prefer ``gymnasium.make``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import gymnasium as gym
import numpy as np

from sim_envs import fetch, metaworld_tasks
from sim_envs.errors import UnknownTaskError
from sim_envs.spec import ManipulationTask, TaskSpec

Expert = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class _Entry:
    task_cls: type[ManipulationTask]
    make_expert: Callable[[], Expert]
    expert_name: str


_REGISTRY: dict[str, _Entry] = {
    e.task_cls.task_spec.name: e
    for e in (
        _Entry(fetch.FetchReach, lambda: fetch.reach_expert, "sim_envs.fetch.reach_expert"),
        _Entry(fetch.FetchPush, lambda: fetch.push_expert, "sim_envs.fetch.push_expert"),
        _Entry(
            fetch.FetchPickPlace, lambda: fetch.pick_place_expert,
            "sim_envs.fetch.pick_place_expert",
        ),
        _Entry(
            metaworld_tasks.MetaWorldPickPlace, metaworld_tasks.pick_place_expert,
            "metaworld.policies.SawyerPickPlaceV3Policy",
        ),
        _Entry(
            metaworld_tasks.MetaWorldPegInsert, metaworld_tasks.peg_insert_expert,
            "metaworld.policies.SawyerPegInsertionSideV3Policy",
        ),
        _Entry(
            metaworld_tasks.MetaWorldAssembly, metaworld_tasks.assembly_expert,
            "metaworld.policies.SawyerAssemblyV3Policy",
        ),
    )
}


def task_names() -> list[str]:
    """Registered task names, easiest first."""
    return sorted(_REGISTRY, key=lambda n: _REGISTRY[n].task_cls.task_spec.difficulty)


def _entry(name: str) -> _Entry:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownTaskError(
            f"unknown task {name!r}; valid tasks: {', '.join(task_names())}"
        ) from None


def task_spec(name: str) -> TaskSpec:
    return _entry(name).task_cls.task_spec


def make_task(name: str) -> ManipulationTask:
    """A fresh environment for ``name``; call ``reset(seed=...)`` before stepping."""
    return _entry(name).task_cls()


def make_expert(name: str) -> Expert:
    """The scripted expert of ``name``: a function from observation to action."""
    return _entry(name).make_expert()


def expert_name(name: str) -> str:
    return _entry(name).expert_name


def gym_id(name: str) -> str:
    return f"hybrid_policy/{task_spec(name).name}-v0"


for _name, _e in _REGISTRY.items():
    if gym_id(_name) not in gym.registry:
        gym.register(id=gym_id(_name), entry_point=_e.task_cls)
