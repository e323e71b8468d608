"""Action tokenizer: a residual vector quantizer over normalised actions.

One tokenizer per task is shared by the draft and the target, so both predict
distributions over the *same* codes and speculative verification can compare them.
Level 0 picks a coarse code, each later level quantizes what the earlier ones left; the
decoded action is the sum of the chosen code vectors, mapped back to action units. The
policy's continuous offset head corrects what quantization leaves.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn
from vector_quantize_pytorch import ResidualVQ


@dataclass(frozen=True)
class TokenizerConfig:
    action_dim: int = 4
    levels: int = 2
    codebook_size: int = 16
    steps: int = 1500  # EMA codebook updates during fitting
    batch_size: int = 512
    seed: int = 0


class ActionTokenizer(nn.Module):
    def __init__(self, cfg: TokenizerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.rvq = ResidualVQ(
            dim=cfg.action_dim, num_quantizers=cfg.levels, codebook_size=cfg.codebook_size,
            kmeans_init=True, kmeans_iters=20, decay=0.95, threshold_ema_dead_code=1,
        )
        self.register_buffer("action_mean", torch.zeros(cfg.action_dim))
        self.register_buffer("action_std", torch.ones(cfg.action_dim))

    # Normalisation keeps all action dimensions on one scale for the quantizer.
    def _norm(self, actions: torch.Tensor) -> torch.Tensor:
        return (actions - self.action_mean) / self.action_std

    @torch.no_grad()
    def encode(self, actions: torch.Tensor) -> torch.Tensor:
        """Actions [N, action_dim] → codes [N, levels] (int64)."""
        self.rvq.eval()
        _, codes, _ = self.rvq(self._norm(actions))
        return codes

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes [N, levels] → actions [N, action_dim] (quantized, before any offset)."""
        return self.rvq.get_output_from_indices(codes) * self.action_std + self.action_mean

    def identity(self) -> str:
        """A short hash of config and codebooks: equal iff two tokenizers code alike."""
        h = hashlib.sha256(repr(sorted(asdict(self.cfg).items())).encode())
        for name, value in sorted(self.state_dict().items()):
            h.update(name.encode())
            h.update(value.detach().cpu().numpy().tobytes())
        return h.hexdigest()[:16]


def fit_tokenizer(actions: np.ndarray, cfg: TokenizerConfig) -> ActionTokenizer:
    """Fit the codebooks to ``actions`` by k-means initialisation and EMA updates."""
    torch.manual_seed(cfg.seed)
    tok = ActionTokenizer(cfg)
    data = torch.as_tensor(actions, dtype=torch.float32)
    tok.action_mean.copy_(data.mean(0))
    tok.action_std.copy_(data.std(0).clamp_min(1e-3))
    normed = tok._norm(data)
    gen = torch.Generator().manual_seed(cfg.seed)
    tok.rvq.train()
    for _ in range(cfg.steps):
        idx = torch.randint(len(normed), (min(cfg.batch_size, len(normed)),), generator=gen)
        tok.rvq(normed[idx])
    tok.eval()
    return tok
