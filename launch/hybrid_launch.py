"""Launch the hybrid-inference graph for one mode on a machine with ROS 2 installed.

    ros2 launch hybrid_policy hybrid_launch.py mode:=adahi task:=fetch_push link:=6g_hrllc
    ros2 launch hybrid_policy hybrid_launch.py mode:=adahi clock:=realtime
    ros2 launch hybrid_policy hybrid_launch.py mode:=adahi clock:=sim_time draft_ms:=1.1 target_ms:=1.9

Settings come from ``config`` (default: the package's config/hybrid.yaml); any launch
argument given overrides the file. Nodes and their parameters come from
``hybrid_policy.ros.fleet_graph.launch_nodes`` — the same description ``hybrid-policy bringup``
uses, tested for every link without launch_ros. A skipping mode takes the calibration of
the chosen link, or refuses to start with the command that makes it. The lifecycle manager
configures and activates the managed draft and target nodes. The launch ends when the
simulator has run its episodes. With ``topology:=config/fleet.yaml`` every robot of the
fleet runs ``mode`` under its own namespace, with one target node per server
(the mode's family builds it); the launch ends when every robot's simulator is done.
"""

from pathlib import Path

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, EmitEvent, OpaqueFunction, RegisterEventHandler
from launch.event_handlers import OnProcessExit
from launch.events import Shutdown
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from hybrid_policy.ros.fleet_graph import launch_nodes
from hybrid_policy.ros.graph import PACKAGE

# Launch arguments that override config/hybrid.yaml ("" = keep the file's value).
ARGUMENTS = {
    "mode": "draft_only | target_only | hybrid | adahi | uncertainty_skip | random_skip, an "
            "early-exit, rocoin or placement mode (with topology)",
    "task": "task name (hybrid-policy tasks)",
    "link": "link profile: 6g_hrllc | 5g_urllc | 5g_embb | wifi | lossy_wifi | ideal",
    "episodes": "episodes to run",
    "seed": "seed of the episodes and of the policies' sampling",
    "models": "root of the default models: MODELS/TASK/{draft,target,calibration}",
    "draft": "draft checkpoint directory (default: the draft_kind's under MODELS/TASK)",
    "draft_kind": "default draft: demonstrations (MODELS/TASK/draft) | distilled "
                  "(MODELS/TASK/draft_distilled, made by hybrid-policy calibrate --draft-kind "
                  "distilled); each has its own calibrations",
    "target": "target checkpoint directory (default MODELS/TASK/target)",
    "calibration": "calibration JSON (default: the draft_kind's for LINK under "
                   "MODELS/TASK/calibration)",
    "tau": "adahi's threshold (>= 0); -1 = from the calibration",
    "uncertainty_tau": "uncertainty_skip's threshold (nats, >= 0); -1 = from the calibration",
    "random_skip": "random_skip's probability; -1 = from the calibration",
    "clock": "lockstep (the simulator waits for each action) | realtime (steps at rate_hz "
             "on the wall clock) | sim_time (the same on /clock, steps charged their modelled "
             "time: equals hybrid-policy eval in real time)",
    "rate_hz": "control rate of the realtime and sim_time clocks; -1 = the task's",
    "loop": "realtime clocks: period (the verdict waits at most 0.7 of the period) | wait "
            "(deadline_ms)",
    "draft_ms": "sim_time: the draft's compute per step charged (ms)",
    "target_ms": "sim_time: the server's compute per verification charged (ms)",
    "interface": "robot interface: standard (JointState/PoseStamped/TwistStamped) | vector",
    "robot_map": "robot interface YAML (default: the package's config/robot_TASK.yaml)",
    "max_age_ms": "oldest robot input the draft acts on; -1 = the robot map's",
    "bag": "record a rosbag2 (MCAP) into this new directory",
    "link_in_draft": "true: the draft node applies the link model (no link_node process)",
    "topology": "a fleet (config/fleet.yaml): every robot runs mode under its own namespace",
    "early_exit": "early-exit modes: the net (default MODELS/TASK/early_exit)",
    "exit_plan": "early-exit modes: the plan JSON (hybrid-policy exit-plan writes one)",
    "rocoin_layout": "rocoin modes: the layout JSON (hybrid-policy bringup writes one)",
    "students_path": "rocoin modes: the students' checkpoint directory",
    "idn_catalogue": "placement modes: the variants' catalogue JSON (MODELS/TASK/"
                     "catalogue.json, measured by hybrid-policy eval --modes placement)",
}


def _graph(context):
    overrides = {k: LaunchConfiguration(k).perform(context) for k in ARGUMENTS}
    cfg, specs = launch_nodes(LaunchConfiguration("config").perform(context), overrides)
    actions = [Node(package=PACKAGE, executable=spec.executable, name=spec.name,
                    namespace=spec.full_namespace(cfg.namespace), parameters=[spec.parameters],
                    remappings=list(spec.remaps), respawn=spec.respawn, respawn_delay=1.0,
                    output="screen")
               for spec in specs]
    sims = [a for a, s in zip(actions, specs) if s.name == "sim_node"]  # one per robot
    running = set(range(len(sims)))

    def sim_done(index):
        def on_exit(event, context):
            running.discard(index)
            return [] if running else [EmitEvent(event=Shutdown(reason="episodes done"))]
        return on_exit

    actions += [RegisterEventHandler(OnProcessExit(target_action=sim, on_exit=sim_done(i)))
                for i, sim in enumerate(sims)]
    return actions


def generate_launch_description() -> LaunchDescription:
    default_config = str(Path(get_package_share_directory(PACKAGE)) / "config" / "hybrid.yaml")
    args = [DeclareLaunchArgument("config", default_value=default_config,
                                  description="graph settings YAML (config/hybrid.yaml)")]
    args += [DeclareLaunchArgument(k, default_value="", description=d)
             for k, d in ARGUMENTS.items()]
    return LaunchDescription([*args, OpaqueFunction(function=_graph)])
