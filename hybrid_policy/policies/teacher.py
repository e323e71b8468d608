"""The target's code distributions as a distillation's targets: what a smaller net (the
draft distilled from the target, RoCoIn's students) is trained to match."""

from __future__ import annotations

import numpy as np
import torch

from hybrid_policy.errors import HybridPolicyError


def check_levels(policy) -> None:
    if policy.levels != 2:
        raise HybridPolicyError(f"students are distilled from a two-level code (c0, c1); this "
                                f"target has {policy.levels} levels")


def two_level_logits(model, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A two-level policy's untempered logits of c0 [B, K] and of c1 after every c0
    [B, K, K] from its features ``h`` (what both distillations match, target and draft)."""
    b, k = len(h), model.cfg.codebook_size
    l0 = model.level_logits(h, torch.zeros(b, 2, dtype=torch.long), 0)
    prefix = torch.stack([torch.arange(k).repeat(b), torch.zeros(b * k, dtype=torch.long)], 1)
    return l0, model.level_logits(h.repeat_interleave(k, 0), prefix, 1).reshape(b, k, k)


@torch.inference_mode()
def teacher_targets(target, windows: np.ndarray, batch: int = 512
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The target's distributions per window (at its temperature): log p(c0) [N, K],
    log p(c1|c0) [N, K, K] and offsets of every pair [N, K, K, A] (normalised units)."""
    check_levels(target)
    m, k, temp = target.model, target.codebook_size, target.temperature
    pairs = torch.cartesian_prod(torch.arange(k), torch.arange(k))  # [K*K, 2] c0-major
    out0, out1, outo = [], [], []
    for i in range(0, len(windows), batch):
        w = torch.from_numpy(np.asarray(windows[i:i + batch], np.float32))
        h = m.encode(w)
        b = len(h)
        l0, l1 = two_level_logits(m, h)
        out0.append(torch.log_softmax(l0.double() / temp, -1).float())
        out1.append(torch.log_softmax(l1.double() / temp, -1).float())
        hp = h.repeat_interleave(k * k, 0)
        outo.append(m.offset(hp, pairs.repeat(b, 1)).reshape(b, k, k, -1))
    return torch.cat(out0), torch.cat(out1), torch.cat(outo)
