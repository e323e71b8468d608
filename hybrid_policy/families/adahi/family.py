"""The draft/target family behind the seam (``families.base``): a draft on the robot whose
proposals a target verifies by speculative sampling, skipped by ADAHI below τ*, and its
baselines (draft alone, target alone, verify every step, uncertainty or random skipping).
It runs on one robot as well as on a fleet."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any, Callable

from hybrid_policy.errors import HybridPolicyError
from hybrid_policy.families.adahi.names import MODE_NAMES
from hybrid_policy.families.base import Family

log = logging.getLogger("hybrid_policy")


class DraftTarget(Family):
    name = "adahi"
    modes = MODE_NAMES
    group = "all"
    fleet_only = False
    summary = "the draft/target modes"

    def add_arguments(self, parser: argparse.ArgumentParser, command: str) -> None:
        from hybrid_policy.arguments import price_ms

        parser.add_argument("--tau", type=float, help="override the calibrated τ* of adahi")
        if command == "eval":
            parser.add_argument(
                "--price-ms", dest="load_price_ms", type=price_ms,
                help="derive adahi's τ for each server's load (its robots, the queueing "
                "delay at the operating point) with this price in ms per transmission + "
                "server operation, from the calibration's samples (docs/method.md §6); "
                "default: the calibration's τ*")

    def commands(self, sub: Any) -> None:
        from hybrid_policy.families.adahi import commands

        commands.add_calibrate(sub)

    def evaluate(self, args: argparse.Namespace, names: list[str]) -> dict[str, Any]:
        import torch

        from hybrid_policy.families import run
        from hybrid_policy.families.adahi import setup
        from hybrid_policy.families.adahi.names import check_tau

        run.check_task_link(args)
        tau = None if args.tau is None else check_tau(args.tau)
        if tau is not None and args.load_price_ms is not None:
            raise HybridPolicyError("--tau sets adahi's threshold and --price-ms derives it "
                                    "for the load: give one of them")
        torch.set_num_threads(1)  # batch-1 inference: threads only add overhead
        draft, target = setup.models(args)
        setting = setup.setting(args, draft, target)
        thresholds = setup.thresholds(args, draft, target, setting, tau, names)
        meta = {"seed": args.seed, "link": args.link, "compute": setting.compute.as_dict(),
                "thresholds": None if thresholds is None else thresholds.__dict__,
                "draft": draft.info["checkpoint"], "target": target.info["checkpoint"],
                **run.clock_meta(args)}
        if args.topology:
            return self._fleet(args, names, draft, target, setting, thresholds, meta)
        return self._one_robot(args, names, draft, target, setting, thresholds, meta)

    def _one_robot(self, args, names, draft, target, setting, thresholds, meta) -> dict:
        from dataclasses import replace

        from sim_envs import task_spec
        from hybrid_policy.core import evaluator, stepmetrics
        from hybrid_policy.families import run
        from hybrid_policy.families.adahi import setup
        from hybrid_policy.families.adahi.modes import make_mode

        if args.load_price_ms is not None:  # one robot on its own server
            from hybrid_policy.families.adahi.load_threshold import Load

            load = Load(1, task_spec(args.task).control_period_ms, setting.compute.target())
            thresholds = setup.load_aware(args, draft, target, thresholds, meta,
                                          {"server": load}).get("server", thresholds)
        modes = [make_mode(n, draft, target, thresholds) for n in names]
        setting = replace(setting, clock=run.control(args, args.task))
        meta["period_ms"] = setting.clock.period_ms
        results = evaluator.evaluate(args.task, modes, args.episodes, args.seed, setting)
        return stepmetrics.report(args.task, results, meta)

    def _fleet(self, args, names, draft, target, setting, thresholds, meta) -> dict:
        """``eval --topology``: every robot of the fleet runs each mode in turn, each server
        verifying with the target in the time of its measured batch curve."""
        from dataclasses import replace

        from hybrid_policy.core import compute
        from hybrid_policy.families import registry, run
        from hybrid_policy.families.adahi import setup, timing
        from hybrid_policy.families.adahi.fleet import TargetWork
        from hybrid_policy.families.adahi.modes import make_mode

        topo = registry.load_topology(args.topology)
        other = sorted({r.task for r in topo.robots} - {args.task})
        if other:
            raise HybridPolicyError(f"{args.topology}: eval --topology runs one task "
                                    f"({args.task}); robots of other tasks: {', '.join(other)}")
        largest = max(topo.nodes[s].max_batch for s in topo.servers())
        sizes = tuple(n for n in (1, 2, 4, 8, 16, 32, 64, 128) if n < largest) + (largest,)
        requests = timing.verify_requests(draft, target, compute.sample_observations(args.task),
                                          max(sizes))
        model = replace(setting.compute, batch_ms=timing.measure_batches(target, requests,
                                                                         sizes))
        log.info("batch curve of the target (ms per batch): %s",
                 ", ".join(f"{n}: {ms:.2f}" for n, ms in model.batch_ms))
        per_server = {}
        if args.load_price_ms is not None:
            from hybrid_policy.families.adahi.load_threshold import server_loads

            per_server = setup.load_aware(args, draft, target, thresholds, meta,
                                          server_loads(topo, model))

        def work(name: str) -> TargetWork:
            return TargetWork(lambda spec: make_mode(  # adahi's τ per server with --price-ms
                name, draft, target, per_server.get(spec.server, thresholds)),
                {args.task: target})

        meta = {**meta, "compute": model.as_dict(), "topology": str(args.topology)}
        return run.fleet_document(args, args.task, topo, work, names, model, meta)

    def graphs(self, args: argparse.Namespace, modes: list[str],
               bag: Path | None) -> Callable[[str, Path | None], Any]:
        import torch

        from hybrid_policy.families import run
        from hybrid_policy.families.adahi import setup
        from hybrid_policy.families.adahi.names import NEEDS_THRESHOLDS, check_tau
        from hybrid_policy.ros.graph import GraphConfig

        run.check_task_link(args)
        tau = None if args.tau is None else check_tau(args.tau)
        torch.set_num_threads(1)
        draft, target = setup.models(args)
        thresholds = None
        if any(m in NEEDS_THRESHOLDS for m in modes):
            thresholds = setup.thresholds(args, draft, target, setup.setting(args, draft, target),
                                          tau, modes)
        charged = setup.sim_time_compute(args, draft, target) if args.clock == "sim_time" \
            else {}

        def config_for(mode: str, mode_bag: Path | None) -> GraphConfig:
            explicit = {} if thresholds is None or mode not in NEEDS_THRESHOLDS else {
                "tau": thresholds.tau, "uncertainty_tau": thresholds.uncertainty_tau,
                "random_skip": thresholds.random_skip}
            return GraphConfig(
                mode=mode, task=args.task, link=args.link, draft_kind=args.draft_kind,
                draft=str(Path(draft.info["checkpoint"]).resolve()),
                target=str(Path(target.info["checkpoint"]).resolve()),
                calibration=str(setup.calibration_path(args)), **explicit, **charged,
                **run.graph_settings(args, mode_bag))
        return config_for

    def fleet_nodes(self, cfg: Any) -> list:
        from hybrid_policy.families.adahi.graph import fleet_nodes

        return fleet_nodes(cfg)

    def robot_side(self, node: Any) -> Any:
        from hybrid_policy.families.adahi.robot_ros import DraftTargetSide

        return DraftTargetSide(node)

    def server_ops(self, info: dict[str, str], topics: dict[str, list], robot: str) -> int:
        """The answers its server published for it (one verification each)."""
        server = dict(e.split(":")[:2] for e in info.get("robots", "").split(",") if e)[robot]
        return len(topics.get(f"{server}/server/{robot}/response", []))


FAMILY = DraftTarget()
