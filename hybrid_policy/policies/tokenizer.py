"""Action tokenizer: a residual vector quantizer over normalised actions.

One tokenizer per task is shared by the draft and the target, so both predict
distributions over the *same* codes and speculative verification can compare them.
Level 0 picks a coarse code, each later level quantizes what the earlier ones left; the
decoded action is the sum of the chosen code vectors, mapped back to action units. The
policy's continuous offset head corrects what quantization leaves.

Fitting needs ``vector-quantize-pytorch``; acting only decodes, and ``CodebookDecoder`` does
that from the saved codebooks without importing it (it costs a node about 1.3 s to start).
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn


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
        from vector_quantize_pytorch import ResidualVQ

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
        return tokenizer_identity(self.cfg, self.state_dict())


def tokenizer_identity(cfg: TokenizerConfig, state: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256(repr(sorted(asdict(cfg).items())).encode())
    for name, value in sorted(state.items()):
        h.update(name.encode())
        h.update(value.detach().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


class CodebookDecoder:
    """The decoding half of a saved ``ActionTokenizer``: the sum of the chosen code vectors
    of every level, in action units. Built from the checkpoint's tensors (same identity)."""

    def __init__(self, cfg: TokenizerConfig, state: dict[str, torch.Tensor]) -> None:
        self.cfg = cfg
        self._identity = tokenizer_identity(cfg, state)
        try:
            self.action_mean, self.action_std = state["action_mean"], state["action_std"]
            self.codebooks = torch.stack([state[f"rvq.layers.{i}._codebook.embed"][0]
                                          for i in range(cfg.levels)])  # [levels, K, dim]
        except KeyError as exc:
            raise KeyError(f"tokenizer tensor {exc} missing") from None
        if self.codebooks.shape[1:] != (cfg.codebook_size, cfg.action_dim):
            raise ValueError(f"codebooks of shape {tuple(self.codebooks.shape)} do not fit "
                             f"{cfg}")

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes [N, levels] → actions [N, action_dim] (quantized, before any offset)."""
        out = sum(self.codebooks[lvl][codes[:, lvl]] for lvl in range(self.cfg.levels))
        return out * self.action_std + self.action_mean

    def identity(self) -> str:
        return self._identity

    def eval(self) -> "CodebookDecoder":
        return self


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
