"""From a demonstration set to checkpoints on disk, reusing what is already up to date.

``train_role`` backs ``hybrid-policy train``; ``ensure_default_models`` gives ``make demo``
and ``hybrid-policy eval`` trained draft and target models for a task, cached under
``models/<task>/`` (git-ignored) and rebuilt only when the data or a config changes.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sim_envs import dataset, task_spec
from sim_envs.collect import collect_demos
from sim_envs.dataset import DemoDataset
from hybrid_policy.families.adahi.calibration_file import default_draft_path
from hybrid_policy.errors import CheckpointError, HybridPolicyError
from hybrid_policy.policies.checkpoint import (
    load_tokenizer, read_config, save_policy, save_tokenizer,
)
from hybrid_policy.policies.tokenizer import ActionTokenizer, TokenizerConfig, fit_tokenizer
from hybrid_policy.policies.training import (
    TrainConfig, data_record, policy_config, role_training, train_policy,
)

log = logging.getLogger(__name__)

DEFAULT_ROOT = Path("models")
# Demonstrations per task for the default models: enough for the target to learn the task
# while training both policies stays within ~10 minutes on a 2-core CPU.
DEFAULT_DEMO_EPISODES = {"fetch_reach": 200, "fetch_push": 1000, "fetch_pick_place": 1000,
                         "mw_pick_place": 300, "mw_peg_insert": 300,
                         "mw_assembly": 300}
DEFAULT_DEMO_SEED = 0


def load_task_data(path: str | Path, task: str) -> tuple[DemoDataset, dict[str, Any]]:
    """Load the data set at ``path`` (refusing one of another task) and its provenance."""
    ds = dataset.load(path)
    if ds.task != task:
        raise HybridPolicyError(f"{path}: holds demonstrations of {ds.task!r}, not {task!r}")
    file = Path(path) if Path(path).is_file() else dataset.dataset_path(path, ds.task)
    return ds, data_record(ds, file)


def ensure_tokenizer(path: Path, ds: DemoDataset, record: dict[str, Any],
                     cfg: TokenizerConfig = TokenizerConfig()) -> ActionTokenizer:
    """The task's tokenizer at ``path``: loaded if it fits the data and ``cfg``, else fitted."""
    if (path / "config.json").exists():
        tok, info = load_tokenizer(path)
        if info["task"] != ds.task:
            raise CheckpointError(f"{path}: tokenizer of task {info['task']!r}, not {ds.task!r}")
        if info["data"]["sha256"] == record["sha256"] and info["tokenizer"] == asdict(cfg):
            return tok
        log.info("%s: data or tokenizer config changed: refitting", path)
    log.info("fitting the %s action tokenizer (%d levels x %d codes)", ds.task, cfg.levels,
             cfg.codebook_size)
    tok = fit_tokenizer(ds.actions, cfg)
    save_tokenizer(path, tok, ds.task, record)
    return tok


def train_role(out: Path, role: str, ds: DemoDataset, record: dict[str, Any],
               tok: ActionTokenizer, train: TrainConfig, progress: bool | None = None) -> Path:
    cfg = policy_config(role, ds.observations.shape[1], tok)
    model, losses = train_policy(ds, tok, cfg, train, desc=f"train {ds.task} {role}",
                                 progress=progress)
    extra: dict[str, Any] = {"data": record, "train": asdict(train),
                             "losses": losses}
    return save_policy(out, model, tok, role, ds.task, extra)


def _up_to_date(path: Path, role: str, ds_sha: str, tok: ActionTokenizer,
                train: TrainConfig, obs_dim: int) -> bool:
    try:
        info = read_config(path)
    except CheckpointError:
        return False
    return (info.get("role") == role and info.get("data", {}).get("sha256") == ds_sha
            and info.get("tokenizer_id") == tok.identity() and info.get("train") == asdict(train)
            and info.get("policy") == asdict(policy_config(role, obs_dim, tok)))


def _made_from(path: Path, wanted: dict[str, Any]) -> bool:
    """Whether the checkpoint at ``path`` records every entry of ``wanted`` (then it is kept)."""
    try:
        info = read_config(path)
    except CheckpointError:
        return False
    if all(info.get(k) == v for k, v in wanted.items()):
        log.info("%s: up to date", path)
        return True
    return False


@dataclass(frozen=True)
class ModelSet:
    data: Path
    tokenizer: Path
    draft: Path
    target: Path


def ensure_data(task: str, root: Path = DEFAULT_ROOT, progress: bool | None = None
                ) -> tuple[ModelSet, DemoDataset, dict[str, Any], ActionTokenizer]:
    """The default demonstrations of ``task`` and its tokenizer, under ``root/task``."""
    spec = task_spec(task)
    base = root / spec.name
    paths = ModelSet(base / "demos", base / "tokenizer", default_draft_path(root, spec.name),
                     base / "target")
    episodes = DEFAULT_DEMO_EPISODES[task]
    data_file = dataset.dataset_path(paths.data, task)
    ds = None
    if data_file.exists():
        ds = dataset.load(data_file)
        if (ds.meta.get("episodes_requested"), ds.meta.get("seed"),
                ds.meta.get("versions")) != (episodes, DEFAULT_DEMO_SEED, dataset.sim_versions()):
            log.info("%s: demonstration settings or simulator versions changed: regenerating",
                     data_file)
            ds = None
    if ds is None:
        log.info("generating %d expert demonstrations of %s", episodes, task)
        ds = collect_demos(task, episodes, DEFAULT_DEMO_SEED, progress=progress)
        dataset.write_to_dir(ds, paths.data, overwrite=True)
    record = data_record(ds, data_file)
    return paths, ds, record, ensure_tokenizer(paths.tokenizer, ds, record)


def ensure_default_models(task: str, root: Path = DEFAULT_ROOT,
                          progress: bool | None = None) -> ModelSet:
    """Demonstrations, tokenizer, draft and target for ``task`` under ``root/task``."""
    paths, ds, record, tok = ensure_data(task, root, progress)
    _ensure_roles(paths, ds, record, tok, progress)
    return paths


def _ensure_roles(paths: ModelSet, ds: DemoDataset, record: dict[str, Any],
                  tok: ActionTokenizer, progress: bool | None) -> None:
    """The draft and target trained on ``ds``, kept when up to date."""
    for role, out in (("draft", paths.draft), ("target", paths.target)):
        train = role_training(role)
        if _up_to_date(out, role, record["sha256"], tok, train, ds.observations.shape[1]):
            log.info("%s: up to date", out)
        else:
            train_role(out, role, ds, record, tok, train, progress)


def ensure_early_exit(task: str, root: Path = DEFAULT_ROOT, exits: tuple[int, ...] | None = None,
                      exit_weights: tuple[float, ...] | None = None,
                      progress: bool | None = None) -> Path:
    """The task's early-exit net under ``root/task/early_exit``, trained from the default
    target (``policies.early_exit``) unless one made from the same data, target, exits,
    weights and training settings is there."""
    from hybrid_policy.policies.checkpoint import load_policy
    from hybrid_policy.policies.card import checkpoint_identity
    from hybrid_policy.families.exits.net import (
        DEFAULT_EXITS, DEFAULT_TRAIN, ROLE, save_early_exit, train_early_exit,
    )

    exits = tuple(exits or DEFAULT_EXITS)
    exit_weights = tuple(exit_weights or (1.0,) * len(exits))
    paths = ensure_default_models(task, root, progress)
    out = paths.target.parent / ROLE
    target_id = checkpoint_identity(paths.target)
    wanted = {"role": ROLE, "target_id": target_id, "exits": list(exits),
              "exit_weights": list(exit_weights), "train": asdict(DEFAULT_TRAIN)}
    if _made_from(out, wanted):
        return out
    ds = dataset.load(dataset.dataset_path(paths.data, task))
    tok, _ = load_tokenizer(paths.tokenizer)
    target = load_policy(paths.target, role="target", task=task)
    net, losses = train_early_exit(ds, tok, target.model, exits, exit_weights, DEFAULT_TRAIN,
                                   progress)
    return save_early_exit(out, net, tok, task, {
        "data": data_record(ds, dataset.dataset_path(paths.data, task)), "target_id": target_id,
        "exit_weights": list(exit_weights), "train": asdict(DEFAULT_TRAIN),
        "losses": losses})


def ensure_distilled_draft(task: str, root: Path = DEFAULT_ROOT,
                           progress: bool | None = None) -> Path:
    """The task's draft distilled from its default target (``policies.distill``), under
    ``root/task/draft_distilled``: same architecture and size as the default draft, trained
    on the same demonstrations' windows towards the target's code distributions. Remade
    when the data, the target, the temperature or the distillation settings change."""
    from hybrid_policy.defaults import DEFAULT_TEMPERATURE
    from hybrid_policy.policies.card import checkpoint_identity
    from hybrid_policy.policies.checkpoint import load_policy, save_policy
    from hybrid_policy.families.adahi.distill import DEFAULT_DISTILL, distill_draft

    paths, ds, record, tok = ensure_data(task, root, progress)
    _ensure_roles(paths, ds, record, tok, progress)  # the target it is distilled from
    out = default_draft_path(root, task, "distilled")
    target_id = checkpoint_identity(paths.target)
    cfg = policy_config("draft", ds.observations.shape[1], tok)
    wanted = {"role": "draft", "data": record, "distilled_from": target_id,
              "temperature": DEFAULT_TEMPERATURE, "distill": asdict(DEFAULT_DISTILL),
              "policy": asdict(cfg), "tokenizer_id": tok.identity()}
    if _made_from(out, wanted):
        return out
    target = load_policy(paths.target, role="target", task=task, temperature=DEFAULT_TEMPERATURE)
    model, losses = distill_draft(ds, tok, target, cfg, DEFAULT_DISTILL, progress)
    return save_policy(out, model, tok, "draft", task, {
        "data": record, "distilled_from": target_id, "temperature": DEFAULT_TEMPERATURE,
        "distill": asdict(DEFAULT_DISTILL), "losses": losses})
