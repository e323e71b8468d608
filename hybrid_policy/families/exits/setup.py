"""Everything an early-exit fleet run is built from, in one place for ``eval``, the bench
and the tests: the net (trained once from the default target), its exits' calibration,
the measured compute of its parts, and each mode's plan (``dto_ee``: optimised).
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path

import numpy as np

from hybrid_policy.families.exits import calibration as exit_calibration
from hybrid_policy.core.compute import sample_observations
from hybrid_policy.families.exits.early_exit import ExitPlan, build_plan
from hybrid_policy.families.exits.calibration import ExitCompute, ExitModels  # noqa: F401
from hybrid_policy.families.exits.fleet import ExitRun
from hybrid_policy.core.topology import Topology

log = logging.getLogger(__name__)

CALIBRATION_EPISODES = 50
CALIBRATION_SEED = 1000  # calibration episodes differ from the default evaluation (seed 0)


def calibration_path(models: str | Path, task: str) -> Path:
    return Path(models) / task / "calibration" / "early_exit.json"


def prepare(task: str, models: str | Path = "models", net_path: str | Path | None = None,
            calibration: str | Path | None = None, temperature: float | None = None,
            progress: bool | None = None, compute: str | Path | None = None) -> ExitModels:
    """The net (default: trained under ``models/task/early_exit`` if missing), its
    calibration (made if missing or made for another net) and its parts' compute (measured
    here, or read from ``compute``: ``ExitCompute.load``)."""
    from hybrid_policy.policies.card import checkpoint_identity
    from hybrid_policy.families.exits.net import load_early_exit

    # a bad file is refused before the net is trained or calibrated
    parts = ExitCompute.load(compute) if compute is not None else None
    path = Path(net_path) if net_path else ensure_early_exit(task, Path(models),
                                                             progress=progress)
    kwargs = {} if temperature is None else {"temperature": temperature}
    net = load_early_exit(path, task, **kwargs)
    net_id = checkpoint_identity(path)
    # a net of its own (e.g. from fl-train) keeps its calibration beside it
    cal = (Path(calibration) if calibration else calibration_path(models, task) if not net_path
           else path.parent / "calibration" / "early_exit.json")
    try:
        samples = exit_calibration.load(cal, task, net_id)
    except exit_calibration.ExitCalibrationError as exc:
        if calibration:  # named by the user: never overwritten
            raise
        log.info("%s: calibrating the exits first", exc)
        samples = exit_calibration.collect(task, net, CALIBRATION_EPISODES, CALIBRATION_SEED,
                                           progress)
        exit_calibration.save(samples, cal, task, net_id)
    if parts is None:
        obs = sample_observations(task)
        windows = np.stack([obs[max(0, i - net.history + 1):i + 1] if i + 1 >= net.history
                            else np.repeat(obs[:1], net.history, 0) for i in range(16)])
        parts = exit_calibration.measure_compute(net, windows)
    log.info("early-exit net %s: exits after layers %s; a layer %.3f ms, an exit %.3f ms (%s)",
             path, list(net.exits), parts.part_ms(0, 1) - parts.exit_ms - parts.embed_ms,
             parts.exit_ms, compute if compute is not None else "measured here")
    return ExitModels(net, samples, parts)


def exit_run(mode: str, topology: Topology, models: ExitModels, loss_budget: float,
             encoding: str = "32FC1", period_ms: float = 40.0,
             device_speed: float = 1.0) -> ExitRun:
    """The fleet run of ``mode``: its plan, and for ``dto_ee`` the optimised plan and its
    online re-optimisation."""
    thresholds = models.samples.thresholds_for_loss(loss_budget)
    plan = build_plan(mode, topology, tuple(models.net.exits), thresholds, encoding)
    run = ExitRun(models.net, plan, models.compute)
    if mode == "dto_ee":
        from hybrid_policy.families.exits import optimise as exit_optimise

        exit_optimise.attach(run, topology, models, loss_budget, period_ms, device_speed)
    return run


__all__ = ["ExitModels", "ExitPlan", "calibration_path", "exit_run", "prepare"]


def ensure_early_exit(task: str, root: Path = Path("models"), exits: tuple[int, ...] | None = None,
                      exit_weights: tuple[float, ...] | None = None,
                      progress: bool | None = None) -> Path:
    """The task's early-exit net under ``root/task/early_exit``, trained from the default
    target (``net``) unless one made from the same data, target, exits,
    weights and training settings is there."""
    from sim_envs import dataset
    from hybrid_policy.policies.build import (
        ensure_default_models, load_tokenizer, made_from,
    )
    from hybrid_policy.policies.card import checkpoint_identity
    from hybrid_policy.policies.checkpoint import load_policy
    from hybrid_policy.policies.training import data_record
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
    if made_from(out, wanted):
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
