"""The one interface every manipulation task offers, whatever simulator is under it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

# Every task's action: end-effector displacement and the gripper command, all in [-1, 1].
ACTION_FIELDS = ("dx", "dy", "dz", "gripper")
ACTION_DIM = len(ACTION_FIELDS)


@dataclass(frozen=True)
class TaskSpec:
    """Static facts about a task: what ``hybrid-policy tasks`` lists."""

    name: str
    source: str  # the upstream environment it wraps
    difficulty: int  # 1 (easiest) .. 5, to order tasks from easy to hard
    max_steps: int  # episode length: the episode is truncated after this many steps
    control_period_ms: float  # simulated time per step (the upstream env's dt)
    obs_fields: tuple[str, ...]  # one name per element of the flat observation vector
    description: str

    @property
    def obs_dim(self) -> int:
        return len(self.obs_fields)

    @property
    def action_dim(self) -> int:
        return ACTION_DIM


class ManipulationTask(gym.Env):
    """A gymnasium env with a flat float32 observation and a success flag.

    ``reset(seed=s)`` reproduces the same initial state for the same ``s``. ``step``
    returns ``info["success"]`` and terminates on the first successful step (BC
    evaluation counts an episode as solved once the goal is reached); it truncates after
    ``spec.max_steps`` steps. Subclasses implement ``_reset`` and ``_step`` on the raw
    simulator and ``_flatten`` to build the observation vector.
    """

    metadata: dict[str, Any] = {"render_modes": []}
    task_spec: TaskSpec

    def __init__(self) -> None:
        n = self.task_spec.obs_dim
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(n,), dtype=np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(ACTION_DIM,), dtype=np.float32)
        self._steps = 0
        self._needs_reset = True

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is None:
            seed = int(self.np_random.integers(0, 2**31 - 1))
        raw = self._reset(int(seed))
        self._steps = 0
        self._needs_reset = False
        return self._flatten(raw), {"success": False}

    def step(self, action):
        if self._needs_reset:
            raise RuntimeError(f"{self.task_spec.name}: call reset() before step() (episode over)")
        a = np.asarray(action, dtype=np.float64).reshape(-1)
        if a.shape != (ACTION_DIM,):
            raise ValueError(
                f"{self.task_spec.name}: action must have {ACTION_DIM} elements "
                f"(dx, dy, dz, gripper), got shape {np.shape(action)}"
            )
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{self.task_spec.name}: action contains NaN or inf: {a.tolist()}")
        raw, reward, success = self._step(np.clip(a, -1.0, 1.0))
        self._steps += 1
        terminated = bool(success)
        truncated = self._steps >= self.task_spec.max_steps and not terminated
        self._needs_reset = terminated or truncated
        return self._flatten(raw), float(reward), terminated, truncated, {"success": bool(success)}

    # -- for subclasses -------------------------------------------------------------
    def _reset(self, seed: int) -> Any:
        raise NotImplementedError

    def _step(self, action: np.ndarray) -> tuple[Any, float, bool]:
        raise NotImplementedError

    def _flatten(self, raw: Any) -> np.ndarray:
        raise NotImplementedError
