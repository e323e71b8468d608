"""Demonstration data sets: one ``<task>.demos.npz`` file per task.

The file is a plain ``.npz`` (readable by ``numpy.load``) written with fixed zip
timestamps and sorted JSON, so the same rollouts give the same bytes. Members:

- ``observations`` float32 [steps, obs_dim], ``actions`` float32 [steps, 4]
- ``episode_starts`` / ``episode_lengths`` / ``episode_seeds`` int64 [episodes]
- ``meta.json``: format tag and version, task, field names, expert, collection
  parameters, dropped seeds, versions of the simulator packages.
"""

from __future__ import annotations

import io
import json
import logging
import os
import zipfile
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from sim_envs.errors import DatasetError

log = logging.getLogger(__name__)

FORMAT = "hybrid_policy.demos"
FORMAT_VERSION = 1
SUFFIX = ".demos.npz"
_ARRAYS = ("observations", "actions", "episode_starts", "episode_lengths", "episode_seeds")
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)
SIM_PACKAGES = ("mujoco", "gymnasium", "gymnasium-robotics", "metaworld", "numpy")


def sim_versions() -> dict[str, str]:
    """Installed versions of the packages that decide what a rollout produces."""
    out = {}
    for pkg in SIM_PACKAGES:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


@dataclass
class DemoDataset:
    """Expert rollouts of one task, concatenated step-wise with episode boundaries."""

    task: str
    obs_fields: tuple[str, ...]
    observations: np.ndarray
    actions: np.ndarray
    episode_starts: np.ndarray
    episode_lengths: np.ndarray
    episode_seeds: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def num_episodes(self) -> int:
        return len(self.episode_lengths)

    @property
    def num_steps(self) -> int:
        return len(self.actions)

    def episodes(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(observations, actions) of each episode, in order."""
        for start, length in zip(self.episode_starts, self.episode_lengths):
            yield self.observations[start : start + length], self.actions[start : start + length]

    def subset(self, episodes) -> "DemoDataset":
        """The episodes at indices ``episodes`` (in that order), e.g. a held-out split."""
        idx = [int(i) for i in episodes]
        if not idx or min(idx) < 0 or max(idx) >= self.num_episodes:
            raise DatasetError(f"episode indices must be in [0, {self.num_episodes}) and not "
                               f"empty, got {idx[:5]}{'...' if len(idx) > 5 else ''}")
        rows = np.concatenate([np.arange(self.episode_starts[i],
                                         self.episode_starts[i] + self.episode_lengths[i])
                               for i in idx])
        lengths = self.episode_lengths[idx]
        return DemoDataset(self.task, self.obs_fields, self.observations[rows],
                           self.actions[rows], np.concatenate([[0], np.cumsum(lengths)[:-1]]),
                           lengths, self.episode_seeds[idx], dict(self.meta))

    def validate(self, where: str) -> None:
        """Raise ``DatasetError`` naming ``where`` if the arrays do not fit together."""
        def bad(why: str) -> DatasetError:
            return DatasetError(f"{where}: inconsistent demonstration set: {why}")

        o, a = self.observations, self.actions
        if o.ndim != 2 or o.shape[1] != len(self.obs_fields):
            raise bad(f"observations have shape {o.shape}, expected "
                      f"(steps, {len(self.obs_fields)})")
        if a.ndim != 2 or a.shape[0] != o.shape[0]:
            raise bad(f"actions have shape {a.shape} for {o.shape[0]} observations")
        n = len(self.episode_lengths)
        if len(self.episode_starts) != n or len(self.episode_seeds) != n:
            raise bad("episode_starts, episode_lengths and episode_seeds differ in length")
        expected_starts = np.concatenate([[0], np.cumsum(self.episode_lengths)[:-1]]) if n else []
        if not np.array_equal(self.episode_starts, expected_starts) or (
            n and int(self.episode_lengths.sum()) != o.shape[0]
        ):
            raise bad("episode boundaries do not tile the steps")
        if not (np.all(np.isfinite(o)) and np.all(np.isfinite(a))):
            raise bad("observations or actions contain NaN or inf")


def dataset_path(out_dir: str | os.PathLike, task: str) -> Path:
    return Path(out_dir) / f"{task}{SUFFIX}"


def save(ds: DemoDataset, path: str | os.PathLike) -> Path:
    """Write ``ds`` atomically (temp file + rename) and byte-reproducibly."""
    path = Path(path)
    ds.validate(str(path))
    meta = {**ds.meta, "format": FORMAT, "format_version": FORMAT_VERSION, "task": ds.task,
            "obs_fields": list(ds.obs_fields)}
    members: dict[str, bytes] = {"meta.json": json.dumps(meta, sort_keys=True, indent=1).encode()}
    for name in _ARRAYS:
        buf = io.BytesIO()
        np.lib.format.write_array(buf, np.ascontiguousarray(getattr(ds, name)), allow_pickle=False)
        members[f"{name}.npy"] = buf.getvalue()
    tmp = path.with_name(path.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name in sorted(members):
            info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, members[name])
    os.replace(tmp, path)
    return path


def load(path: str | os.PathLike) -> DemoDataset:
    """Read a data set file, or the single data set file in a directory.

    Anything that is not a complete data set of this format raises ``DatasetError`` naming
    the file, never a numpy or zipfile traceback.
    """
    path = _resolve(Path(path))
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
            missing = {"meta.json", *(f"{a}.npy" for a in _ARRAYS)} - names
            if missing:
                raise DatasetError(
                    f"{path}: not a hybrid_policy demonstration set (missing {sorted(missing)})"
                )
            meta = json.loads(zf.read("meta.json"))
            arrays = {
                a: np.lib.format.read_array(io.BytesIO(zf.read(f"{a}.npy")), allow_pickle=False)
                for a in _ARRAYS
            }
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as exc:
        if isinstance(exc, DatasetError):
            raise
        raise DatasetError(
            f"{path}: cannot read demonstration set (truncated or not a {SUFFIX} file): {exc}"
        ) from None
    if meta.get("format") != FORMAT:
        raise DatasetError(f"{path}: not a hybrid_policy demonstration set (format tag "
                           f"{meta.get('format')!r}, expected {FORMAT!r})")
    if meta.get("format_version") != FORMAT_VERSION:
        raise DatasetError(f"{path}: format version {meta.get('format_version')} is not "
                           f"supported (this package reads version {FORMAT_VERSION})")
    try:
        ds = DemoDataset(task=str(meta["task"]), obs_fields=tuple(meta["obs_fields"]), meta=meta,
                         **arrays)
    except (KeyError, TypeError) as exc:
        raise DatasetError(f"{path}: meta.json lacks a valid {exc}") from None
    ds.validate(str(path))
    return ds


def _resolve(path: Path) -> Path:
    if path.is_dir():
        found = sorted(path.glob(f"*{SUFFIX}"))
        if len(found) != 1:
            raise DatasetError(
                f"{path}: expected exactly one *{SUFFIX} file in the directory, found "
                f"{len(found)}" + (f": {[f.name for f in found]}" if found else "")
            )
        return found[0]
    if not path.exists():
        raise DatasetError(f"{path}: no such demonstration set file or directory")
    return path


def _other_tasks(out_dir: Path, task: str) -> dict[str, Path]:
    """Task name → data set file, for every other task's data set already in ``out_dir``."""
    found = {p.name[: -len(SUFFIX)]: p for p in sorted(out_dir.glob(f"*{SUFFIX}"))}
    return {t: p for t, p in found.items() if t != task}


def check_out_dir(out_dir: str | os.PathLike, task: str, overwrite: bool) -> Path:
    """Refuse an output directory that would mix tasks, before any work is done.

    A directory holds one task's demonstrations. Returns the file ``task`` will be written to.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise DatasetError(f"{out}: exists and is not a directory")
    if out.is_dir() and not overwrite:
        others = _other_tasks(out, task)
        if others:
            raise DatasetError(
                f"{out} already holds demonstrations of {', '.join(others)}, not {task}; "
                "choose another output directory or pass --overwrite to replace them"
            )
    return dataset_path(out, task)


def write_to_dir(ds: DemoDataset, out_dir: str | os.PathLike, overwrite: bool) -> Path:
    """Save ``ds`` as the one data set of ``out_dir`` (see ``check_out_dir``)."""
    target = check_out_dir(out_dir, ds.task, overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    for other, p in _other_tasks(target.parent, ds.task).items():
        log.warning("--overwrite: removing %s (demonstrations of %s)", p, other)
        p.unlink()
    if target.exists():
        log.warning("replacing existing %s", target)
    return save(ds, target)
