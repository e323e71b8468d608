"""Fetch tasks (gymnasium-robotics ``Fetch*-v4``) behind the flat ``ManipulationTask`` interface.

The flat observation is the upstream ``observation`` vector followed by the
``desired_goal`` (3). The achieved goal is left out: it is ``grip_pos`` for Reach and
``object_pos`` for the others, both already in the vector.
"""

from __future__ import annotations

import contextlib
import io
from typing import Any

import gymnasium as gym
import numpy as np

from sim_envs.spec import ManipulationTask, TaskSpec

# gymnasium-robotics prints a notice about the Adroit envs on import: not ours to show.
with contextlib.redirect_stderr(io.StringIO()):
    import gymnasium_robotics

gym.register_envs(gymnasium_robotics)


def _xyz(prefix: str) -> tuple[str, ...]:
    return tuple(f"{prefix}_{axis}" for axis in "xyz")


_GRIPPER = ("gripper_finger_right", "gripper_finger_left")
_GRIPPER_VEL = ("gripper_finger_right_vel", "gripper_finger_left_vel")
REACH_FIELDS = (
    *_xyz("grip_pos"), *_GRIPPER, *_xyz("grip_velp"), *_GRIPPER_VEL, *_xyz("goal"),
)
OBJECT_FIELDS = (
    *_xyz("grip_pos"), *_xyz("object_pos"), *_xyz("object_rel_pos"), *_GRIPPER,
    *_xyz("object_rot"), *_xyz("object_velp"), *_xyz("object_velr"), *_xyz("grip_velp"),
    *_GRIPPER_VEL, *_xyz("goal"),
)


class FetchTask(ManipulationTask):
    """One gymnasium-robotics Fetch env, stepped without its TimeLimit wrapper."""

    env_id: str

    def __init__(self) -> None:
        super().__init__()
        self._env = gym.make(self.env_id).unwrapped

    def _reset(self, seed: int) -> Any:
        raw, _ = self._env.reset(seed=seed)
        return raw

    def _step(self, action: np.ndarray) -> tuple[Any, float, bool]:
        raw, reward, _, _, info = self._env.step(action.astype(np.float32))
        return raw, reward, bool(info["is_success"])

    def _flatten(self, raw: Any) -> np.ndarray:
        return np.concatenate([raw["observation"], raw["desired_goal"]]).astype(np.float32)

    def close(self) -> None:
        self._env.close()


class FetchReach(FetchTask):
    env_id = "FetchReach-v4"
    task_spec = TaskSpec(
        name="fetch_reach", source=env_id, difficulty=1, max_steps=50, control_period_ms=40.0,
        obs_fields=REACH_FIELDS,
        description="move the gripper to a goal point",
    )


class FetchPush(FetchTask):
    env_id = "FetchPush-v4"
    task_spec = TaskSpec(
        name="fetch_push", source=env_id, difficulty=2, max_steps=50, control_period_ms=40.0,
        obs_fields=OBJECT_FIELDS,
        description="push a block to a goal on the table",
    )


class FetchPickPlace(FetchTask):
    env_id = "FetchPickAndPlace-v4"
    task_spec = TaskSpec(
        name="fetch_pick_place", source=env_id, difficulty=3, max_steps=50, control_period_ms=40.0,
        obs_fields=OBJECT_FIELDS,
        description="grasp a block and place it at a goal, often in the air",
    )


# --------------------------------------------------------------------------- experts
# Stateless proportional controllers over privileged state: the action is a function of
# the current observation only, which keeps the demonstrations learnable by a BC policy.

_KP = 10.0  # action 1.0 moves the mocap 5 cm, so the command saturates 10 cm from target
_I = {name: i for i, name in enumerate(OBJECT_FIELDS)}


def _toward(grip: np.ndarray, target: np.ndarray, gripper: float) -> np.ndarray:
    action = np.empty(4)
    action[:3] = np.clip(_KP * (target - grip), -1.0, 1.0)
    action[3] = gripper
    return action.astype(np.float32)


def _get(obs: np.ndarray, field: str) -> np.ndarray:
    i = _I[f"{field}_x"]
    return obs[i : i + 3].astype(np.float64)


def reach_expert(obs: np.ndarray) -> np.ndarray:
    grip, goal = obs[0:3].astype(np.float64), obs[-3:].astype(np.float64)
    return _toward(grip, goal, 0.0)


# Push: get behind the block on the line through the goal, lower, and push along it.
_PUSH_BEHIND = 0.06  # approach point, centre to centre, behind the block
_PUSH_CONTACT = 0.045  # gripper centre to block centre while pushing
_PUSH_LATERAL_TOL = 0.012
_PUSH_HEIGHT_TOL = 0.012
_CLEARANCE = 0.06  # height above the block when travelling around it


def push_expert(obs: np.ndarray) -> np.ndarray:
    grip, obj, goal = _get(obs, "grip_pos"), _get(obs, "object_pos"), _get(obs, "goal")
    to_goal = goal[:2] - obj[:2]
    dist = float(np.linalg.norm(to_goal))
    if dist < 0.01:
        return _toward(grip, grip, -1.0)
    u = to_goal / dist
    rel = grip[:2] - obj[:2]
    along = float(rel @ u)
    lateral = float(np.linalg.norm(rel - along * u))
    behind_xy = obj[:2] - u * _PUSH_BEHIND
    if along < -0.03 and lateral < _PUSH_LATERAL_TOL:
        if abs(grip[2] - obj[2]) < _PUSH_HEIGHT_TOL:  # in contact pose: push through the goal
            target_xy = goal[:2] - u * (_PUSH_CONTACT - 0.01)
            return _toward(grip, np.array([*target_xy, obj[2]]), -1.0)
        return _toward(grip, np.array([*behind_xy, obj[2]]), -1.0)  # lower behind the block
    if grip[2] < obj[2] + _CLEARANCE - 0.02 and np.linalg.norm(rel) < 0.09:
        return _toward(grip, np.array([*grip[:2], obj[2] + _CLEARANCE]), -1.0)  # lift clear
    return _toward(grip, np.array([*behind_xy, obj[2] + _CLEARANCE]), -1.0)


# Pick and place: open above the block, descend, close, carry to the goal.
def pick_place_expert(obs: np.ndarray) -> np.ndarray:
    grip, obj, goal = _get(obs, "grip_pos"), _get(obs, "object_pos"), _get(obs, "goal")
    width = float(obs[_I["gripper_finger_right"]] + obs[_I["gripper_finger_left"]])
    rel = obj - grip
    near_xy = np.linalg.norm(rel[:2]) < 0.015
    at_block = near_xy and abs(rel[2]) < 0.015
    if at_block and width < 0.07:  # fingers closed on the block: carry it
        return _toward(grip, goal, -1.0)
    if at_block:  # in position with open fingers: close
        return _toward(grip, grip, -1.0)
    if near_xy and width > 0.07:  # above the block, open: descend onto it
        return _toward(grip, obj, 1.0)
    if grip[2] < obj[2] + 0.03 and np.linalg.norm(rel[:2]) < 0.05:  # too low beside it: rise
        return _toward(grip, np.array([*grip[:2], obj[2] + 0.08]), 1.0)
    return _toward(grip, obj + np.array([0.0, 0.0, 0.05]), 1.0)
