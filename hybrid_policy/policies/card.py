"""What a checkpoint is, read from its files without torch: its config, its card (what the
robot needs to know of the target) and its identity hash.

The identity equals ``Policy.identity()`` of the loaded policy (a test checks it), so the
robot and the launch file can check a calibration against the target's weights without
loading the target model, and argument parsing never imports torch.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.numpy import load_file

from hybrid_policy.errors import CheckpointError

FORMAT = "hybrid_policy.checkpoint"
FORMAT_VERSION = 1
WEIGHTS, CONFIG = "model.safetensors", "config.json"
ROLES = ("draft", "target")
POLICY_PREFIX = "policy."


def read_config(path: str | os.PathLike) -> dict[str, Any]:
    """``config.json`` of a checkpoint directory, or ``CheckpointError`` naming the file."""
    path = Path(path)
    cfg_path = path / CONFIG
    if not path.is_dir():
        raise CheckpointError(f"{path}: no such checkpoint directory")
    try:
        cfg = json.loads(cfg_path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{cfg_path}: missing (not a hybrid_policy checkpoint)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{cfg_path}: corrupt JSON ({exc})") from None
    if not isinstance(cfg, dict) or cfg.get("format") != FORMAT:
        raise CheckpointError(f"{cfg_path}: not a hybrid_policy checkpoint config")
    if cfg.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{cfg_path}: format version {cfg.get('format_version')} is not "
                              f"supported (this package reads {FORMAT_VERSION})")
    return cfg


@dataclass(frozen=True)
class PolicyCard:
    """What the robot side needs to know of the target without loading its weights."""

    task: str
    role: str
    history: int
    obs_dim: int
    tokenizer_id: str



def read_role_config(path: str | os.PathLike, role: str, task: str | None = None
                     ) -> dict[str, Any]:
    """``read_config``, refusing a checkpoint of another ``role`` or (given) ``task``."""
    cfg = read_config(path)
    if cfg.get("role") != role:
        raise CheckpointError(f"{path}: is a {cfg.get('role')!r} checkpoint, not {role}")
    if task is not None and cfg.get("task") != task:
        raise CheckpointError(f"{path}: was trained for task {cfg.get('task')!r}, not {task!r}")
    return cfg

def read_policy_card(path: str | os.PathLike, role: str | None = None,
                     task: str | None = None) -> PolicyCard:
    """The card of a draft or target checkpoint, from its ``config.json`` alone."""
    cfg = read_config(path)
    if role is not None and cfg.get("role") != role:
        raise CheckpointError(f"{path}: is a {cfg.get('role')} checkpoint, expected {role}")
    if task is not None and cfg.get("task") != task:
        raise CheckpointError(f"{path}: was trained for task {cfg.get('task')!r}, not {task!r}")
    try:
        return PolicyCard(cfg["task"], cfg["role"], int(cfg["policy"]["history"]),
                          int(cfg["policy"]["obs_dim"]), cfg["tokenizer_id"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{Path(path) / CONFIG}: incomplete config ({exc})") from None


def check_pair(draft: Any, target: Any) -> None:
    """Refuse a draft and target that cannot verify each other."""
    if draft.task != target.task:
        raise CheckpointError(f"draft was trained for task {draft.task!r} but target for "
                              f"{target.task!r}: use models of the same task")
    if draft.tokenizer_id != target.tokenizer_id:
        raise CheckpointError(
            f"draft and target were trained with different action tokenizers "
            f"({draft.tokenizer_id} vs {target.tokenizer_id}); speculative verification needs "
            "both to share one: retrain one of them with the other's tokenizer")


def weights_identity(tokenizer_id: str, tensors: dict) -> str:
    """The hash ``Policy.identity`` defines: tokenizer identity, then every policy tensor by
    name, in name order."""
    h = hashlib.sha256(tokenizer_id.encode())
    for name in sorted(tensors):
        h.update(name.encode())
        h.update(tensors[name].tobytes())
    return h.hexdigest()[:16]


def checkpoint_identity(path: str | os.PathLike) -> str:
    """``Policy.identity()`` of the checkpoint at ``path``, from its files."""
    path = Path(path)
    cfg = read_config(path)
    try:
        tensors = load_file(str(path / WEIGHTS))
    except (OSError, ValueError, SafetensorError) as exc:
        raise CheckpointError(f"{path / WEIGHTS}: cannot read the weights ({exc})") from None
    policy = {k[len(POLICY_PREFIX):]: v for k, v in tensors.items()
              if k.startswith(POLICY_PREFIX)}
    return weights_identity(str(cfg.get("tokenizer_id", "")), policy)
