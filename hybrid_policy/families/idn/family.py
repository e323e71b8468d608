"""The inference delivery network behind the seam (``families.base``): policy variants of
several tasks (drafts, early-exit nets, targets) placed on robots, cells, a regional node
and the cloud by INFIDA (``idn``) and its baselines (static, greedy, cloud only, robot
only) as the workload moves. Its modes run on a topology, whose robots name their tasks;
the topology's ``idn`` block gives the period, the gain and the workload's shifts."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any, Callable

from hybrid_policy.errors import HybridPolicyError
from hybrid_policy.families.base import Family
from hybrid_policy.families.idn.names import MODES

log = logging.getLogger("hybrid_policy")

EXAMPLE = "config/idn.yaml"


class Placement(Family):
    name = "idn"
    modes = MODES
    group = "placement"
    blocks = ("idn",)
    summary = "the inference delivery network's placement modes"

    def check_topology(self, topo) -> None:
        from hybrid_policy.families.idn import idn

        idn.parse_config(topo, topo.blocks["idn"])

    def add_arguments(self, parser: argparse.ArgumentParser, command: str) -> None:
        from hybrid_policy.arguments import positive_int
        from hybrid_policy.families.idn.catalogue import CATALOGUE_EPISODES

        if command == "bringup":
            parser.add_argument("--catalogue", help="placement modes: the variants' catalogue "
                                "JSON to use (default: each task's, measured and cached in "
                                "MODELS/TASK/catalogue.json)")
        parser.add_argument("--catalogue-episodes", type=positive_int,
                            default=CATALOGUE_EPISODES,
                            help="placement modes: episodes that measure each variant's "
                            "success for the catalogue (cached in MODELS/TASK/catalogue.json)")

    def _network(self, args: argparse.Namespace, names: list[str]):
        """``(topology, its idn config)``, the modes given alone on a topology."""
        from hybrid_policy.core.topology import read
        from hybrid_policy.families import registry
        from hybrid_policy.families.idn import idn

        if not args.topology:
            raise HybridPolicyError("placement modes run a fleet of their own (several tasks, "
                                    "variants placed on every node): give them alone, with "
                                    f"--topology (e.g. {EXAMPLE})")
        doc = read(args.topology)
        topo = registry.parse_topology(doc, str(args.topology))
        return topo, idn.config_of(topo, doc)

    def evaluate(self, args: argparse.Namespace, names: list[str]) -> dict[str, Any]:
        """Each task's catalogue measured once, then every placement mode on the fleet in
        closed loop."""
        import torch

        from hybrid_policy.core import stepmetrics
        from hybrid_policy.families import run
        from hybrid_policy.families.idn import setup as idn_setup

        topo, cfg = self._network(args, names)
        torch.set_num_threads(1)
        catalogue = idn_setup.catalogue_for(topo, cfg, args.models, args.catalogue_episodes)
        results, extra = {}, {}
        for name in names:
            result = idn_setup.fleet_run(name, topo, cfg, catalogue, args.models, args.episodes,
                                         args.seed, args.deadline_ms, args.phases,
                                         control=run.control(args, topo.robots[0].task))
            results[name] = result.total()
            extra[name] = {"robots": [{"robot": r.name, "link": r.link.name,
                                       "server": "placement", **result.robots[r.name].summary()}
                                      for r in topo.robots],
                           "servers": result.servers,
                           "placement": idn_setup.placement_summary(result)}
        tasks = idn_setup.tasks_of(topo, cfg)
        doc = stepmetrics.report(",".join(tasks), results, {
            "seed": args.seed, "topology": str(args.topology), "idn": idn_setup.config_doc(cfg),
            **run.clock_meta(args), "catalogue": catalogue.to_json()["variants"]})
        for name in names:
            doc["modes"][name].update(extra[name])
        return doc

    def report(self, doc: dict[str, Any]) -> str:
        from hybrid_policy.families.idn import setup as idn_setup

        return idn_setup.format_placement(doc)

    def graphs(self, args: argparse.Namespace, modes: list[str],
               bag: Path | None) -> Callable[[str, Path | None], Any]:
        """One graph per mode: the catalogue (``--catalogue``, else each task's, measured
        once and cached as ``eval`` does) is written next to the bag for every node to read.
        Over ROS the robots keep their cell and task: a topology with shifts is refused
        (they run in ``eval``)."""
        import torch

        from hybrid_policy.families import run
        from hybrid_policy.families.idn import catalogue as idn_catalogue
        from hybrid_policy.families.idn import setup as idn_setup
        from hybrid_policy.families.idn.graph import idn_config
        from hybrid_policy.ros.graph import GraphConfig

        topo, _ = self._network(args, modes)
        cfg = idn_config(args.topology, topo)
        tasks = sorted({r.task for r in topo.robots})
        if len(tasks) != 1 or (args.task and args.task != tasks[0]):
            raise HybridPolicyError(f"{args.topology}: a ROS placement fleet runs one task; "
                                    f"its robots run {', '.join(tasks)}"
                                    + (f" (--task {args.task})" if args.task else ""))
        torch.set_num_threads(1)
        if args.catalogue:
            catalogue = idn_catalogue.load(args.catalogue)
        else:
            catalogue = idn_setup.catalogue_for(topo, cfg, args.models, args.catalogue_episodes)
        path = run.beside(bag, "catalogue.json", "hybrid_idn_")
        catalogue.save(path)
        log.info("catalogue of %s: %s", ", ".join(catalogue.tasks), path)

        def config_for(mode: str, mode_bag: Path | None) -> GraphConfig:
            return GraphConfig(mode=mode, task=tasks[0], link=topo.robots[0].link.name,
                               idn_catalogue=str(path.resolve()),
                               **run.graph_settings(args, mode_bag))
        return config_for

    def fleet_nodes(self, cfg: Any) -> list:
        from hybrid_policy.families.idn.graph import idn_nodes

        return idn_nodes(cfg)

    def robot_side(self, node: Any) -> Any:
        from hybrid_policy.families.idn.robot_ros import PlacementSide

        return PlacementSide(node)

    def server_ops(self, info: dict[str, str], topics: dict[str, list], robot: str) -> int:
        """Its requests that reached a node of its path (served there)."""
        paths = dict(e.split("=", 1) for e in info.get("paths", "").split(";") if e)
        return sum(len(topics.get(f"{d}/exit/{robot}/{robot}/request", []))
                   for d in paths.get(robot, "").split("|") if d)


FAMILY = Placement()
