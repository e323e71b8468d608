"""Standard ROS messages ↔ the plain readings and commands of ``core.robot_map``.

The robot side of the graph speaks ``sensor_msgs/JointState`` and ``geometry_msgs``
Pose/Point/TwistStamped (docs/interfaces.md); this module is the only place that knows
their fields. ``RobotInputs`` subscribes to a map's inputs and feeds a
``core.robot_map.Assembler``; the simulator uses the same converters in the other
direction.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import PointStamped, PoseStamped, TwistStamped
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import JointState

from hybrid_policy.core import robot_map
from hybrid_policy.core.robot_map import Assembler, RobotMap, Tick
from hybrid_policy.ros.messages import MessageError, stamp_key

# A static input (a goal set once) is latched: the node gets the last one whenever it starts.
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)
MESSAGE = {robot_map.JOINT_STATE: JointState, robot_map.POSE: PoseStamped,
           robot_map.POINT: PointStamped, robot_map.TWIST: TwistStamped}


def time_msg(stamp_ns: int) -> Time:
    return Time(sec=int(stamp_ns // 1_000_000_000), nanosec=int(stamp_ns % 1_000_000_000))


def _xyz(v) -> list[float]:
    return [v.x, v.y, v.z]


def reading_of(msg: Any) -> dict[str, Any]:
    """The values of one input message, as ``core.robot_map`` reads them."""
    if isinstance(msg, JointState):
        return {"name": list(msg.name), "position": list(msg.position),
                "velocity": list(msg.velocity)}
    if isinstance(msg, PoseStamped):
        o = msg.pose.orientation
        return {"position": _xyz(msg.pose.position), "orientation": [o.x, o.y, o.z, o.w]}
    if isinstance(msg, PointStamped):
        return {"position": _xyz(msg.point)}
    if isinstance(msg, TwistStamped):
        return {"linear": _xyz(msg.twist.linear), "angular": _xyz(msg.twist.angular)}
    raise TypeError(f"no reading for {type(msg).__name__}")


def message_of(type_name: str, stamp: Time, frame: str, reading: dict[str, Any]) -> Any:
    """A stamped message of ``type_name`` carrying ``reading`` (the simulator's publisher)."""
    msg = MESSAGE[type_name]()
    msg.header.stamp, msg.header.frame_id = stamp, frame
    if type_name == robot_map.JOINT_STATE:
        msg.name = list(reading["name"])
        msg.position = np.asarray(reading["position"], np.float64).tolist()
        msg.velocity = np.asarray(reading.get("velocity", ()), np.float64).tolist()
    elif type_name == robot_map.POSE:
        p, o = msg.pose.position, msg.pose.orientation
        p.x, p.y, p.z = (float(v) for v in reading["position"])
        o.x, o.y, o.z, o.w = (float(v) for v in reading["orientation"])
    elif type_name == robot_map.POINT:
        msg.point.x, msg.point.y, msg.point.z = (float(v) for v in reading["position"])
    else:
        t = msg.twist
        t.linear.x, t.linear.y, t.linear.z = (float(v) for v in reading["linear"])
        t.angular.x, t.angular.y, t.angular.z = (float(v) for v in reading.get("angular",
                                                                              (0, 0, 0)))
    return msg


def twist_msg(stamp: Time, frame: str, linear: np.ndarray) -> TwistStamped:
    return message_of(robot_map.TWIST, stamp, frame, {"linear": linear})


def gripper_msg(stamp: Time, joints: Sequence[str], targets: np.ndarray) -> JointState:
    return message_of(robot_map.JOINT_STATE, stamp, "", {"name": joints, "position": targets})


def parse_twist(msg: TwistStamped, frame: str) -> np.ndarray:
    """The linear velocity (m/s) of a twist command in ``frame``."""
    if msg.header.frame_id != frame:
        raise MessageError(f"twist in frame {msg.header.frame_id!r}, expected {frame!r}: "
                           "not executed")
    linear = np.array(_xyz(msg.twist.linear), np.float64)
    if not np.all(np.isfinite(linear)) or not np.all(np.isfinite(_xyz(msg.twist.angular))):
        raise MessageError("twist contains NaN or inf: not executed")
    return linear


def parse_gripper(msg: JointState, joints: Sequence[str]) -> np.ndarray:
    """The finger targets (m) of a gripper command, in ``joints`` order."""
    names = list(msg.name)
    if sorted(names) != sorted(joints) or len(msg.position) != len(names):
        raise MessageError(f"gripper command names {names} with {len(msg.position)} "
                           f"positions; expected one position for each of {list(joints)}")
    targets = np.array([msg.position[names.index(j)] for j in joints], np.float64)
    if not np.all(np.isfinite(targets)):
        raise MessageError("gripper command contains NaN or inf: not executed")
    return targets


class RobotInputs:
    """Subscribes to every input of ``rmap`` and turns arrivals into ticks.

    ``on_tick(tick)`` is called for each snapshot completed (or given up) by an arrival; a
    timer map's node calls ``timer_tick`` itself. A message that cannot be used raises
    ``MessageError`` inside the callback, which the node's ``Reporter.guard`` reports.
    ``aged_at_stamp``: a snapshot's inputs are aged at its own stamp, not at the node's
    clock (simulated time, where the simulator's stamps are the only clock).
    """

    def __init__(self, node, rmap: RobotMap, obs_size: int, max_age_ms: float, qos,
                 guard: Callable, on_tick: Callable[[Tick], None],
                 aged_at_stamp: bool = False) -> None:
        if aged_at_stamp and rmap.tick != "snapshot":
            raise ValueError(f"{rmap.path}: a {rmap.tick} map ticks on the node's own clock; "
                             "simulated time needs a snapshot map (tick: snapshot)")
        self.node, self.rmap, self.on_tick = node, rmap, on_tick
        self.aged_at_stamp = aged_at_stamp
        self.assembler = Assembler(rmap, obs_size, max_age_ms)
        for spec in rmap.inputs.values():
            node.create_subscription(MESSAGE[spec.type], spec.topic,
                                     guard(spec.name, lambda m, n=spec.name: self._put(n, m)),
                                     LATCHED if spec.static else qos)

    def _now_ns(self) -> int:
        return self.node.get_clock().now().nanoseconds

    def _put(self, name: str, msg: Any) -> None:
        try:
            self.assembler.put(name, stamp_key(msg.header.stamp), msg.header.frame_id,
                               reading_of(msg))
        except robot_map.InputError as exc:
            raise MessageError(str(exc)) from None
        finally:
            if self.rmap.tick == "snapshot":
                now = None if self.aged_at_stamp else self._now_ns()
                for tick in self.assembler.snapshot_ticks(now):
                    self.on_tick(tick)

    def timer_tick(self) -> Tick:
        return self.assembler.timer_tick(self._now_ns())
