"""RoCoIn behind the seam (``families.base``): students distilled from the target, each
holding part of its codes, on redundant groups of edge devices (``rocoin``), and the
baselines without redundancy, with random groups, or with the target on every device. Its
modes run on a topology; the topology's ``rocoin`` block gives the students, groups and
faults."""

from __future__ import annotations

import argparse
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from hybrid_policy.families.base import Family
from hybrid_policy.families.rocoin.names import MODES

log = logging.getLogger("hybrid_policy")

EXAMPLE = "config/rocoin.yaml"


class Rocoin(Family):
    name = "rocoin"
    modes = MODES
    group = "students"
    blocks = ("rocoin",)
    summary = "RoCoIn's modes"

    def check_topology(self, topo) -> None:
        from hybrid_policy.families.rocoin.rocoin import parse_config

        parse_config(topo, topo.blocks["rocoin"])

    def add_arguments(self, parser: argparse.ArgumentParser, command: str) -> None:
        from hybrid_policy.arguments import probability

        parser.add_argument("--students", help="rocoin modes: the students' checkpoint "
                            "(default: MODELS/TASK/students_<codes>, distilled for the "
                            "topology's plan if missing)")
        parser.add_argument("--fault-p", type=probability, default=None,
                            help="rocoin modes: the probability that a device fails a request "
                            "(default: the topology's rocoin.faults.p)")

    def _students(self, args: argparse.Namespace, target):
        """``(topology, students)``: the students prepared once (an explicit ``--target``
        is the one the devices and students use)."""
        from hybrid_policy.families.rocoin import setup as rocoin_setup

        return rocoin_setup.prepare(args.task, args.topology, args.models, args.students,
                                    target=target if args.target else None)

    def evaluate(self, args: argparse.Namespace, names: list[str]) -> dict[str, Any]:
        import torch

        from hybrid_policy.families import registry, run
        from hybrid_policy.families.adahi import setup
        from hybrid_policy.families.rocoin import setup as rocoin_setup
        from hybrid_policy.families.rocoin.fleet import StudentRun

        run.check_task_link(args)
        run.need_topology(args, names, "rocoin modes run students on edge devices", EXAMPLE)
        torch.set_num_threads(1)
        draft, target = setup.models(args)
        setting = setup.setting(args, draft, target)
        topo = registry.load_topology(args.topology)
        _, students = rocoin_setup.prepare(args.task, args.topology, args.models,
                                           args.students)
        faults = students.config.faults if args.fault_p is None else replace(
            students.config.faults, p=args.fault_p)
        meta = {"seed": args.seed, "link": args.link, "compute": setting.compute.as_dict(),
                "draft": draft.info["checkpoint"], "target": target.info["checkpoint"],
                **run.clock_meta(args), "topology": str(args.topology),
                "rocoin": {**students.summary(), "faults": faults.__dict__}, "layouts": {}}

        def work(name: str) -> StudentRun:
            lay = rocoin_setup.layout_for(name, topo, students, args.seed)
            meta["layouts"][name] = {"groups": lay.groups, "codes": [len(c) for c in lay.codes]}
            return StudentRun(lay, students, faults, draft, target.history)

        return run.fleet_document(args, args.task, topo, work, names, setting.compute, meta)

    def graphs(self, args: argparse.Namespace, modes: list[str],
               bag: Path | None) -> Callable[[str, Path | None], Any]:
        import torch

        from hybrid_policy.families import run
        from hybrid_policy.families.adahi import setup
        from hybrid_policy.families.rocoin import setup as rocoin_setup
        from hybrid_policy.ros.graph import GraphConfig

        run.check_task_link(args)
        run.need_topology(args, modes, "rocoin modes run students on edge devices", EXAMPLE)
        torch.set_num_threads(1)
        draft, target = setup.models(args)
        topo, students = self._students(args, target)

        def config_for(mode: str, mode_bag: Path | None) -> GraphConfig:
            """The mode's layout (as ``eval`` makes it), written next to the bag (or to a
            temporary file) for the nodes to read; ``--fault-p`` overrides the topology's
            faults.p on the devices."""
            lay = rocoin_setup.layout_for(mode, topo, students, args.seed)
            path = run.beside(mode_bag, f"layout_{mode}.json", "hybrid_rocoin_")
            lay.save(path)
            log.info("%s layout: groups %s, codes per group %s: %s", mode, lay.groups,
                     [len(c) for c in lay.codes], path)
            extra = {} if args.fault_p is None else {
                "extra": {"student_node": {"fault_p": args.fault_p}}}
            return GraphConfig(
                mode=mode, task=args.task, link=args.link,
                draft=str(Path(draft.info["checkpoint"]).resolve()),
                target=str(Path(target.info["checkpoint"]).resolve()),
                rocoin_layout=str(path.resolve()),
                students_path=str(Path(students.path).resolve()), **extra,
                **run.graph_settings(args, mode_bag))
        return config_for

    def fleet_nodes(self, cfg: Any) -> list:
        from hybrid_policy.families.rocoin.graph import rocoin_nodes

        return rocoin_nodes(cfg)

    def robot_side(self, node: Any) -> Any:
        from hybrid_policy.families.rocoin.robot_ros import RocoinSide

        return RocoinSide(node)

    def server_ops(self, info: dict[str, str], topics: dict[str, list], robot: str) -> int:
        """The windows it sent that reached a device (one student operation each)."""
        devices = [d for d in info.get("servers", "").split(",") if d]
        return sum(len(topics.get(f"{d}/exit/{robot}/{robot}/feature", [])) for d in devices)


FAMILY = Rocoin()
