"""Checkpoints: a directory holding ``model.safetensors`` and ``config.json``.

A policy checkpoint carries its tokenizer's codebooks too, so a node needs one directory
to act; ``config.json`` records task, role, sizes, the tokenizer (config and identity hash),
the data set it was trained on and the training settings. A tokenizer checkpoint has the
same layout with ``role: "tokenizer"``.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from hybrid_policy.errors import CheckpointError
from hybrid_policy.policies.model import BCPolicy, PolicyConfig
from hybrid_policy.policies.runtime import DEFAULT_TEMPERATURE, Policy
from hybrid_policy.policies.tokenizer import ActionTokenizer, CodebookDecoder, TokenizerConfig

from hybrid_policy.policies.card import (  # noqa: F401  (re-exported)
    CONFIG, FORMAT, FORMAT_VERSION, ROLES, WEIGHTS, PolicyCard, check_pair, read_config,
    read_policy_card,
)


def _write(path: Path, tensors: dict[str, torch.Tensor], config: dict[str, Any]) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    tmp = path / (WEIGHTS + ".tmp")
    save_file({k: v.detach().contiguous().clone() for k, v in tensors.items()}, str(tmp))
    os.replace(tmp, path / WEIGHTS)
    cfg = {"format": FORMAT, "format_version": FORMAT_VERSION, **config}
    (path / (CONFIG + ".tmp")).write_text(json.dumps(cfg, indent=1, sort_keys=True))
    os.replace(path / (CONFIG + ".tmp"), path / CONFIG)
    return path


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    weights = path / WEIGHTS
    if not weights.exists():
        raise CheckpointError(f"{weights}: missing")
    try:
        return load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{weights}: corrupt or truncated weights ({exc})") from None


def _load_module(module: torch.nn.Module, state: dict[str, torch.Tensor], where: Path) -> None:
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(f"{where / WEIGHTS}: weights do not fit config.json ({exc})") from None


def save_tokenizer(path: str | os.PathLike, tok: ActionTokenizer, task: str,
                   data: dict[str, Any]) -> Path:
    return _write(Path(path), tok.state_dict(), {
        "role": "tokenizer", "task": task, "tokenizer": asdict(tok.cfg),
        "tokenizer_id": tok.identity(), "data": data,
    })


def load_tokenizer(path: str | os.PathLike) -> tuple[ActionTokenizer, dict[str, Any]]:
    path = Path(path)
    cfg = read_config(path)
    if cfg.get("role") != "tokenizer":
        raise CheckpointError(f"{path}: is a {cfg.get('role')} checkpoint, not a tokenizer")
    tok = _build_tokenizer(cfg, path)
    _load_module(tok, _read_weights(path), path)
    tok.eval()
    return tok, cfg


def _build_tokenizer(cfg: dict[str, Any], path: Path) -> ActionTokenizer:
    try:
        return ActionTokenizer(TokenizerConfig(**cfg["tokenizer"]))
    except (KeyError, TypeError) as exc:
        raise CheckpointError(f"{path / CONFIG}: bad tokenizer section ({exc})") from None


def save_policy(path: str | os.PathLike, policy: BCPolicy, tok: ActionTokenizer, role: str,
                task: str, extra: dict[str, Any]) -> Path:
    tensors = {**{f"policy.{k}": v for k, v in policy.state_dict().items()},
               **{f"tokenizer.{k}": v for k, v in tok.state_dict().items()}}
    return _write(Path(path), tensors, {
        "role": role, "task": task, "policy": asdict(policy.cfg), "tokenizer": asdict(tok.cfg),
        "tokenizer_id": tok.identity(), "parameters": policy.num_parameters(), **extra,
    })


def load_policy(path: str | os.PathLike, role: str | None = None,
                task: str | None = None,
                temperature: float = DEFAULT_TEMPERATURE) -> Policy:
    """Load a draft or target checkpoint; ``role``/``task`` given → refuse any other."""
    path = Path(path)
    cfg = read_config(path)
    if cfg.get("role") not in ROLES:
        raise CheckpointError(f"{path}: is a {cfg.get('role')!r} checkpoint, expected one of "
                              f"{', '.join(ROLES)}")
    if role is not None and cfg["role"] != role:
        raise CheckpointError(f"{path}: is a {cfg['role']} checkpoint, expected {role}")
    if task is not None and cfg.get("task") != task:
        raise CheckpointError(f"{path}: was trained for task {cfg.get('task')!r}, not {task!r}")
    try:
        model = BCPolicy(PolicyConfig(**cfg["policy"]))
    except (KeyError, TypeError) as exc:
        raise CheckpointError(f"{path / CONFIG}: bad policy section ({exc})") from None
    weights = _read_weights(path)
    _load_module(model, {k[7:]: v for k, v in weights.items() if k.startswith("policy.")}, path)
    try:  # acting only decodes codes: no vector-quantize-pytorch needed (tokenizer.py)
        tok = CodebookDecoder(TokenizerConfig(**cfg["tokenizer"]),
                              {k[10:]: v for k, v in weights.items() if k.startswith("tokenizer.")})
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: tokenizer does not fit config.json ({exc})") from None
    loaded = Policy(model=model, tokenizer=tok, role=cfg["role"], task=cfg["task"],
                    info={**cfg, "checkpoint": str(path)}, temperature=temperature)
    if loaded.tokenizer_id != cfg.get("tokenizer_id"):
        raise CheckpointError(f"{path}: tokenizer weights do not match the recorded identity "
                              f"{cfg.get('tokenizer_id')} (corrupt checkpoint)")
    return loaded


