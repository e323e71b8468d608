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
from hybrid_policy.defaults import DRAFT_DIR
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


def made_from(path: Path, wanted: dict[str, Any]) -> bool:
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
    paths = ModelSet(base / "demos", base / "tokenizer", base / DRAFT_DIR, base / "target")
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
    ensure_roles(paths, ds, record, tok, progress)
    return paths


def ensure_roles(paths: ModelSet, ds: DemoDataset, record: dict[str, Any],
                  tok: ActionTokenizer, progress: bool | None) -> None:
    """The draft and target trained on ``ds``, kept when up to date."""
    for role, out in (("draft", paths.draft), ("target", paths.target)):
        train = role_training(role)
        if _up_to_date(out, role, record["sha256"], tok, train, ds.observations.shape[1]):
            log.info("%s: up to date", out)
        else:
            train_role(out, role, ds, record, tok, train, progress)
