"""A draft distilled from the target: speculative decoding's rule that a draft's job is to
be *accepted*, not to imitate the demonstrations on its own.

Verification rejects a step with probability ``1 − Σ_c0 min(p, q)(c0) · Σ_c1 min(p, q)(c1 |
c0)`` (``core.speculative.rejection_prob``), so the draft ``q`` is trained towards the
target's code distributions ``p`` themselves, at the sampling temperature both run at:

    L = KL(p(c0) ‖ q(c0)) + Σ_c0 p(c0) KL(p(· | c0) ‖ q(· | c0))        (the joint's KL)
        + w_off · E_{(c0, c1) ∼ p} |off_q(c0, c1) − off_p(c0, c1)|²       (the target's offsets)
        + w_demo · (the demonstration loss of ``training.train_policy``)

on the windows of the demonstrations, each seen by the draft through its own shorter
history. The joint's KL bounds the total-variation distance of the joints (Pinsker), which
bounds the rejection from below; matching every prefix's level-1 distribution, not only
the demonstration's, is what lets the draft's own sampled prefixes be accepted. The
draft keeps its architecture, size and speed; only its training changes.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from sim_envs.dataset import DemoDataset
from hybrid_policy.errors import HybridPolicyError
from hybrid_policy.policies.model import BCPolicy, PolicyConfig
from hybrid_policy.policies.teacher import teacher_targets, two_level_logits
from hybrid_policy.policies.tokenizer import ActionTokenizer
from hybrid_policy.policies.training import history_windows

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistillConfig:
    """Defaults: the recipe kept. fetch_push, 90/10 episode split: held-out rejection 0.391
    (demonstration-trained draft) -> 0.292 after 80 epochs at 2e-3, 0.230 after 200 at 2e-3,
    0.228 after 100 at 5e-3, 0.214 with the demonstration loss mixed in at 0.5 (closed-loop
    draft-only success 0.937 against 0.927 without it; docs/method.md section 11)."""

    epochs: int = 100
    batch_size: int = 256
    lr: float = 5e-3
    weight_decay: float = 1e-4
    offset_weight: float = 10.0
    demo_weight: float = 0.5  # 0: distillation alone; > 0 mixes in the demonstration loss
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise HybridPolicyError(f"distillation needs epochs and batch_size >= 1, got "
                                    f"{self.epochs} and {self.batch_size}")
        if not (self.lr > 0 and self.offset_weight >= 0 and self.demo_weight >= 0):
            raise HybridPolicyError(f"distillation needs lr > 0 and offset_weight, demo_weight "
                                    f">= 0, got {self.lr}, {self.offset_weight}, "
                                    f"{self.demo_weight}")

DEFAULT_DISTILL = DistillConfig()


def draft_logits(model: BCPolicy, h: torch.Tensor, temperature: float
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """The draft's log q(c0) [B, K] and log q(c1 | c0) for every c0 [B, K, K], tempered."""
    l0, l1 = two_level_logits(model, h)
    return torch.log_softmax(l0 / temperature, -1), torch.log_softmax(l1 / temperature, -1)


def joint_kl(logp0: torch.Tensor, logp1: torch.Tensor, logq0: torch.Tensor,
             logq1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """KL(p ‖ q) of the two-level joints, split into its level-0 and level-1 parts [B]."""
    p0 = logp0.exp()
    kl0 = (p0 * (logp0 - logq0)).sum(-1)
    kl1 = (p0 * (logp1.exp() * (logp1 - logq1)).sum(-1)).sum(-1)
    return kl0, kl1


def rejection_probs(logp0: torch.Tensor, logp1: torch.Tensor, logq0: torch.Tensor,
                    logq1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per window: the exact probability that level-by-level verification rejects the
    draft's sample [B], and the probability of accepting level 0 [B] (its per-level
    acceptance; level 1's is the ratio of the two acceptances)."""
    over0 = torch.minimum(logp0.exp(), logq0.exp())
    over1 = torch.minimum(logp1.exp(), logq1.exp()).sum(-1)
    return 1.0 - (over0 * over1).sum(-1), over0.sum(-1)


@torch.inference_mode()
def agreement(draft, target, windows: np.ndarray, batch: int = 1024) -> dict[str, float]:
    """How often ``target`` would accept ``draft``'s samples on ``windows`` [N, history,
    obs_dim] (target-length windows; the draft sees its last ``draft.history``): mean exact
    rejection probability and acceptance per level."""
    if draft.temperature != target.temperature:
        raise HybridPolicyError("draft and target must be compared at one temperature")
    logp0, logp1, _ = teacher_targets(target, windows)
    rej, acc0 = [], []
    for i in range(0, len(windows), batch):
        w = torch.from_numpy(np.asarray(windows[i:i + batch, -draft.history:], np.float32))
        q0, q1 = draft_logits(draft.model, draft.model.encode(w), draft.temperature)
        r, a = rejection_probs(logp0[i:i + batch], logp1[i:i + batch], q0, q1)
        rej.append(r)
        acc0.append(a)
    rej_t, acc0_t = torch.cat(rej), torch.cat(acc0)
    accept = 1.0 - rej_t
    return {"rejection": float(rej_t.mean()), "accept_level0": float(acc0_t.mean()),
            "accept_level1": float(accept.sum() / acc0_t.sum()), "windows": len(windows)}


def distill_draft(ds: DemoDataset, tok: ActionTokenizer, target, cfg: PolicyConfig,
                  train: DistillConfig = DEFAULT_DISTILL, progress: bool | None = None
                  ) -> tuple[BCPolicy, list[dict[str, float]]]:
    """A draft of shape ``cfg`` distilled from ``target`` (a loaded ``Policy``, whose
    temperature is the one both will run at) on ``ds``'s windows; returns it and the mean
    losses per epoch (``loss``, ``kl``, ``offset``, ``demo``)."""
    if cfg.history > target.history:
        raise HybridPolicyError(f"the draft's history ({cfg.history}) must not exceed the "
                                f"target's ({target.history}) it is distilled from")
    torch.manual_seed(train.seed)
    windows = history_windows(ds, target.history)
    logp0, logp1, t_off = teacher_targets(target, windows)
    obs = torch.from_numpy(windows[:, -cfg.history:])
    actions = torch.from_numpy(ds.actions)
    codes = tok.encode(actions)
    demo_off = (actions - tok.decode(codes)) / tok.action_std
    model = BCPolicy(cfg)
    model.obs_mean.copy_(torch.from_numpy(ds.observations.mean(0)))
    model.obs_std.copy_(torch.from_numpy(ds.observations.std(0)).clamp_min(1e-3))
    opt = torch.optim.AdamW(model.parameters(), lr=train.lr, weight_decay=train.weight_decay)
    per_epoch = math.ceil(len(obs) / train.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=train.lr, pct_start=0.1,
                                                total_steps=train.epochs * per_epoch)
    gen = torch.Generator().manual_seed(train.seed)
    k, temp = cfg.codebook_size, target.temperature
    ce = nn.CrossEntropyLoss()
    history: list[dict[str, float]] = []
    model.train()
    bar = tqdm(range(train.epochs), desc=f"distil {ds.task} draft", unit="epoch",
               disable=None if progress is None else not progress)
    for _ in bar:
        perm, sums = torch.randperm(len(obs), generator=gen), {}
        for i in range(per_epoch):
            idx = perm[i * train.batch_size:(i + 1) * train.batch_size]
            h = model.encode(obs[idx])
            q0, q1 = draft_logits(model, h, temp)
            kl0, kl1 = joint_kl(logp0[idx], logp1[idx], q0, q1)
            kl = (kl0 + kl1).mean()
            # offsets on one pair per window drawn from the target's joint
            joint = (logp0[idx].exp()[:, :, None] * logp1[idx].exp()).flatten(1)
            pair = torch.multinomial(joint, 1, generator=gen)[:, 0]
            pc = torch.stack([pair // k, pair % k], 1)
            rows = torch.arange(len(idx))
            off = (model.offset(h, pc) - t_off[idx][rows, pc[:, 0], pc[:, 1]]).pow(2).mean()
            loss = kl + train.offset_weight * off
            parts = {"kl": kl.item(), "offset": off.item()}
            if train.demo_weight > 0:
                c = codes[idx]
                logits = torch.stack([model.level_logits(h, c, lvl) for lvl in range(2)], 1)
                demo = (ce(logits.flatten(0, 1), c.flatten()) * cfg.levels + train.offset_weight
                        * (model.offset(h, c) - demo_off[idx]).pow(2).mean())
                loss = loss + train.demo_weight * demo
                parts["demo"] = demo.item()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            for key, v in {"loss": loss.item(), **parts}.items():
                sums[key] = sums.get(key, 0.0) + v * len(idx)
        history.append({key: v / len(obs) for key, v in sums.items()})
        bar.set_postfix(kl=f"{history[-1]['kl']:.4f}")
    model.eval()
    log.info("distilled the %s draft (%d parameters) from the target: KL %.4f -> %.4f",
             ds.task, model.num_parameters(), history[0]["kl"], history[-1]["kl"])
    return model, history


def ensure_distilled_draft(task: str, root: Path = Path("models"),
                           progress: bool | None = None) -> Path:
    """The task's draft distilled from its default target (``distill_draft``), under
    ``root/task/draft_distilled``: same architecture and size as the default draft, trained
    on the same demonstrations' windows towards the target's code distributions. Remade
    when the data, the target, the temperature or the distillation settings change."""
    from hybrid_policy.defaults import DEFAULT_TEMPERATURE
    from hybrid_policy.families.adahi.calibration_file import default_draft_path
    from hybrid_policy.policies.build import ensure_data, ensure_roles, made_from, policy_config
    from hybrid_policy.policies.card import checkpoint_identity
    from hybrid_policy.policies.checkpoint import load_policy, save_policy

    paths, ds, record, tok = ensure_data(task, root, progress)
    ensure_roles(paths, ds, record, tok, progress)  # the target it is distilled from
    out = default_draft_path(root, task, "distilled")
    target_id = checkpoint_identity(paths.target)
    cfg = policy_config("draft", ds.observations.shape[1], tok)
    wanted = {"role": "draft", "data": record, "distilled_from": target_id,
              "temperature": DEFAULT_TEMPERATURE, "distill": asdict(DEFAULT_DISTILL),
              "policy": asdict(cfg), "tokenizer_id": tok.identity()}
    if made_from(out, wanted):
        return out
    target = load_policy(paths.target, role="target", task=task, temperature=DEFAULT_TEMPERATURE)
    model, losses = distill_draft(ds, tok, target, cfg, DEFAULT_DISTILL, progress)
    return save_policy(out, model, tok, "draft", task, {
        "data": record, "distilled_from": target_id, "temperature": DEFAULT_TEMPERATURE,
        "distill": asdict(DEFAULT_DISTILL), "losses": losses})
