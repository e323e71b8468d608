"""What crosses the link in one control step, independent of how it is carried.

Each message is a label plus a flat float64 vector: the ROS nodes carry them as
``sensor_msgs/JointState`` (``name = [label]``, ``position = vector``, ``header.stamp`` =
the observation's stamp); the in-process evaluator passes the objects directly. Both
charge the link with ``payload_bytes``, the CDR size of that JointState.

Layouts (``docs/interfaces.md``):

- Request  ``"<kind>:h<H>x<D>:l<L>:k<K>"`` → ``[seed, codes(L), q(L·K), window(H·D)]``
  (``L = K = 0`` for ``act``)
- Response ``"a<A>:l<L>:tv<T>[:x<E>]"`` → ``[accepted, accepted_levels, codes(L), tv(T),
  action(A)]``; ``x<E>``: the early exit (after layer E) that answered
- Feature (early-exit modes) as ``sensor_msgs/Image``: ``frame_id`` =
  ``"feature:x<layer>:s<seed>"``, ``height × width`` = the tokens after ``layer`` (layer 0:
  the observation window), ``encoding`` ``32FC1`` or ``16FC1`` (IEEE half, little-endian)
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from hybrid_policy.core.link import _align, joint_state_bytes
from hybrid_policy.errors import HybridPolicyError

_REQ = re.compile(r"^(verify|act):h(\d+)x(\d+):l(\d+):k(\d+)$")
_RESP = re.compile(r"^a(\d+):l(\d+):tv(\d+)(?::x(\d+))?$")
_FEATURE = re.compile(r"^feature:x(\d+):s(\d+)$")
# Feature encodings: sensor_msgs/image_encodings' 32FC1, and 16FC1 for IEEE half floats.
ENCODINGS = {"32FC1": np.dtype("<f4"), "16FC1": np.dtype("<f2")}


class ProtocolError(HybridPolicyError, ValueError):
    """A message that does not decode: wrong label, wrong length, NaN."""


@dataclass(frozen=True)
class Request:
    """Robot → server. ``verify``: check the draft's codes; ``act`` (target_only): sample an
    action. ``window`` holds the observations the target conditions on, so the server keeps
    no per-episode state and a skipped step leaves no gap in its history."""

    kind: str
    window: np.ndarray  # [target history, obs_dim]
    seed: int  # seeds the server's sampling, so a run is reproducible end to end
    codes: tuple[int, ...] = ()  # draft codes (verify)
    draft_probs: np.ndarray | None = None  # [levels, K]: q along the draft's path (verify)

    def label(self) -> str:
        levels, k = (0, 0) if self.draft_probs is None else self.draft_probs.shape
        return f"{self.kind}:h{self.window.shape[0]}x{self.window.shape[1]}:l{levels}:k{k}"

    def to_vector(self) -> np.ndarray:
        probs = np.zeros(0) if self.draft_probs is None else self.draft_probs.ravel()
        return np.concatenate([[float(self.seed)], np.asarray(self.codes, float), probs,
                               self.window.ravel()]).astype(np.float64)

    @classmethod
    def from_vector(cls, label: str, vec: np.ndarray) -> "Request":
        m = _REQ.match(label)
        if not m:
            raise ProtocolError(f"request label {label!r} is not '<verify|act>:h<H>x<D>:l<L>:k<K>'")
        kind, h, d, levels, k = m.group(1), *map(int, m.groups()[1:])
        vec = _check(vec, 1 + levels + levels * k + h * d, "request", label)
        codes = _codes(vec[1 : 1 + levels], k, label)
        probs = vec[1 + levels : 1 + levels + levels * k].reshape(levels, k) if levels else None
        window = vec[1 + levels + levels * k :].reshape(h, d).astype(np.float32)
        if h < 1 or d < 1:
            raise ProtocolError(f"request {label!r}: the observation window is empty")
        if (kind == "act") != (levels == 0):
            raise ProtocolError(f"request {label!r}: 'verify' carries draft codes (l >= 1), "
                                "'act' none (l0:k0)")
        if probs is not None and (np.any(probs < 0) or np.any(probs > 1)):
            raise ProtocolError(f"request {label!r}: draft probabilities outside [0, 1]")
        return cls(kind, window, _seed(vec[0], label), codes, probs)

    def payload_bytes(self) -> int:
        return joint_state_bytes([self.label()], self.to_vector().size)


@dataclass(frozen=True)
class Response:
    """Server → robot: the action to execute and how verification went."""

    action: np.ndarray
    codes: tuple[int, ...]
    accepted: bool  # verify: every draft level accepted (act: True)
    accepted_levels: int
    level_tv: tuple[float, ...]  # verify: TV(p, q) per level reached (exact rejection probs)
    exit_layer: int = 0  # early-exit modes: the exit that answered (0: not an early exit)

    def label(self) -> str:
        exit_part = f":x{self.exit_layer}" if self.exit_layer else ""
        return f"a{len(self.action)}:l{len(self.codes)}:tv{len(self.level_tv)}{exit_part}"

    def to_vector(self) -> np.ndarray:
        return np.concatenate([[float(self.accepted), float(self.accepted_levels)],
                               np.asarray(self.codes, float), np.asarray(self.level_tv, float),
                               np.asarray(self.action, float)]).astype(np.float64)

    @classmethod
    def from_vector(cls, label: str, vec: np.ndarray) -> "Response":
        m = _RESP.match(label)
        if not m:
            raise ProtocolError(f"response label {label!r} is not 'a<A>:l<L>:tv<T>[:x<E>]'")
        a, levels, t = map(int, m.groups()[:3])
        vec = _check(vec, 2 + levels + t + a, "response", label)
        action = vec[2 + levels + t :].astype(np.float32)
        if np.any(np.abs(action) > 1.0 + 1e-6):
            raise ProtocolError(f"response action {action.tolist()} is outside [-1, 1]")
        codes = tuple(int(c) for c in vec[2 : 2 + levels])
        tv = tuple(float(x) for x in vec[2 + levels : 2 + levels + t])
        if vec[0] not in (0.0, 1.0) or vec[1] != int(vec[1]) or not 0 <= vec[1] <= levels:
            raise ProtocolError(f"response {label!r}: accepted must be 0 or 1 and accepted "
                                f"levels a whole number in 0..{levels}, got {vec[:2].tolist()}")
        if any(c < 0 for c in codes) or any(not 0.0 <= x <= 1.0 for x in tv):
            raise ProtocolError(f"response {label!r}: negative codes or TV outside [0, 1]")
        return cls(action, codes, bool(vec[0] > 0.5), int(vec[1]), tv, int(m.group(4) or 0))

    def payload_bytes(self) -> int:
        return joint_state_bytes([self.label()], self.to_vector().size)


@dataclass(frozen=True)
class FeatureRequest:
    """Robot or node → the next node (early-exit modes): the tokens after ``layer`` of the
    early-exit net (``layer`` 0: the observation window itself, for ``cloud_only``), and
    the seed that draws the answer's codes wherever it is answered."""

    layer: int
    data: np.ndarray  # [history, d_model] (or [history, obs_dim] at layer 0)
    seed: int
    encoding: str = "32FC1"

    kind = "feature"

    def __post_init__(self) -> None:
        if self.encoding not in ENCODINGS:
            raise ProtocolError(f"feature encoding {self.encoding!r} is not one of "
                                f"{', '.join(ENCODINGS)}")
        # what crosses the link is what the next node computes on: round to the wire type
        object.__setattr__(self, "data", np.asarray(self.data, ENCODINGS[self.encoding])
                           .astype(np.float32))

    def label(self) -> str:
        return f"feature:x{self.layer}:s{self.seed}"

    def to_bytes(self) -> bytes:
        return self.data.astype(ENCODINGS[self.encoding]).tobytes()

    @classmethod
    def from_image(cls, label: str, height: int, width: int, encoding: str,
                   data: bytes, expect: tuple[int, int] | None = None) -> "FeatureRequest":
        """Decode an Image's fields; ``expect`` (height, width) refuses another shape."""
        m = _FEATURE.match(label)
        if not m:
            raise ProtocolError(f"feature label {label!r} is not 'feature:x<layer>:s<seed>'")
        if encoding not in ENCODINGS:
            raise ProtocolError(f"feature {label!r}: encoding {encoding!r} is not one of "
                                f"{', '.join(ENCODINGS)}")
        if expect is not None and (height, width) != tuple(expect):
            raise ProtocolError(f"feature {label!r} is {height}x{width}, expected "
                                f"{expect[0]}x{expect[1]}")
        size = ENCODINGS[encoding].itemsize
        if height < 1 or width < 1 or len(data) != height * width * size:
            raise ProtocolError(f"feature {label!r}: {len(data)} bytes do not hold {height}x"
                                f"{width} values of {encoding}")
        values = np.frombuffer(bytes(data), ENCODINGS[encoding]).reshape(height, width)
        if not np.all(np.isfinite(values)):
            raise ProtocolError(f"feature {label!r} contains NaN or inf")
        return cls(int(m.group(1)), values, _seed(float(m.group(2)), label), encoding)

    def payload_bytes(self) -> int:
        return image_bytes(self.label(), self.encoding, self.data.size
                           * ENCODINGS[self.encoding].itemsize)


def feature_hop(layer: int, link: int) -> int:
    """The packet-randomness index (``link.packet_rng(seed, hop)``) of the ``link``-th link
    of the transfer that carries a feature after ``layer``: layers rise along a journey, so
    every link a step's messages cross draws its own stream, whichever way they went (the
    in-process fleet and the ROS link node of that transfer draw the same)."""
    return 1000 + 16 * layer + link


def image_bytes(frame_id: str, encoding: str, data_bytes: int) -> int:
    """CDR size of a ``sensor_msgs/Image`` (as ``link.joint_state_bytes`` for JointState):
    header, height, width, encoding, is_bigendian, step, data; a ROS-side test compares it
    with rclpy's serialiser."""
    n = 8 + 4 + len(frame_id.encode()) + 1  # stamp; frame_id
    n = _align(n, 4) + 4 + 4  # height, width
    n += 4 + len(encoding.encode()) + 1  # encoding
    n += 1  # is_bigendian
    n = _align(n, 4) + 4  # step
    n = _align(n, 4) + 4 + data_bytes  # data
    return 4 + n  # encapsulation header; a byte sequence ends the message: no padding


def _check(vec: np.ndarray, expected: int, what: str, label: str) -> np.ndarray:
    vec = np.asarray(vec, dtype=np.float64).reshape(-1)
    if vec.size != expected:
        raise ProtocolError(f"{what} {label!r} carries {vec.size} values, expected {expected}")
    if not np.all(np.isfinite(vec)):
        raise ProtocolError(f"{what} {label!r} contains NaN or inf")
    return vec


def _seed(value: float, label: str) -> int:
    if value != int(value) or not 0 <= value < 2**32:
        raise ProtocolError(f"request {label!r}: seed {value!r} is not a whole number in "
                            "[0, 2**32)")
    return int(value)


def _codes(values: np.ndarray, k: int, label: str) -> tuple[int, ...]:
    if any(v != round(v) for v in values):
        raise ProtocolError(f"request {label!r}: codes {values.tolist()} are not whole numbers")
    codes = tuple(int(v) for v in values)
    if any(c < 0 or c >= k for c in codes):
        raise ProtocolError(f"request {label!r}: codes {codes} outside 0..{k - 1}")
    return codes
