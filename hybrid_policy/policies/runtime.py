"""A trained policy ready to act: model + tokenizer + the facts it was trained with.

Per control step the expensive part (the transformer over the history) runs once in
``begin``; the per-level distributions, sampling and decoding after it are cheap, so
speculative verification can walk the levels without re-encoding.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from hybrid_policy.policies.model import BCPolicy, check_observation
from hybrid_policy.policies.tokenizer import ActionTokenizer


def sample_categorical(probs: np.ndarray, rng: np.random.Generator) -> int:
    """One draw from ``probs`` by inverse CDF (exact, one uniform per draw)."""
    cdf = np.cumsum(probs)
    return int(min(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"), len(probs) - 1))


@dataclass
class Policy:
    model: BCPolicy
    tokenizer: ActionTokenizer
    role: str
    task: str
    info: dict[str, Any] = field(default_factory=dict)  # the checkpoint's config.json

    def __post_init__(self) -> None:
        self.model.eval()
        self.tokenizer.eval()
        self.tokenizer_id = self.tokenizer.identity()

    @property
    def obs_dim(self) -> int:
        return self.model.cfg.obs_dim

    @property
    def history(self) -> int:
        return self.model.cfg.history

    @property
    def levels(self) -> int:
        return self.model.cfg.levels

    @property
    def codebook_size(self) -> int:
        return self.model.cfg.codebook_size

    @torch.inference_mode()
    def begin(self, obs_history: np.ndarray) -> "PolicyStep":
        """Encode the most recent ``history`` observations (oldest first) for one step."""
        window = np.asarray(obs_history, dtype=np.float32)[-self.history :]
        if window.ndim != 2:
            raise ValueError(f"observation history must be 2-D [steps, obs_dim], got {window.shape}")
        for row in window:
            check_observation(row, self.obs_dim)
        if len(window) < self.history:  # pad like the start of an episode
            window = np.concatenate([np.repeat(window[:1], self.history - len(window), 0), window])
        h = self.model.encode(torch.from_numpy(window).unsqueeze(0))
        return PolicyStep(self, h)


class PolicyStep:
    """One step's distributions: ``probs(prefix)`` for the level after ``prefix``."""

    def __init__(self, policy: Policy, h: torch.Tensor) -> None:
        self.policy, self._h = policy, h
        self._cache: dict[tuple[int, ...], np.ndarray] = {}

    @torch.inference_mode()
    def probs(self, prefix: tuple[int, ...]) -> np.ndarray:
        """Categorical over the codes of level ``len(prefix)`` given the earlier codes."""
        prefix = tuple(int(c) for c in prefix)
        if prefix not in self._cache:
            level = len(prefix)
            codes = torch.tensor([list(prefix) + [0] * (self.policy.levels - level)])
            logits = self.policy.model.level_logits(self._h, codes, level)
            self._cache[prefix] = torch.softmax(logits.double(), -1)[0].numpy()
        return self._cache[prefix]

    def level_probs(self, codes: tuple[int, ...]) -> np.ndarray:
        """Per-level distributions [levels, K] along the code path ``codes``."""
        return np.stack([self.probs(tuple(codes[:lvl])) for lvl in range(self.policy.levels)])

    def sample(self, rng: np.random.Generator) -> tuple[int, ...]:
        """Codes drawn level by level, each conditioned on the ones before."""
        codes: tuple[int, ...] = ()
        for _ in range(self.policy.levels):
            codes += (sample_categorical(self.probs(codes), rng),)
        return codes

    @torch.inference_mode()
    def action(self, codes: tuple[int, ...]) -> np.ndarray:
        """Decoded codes plus the offset the policy predicts for them, clipped to [-1, 1]."""
        c = torch.tensor([list(codes)])
        tok = self.policy.tokenizer
        offset = self.policy.model.offset(self._h, c) * tok.action_std
        return np.clip((tok.decode(c) + offset)[0].numpy(), -1.0, 1.0).astype(np.float32)
