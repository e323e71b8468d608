"""What a run of the draft/target modes makes from the command line's arguments: the draft
and target (default models, trained on first use), the compute model and link, the
calibration and the thresholds the skipping modes take from it, the load-aware τ. Other
families that need a draft or a target (RoCoIn's draft, the early-exit net's teacher) take
them from here too."""

from __future__ import annotations

import argparse
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

from hybrid_policy.errors import HybridPolicyError
from hybrid_policy.families import run

log = logging.getLogger("hybrid_policy")


def models(args: argparse.Namespace):
    """Draft and target for ``args.task``: explicit paths, else the default models."""
    from hybrid_policy.policies import check_pair, load_policy
    from hybrid_policy.policies.build import ensure_default_models

    draft_path, target_path = args.draft, args.target
    if draft_path is None or target_path is None:
        paths = ensure_default_models(args.task, Path(args.models))
        if draft_path is None and args.draft_kind == "distilled":
            from hybrid_policy.families.adahi.distill import ensure_distilled_draft

            draft_path = ensure_distilled_draft(args.task, Path(args.models))
        draft_path = draft_path or paths.draft
        target_path = target_path or paths.target
    draft = load_policy(draft_path, role="draft", task=args.task, temperature=args.temperature)
    target = load_policy(target_path, role="target", task=args.task,
                         temperature=args.temperature)
    check_pair(draft, target)
    return draft, target


def setting(args: argparse.Namespace, draft, target):
    """The single robot's setting: the target answering, the link, the compute model
    (``--draft-ms``/``--target-ms`` pinned, else measured here) and the deadline."""
    from hybrid_policy.core import compute
    from hybrid_policy.core.evaluator import Setting
    from hybrid_policy.core.link import link_profile
    from hybrid_policy.families.adahi import timing
    from hybrid_policy.families.adahi.server import answering

    link = link_profile(args.link)
    pins = {k: v for k, v in (("draft_ms", args.draft_ms), ("target_ms", args.target_ms))
            if v is not None}
    if len(pins) == 2:  # pinned: nothing to measure (results then do not move with load)
        model = compute.ComputeModel(**pins, device_speed=args.device_speed,
                                     server_speed=args.server_speed)
    else:
        model = replace(timing.measure(draft, target, compute.sample_observations(args.task),
                                       device_speed=args.device_speed,
                                       server_speed=args.server_speed), **pins)
    log.info("compute model: draft %.3f ms, target %.3f ms a step (%s; speed factors: "
             "device %.2g, server %.2g); link %s", model.draft(), model.target(),
             "pinned" if len(pins) == 2 else "measured", args.device_speed, args.server_speed,
             link.name)
    return Setting(answering(target), link, model, args.deadline_ms)


def calibration_path(args: argparse.Namespace) -> Path:
    from hybrid_policy.families.adahi.calibration_file import default_path

    if getattr(args, "calibration", None):
        return Path(args.calibration)
    return default_path(args.models, args.task, args.link, args.draft_kind)


def run_calibration(args: argparse.Namespace, draft, target, setting_, episodes: int):
    """Calibrate and write the file and its plots; ``(document, path)``."""
    from sim_envs import task_spec
    from hybrid_policy.families.adahi import calibration, plots

    # the closed-loop checks (draft alone, the sweep) run on the evaluation's clock: in real
    # time a verification that outlasts the period costs success, in lockstep it does not
    setting_ = replace(setting_, clock=run.control(args, args.task))
    cfg = replace(calibration.CalibrationConfig(), episodes=episodes,
                  quality_weight=args.quality_weight, price_ms=getattr(args, "price_ms", 0.0),
                  sweep_episodes=getattr(args, "sweep_episodes",
                                         calibration.CalibrationConfig().sweep_episodes))
    doc = calibration.calibrate(args.task, draft, target, setting_, cfg,
                                task_spec(args.task).control_period_ms)
    path = calibration_path(args)
    calibration.save(doc, path)
    plots.deviation_vs_rejection(doc, path.with_name(f"{args.link}_deviation.png"))
    plots.tradeoff(doc, path.with_name(f"{args.link}_tradeoff.png"))
    log.info("wrote %s and its plots", path)
    return doc, path


def thresholds(args: argparse.Namespace, draft, target, setting_, tau: float | None,
               modes: list[str]):
    """The thresholds of ``modes`` by the rule every entry point shares
    (``calibration_file.thresholds_for``): ``--tau`` for adahi, the rest from the task's
    calibration for the link. The default calibration is made first when it is missing or
    was made for other models or settings; one named by ``--calibration`` is never
    overwritten."""
    from hybrid_policy.families.adahi import calibration
    from hybrid_policy.families.adahi.calibration_file import (
        calibrate_command, check_given, thresholds_for,
    )
    from hybrid_policy.families.adahi.names import FROM_CALIBRATION

    path = calibration_path(args)
    command = calibrate_command(args.task, args.link, args.models, args.draft_kind)
    loaded = []

    def calibrated():
        if not loaded:
            try:
                loaded.append(calibration.load_thresholds(path, args.task, args.link, draft,
                                                          target, command))
            except HybridPolicyError as exc:
                if args.calibration:  # the user named this file: tell them, do not overwrite
                    raise
                log.info("%s: calibrating first", exc)
                run_calibration(args, draft, target, setting_,
                                calibration.CalibrationConfig().episodes)
                loaded.append(calibration.load_thresholds(path, args.task, args.link, draft,
                                                          target))
        return loaded[0]

    given = {"tau": FROM_CALIBRATION if tau is None else tau}
    found = [t for t in (thresholds_for(m, given, calibrated) for m in modes) if t is not None]
    if loaded:  # one set serves every mode: the calibration's, with --tau on top
        return replace(loaded[0], **check_given(given))
    return found[0] if found else None


def load_aware(args: argparse.Namespace, draft, target, thresholds_, meta: dict[str, Any],
               loads: dict) -> dict:
    """adahi's τ per server, derived for the server's load and ``--price-ms``
    (``load_threshold``) from the calibration ``thresholds`` read; recorded in
    ``meta["load_threshold"]``. No skipping mode: nothing to derive."""
    from hybrid_policy.families.adahi import calibration, load_threshold

    if thresholds_ is None:
        log.warning("--price-ms only changes adahi's threshold; these modes have none")
        return {}
    cal = load_threshold.Calibrated.from_doc(calibration.load_doc(
        calibration_path(args), args.task, args.link, draft, target))
    out, record = {}, {}
    for server, load in loads.items():
        res = load_threshold.solve(cal, load, args.load_price_ms)
        out[server] = replace(thresholds_, tau=res.tau)
        record[server] = {"robots": load.robots, "service_ms": load.service_ms, **res.as_dict()}
        print(f"load-aware tau for {server}: {load.robots} robot(s), verification "
              f"{load.service_ms:.2f} ms, price {res.price_ms:g} ms -> tau {res.tau:.4f} "
              f"(calibration's {thresholds_.tau:.4f}), skips {res.skip_rate:.0%} of calibration "
              f"steps, utilisation {res.utilisation:.2f}, wait {res.wait_ms:.2f} ms, marginal "
              f"delay {res.marginal_ms:.2f} ms, {res.bound} bound")
    meta["load_threshold"] = record
    return out


def sim_time_compute(args: argparse.Namespace, draft, target) -> dict[str, float]:
    """sim_time charges each step the compute times eval would (``setting``'s: pinned by
    ``--draft-ms``/``--target-ms``, else measured, with the speed factors)."""
    model = setting(args, draft, target).compute
    log.info("sim_time: each step is charged draft %.3f ms, target %.3f ms",
             model.draft(), model.target())
    return {"draft_ms": model.draft(), "target_ms": model.target()}
