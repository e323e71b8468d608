"""MuJoCo manipulation tasks, scripted experts and demonstration data sets.

Knows nothing of ROS or of the policies: everything above builds on this layer.
"""

from sim_envs.errors import DatasetError, SimEnvError, UnknownTaskError
from sim_envs.registry import expert_name, gym_id, make_expert, make_task, task_names, task_spec
from sim_envs.spec import ACTION_DIM, ManipulationTask, TaskSpec

__all__ = [
    "ACTION_DIM",
    "DatasetError",
    "ManipulationTask",
    "SimEnvError",
    "TaskSpec",
    "UnknownTaskError",
    "expert_name",
    "gym_id",
    "make_expert",
    "make_task",
    "task_names",
    "task_spec",
]
