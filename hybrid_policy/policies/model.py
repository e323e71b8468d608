"""VQ-BeT-style BC policy: a transformer over the observation history predicts, level by
level, a categorical distribution over the tokenizer's codes, plus a continuous offset.

Conditioning on codes: the history is encoded once into a feature ``h``. The logits of
level ``l`` are computed from ``z_l = h + sum_{j<l} E_j[c_j]``, where ``E_j`` is a learned
embedding of level ``j``'s code; the offset is computed from ``z_L`` (all levels chosen).
So the policy defines the joint ``p(c_0 | h) p(c_1 | h, c_0) ...``, exactly what
speculative verification walks: the target scores the draft's level-``l`` code given the
same prefix ``c_<l``, and after a rejection the remaining levels follow the corrected
prefix. Training uses the data set's codes as the prefix (teacher forcing).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from hybrid_policy.errors import ObservationError


@dataclass(frozen=True)
class PolicyConfig:
    obs_dim: int
    action_dim: int = 4
    levels: int = 2
    codebook_size: int = 16
    history: int = 2  # observations the policy sees: the current one and history-1 before it
    d_model: int = 32
    layers: int = 1
    heads: int = 2
    ffn_mult: int = 2
    dropout: float = 0.0


# Sizes of the two roles. The draft must fit a robot CPU budget (<= ~100k parameters,
# <= 1 ms a step); the target is >= 10x larger and sees a longer history.
ROLE_SIZES: dict[str, dict[str, int]] = {
    "draft": {"history": 2, "d_model": 24, "layers": 1, "heads": 2, "ffn_mult": 2},
    "target": {"history": 4, "d_model": 128, "layers": 4, "heads": 4, "ffn_mult": 4},
}


class BCPolicy(nn.Module):
    def __init__(self, cfg: PolicyConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        self.register_buffer("obs_mean", torch.zeros(cfg.obs_dim))
        self.register_buffer("obs_std", torch.ones(cfg.obs_dim))
        self.obs_proj = nn.Linear(cfg.obs_dim, d)
        self.pos_emb = nn.Parameter(torch.zeros(cfg.history, d))
        layer = nn.TransformerEncoderLayer(
            d, cfg.heads, dim_feedforward=cfg.ffn_mult * d, dropout=cfg.dropout,
            batch_first=True, norm_first=True, activation="gelu",
        )
        self.encoder = nn.TransformerEncoder(layer, cfg.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d)
        self.code_emb = nn.ModuleList(nn.Embedding(cfg.codebook_size, d) for _ in range(cfg.levels))
        self.level_heads = nn.ModuleList(
            nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, cfg.codebook_size))
            for _ in range(cfg.levels)
        )
        self.offset_head = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, cfg.action_dim))

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def encode(self, obs_hist: torch.Tensor) -> torch.Tensor:
        """Observation history [B, history, obs_dim] (oldest first) → feature h [B, d]."""
        x = self.obs_proj((obs_hist - self.obs_mean) / self.obs_std) + self.pos_emb
        return self.norm(self.encoder(x)[:, -1])

    def level_logits(self, h: torch.Tensor, prefix: torch.Tensor, level: int) -> torch.Tensor:
        """Logits of ``level`` given the codes of the levels before it (prefix [B, >=level])."""
        return self.level_heads[level](self._condition(h, prefix, level))

    def offset(self, h: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """Continuous offset [B, action_dim] (normalised action units) given all codes."""
        return self.offset_head(self._condition(h, codes, self.cfg.levels))

    def _condition(self, h: torch.Tensor, codes: torch.Tensor, upto: int) -> torch.Tensor:
        z = h
        for j in range(upto):
            z = z + self.code_emb[j](codes[:, j])
        return z

    def forward(self, obs_hist: torch.Tensor, codes: torch.Tensor):
        """Teacher-forced training pass: per-level logits [B, levels, K] and offsets."""
        h = self.encode(obs_hist)
        logits = torch.stack(
            [self.level_logits(h, codes, lvl) for lvl in range(self.cfg.levels)], dim=1
        )
        return logits, self.offset(h, codes)


class ObsHistory:
    """The last ``length`` observations of an episode, oldest first.

    At the start of an episode the first observation fills the whole window, as in
    training (``training.history_windows``).
    """

    def __init__(self, length: int, obs_dim: int) -> None:
        self.length, self.obs_dim = length, obs_dim
        self._buf = np.zeros((length, obs_dim), dtype=np.float32)
        self._empty = True

    def reset(self) -> None:
        self._empty = True

    def push(self, obs: np.ndarray) -> np.ndarray:
        obs = check_observation(obs, self.obs_dim)
        if self._empty:
            self._buf[:] = obs
            self._empty = False
        else:
            self._buf[:-1] = self._buf[1:]
            self._buf[-1] = obs
        return self._buf

    def last(self, n: int) -> np.ndarray:
        return self._buf[-n:]


def check_observation(obs: np.ndarray, obs_dim: int) -> np.ndarray:
    """The observation as float32 [obs_dim], or ``ObservationError`` saying what is wrong."""
    arr = np.asarray(obs, dtype=np.float32).reshape(-1)
    if arr.shape[0] != obs_dim:
        raise ObservationError(
            f"observation has {arr.shape[0]} elements, expected {obs_dim}"
        )
    if not np.all(np.isfinite(arr)):
        raise ObservationError("observation contains NaN or inf")
    return arr
