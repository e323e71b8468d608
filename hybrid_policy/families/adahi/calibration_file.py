"""Reading a calibration (``hybrid-policy calibrate``'s JSON) and choosing a mode's
thresholds, without torch: the CLI, ``bringup``, the launch file and the draft node all
decide here, so ``tau: -1`` means the same everywhere.

A skipping mode takes its threshold from an explicit value (``tau``, ``uncertainty_tau``,
``random_skip`` >= 0) or from a calibration that fits the run: same format version, task,
link, sampling temperature and (where the checkpoints are known) the same model weights.
With neither, it refuses to start: it never runs at a silent default.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Callable, Mapping

from hybrid_policy.defaults import DRAFT_DIR
from hybrid_policy.families.adahi.names import (
    FROM_CALIBRATION, THRESHOLD_OF, ThresholdError, Thresholds, check_tau,
)
from hybrid_policy.defaults import DEFAULT_MODELS
from hybrid_policy.errors import HybridPolicyError

# Bumped whenever the derivation changes: an older calibration is stale.
VERSION = 3  # 3: the quality bound may be lifted (costs.quality_bound, draft_alone)


class StaleCalibrationError(HybridPolicyError):
    """A calibration made for other models, another link or another temperature."""


# The default drafts: trained on the demonstrations, or distilled from the target; where
# each lives under MODELS/TASK.
DRAFT_DIRS = {"demonstrations": DRAFT_DIR, "distilled": "draft_distilled"}
DRAFT_KINDS = tuple(DRAFT_DIRS)


def check_draft_kind(draft_kind: str) -> str:
    if draft_kind not in DRAFT_DIRS:
        raise HybridPolicyError(f"unknown draft kind {draft_kind!r}; valid: "
                                f"{', '.join(DRAFT_KINDS)}")
    return draft_kind


def default_draft_path(models: str | Path, task: str, draft_kind: str = DRAFT_KINDS[0]) -> Path:
    """Where the task's default draft of ``draft_kind`` is kept (``policies.build`` makes
    it)."""
    return Path(models) / task / DRAFT_DIRS[check_draft_kind(draft_kind)]


def default_path(models: str | Path, task: str, link: str,
                 draft_kind: str = DRAFT_KINDS[0]) -> Path:
    """Where a task's calibration for ``link`` lives; each default draft has its own, so
    switching between them never overwrites the other's."""
    base = Path(models) / task / "calibration"
    check_draft_kind(draft_kind)
    return (base if draft_kind == DRAFT_KINDS[0] else base / draft_kind) / f"{link}.json"


def calibrate_command(task: str, link: str, models: str | Path = DEFAULT_MODELS,
                      draft_kind: str = DRAFT_KINDS[0]) -> str:
    extra = "" if str(models) == DEFAULT_MODELS else f" --models {models}"
    if draft_kind != DRAFT_KINDS[0]:
        extra += f" --draft-kind {draft_kind}"
    return f"hybrid-policy calibrate --task {task} --link {link}{extra}"


def load_thresholds(path: str | Path, task: str, link: str, temperature: float,
                    models: Mapping[str, str] | None = None,
                    command: str | None = None) -> Thresholds:
    """The thresholds of the calibration at ``path``, refusing one that does not fit.
    ``models``: ``{"draft": identity, "target": identity}`` of the checkpoints in use."""
    command = command or calibrate_command(task, link)
    doc = load_doc(path, task, link, temperature, models, command)
    try:
        return Thresholds(**doc["thresholds"])
    except (KeyError, TypeError) as exc:
        raise HybridPolicyError(f"{path}: bad thresholds section ({exc})") from None


def load_doc(path: str | Path, task: str, link: str, temperature: float,
             models: Mapping[str, str] | None = None,
             command: str | None = None) -> dict:
    """The whole calibration at ``path`` (fit, costs, samples: what a threshold is derived
    from), refusing one that does not fit, as ``load_thresholds`` does."""
    command = command or calibrate_command(task, link)
    try:
        doc = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise HybridPolicyError(f"{path}: no calibration: run `{command}` first, or give "
                                "the threshold explicitly (tau >= 0)") from None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise HybridPolicyError(f"{path}: unreadable calibration ({exc}); run `{command}` "
                                "again") from None
    if not isinstance(doc, dict):
        raise HybridPolicyError(f"{path}: not a calibration file; run `{command}`")
    want: dict[str, object] = {"version": VERSION, "task": task, "link": link,
                               "temperature": temperature}
    if models is not None:
        want["models"] = dict(models)
    differ = [f"{k} {doc.get(k)!r} (now {v!r})" for k, v in want.items() if doc.get(k) != v]
    if differ:
        raise StaleCalibrationError(f"{path}: calibrated for other settings: "
                                    f"{'; '.join(differ)}. Run `{command}` again")
    return doc


def check_given(given: Mapping[str, float]) -> dict[str, float]:
    """The explicit thresholds among ``given`` (``FROM_CALIBRATION`` = not given)."""
    out = {}
    for name, value in given.items():
        if name not in THRESHOLD_OF.values():
            raise ThresholdError(f"unknown threshold {name!r}; valid: "
                                 f"{', '.join(THRESHOLD_OF.values())}")
        if value == FROM_CALIBRATION:
            continue
        if name == "random_skip":
            if not 0.0 <= float(value) <= 1.0:
                raise ThresholdError(f"random_skip must be a probability in [0, 1], or "
                                     f"{FROM_CALIBRATION:g} to take it from the calibration; "
                                     f"got {value!r}")
        else:
            try:
                check_tau(value)
            except ThresholdError:
                raise ThresholdError(f"{name} must be a finite number >= 0, or "
                                     f"{FROM_CALIBRATION:g} to take it from the calibration; "
                                     f"got {value!r}") from None
        out[name] = float(value)
    return out


def thresholds_for(mode: str, given: Mapping[str, float],
                   calibrated: Callable[[], Thresholds] | None) -> Thresholds | None:
    """The thresholds ``mode`` runs with: ``None`` for a mode that never skips by one; the
    explicit value where the mode's own threshold is given; otherwise the calibration's
    (``calibrated()``), with any explicit values on top. No calibration → refusal."""
    explicit = check_given(given)
    if mode not in THRESHOLD_OF:
        return None
    field = THRESHOLD_OF[mode]
    if field in explicit:
        base = Thresholds(0.0, 0.0, 0.0)
    elif calibrated is None:
        raise HybridPolicyError(
            f"mode {mode} skips verification below a threshold and none was given: set a "
            f"calibration (the file `hybrid-policy calibrate` writes) or {field} explicitly")
    else:
        base = calibrated()
    return replace(base, **explicit)


def thresholds_for_checkpoints(mode: str, given: Mapping[str, float], calibration: str | Path,
                               task: str, link: str, temperature: float, draft: str | Path,
                               target: str | Path, command: str | None = None
                               ) -> Thresholds | None:
    """``thresholds_for`` with the calibration at ``calibration`` ("" = none) checked
    against the checkpoint directories in use, read from their files (no torch): what the
    draft node and the launch file decide with."""
    from hybrid_policy.policies.card import checkpoint_identity

    command = command or calibrate_command(task, link)

    def calibrated() -> Thresholds:
        if not link:
            raise HybridPolicyError("a calibration is checked against the link in use: give "
                                    "the link too (parameter 'link')")
        try:
            models = {"draft": checkpoint_identity(draft), "target": checkpoint_identity(target)}
        except HybridPolicyError as exc:
            raise HybridPolicyError(f"{exc}; `{command}` trains the default models of the "
                                    "task on first use") from None
        return load_thresholds(calibration, task, link, temperature, models, command)

    return thresholds_for(mode, given, calibrated if str(calibration) else None)
