"""RoCoIn's students: compact nets distilled from the target, each holding part of its
knowledge (docs/method.md, "Redundant distilled students").

**Knowledge partition.** The target's action is a code pair ``(c0, c1)`` (two residual
levels) plus an offset. The level-0 codes (coarse actions) are split among ``k`` students:
student ``j`` owns ``C_j`` and outputs, for every ``c0`` in ``C_j``, a score ``s(c0)``, the
conditional log-probabilities ``log p(c1 | c0)`` of every level-1 code, and the action of
every pair ``(c0, c1)`` (decoded code + predicted offset). Codes are assigned by the angle of
their mean action in the plane, so each student is the expert of a sector of directions.

**Combination** (``core.rocoin.combine``): ``p(c0) = softmax`` over the scores of all
students side by side; ``c1`` and the action come from the owner of the drawn ``c0``. That
is the target's distribution exactly when the students match it, so they are trained
*jointly* on the target's own distributions (not on the demonstrations' codes): KL of the
target's level-0 distribution to the combined one, the owner's KL at level 1 weighted by
the target's ``p(c0)``, and the offsets' squared error weighted by the target's joint.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from hybrid_policy.errors import CheckpointError, HybridPolicyError
from hybrid_policy.policies.card import read_role_config
from hybrid_policy.policies.teacher import check_levels, teacher_targets

log = logging.getLogger(__name__)
ROLE = "students"


@dataclass(frozen=True)
class DistilConfig:
    epochs: int = 30
    batch_size: int = 256
    lr: float = 2e-3
    weight_decay: float = 1e-4
    offset_weight: float = 10.0
    width_per_share: int = 256  # a student's hidden width: this x its share (multiple of 8)
    min_width: int = 32
    seed: int = 0


class StudentNet(nn.Module):
    """One student: an MLP over the observation window, heads for its own level-0 codes."""

    def __init__(self, obs_dim: int, history: int, codes: Sequence[int], codebook: int,
                 action_dim: int, width: int) -> None:
        super().__init__()
        self.codes = tuple(int(c) for c in codes)
        self.obs_dim, self.history, self.codebook = obs_dim, history, codebook
        self.action_dim, self.width = action_dim, width
        n = len(self.codes)
        self.register_buffer("obs_mean", torch.zeros(obs_dim))
        self.register_buffer("obs_std", torch.ones(obs_dim))
        self.register_buffer("code_table", torch.zeros(n, codebook, action_dim))  # decoded
        self.register_buffer("action_std", torch.ones(action_dim))
        self.trunk = nn.Sequential(nn.Linear(history * obs_dim, width), nn.GELU(),
                                   nn.Linear(width, width), nn.GELU(), nn.LayerNorm(width))
        self.score = nn.Linear(width, n)
        self.emb0 = nn.Embedding(n, width)
        self.level1 = nn.Sequential(nn.Linear(width, width), nn.GELU(),
                                    nn.Linear(width, codebook))
        self.emb1 = nn.Embedding(codebook, width)
        self.offset = nn.Sequential(nn.Linear(width, width), nn.GELU(),
                                    nn.Linear(width, action_dim))

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(self, windows: torch.Tensor):
        """Windows [B, history, obs_dim] → scores [B, n], log p(c1|c0) [B, n, K] and the
        level-0 conditioned features z0 [B, n, d] (for ``offsets``)."""
        h = self.trunk(((windows - self.obs_mean) / self.obs_std).flatten(1))
        z0 = h[:, None] + self.emb0.weight[None]
        return self.score(h), torch.log_softmax(self.level1(z0), -1), z0

    def offsets(self, z0: torch.Tensor, own: torch.Tensor, c1: torch.Tensor) -> torch.Tensor:
        """Offsets (normalised units) of the pairs (owned code index ``own``, ``c1``), both
        [B, m] → [B, m, A]; training asks for a few pairs per window, a device for all."""
        z = torch.gather(z0, 1, own[..., None].expand(-1, -1, z0.shape[-1]))
        return self.offset(z + self.emb1(c1))

    @torch.inference_mode()
    def answer(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """What a device sends back per window: scores [B, n], log p(c1|c0) [B, n, K] and
        the actions of its pairs [B, n, K, A] (decoded + offset, clipped to [-1, 1])."""
        scores, cond, z0 = self(torch.as_tensor(np.asarray(windows, np.float32)))
        b, n, k = cond.shape
        own = torch.arange(n).repeat_interleave(k).expand(b, -1)
        off = self.offsets(z0, own, torch.arange(k).repeat(n).expand(b, -1)).reshape(b, n, k, -1)
        actions = (self.code_table + off * self.action_std).clamp(-1.0, 1.0)
        return (scores.double().numpy(), cond.double().numpy(), actions.double().numpy())


def partition_codes(code_table: np.ndarray, sizes: Sequence[int]) -> list[tuple[int, ...]]:
    """Level-0 codes for students of ``sizes`` codes each: sorted by the angle of their mean
    action in the plane (code_table [K, K, A]), cut into consecutive sectors."""
    k = code_table.shape[0]
    if sum(sizes) != k or min(sizes) < 1:
        raise HybridPolicyError(f"student sizes {list(sizes)} must be >= 1 and sum to the "
                                f"{k} level-0 codes")
    mean = code_table.mean(1)
    order = np.argsort(np.arctan2(mean[:, 1], mean[:, 0]), kind="stable")
    cuts = np.cumsum([0, *sizes])
    return [tuple(sorted(int(c) for c in order[a:b])) for a, b in zip(cuts, cuts[1:])]


def width_for(share: float, cfg: DistilConfig) -> int:
    return max(cfg.min_width, 8 * round(cfg.width_per_share * share / 8))


def new_students(target, codes: Sequence[Sequence[int]], windows: np.ndarray,
                 cfg: DistilConfig) -> list[StudentNet]:
    """Untrained students for the partition ``codes``, normalised like the data."""
    check_levels(target)
    k = target.codebook_size
    table = torch.from_numpy(target.code_table.reshape(k, k, -1)).float()
    flat = windows.reshape(-1, windows.shape[-1])
    nets = []
    for own in codes:
        net = StudentNet(target.obs_dim, target.history, own, k, table.shape[-1],
                         width_for(len(own) / k, cfg))
        net.obs_mean.copy_(torch.from_numpy(flat.mean(0)))
        net.obs_std.copy_(torch.from_numpy(flat.std(0)).clamp_min(1e-3))
        net.code_table.copy_(table[list(own)])
        net.action_std.copy_(target.tokenizer.action_std.float())
        nets.append(net)
    return nets


def distil_loss(nets: Sequence[StudentNet], windows: torch.Tensor, logp0: torch.Tensor,
                logp1: torch.Tensor, offsets: torch.Tensor, offset_weight: float,
                gen: torch.Generator, pairs: int = 8) -> tuple[torch.Tensor, dict[str, float]]:
    """The joint distillation loss of one batch (module doc). The offsets' error is
    estimated on ``pairs`` pairs per window drawn from the target's joint over the
    student's pairs (an unbiased estimate of the weighted error, at a fraction of its cost)."""
    scores = torch.zeros_like(logp0)
    level1 = off = torch.zeros((), dtype=logp0.dtype)
    p0 = logp0.exp()
    rows = torch.arange(len(windows))[:, None]
    for net in nets:
        s, cond, z0 = net(windows)
        own = torch.tensor(net.codes)
        scores = scores.index_copy(1, own, s)
        t1 = logp1[:, own]
        w1 = p0[:, own, None] * t1.exp()  # the target's joint over this student's pairs
        level1 = level1 + (w1 * (t1 - cond)).sum((1, 2)).mean()
        mass = w1.flatten(1).sum(1)
        draw = torch.multinomial(w1.flatten(1) + 1e-12, pairs, True, generator=gen)
        i0, c1 = draw // net.codebook, draw % net.codebook
        err = (net.offsets(z0, i0, c1) - offsets[rows, own[i0], c1]).pow(2).mean(-1)
        off = off + (mass * err.mean(1)).mean()
    level0 = (p0 * (logp0 - torch.log_softmax(scores, -1))).sum(-1).mean()
    loss = level0 + level1 + offset_weight * off
    return loss, {"level0": level0.item(), "level1": level1.item(), "offset": off.item()}


def distil(target, windows: np.ndarray, codes: Sequence[Sequence[int]],
           cfg: DistilConfig = DistilConfig(), progress: bool | None = None
           ) -> tuple[list[StudentNet], list[dict[str, float]]]:
    """Students for the partition ``codes``, trained jointly on the target's distributions
    over ``windows`` [N, history, obs_dim]; returns them and the mean losses per epoch."""
    torch.manual_seed(cfg.seed)
    nets = new_students(target, codes, windows, cfg)
    logp0, logp1, offsets = teacher_targets(target, windows)
    obs = torch.from_numpy(np.asarray(windows, np.float32))
    params = [p for net in nets for p in net.parameters()]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    per_epoch = math.ceil(len(obs) / cfg.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, pct_start=0.1,
                                                total_steps=cfg.epochs * per_epoch)
    gen = torch.Generator().manual_seed(cfg.seed)
    history: list[dict[str, float]] = []
    for net in nets:
        net.train()
    bar = tqdm(range(cfg.epochs), desc="distil students", unit="epoch",
               disable=None if progress is None else not progress)
    for _ in bar:
        perm, sums = torch.randperm(len(obs), generator=gen), {}
        for i in range(per_epoch):
            idx = perm[i * cfg.batch_size:(i + 1) * cfg.batch_size]
            loss, parts = distil_loss(nets, obs[idx], logp0[idx], logp1[idx], offsets[idx],
                                      cfg.offset_weight, gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            for key, v in {"loss": loss.item(), **parts}.items():
                sums[key] = sums.get(key, 0.0) + v * len(idx)
        history.append({key: v / len(obs) for key, v in sums.items()})
        bar.set_postfix(loss=f"{history[-1]['loss']:.4f}")
    for net in nets:
        net.eval()
    log.info("distilled %d students (%s parameters): loss %.4f -> %.4f", len(nets),
             "+".join(f"{n.num_parameters():,}" for n in nets), history[0]["loss"],
             history[-1]["loss"])
    return nets, history


def combined_joint(nets: Sequence[StudentNet], windows: np.ndarray) -> np.ndarray:
    """The combined students' joint over all pairs [N, K*K] (c0-major), as the robot forms it."""
    k = nets[0].codebook
    scores = np.zeros((len(windows), k))
    cond = np.zeros((len(windows), k, k))
    for net in nets:
        s, c, _ = net.answer(windows)
        scores[:, list(net.codes)] = s
        cond[:, list(net.codes)] = c
    p0 = np.exp(scores - scores.max(1, keepdims=True))
    p0 /= p0.sum(1, keepdims=True)
    return (p0[:, :, None] * np.exp(cond)).reshape(len(windows), -1)


def save_students(path: str | Path, nets: Sequence[StudentNet], task: str,
                  extra: dict[str, Any]) -> Path:
    from hybrid_policy.policies.checkpoint import _write

    tensors = {f"student{j}.{k}": v for j, net in enumerate(nets)
               for k, v in net.state_dict().items()}
    shape = {"obs_dim": nets[0].obs_dim, "history": nets[0].history,
             "codebook": nets[0].codebook, "action_dim": nets[0].action_dim}
    return _write(Path(path), tensors, {
        "role": ROLE, "task": task, **shape,
        "students": [{"codes": list(n.codes), "width": n.width,
                      "parameters": n.num_parameters()} for n in nets], **extra})


def load_students(path: str | Path, task: str | None = None) -> tuple[list[StudentNet], dict]:
    """The students saved at ``path`` and their config.json."""
    from hybrid_policy.policies.checkpoint import _load_module, _read_weights

    path = Path(path)
    cfg = read_role_config(path, ROLE, task)
    weights = _read_weights(path)
    nets = []
    try:
        for j, spec in enumerate(cfg["students"]):
            net = StudentNet(cfg["obs_dim"], cfg["history"], spec["codes"], cfg["codebook"],
                             cfg["action_dim"], spec["width"])
            prefix = f"student{j}."
            _load_module(net, {k[len(prefix):]: v for k, v in weights.items()
                               if k.startswith(prefix)}, path)
            net.eval()
            nets.append(net)
    except (KeyError, TypeError) as exc:
        raise CheckpointError(f"{path}: bad students section ({exc})") from None
    return nets, {**cfg, "checkpoint": str(path)}
