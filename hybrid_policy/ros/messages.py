"""Messages ↔ arrays and core objects. Standard types only (docs/interfaces.md).

Every per-step message is a ``sensor_msgs/JointState`` whose ``name`` labels the elements
of ``position``; ``header.stamp`` is the stamp of the observation the step answers.
Malformed input raises ``MessageError`` with the reason; nodes log it, count it and never
act on it.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticStatus, KeyValue
from sensor_msgs.msg import Image, JointState

from hybrid_policy.core.protocol import ENCODINGS, FeatureRequest, ProtocolError, Request, Response
from hybrid_policy.errors import HybridPolicyError

EPISODE, STEP = "episode", "step"  # leading labels of a simulator observation


class MessageError(HybridPolicyError, ValueError):
    """A message that cannot be used: wrong labels or length, NaN, unknown stamp."""


def stamp_key(stamp: Time) -> int:
    """A stamp as one integer (ns): the key that pairs requests, responses and actions."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def joint_state(stamp: Time, names: Sequence[str], values: np.ndarray) -> JointState:
    msg = JointState()
    msg.header.stamp = stamp
    msg.name = list(names)
    msg.position = np.asarray(values, dtype=np.float64).tolist()
    return msg


def observation_msg(stamp: Time, episode: int, step: int, fields: Sequence[str],
                    obs: np.ndarray) -> JointState:
    return joint_state(stamp, [EPISODE, STEP, *fields],
                       np.concatenate([[episode, step], np.asarray(obs, np.float64)]))


def parse_observation(msg: JointState, fields: Sequence[str]) -> tuple[int | None, int | None,
                                                                       np.ndarray]:
    """``(episode, step, obs)``. A robot that runs no episodes may leave out the two leading
    labels: then episode and step are ``None``."""
    names, values = list(msg.name), np.asarray(msg.position, dtype=np.float64)
    episode = step = None
    if names[:2] == [EPISODE, STEP] and len(values) >= 2:
        episode, step = _count(values[0], EPISODE), _count(values[1], STEP)
        names, values = names[2:], values[2:]
    if len(values) != len(fields):
        raise MessageError(f"observation has {len(values)} values, expected {len(fields)}")
    if names and names != list(fields):
        raise MessageError(f"observation labels {names[:3]}... do not match the task's "
                           f"fields {list(fields)[:3]}...")
    obs = values.astype(np.float32)
    if not np.all(np.isfinite(obs)):
        raise MessageError("observation contains NaN, inf or values beyond float32")
    return episode, step, obs


def _count(value: float, what: str) -> int:
    """``episode`` and ``step``: whole numbers from 0 (documented in docs/interfaces.md)."""
    if not np.isfinite(value) or value < 0 or value != int(value) or value >= 2**31:
        raise MessageError(f"{what} must be a whole number in [0, 2**31), got {value!r}")
    return int(value)


def action_msg(stamp: Time, fields: Sequence[str], action: np.ndarray) -> JointState:
    return joint_state(stamp, fields, action)


def parse_action(msg: JointState, dim: int) -> np.ndarray:
    values = np.asarray(msg.position, dtype=np.float64)
    if len(values) != dim:
        raise MessageError(f"action has {len(values)} values, expected {dim}")
    if not np.all(np.isfinite(values)):
        raise MessageError("action contains NaN or inf")
    if np.any(np.abs(values) > 1.0 + 1e-6):
        raise MessageError(f"action {values.tolist()} is outside [-1, 1]")
    return values.astype(np.float32)


def request_msg(stamp: Time, req: Request) -> JointState:
    return joint_state(stamp, [req.label()], req.to_vector())


def response_msg(stamp: Time, resp: Response) -> JointState:
    return joint_state(stamp, [resp.label()], resp.to_vector())


def feature_msg(stamp: Time, feature: FeatureRequest) -> Image:
    """An early-exit feature as ``sensor_msgs/Image`` (core.protocol's layout)."""
    msg = Image()
    msg.header.stamp, msg.header.frame_id = stamp, feature.label()
    msg.height, msg.width = feature.data.shape
    msg.encoding, msg.is_bigendian = feature.encoding, 0
    msg.step = msg.width * ENCODINGS[feature.encoding].itemsize
    msg.data = feature.to_bytes()
    return msg


def parse_feature(msg: Image, expect: tuple[int, int] | None = None) -> FeatureRequest:
    if msg.is_bigendian:
        raise MessageError("feature is big-endian; features are little-endian")
    try:
        return FeatureRequest.from_image(msg.header.frame_id, msg.height, msg.width,
                                         msg.encoding, bytes(msg.data), expect)
    except ProtocolError as exc:
        raise MessageError(str(exc)) from None


def _single_label(msg: JointState, what: str) -> str:
    if len(msg.name) != 1:
        raise MessageError(f"{what} must carry exactly one label in name[], got {len(msg.name)}")
    return msg.name[0]


def parse_request(msg: JointState) -> Request:
    try:
        return Request.from_vector(_single_label(msg, "request"), np.asarray(msg.position))
    except ProtocolError as exc:
        raise MessageError(str(exc)) from None


def parse_response(msg: JointState) -> Response:
    try:
        return Response.from_vector(_single_label(msg, "response"), np.asarray(msg.position))
    except ProtocolError as exc:
        raise MessageError(str(exc)) from None


def status(name: str, level: int, message: str, values: dict[str, object]) -> DiagnosticStatus:
    """A ``diagnostic_msgs/DiagnosticStatus``: episode events and rejected messages."""
    msg = DiagnosticStatus()
    msg.name, msg.level, msg.message = name, bytes([level]), message
    msg.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
    return msg


def status_values(msg: DiagnosticStatus) -> dict[str, str]:
    return {kv.key: kv.value for kv in msg.values}


def labelled_msg(stamp: Time, item) -> JointState:
    """Any wire item with ``label()`` and ``to_vector()`` (a family's answer, say) with the
    stamp of the step it belongs to."""
    return joint_state(stamp, [item.label()], item.to_vector())


def parse_labelled(msg: JointState, cls, what: str):
    """The ``cls.from_vector(label, vector)`` item ``msg`` carries; ``MessageError`` if
    malformed (``what`` names it)."""
    try:
        return cls.from_vector(_single_label(msg, what), np.asarray(msg.position))
    except ProtocolError as exc:
        raise MessageError(str(exc)) from None
