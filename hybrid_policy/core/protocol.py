"""What crosses the link in one control step, independent of how it is carried.

Each message is a label plus a flat float64 vector: the ROS nodes carry them as
``sensor_msgs/JointState`` (``name = [label]``, ``position = vector``, ``header.stamp`` =
the observation's stamp); the in-process evaluator passes the objects directly. Both
charge the link with ``payload_bytes``, the CDR size of that JointState.

Layouts (``docs/interfaces.md``):

- Request  ``"<kind>:h<H>x<D>:l<L>:k<K>"`` → ``[seed, codes(L), q(L·K), window(H·D)]``
  (``L = K = 0`` for ``act``)
- Response ``"a<A>:l<L>:tv<T>"`` → ``[accepted, accepted_levels, codes(L), tv(T), action(A)]``
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from hybrid_policy.core.link import joint_state_bytes
from hybrid_policy.errors import HybridPolicyError

_REQ = re.compile(r"^(verify|act):h(\d+)x(\d+):l(\d+):k(\d+)$")
_RESP = re.compile(r"^a(\d+):l(\d+):tv(\d+)$")


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

    def label(self) -> str:
        return f"a{len(self.action)}:l{len(self.codes)}:tv{len(self.level_tv)}"

    def to_vector(self) -> np.ndarray:
        return np.concatenate([[float(self.accepted), float(self.accepted_levels)],
                               np.asarray(self.codes, float), np.asarray(self.level_tv, float),
                               np.asarray(self.action, float)]).astype(np.float64)

    @classmethod
    def from_vector(cls, label: str, vec: np.ndarray) -> "Response":
        m = _RESP.match(label)
        if not m:
            raise ProtocolError(f"response label {label!r} is not 'a<A>:l<L>:tv<T>'")
        a, levels, t = map(int, m.groups())
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
        return cls(action, codes, bool(vec[0] > 0.5), int(vec[1]), tv)

    def payload_bytes(self) -> int:
        return joint_state_bytes([self.label()], self.to_vector().size)


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
