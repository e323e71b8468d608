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
import mujoco
import numpy as np

from sim_envs.spec import ManipulationTask, TaskSpec

# gymnasium-robotics prints a notice about the Adroit envs on import: not ours to show.
with contextlib.redirect_stderr(io.StringIO()):
    import gymnasium_robotics

gym.register_envs(gymnasium_robotics)


def _xyz(prefix: str) -> tuple[str, ...]:
    return tuple(f"{prefix}_{axis}" for axis in "xyz")


_GRIPPER = ("gripper_finger_right", "gripper_finger_left")
FINGER_JOINTS = ("robot0:r_gripper_finger_joint", "robot0:l_gripper_finger_joint")  # in that order
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

    # -- the robot's own view: what a Fetch driver and a perception stack would publish ---
    METRES_PER_UNIT = 0.05  # gymnasium-robotics moves the mocap 0.05 m per unit of action

    def measure(self) -> dict[str, dict[str, Any]]:
        """The current state as a robot reports it, in SI units and the world frame:
        ``joint_states`` (every robot joint: position m|rad, velocity m/s|rad/s),
        ``ee_pose``/``ee_twist`` of the grip site, ``object_pose``/``object_twist`` of the
        block (object tasks) and the ``goal`` point. Quaternions are (x, y, z, w)."""
        env, u = self._env, self._env._utils
        m, d = env.model, env.data
        names = [n for n in env._model_names.joint_names if n.startswith("robot")]
        out: dict[str, dict[str, Any]] = {
            "joint_states": {
                "name": names,
                "position": np.array([u.get_joint_qpos(m, d, n) for n in names]).reshape(-1),
                "velocity": np.array([u.get_joint_qvel(m, d, n) for n in names]).reshape(-1)},
            "ee_pose": self._site_pose("robot0:grip"),
            "ee_twist": self._site_twist("robot0:grip"),
            "goal": {"position": np.array(env.goal, np.float64)},
        }
        if env.has_object:
            out["object_pose"] = self._site_pose("object0")
            out["object_twist"] = self._site_twist("object0")
        return out

    def _site_pose(self, site: str) -> dict[str, np.ndarray]:
        env = self._env
        wxyz = np.empty(4)
        mujoco.mju_mat2Quat(wxyz, env._utils.get_site_xmat(env.model, env.data, site).reshape(-1))
        return {"position": env._utils.get_site_xpos(env.model, env.data, site).copy(),
                "orientation": np.array([*wxyz[1:], wxyz[0]])}

    def _site_twist(self, site: str) -> dict[str, np.ndarray]:
        env = self._env
        return {"linear": env._utils.get_site_xvelp(env.model, env.data, site).copy(),
                "angular": env._utils.get_site_xvelr(env.model, env.data, site).copy()}

    def action_from_command(self, linear: np.ndarray, finger_targets: np.ndarray) -> np.ndarray:
        """The normalised action that executes an end-effector velocity (m/s, world frame)
        over one control step and drives the fingers toward their targets (m). A target at
        or beyond the servo's range saturates the command (+1 open, -1 close)."""
        env = self._env
        a = np.empty(4)
        a[:3] = np.asarray(linear, np.float64) * (self.task_spec.control_period_ms / 1e3) \
            / self.METRES_PER_UNIT
        act = mujoco.mj_name2id(env.model, mujoco.mjtObj.mjOBJ_ACTUATOR, FINGER_JOINTS[0])
        # Reach has no finger actuators (its gripper is blocked): nothing saturates.
        low, high = env.model.actuator_ctrlrange[act] if act >= 0 else (-np.inf, np.inf)
        q = np.array([env._utils.get_joint_qpos(env.model, env.data, n)[0]
                      for n in FINGER_JOINTS])
        t = np.asarray(finger_targets, np.float64)
        if np.all(t >= high):
            a[3] = 1.0
        elif np.all(t <= low):
            a[3] = -1.0
        else:
            a[3] = float(np.mean(t - q))
        return np.clip(a, -1.0, 1.0).astype(np.float32)


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
