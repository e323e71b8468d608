"""An early-exit policy: the target's transformer trunk with an exit head after chosen
layers, every exit a complete policy over the task's shared tokenizer.

Why: a cooperative system can then split one model across robot, edge and cloud. The
first blocks and exit run on the robot, the next on an edge node, the rest on the cloud;
a node answers with its exit's action when the exit is confident and otherwise forwards
the intermediate feature (the token sequence after its last block) to the next node.

An exit head is the target's head (final norm, code embeddings, per-level code heads and
offset head; ``model.py``) reading the last token after its layer, so ``PolicyStep``
(sampling, decoding, the joint code distribution) serves every exit unchanged. The net is
initialised from a trained target (its trunk and its head become the last exit) and
trained jointly on ``sum_k w_k · loss_k`` (``exit_weights``: a training parameter; the
federated issue sets them from serving rates).
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from hybrid_policy.defaults import DEFAULT_TEMPERATURE
from hybrid_policy.errors import CheckpointError, HybridPolicyError
from hybrid_policy.policies.card import read_role_config
from hybrid_policy.policies.model import BCPolicy, PolicyConfig, check_observation
from hybrid_policy.policies.runtime import Policy, PolicyStep
from hybrid_policy.policies.training import TrainConfig, history_windows

log = logging.getLogger(__name__)

ROLE = "early_exit"
DEFAULT_EXITS = (1, 2, 4)  # robot | edge | cloud partitions of the target's 4 layers
DEFAULT_TRAIN = TrainConfig(epochs=12, lr=3e-4)


class ExitError(HybridPolicyError, ValueError):
    """Exits that do not fit the trunk, or weights that cannot train it."""


def check_exits(exits: Sequence[int], layers: int) -> tuple[int, ...]:
    exits = tuple(int(e) for e in exits)
    if not exits or list(exits) != sorted(set(exits)) or exits[0] < 1 or exits[-1] != layers:
        raise ExitError(f"exits {list(exits)} must be rising layer counts in 1..{layers}, the "
                        f"last one {layers} (the full trunk)")
    return exits


class ExitHead(nn.Module):
    """The target's head at one exit: ``level_logits`` and ``offset`` as in ``BCPolicy``."""

    def __init__(self, cfg: PolicyConfig) -> None:
        super().__init__()
        d = cfg.d_model
        self.norm = nn.LayerNorm(d)
        self.code_emb = nn.ModuleList(nn.Embedding(cfg.codebook_size, d)
                                      for _ in range(cfg.levels))
        self.level_heads = nn.ModuleList(
            nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, cfg.codebook_size))
            for _ in range(cfg.levels))
        self.offset_head = nn.Sequential(nn.Linear(d, d), nn.GELU(),
                                         nn.Linear(d, cfg.action_dim))
        self.levels = cfg.levels

    def feature(self, tokens: torch.Tensor) -> torch.Tensor:
        """Tokens [B, history, d] after this exit's layer → the head's input h [B, d]."""
        return self.norm(tokens[:, -1])

    def level_logits(self, h: torch.Tensor, prefix: torch.Tensor, level: int) -> torch.Tensor:
        z = h
        for j in range(level):
            z = z + self.code_emb[j](prefix[:, j])
        return self.level_heads[level](z)

    def offset(self, h: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        z = h
        for j in range(self.levels):
            z = z + self.code_emb[j](codes[:, j])
        return self.offset_head(z)


class EarlyExitNet(nn.Module):
    def __init__(self, cfg: PolicyConfig, exits: Sequence[int]) -> None:
        super().__init__()
        self.cfg, self.exits = cfg, check_exits(exits, cfg.layers)
        d = cfg.d_model
        self.register_buffer("obs_mean", torch.zeros(cfg.obs_dim))
        self.register_buffer("obs_std", torch.ones(cfg.obs_dim))
        self.obs_proj = nn.Linear(cfg.obs_dim, d)
        self.pos_emb = nn.Parameter(torch.zeros(cfg.history, d))
        self.blocks = nn.ModuleList(nn.TransformerEncoderLayer(
            d, cfg.heads, dim_feedforward=cfg.ffn_mult * d, dropout=cfg.dropout,
            batch_first=True, norm_first=True, activation="gelu") for _ in range(cfg.layers))
        self.heads = nn.ModuleList(ExitHead(cfg) for _ in self.exits)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def embed(self, obs_hist: torch.Tensor) -> torch.Tensor:
        """Observation history [B, history, obs_dim] → tokens before the first layer."""
        return self.obs_proj((obs_hist - self.obs_mean) / self.obs_std) + self.pos_emb

    def advance(self, tokens: torch.Tensor, start: int, end: int) -> torch.Tensor:
        """Run layers ``start`` .. ``end - 1`` (the part of the trunk one node holds)."""
        for block in self.blocks[start:end]:
            tokens = block(tokens)
        return tokens

    def head(self, exit_layer: int) -> ExitHead:
        return self.heads[self.exits.index(exit_layer)]

    def forward(self, obs_hist: torch.Tensor, codes: torch.Tensor):
        """Teacher-forced pass: per exit, (logits [B, levels, K], offset [B, action_dim])."""
        tokens, start, out = self.embed(obs_hist), 0, []
        for layer, head in zip(self.exits, self.heads):
            tokens = self.advance(tokens, start, layer)
            start = layer
            h = head.feature(tokens)
            logits = torch.stack([head.level_logits(h, codes, lvl)
                                  for lvl in range(self.cfg.levels)], dim=1)
            out.append((logits, head.offset(h, codes)))
        return out

    def load_target(self, target: BCPolicy) -> None:
        """Start from a trained target: its trunk, and its head as the last exit."""
        if target.cfg != self.cfg:
            raise ExitError(f"the target's config {target.cfg} is not this net's {self.cfg}")
        state = {}
        for key, value in target.state_dict().items():
            if key.startswith("encoder.layers."):
                state["blocks." + key[len("encoder.layers."):]] = value
            elif key.split(".")[0] in ("norm", "code_emb", "level_heads", "offset_head"):
                state[f"heads.{len(self.exits) - 1}.{key}"] = value
            else:
                state[key] = value
        missing, unexpected = self.load_state_dict(state, strict=False)
        if unexpected or any(not k.startswith("heads.") for k in missing):
            raise ExitError(f"target weights do not map onto the trunk ({missing}, {unexpected})")
        for head in self.heads[:-1]:  # the earlier exits start as copies of the target's head
            head.load_state_dict(self.heads[-1].state_dict())


def check_weights(weights: Sequence[float], exits: Sequence[int]) -> tuple[float, ...]:
    weights = tuple(float(w) for w in weights)
    if len(weights) != len(exits) or not all(math.isfinite(w) and w >= 0 for w in weights) \
            or sum(weights) <= 0:
        raise ExitError(f"exit weights {list(weights)} must be {len(exits)} numbers >= 0 (one "
                        f"per exit {list(exits)}), not all zero")
    return weights


@dataclass
class ExitData:
    """A demonstration set as training tensors: observation windows, the actions' codes and
    their offsets (normalised action units) from the decoded codes."""

    obs: torch.Tensor
    codes: torch.Tensor
    offsets: torch.Tensor

    def __len__(self) -> int:
        return len(self.obs)


def exit_data(ds, tok, history: int) -> ExitData:
    actions = torch.from_numpy(ds.actions)
    codes = tok.encode(actions)
    return ExitData(torch.from_numpy(history_windows(ds, history)), codes,
                    (actions - tok.decode(codes)) / tok.action_std)


def exit_losses(net: EarlyExitNet, data: ExitData, idx: torch.Tensor,
                offset_weight: float) -> list[torch.Tensor]:
    """Each exit's BC loss on the rows ``idx`` (the same loss as ``training.train_policy``)."""
    levels = net.cfg.levels
    return [nn.functional.cross_entropy(logits.flatten(0, 1), data.codes[idx].flatten()) * levels
            + offset_weight * (offset - data.offsets[idx]).pow(2).mean()
            for logits, offset in net(data.obs[idx], data.codes[idx])]


def fit_exits(net: EarlyExitNet, data: ExitData, exit_weights: Sequence[float],
              train: TrainConfig, schedule: str = "onecycle", desc: str = "train early_exit",
              progress: bool | None = None) -> list[list[float]]:
    """Train ``net`` in place on ``sum_k w_k · loss_k / sum_k w_k`` for ``train.epochs``
    epochs; returns each exit's mean loss per epoch (``[epoch][exit]``). ``schedule``:
    ``onecycle`` (a whole training run) or ``constant`` (one federated round: the server
    sets the round's learning rate)."""
    weights = check_weights(exit_weights, net.exits)
    if schedule not in ("onecycle", "constant"):
        raise ExitError(f"schedule must be onecycle or constant, not {schedule!r}")
    if len(data) == 0:
        raise ExitError("no training data: the data set has no steps")
    opt = torch.optim.AdamW(net.parameters(), lr=train.lr, weight_decay=train.weight_decay)
    per_epoch = math.ceil(len(data) / train.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=train.lr,
                                                total_steps=train.epochs * per_epoch,
                                                pct_start=0.1) if schedule == "onecycle" else None
    gen = torch.Generator().manual_seed(train.seed)
    history: list[list[float]] = []
    net.train()
    bar = tqdm(range(train.epochs), desc=desc, unit="epoch",
               disable=None if progress is None else not progress)
    for _ in bar:
        perm, totals = torch.randperm(len(data), generator=gen), np.zeros(len(net.exits))
        for i in range(per_epoch):
            idx = perm[i * train.batch_size:(i + 1) * train.batch_size]
            losses = exit_losses(net, data, idx, train.offset_weight)
            loss = sum(w * x for w, x in zip(weights, losses)) / sum(weights)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
            if sched is not None:
                sched.step()
            totals += np.array([x.item() for x in losses]) * len(idx)
        history.append((totals / len(data)).tolist())
        bar.set_postfix(loss=" ".join(f"{x:.3f}" for x in history[-1]))
    net.eval()
    return history


def train_early_exit(ds, tok, target: BCPolicy, exits: Sequence[int],
                     exit_weights: Sequence[float], train: TrainConfig = DEFAULT_TRAIN,
                     progress: bool | None = None) -> tuple[EarlyExitNet, list[list[float]]]:
    """Joint training of every exit from the target's weights; returns the net and the mean
    loss of each exit per epoch (``[epoch][exit]``)."""
    cfg = target.cfg
    check_weights(exit_weights, check_exits(exits, cfg.layers))
    torch.manual_seed(train.seed)
    net = EarlyExitNet(cfg, exits)
    net.load_target(target)
    history = fit_exits(net, exit_data(ds, tok, cfg.history), exit_weights, train,
                        desc=f"train {ds.task} early_exit", progress=progress)
    log.info("early-exit net: %d parameters, exit losses %s", net.num_parameters(),
             ", ".join(f"{e}: {x:.4f}" for e, x in zip(exits, history[-1])))
    return net, history


class ExitView:
    """One exit seen as a ``Policy`` by ``PolicyStep``: its head, the shared tokenizer."""

    def __init__(self, owner: "EarlyExitPolicy", layer: int) -> None:
        self.model, self.layer, self._owner = owner.net.head(layer), layer, owner
        self.tokenizer, self.temperature = owner.tokenizer, owner.temperature
        self.levels, self.codebook_size = owner.levels, owner.codebook_size

    @property
    def code_table(self) -> np.ndarray:
        return self._owner.code_table


@dataclass
class EarlyExitPolicy:
    """A loaded early-exit net, run a partition at a time (``start``, ``advance``, ``exit``)."""

    net: EarlyExitNet
    tokenizer: Any
    task: str
    info: dict[str, Any]
    temperature: float = DEFAULT_TEMPERATURE

    def __post_init__(self) -> None:
        self.net.eval()
        self.tokenizer.eval()
        self.tokenizer_id = self.tokenizer.identity()
        self._views = {layer: ExitView(self, layer) for layer in self.exits}

    @property
    def exits(self) -> tuple[int, ...]:
        return self.net.exits

    @property
    def layers(self) -> int:
        return self.net.cfg.layers

    @property
    def obs_dim(self) -> int:
        return self.net.cfg.obs_dim

    @property
    def history(self) -> int:
        return self.net.cfg.history

    @property
    def d_model(self) -> int:
        return self.net.cfg.d_model

    @property
    def levels(self) -> int:
        return self.net.cfg.levels

    @property
    def codebook_size(self) -> int:
        return self.net.cfg.codebook_size

    code_table = Policy.code_table

    def layer_params(self) -> dict[str, int]:
        """Parameters of the embedding, each layer and each exit head (what a node holds)."""
        net = self.net
        out = {"embed": sum(p.numel() for p in net.obs_proj.parameters()) + net.pos_emb.numel()}
        out.update({f"layer{i + 1}": sum(p.numel() for p in b.parameters())
                    for i, b in enumerate(net.blocks)})
        out.update({f"exit{e}": sum(p.numel() for p in net.head(e).parameters())
                    for e in self.exits})
        return out

    @torch.inference_mode()
    def start(self, windows: list[np.ndarray]) -> torch.Tensor:
        """Observation windows [history, obs_dim] each → tokens [B, history, d] at layer 0."""
        rows = []
        for w in windows:
            w = np.asarray(w, dtype=np.float32)
            if w.ndim != 2 or w.shape[0] != self.history:
                raise ValueError(f"observation window must be [{self.history}, {self.obs_dim}], "
                                 f"got {w.shape}")
            rows.append(np.stack([check_observation(r, self.obs_dim) for r in w]))
        return self.net.embed(torch.from_numpy(np.stack(rows)))

    @torch.inference_mode()
    def advance(self, tokens: torch.Tensor, start: int, end: int) -> torch.Tensor:
        return self.net.advance(tokens, start, end)

    @torch.inference_mode()
    def exit(self, tokens: torch.Tensor, layer: int) -> list[PolicyStep]:
        """Each row's distributions at the exit after ``layer``."""
        if layer not in self.exits:
            raise ExitError(f"the net has no exit after layer {layer}; exits: {list(self.exits)}")
        h = self.net.head(layer).feature(tokens)
        return [PolicyStep(self._views[layer], h[i:i + 1]) for i in range(len(h))]


def save_early_exit(path: str | Path, net: EarlyExitNet, tok, task: str,
                    extra: dict[str, Any]) -> Path:
    from hybrid_policy.policies.checkpoint import _write

    tensors = {**{f"policy.{k}": v for k, v in net.state_dict().items()},
               **{f"tokenizer.{k}": v for k, v in tok.state_dict().items()}}
    return _write(Path(path), tensors, {
        "role": ROLE, "task": task, "policy": asdict(net.cfg), "exits": list(net.exits),
        "tokenizer": asdict(tok.cfg), "tokenizer_id": tok.identity(),
        "parameters": net.num_parameters(), **extra})


def load_early_exit(path: str | Path, task: str | None = None,
                    temperature: float = DEFAULT_TEMPERATURE) -> EarlyExitPolicy:
    from hybrid_policy.policies.checkpoint import _load_module, _read_weights
    from hybrid_policy.policies.tokenizer import CodebookDecoder, TokenizerConfig

    path = Path(path)
    cfg = read_role_config(path, ROLE, task)
    try:
        net = EarlyExitNet(PolicyConfig(**cfg["policy"]), cfg["exits"])
    except (KeyError, TypeError, ExitError) as exc:
        raise CheckpointError(f"{path}: bad policy or exits section ({exc})") from None
    weights = _read_weights(path)
    _load_module(net, {k[7:]: v for k, v in weights.items() if k.startswith("policy.")}, path)
    try:
        tok = CodebookDecoder(TokenizerConfig(**cfg["tokenizer"]),
                              {k[10:]: v for k, v in weights.items() if k.startswith("tokenizer.")})
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: tokenizer does not fit config.json ({exc})") from None
    return EarlyExitPolicy(net, tok, cfg["task"], {**cfg, "checkpoint": str(path)}, temperature)
