"""A trained policy ready to act: model + tokenizer + the facts it was trained with.

Per control step the expensive part (the transformer over the history) runs once in
``begin``; the per-level distributions, sampling and decoding after it are cheap, so
speculative verification can walk the levels without re-encoding.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import torch

from hybrid_policy.defaults import DEFAULT_TEMPERATURE
from hybrid_policy.policies.card import weights_identity
from hybrid_policy.policies.model import BCPolicy, check_observation
from hybrid_policy.policies.tokenizer import ActionTokenizer, CodebookDecoder




def sample_categorical(probs: np.ndarray, rng: np.random.Generator) -> int:
    """One draw from ``probs`` by inverse CDF (exact, one uniform per draw)."""
    cdf = np.cumsum(probs)
    return int(min(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"), len(probs) - 1))


@dataclass
class Policy:
    model: BCPolicy
    tokenizer: ActionTokenizer | CodebookDecoder  # a loaded policy: the decoder
    role: str
    task: str
    info: dict[str, Any] = field(default_factory=dict)  # the checkpoint's config.json
    temperature: float = DEFAULT_TEMPERATURE  # softmax temperature of the code distributions

    def __post_init__(self) -> None:
        if not (self.temperature > 0 and np.isfinite(self.temperature)):
            raise ValueError(f"temperature must be a finite number > 0, got {self.temperature}")
        self.model.eval()
        self.tokenizer.eval()
        self.tokenizer_id = self.tokenizer.identity()

    def identity(self) -> str:
        """A short hash of the weights (policy and tokenizer): equal iff they act alike."""
        return weights_identity(self.tokenizer_id, {
            name: value.detach().cpu().numpy() for name, value in self.model.state_dict().items()})

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

    @cached_property
    def code_table(self) -> np.ndarray:
        """Decoded action of every code tuple, lexicographic order: [K**levels, action_dim]."""
        combos = itertools.product(range(self.codebook_size), repeat=self.levels)
        with torch.inference_mode():
            return self.tokenizer.decode(torch.tensor(list(combos))).numpy().astype(np.float64)

    def decode(self, codes: tuple[int, ...]) -> np.ndarray:
        """The tokenizer's action for ``codes`` (no offset)."""
        return self.code_table[np.ravel_multi_index(codes, (self.codebook_size,) * self.levels)]

    def begin(self, obs_history: np.ndarray) -> "PolicyStep":
        """Encode the most recent ``history`` observations (oldest first) for one step."""
        return self.begin_batch([obs_history])[0]

    @torch.inference_mode()
    def begin_batch(self, histories: list[np.ndarray]) -> list["PolicyStep"]:
        """``begin`` for several steps (of different robots) in one forward pass of the
        trunk: what a server that batches requests runs."""
        windows = np.stack([self._window(h) for h in histories])
        h = self.model.encode(torch.from_numpy(windows))
        return [PolicyStep(self, h[i : i + 1]) for i in range(len(histories))]

    def _window(self, obs_history: np.ndarray) -> np.ndarray:
        window = np.asarray(obs_history, dtype=np.float32)[-self.history :]
        if window.ndim != 2:
            raise ValueError(f"observation history must be 2-D [steps, obs_dim], got {window.shape}")
        for row in window:
            check_observation(row, self.obs_dim)
        if len(window) < self.history:  # pad like the start of an episode
            window = np.concatenate([np.repeat(window[:1], self.history - len(window), 0), window])
        return window


class PolicyStep:
    """One step's distributions: ``probs(prefix)`` for the level after ``prefix``."""

    def __init__(self, policy: Policy, h: torch.Tensor) -> None:
        self.policy, self._h = policy, h
        self._cache: dict[tuple[int, ...], np.ndarray] = {}

    def probs(self, prefix: tuple[int, ...]) -> np.ndarray:
        """Categorical over the codes of level ``len(prefix)`` given the earlier codes."""
        prefix = tuple(int(c) for c in prefix)
        if prefix not in self._cache:
            self.probs_batch([prefix])
        return self._cache[prefix]

    @torch.inference_mode()
    def probs_batch(self, prefixes: list[tuple[int, ...]]) -> np.ndarray:
        """``probs`` of several prefixes of one length, in one model call: [N, K]."""
        todo = [p for p in prefixes if p not in self._cache]
        if todo:
            level = len(todo[0])
            codes = torch.tensor([list(p) + [0] * (self.policy.levels - level) for p in todo])
            h = self._h.expand(len(todo), -1)
            logits = self.policy.model.level_logits(h, codes, level).double()
            for p, row in zip(todo, torch.softmax(logits / self.policy.temperature, -1).numpy()):
                self._cache[p] = row
        return np.stack([self._cache[p] for p in prefixes])

    def level_probs(self, codes: tuple[int, ...]) -> np.ndarray:
        """Per-level distributions [levels, K] along the code path ``codes``."""
        return np.stack([self.probs(tuple(codes[:lvl])) for lvl in range(self.policy.levels)])

    def joint(self) -> np.ndarray:
        """Probabilities of all code tuples, lexicographic order [K**levels]."""
        prefixes: list[tuple[int, ...]] = [()]
        weights = np.ones(1)
        for _ in range(self.policy.levels):
            probs = self.probs_batch(prefixes)
            weights = (weights[:, None] * probs).reshape(-1)
            prefixes = [pre + (c,) for pre in prefixes for c in range(probs.shape[1])]
        return weights

    def expected_decoded(self) -> np.ndarray:
        """E_{c~π}[decode(c)]: the policy's mean quantized action this step."""
        return self.joint() @ self.policy.code_table

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
