"""The early-exit family behind the seam (``families.base``): one early-exit net split
across robot, edge and cloud (``early_exit``), its joint offloading and thresholds
(``dto_ee``, DTO-EE) and their baselines (``ee_fixed``, ``ee_random``, ``cloud_only``). Its
modes run on a topology; the topology's ``partitions`` block says where each part runs."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any, Callable

from hybrid_policy.errors import HybridPolicyError
from hybrid_policy.families.base import Family
from hybrid_policy.families.exits.names import MODES

log = logging.getLogger("hybrid_policy")

EXAMPLE = "config/early_exit.yaml"


class EarlyExits(Family):
    name = "exits"
    modes = MODES
    group = "exits"
    blocks = ("partitions",)
    summary = "the early-exit family"

    def check_topology(self, topo) -> None:
        from hybrid_policy.families.exits.plan import partitions_of

        partitions_of(topo)

    def add_arguments(self, parser: argparse.ArgumentParser, command: str) -> None:
        from hybrid_policy.arguments import loss_budget
        from hybrid_policy.families.exits.plan import DEFAULT_LOSS_BUDGET

        parser.add_argument(
            "--loss-budget", type=loss_budget, default=DEFAULT_LOSS_BUDGET,
            help="early-exit modes: the mean TV to the full net allowed for the steps an early "
            "exit answers; sets the calibrated thresholds and dto_ee's accuracy constraint "
            f"(default {DEFAULT_LOSS_BUDGET})")
        parser.add_argument(
            "--encoding", choices=("32FC1", "16FC1"), default="32FC1",
            help="early-exit modes: features cross links as float32 (32FC1, default) or "
            "float16 (16FC1: half the bytes)")
        parser.add_argument("--early-exit", help="early-exit net checkpoint (default: MODELS/"
                            "TASK/early_exit, trained from the default target if missing)")
        parser.add_argument("--exit-calibration", help="the exits' calibration JSON (default: "
                            "MODELS/TASK/calibration/early_exit.json, made if missing)")
        parser.add_argument(
            "--exit-compute", help="early-exit modes: the net's part times (JSON: layer_ms "
            "[[batch, ms], ...], embed_ms, exit_ms; what eval --json records as "
            "early_exit.compute) instead of measuring them here: plan for the deployed "
            "machines' timings")
        if command == "bringup":
            parser.add_argument("--exit-plan", help="early-exit modes: use this plan "
                                "(hybrid-policy exit-plan) instead of solving one")

    def commands(self, sub: Any) -> None:
        from hybrid_policy.arguments import add_model_args

        p = sub.add_parser("exit-plan", help="solve an early-exit mode's plan for a topology",
                           description="Where each part of the early-exit net runs, each "
                           "node's threshold and offloading (dto_ee: optimised) for the robots "
                           "of --topology; write it as JSON for `ros2 launch ... "
                           "exit_plan:=FILE`.")
        add_model_args(p)
        p.add_argument("--topology", required=True, help=f"the fleet ({EXAMPLE})")
        p.add_argument("--mode", required=True, help=" | ".join(MODES))
        p.add_argument("--out", required=True, help="the plan JSON to write")
        self.add_arguments(p, "exit-plan")
        p.set_defaults(func=self.cmd_exit_plan)

    def cmd_exit_plan(self, args: argparse.Namespace) -> int:
        """Write an early-exit mode's plan (what ``ros2 launch … exit_plan:=`` reads)."""
        from hybrid_policy.families import run
        from hybrid_policy.families.adahi import setup

        run.check_task_link(args)
        if args.mode not in MODES:
            raise HybridPolicyError(f"{args.mode} is not an early-exit mode ({', '.join(MODES)})")
        args.exit_plan = None
        setup.models(args)  # the net is trained from the default target
        _, cfg = self._plan(args, args.mode, None, None)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(Path(cfg["exit_plan"]).read_text())
        print(Path(args.out).read_text())
        log.info("wrote %s", args.out)
        return 0

    def _prepare(self, args: argparse.Namespace):
        from hybrid_policy.families.exits import setup as exit_setup

        return exit_setup.prepare(args.task, args.models, args.early_exit,
                                  args.exit_calibration, args.temperature,
                                  compute=args.exit_compute)

    def evaluate(self, args: argparse.Namespace, names: list[str]) -> dict[str, Any]:
        import torch

        from sim_envs import task_spec
        from hybrid_policy.families import registry, run
        from hybrid_policy.families.adahi import setup
        from hybrid_policy.families.exits import setup as exit_setup

        run.check_task_link(args)
        run.need_topology(args, names, "early-exit modes split the net across robot, edge "
                          "and cloud", EXAMPLE)
        torch.set_num_threads(1)
        draft, target = setup.models(args)  # the net is trained from the default target
        setting = setup.setting(args, draft, target)
        topo = registry.load_topology(args.topology)
        exits = self._prepare(args)
        meta = {"seed": args.seed, "link": args.link, "compute": setting.compute.as_dict(),
                **run.clock_meta(args), "topology": str(args.topology),
                "early_exit": {"net": exits.net.info["checkpoint"],
                               "exits": list(exits.net.exits),
                               "loss_budget": args.loss_budget, "encoding": args.encoding,
                               "compute": exits.compute.as_dict(),
                               "calibration": exits.samples.stats(),
                               "thresholds": {str(k): v for k, v in exits.samples
                                              .thresholds_for_loss(args.loss_budget).items()}},
                "exit_plans": {}}

        def work(name: str):
            run_ = exit_setup.exit_run(name, topo, exits, args.loss_budget, args.encoding,
                                       task_spec(args.task).control_period_ms,
                                       setting.compute.device_speed)
            meta["exit_plans"][name] = run_.plan.summary()
            return run_

        return run.fleet_document(args, args.task, topo, work, names, setting.compute, meta)

    def _plan(self, args: argparse.Namespace, mode: str, exits, bag: Path | None) -> tuple:
        """An early-exit mode's plan for ``bringup``, solved as ``eval`` solves it (dto_ee:
        once, for the robots at their control rate; the ROS nodes hold it fixed), written
        next to the bag (or to a temporary file) for the nodes to read."""
        from sim_envs import task_spec
        from hybrid_policy.families import registry, run
        from hybrid_policy.families.exits import setup as exit_setup
        from hybrid_policy.families.exits.plan import ExitPlan

        if exits is None:
            exits = self._prepare(args)
        net = {"early_exit": str(Path(exits.net.info["checkpoint"]).resolve())}
        if args.exit_plan:  # given (hybrid-policy exit-plan): used as it is
            plan = ExitPlan.load(args.exit_plan)
            if plan.mode != mode:
                raise HybridPolicyError(f"{args.exit_plan}: a plan for {plan.mode}, not {mode}")
            return exits, {**net, "exit_plan": str(Path(args.exit_plan).resolve())}
        work = exit_setup.exit_run(mode, registry.load_topology(args.topology), exits,
                                   args.loss_budget, args.encoding,
                                   task_spec(args.task).control_period_ms, args.device_speed)
        path = run.beside(bag, "exit_plan.json" if bag else f"{mode}.json", "hybrid_exit_")
        work.plan.save(path)
        log.info("%s plan: %s", mode, path)
        return exits, {**net, "exit_plan": str(path.resolve())}

    def graphs(self, args: argparse.Namespace, modes: list[str],
               bag: Path | None) -> Callable[[str, Path | None], Any]:
        import torch

        from hybrid_policy.families import run
        from hybrid_policy.families.adahi import setup
        from hybrid_policy.ros.graph import GraphConfig

        run.check_task_link(args)
        run.need_topology(args, modes, "early-exit modes split the net across robot, edge "
                          "and cloud", EXAMPLE)
        torch.set_num_threads(1)
        setup.models(args)  # the net is trained from the default target
        made = [None]

        def config_for(mode: str, mode_bag: Path | None) -> GraphConfig:
            made[0], files = self._plan(args, mode, made[0], mode_bag)
            return GraphConfig(mode=mode, task=args.task, link=args.link, **files,
                               **run.graph_settings(args, mode_bag))
        return config_for

    def fleet_nodes(self, cfg: Any) -> list:
        from hybrid_policy.families.exits.graph import exit_nodes

        return exit_nodes(cfg)

    def robot_side(self, node: Any) -> Any:
        from hybrid_policy.families.exits.robot_ros import ExitSide

        return ExitSide(node)

    def server_ops(self, info: dict[str, str], topics: dict[str, list], robot: str) -> int:
        """The features it sent that reached their first node (one operation each)."""
        first = dict(e.split("=") for e in info.get("first_nodes", "").split(";") if e)
        return sum(len(topics.get(f"{d}/exit/{robot}/{robot}/feature", []))
                   for d in first.get(robot, "").split("|") if d)


FAMILY = EarlyExits()
