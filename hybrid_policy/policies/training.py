"""Training: fit the task's tokenizer once, then each policy by teacher-forced BC.

Loss = sum over levels of the cross-entropy of the data's codes + ``offset_weight`` × MSE of
the offset (in normalised action units) that brings the decoded codes to the data's action.
"""

from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from sim_envs.dataset import DemoDataset
from hybrid_policy.policies.model import ROLE_SIZES, BCPolicy, PolicyConfig
from hybrid_policy.policies.tokenizer import ActionTokenizer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 40
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-4
    offset_weight: float = 10.0
    seed: int = 0


ROLE_TRAINING: dict[str, TrainConfig] = {
    "draft": TrainConfig(epochs=15, lr=2e-3),
    "target": TrainConfig(epochs=40, lr=5e-4),
}


def file_digest(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def data_record(ds: DemoDataset, path: str | Path) -> dict[str, Any]:
    """Provenance of a training set, stored in every checkpoint trained on it."""
    return {"path": str(path), "sha256": file_digest(path), "task": ds.task,
            "episodes": ds.num_episodes, "steps": ds.num_steps}


def history_windows(ds: DemoDataset, history: int) -> np.ndarray:
    """[steps, history, obs_dim]: each step's observation and the ones before it in its
    episode, the first observation repeated before the episode start (as at run time)."""
    out = np.empty((ds.num_steps, history, ds.observations.shape[1]), dtype=np.float32)
    for start, length in zip(ds.episode_starts, ds.episode_lengths):
        for k in range(history):  # k = how many steps back
            src = np.maximum(np.arange(length) - (history - 1 - k), 0) + start
            out[start : start + length, k] = ds.observations[src]
    return out


def policy_config(role: str, obs_dim: int, tok: ActionTokenizer) -> PolicyConfig:
    return PolicyConfig(obs_dim=obs_dim, action_dim=tok.cfg.action_dim, levels=tok.cfg.levels,
                        codebook_size=tok.cfg.codebook_size, **ROLE_SIZES[role])


def train_policy(ds: DemoDataset, tok: ActionTokenizer, cfg: PolicyConfig, train: TrainConfig,
                 desc: str = "train", progress: bool | None = None
                 ) -> tuple[BCPolicy, list[float]]:
    """Train a policy of shape ``cfg`` on ``ds``; returns it and the mean loss per epoch."""
    torch.manual_seed(train.seed)
    model = BCPolicy(cfg)
    obs = torch.from_numpy(history_windows(ds, cfg.history))
    actions = torch.from_numpy(ds.actions)
    codes = tok.encode(actions)
    offsets = (actions - tok.decode(codes)) / tok.action_std
    model.obs_mean.copy_(torch.from_numpy(ds.observations.mean(0)))
    model.obs_std.copy_(torch.from_numpy(ds.observations.std(0)).clamp_min(1e-3))

    opt = torch.optim.AdamW(model.parameters(), lr=train.lr, weight_decay=train.weight_decay)
    batches_per_epoch = math.ceil(len(obs) / train.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=train.lr, total_steps=train.epochs * batches_per_epoch, pct_start=0.1)
    ce, gen = nn.CrossEntropyLoss(), torch.Generator().manual_seed(train.seed)
    losses: list[float] = []
    model.train()
    bar = tqdm(range(train.epochs), desc=desc, unit="epoch",
               disable=None if progress is None else not progress)
    for _ in bar:
        perm, total = torch.randperm(len(obs), generator=gen), 0.0
        for i in range(batches_per_epoch):
            idx = perm[i * train.batch_size : (i + 1) * train.batch_size]
            logits, offset = model(obs[idx], codes[idx])
            loss = ce(logits.flatten(0, 1), codes[idx].flatten())
            loss = loss * cfg.levels + train.offset_weight * (offset - offsets[idx]).pow(2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        losses.append(total / len(obs))
        bar.set_postfix(loss=f"{losses[-1]:.4f}")
    model.eval()
    log.info("%s: %d parameters, loss %.4f -> %.4f", desc, model.num_parameters(), losses[0],
             losses[-1])
    return model, losses


def role_training(role: str, epochs: int | None = None) -> TrainConfig:
    train = ROLE_TRAINING[role]
    return train if epochs is None else replace(train, epochs=epochs)
