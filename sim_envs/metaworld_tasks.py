"""Meta-World v3 tasks behind the flat ``ManipulationTask`` interface, with their shipped experts.

Meta-World hides the goal and freezes the random initial state unless told otherwise; here
the goal is observable and each ``reset(seed=s)`` samples object and goal positions from
the env's own generator seeded with ``s``, so the same seed gives the same scene.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from metaworld.env_dict import ALL_V3_ENVIRONMENTS
from metaworld.policies import (
    SawyerAssemblyV3Policy,
    SawyerPegInsertionSideV3Policy,
    SawyerPickPlaceV3Policy,
)

from sim_envs.spec import ManipulationTask, TaskSpec


def _frame(prefix: str) -> tuple[str, ...]:
    """Names of one 18-element Meta-World frame: hand, gripper, two objects with quaternions."""
    names = [f"{prefix}hand_pos_{a}" for a in "xyz"] + [f"{prefix}gripper_distance"]
    for obj in ("object", "object2"):
        names += [f"{prefix}{obj}_pos_{a}" for a in "xyz"]
        names += [f"{prefix}{obj}_quat_{a}" for a in "wxyz"]
    return tuple(names)


# current frame, previous frame, goal: 18 + 18 + 3
METAWORLD_FIELDS = (*_frame(""), *_frame("prev_"), "goal_x", "goal_y", "goal_z")


class MetaWorldTask(ManipulationTask):
    env_name: str

    def __init__(self) -> None:
        super().__init__()
        env = ALL_V3_ENVIRONMENTS[self.env_name]()
        env._partially_observable = False  # show the goal in the observation
        del env.sawyer_observation_space  # cached property: recomputed for the new observability
        env._freeze_rand_vec = False  # sample a new scene on every reset ...
        env.seeded_rand_vec = True  # ... from env.np_random, which reset seeds
        env._set_task_called = True
        self._env = env

    def _reset(self, seed: int) -> Any:
        self._env.seed(seed)
        raw, _ = self._env.reset()
        return raw

    def _step(self, action: np.ndarray) -> tuple[Any, float, bool]:
        raw, reward, _, _, info = self._env.step(action.astype(np.float32))
        return raw, reward, bool(info["success"])

    def _flatten(self, raw: Any) -> np.ndarray:
        return np.asarray(raw, dtype=np.float32)

    def close(self) -> None:
        self._env.close()


class MetaWorldPickPlace(MetaWorldTask):
    env_name = "pick-place-v3"
    task_spec = TaskSpec(
        name="mw_pick_place", source=f"metaworld MT1 {env_name}", difficulty=4, max_steps=150,
        control_period_ms=12.5,
        obs_fields=METAWORLD_FIELDS, description="Sawyer: pick a puck and place it at a goal",
    )


class MetaWorldPegInsert(MetaWorldTask):
    env_name = "peg-insert-side-v3"
    task_spec = TaskSpec(
        name="mw_peg_insert", source=f"metaworld MT1 {env_name}", difficulty=5, max_steps=300,
        control_period_ms=12.5,
        obs_fields=METAWORLD_FIELDS,
        description="Sawyer: grasp a peg and insert it sideways into a hole",
    )


class MetaWorldAssembly(MetaWorldTask):
    env_name = "assembly-v3"
    task_spec = TaskSpec(
        name="mw_assembly", source=f"metaworld MT1 {env_name}", difficulty=5, max_steps=200,
        control_period_ms=12.5,
        obs_fields=METAWORLD_FIELDS,
        description="Sawyer: grasp a ring by its handle and slide it down onto a peg",
    )


class MetaWorldExpert:
    """Meta-World's own scripted policy for a task, clipped to the action box."""

    def __init__(self, policy: Any) -> None:
        self._policy = policy

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        with warnings.catch_warnings():  # it warns when its gains saturate; we clip anyway
            warnings.simplefilter("ignore", UserWarning)
            action = self._policy.get_action(np.asarray(obs, dtype=np.float64))
        return np.clip(action, -1.0, 1.0).astype(np.float32)


def pick_place_expert() -> MetaWorldExpert:
    return MetaWorldExpert(SawyerPickPlaceV3Policy())


def peg_insert_expert() -> MetaWorldExpert:
    return MetaWorldExpert(SawyerPegInsertionSideV3Policy())


def assembly_expert() -> MetaWorldExpert:
    return MetaWorldExpert(SawyerAssemblyV3Policy())
