"""``hybrid-policy bringup`` and ``analyze``: any family's modes as ROS 2 graphs of node
processes, and the table of their bags.

The modes name their family (``families.registry``); the family makes what its graphs need
and each mode's graph settings (``Family.graphs``); ``ros.bringup`` runs each graph. No
family is named here."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any, Callable

from hybrid_policy.arguments import add_model_args, positive_float, positive_int
from hybrid_policy.families import registry

log = logging.getLogger("hybrid_policy")


def add_commands(sub: Any) -> None:
    p = sub.add_parser("bringup", help="run the ROS 2 graph (separate processes) for one mode",
                       description="Start sim, draft, link, target and recorder nodes as separate "
                       "OS processes with the same parameters the launch file gives them, run "
                       "the episodes (lockstep or real time), then stop every node. With --bag, "
                       "record an MCAP rosbag2 and print its metrics table.")
    add_model_args(p, task_required=False)
    p.add_argument("--mode", required=True,
                   help="a mode, a comma-separated list, or 'all': one graph after another")
    p.add_argument("--episodes", type=positive_int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bag", help="record a rosbag2 (MCAP) into this new directory (several "
                   "modes: one bag per mode in BAG/<mode>)")
    p.add_argument("--clock", choices=("lockstep", "realtime", "sim_time"),
                   default="lockstep",
                   help="lockstep: the simulator waits for each action (reproducible); "
                   "realtime: it steps at --rate-hz on the wall clock whatever arrived; "
                   "sim_time: the same in simulated time (/clock), each step charged its "
                   "modelled compute and link time, so the run equals eval's real time tick "
                   "for tick (default lockstep)")
    p.add_argument("--rate-hz", type=positive_float, default=-1.0,
                   help="control rate of the realtime and sim_time clocks (default: the "
                   "task's, 25 Hz for the fetch tasks)")
    p.add_argument("--loop", choices=("period", "wait"), default="period",
                   help="realtime and sim_time: how a verified step waits (period: 0.7 of the "
                   "control period, so the fallback makes its tick; wait: --deadline-ms; "
                   "default period)")
    p.add_argument("--interface", choices=("standard", "vector"), default="standard",
                   help="robot interface: standard ROS messages as a robot driver and "
                   "perception publish them, TwistStamped commands out (default); vector: the "
                   "task's flat observation and action in one JointState each (faster)")
    p.add_argument("--robot-map", help="robot interface YAML of the standard interface "
                   "(default: the package's config/robot_TASK.yaml)")
    p.add_argument("--max-age-ms", type=positive_float, default=-1.0,
                   help="oldest robot input the draft acts on, in ms (default: the robot "
                   "map's max_age_ms)")
    p.add_argument("--link-in-draft", dest="link_in_draft", action="store_true",
                   help="the draft node applies the link model itself: no link_node, a "
                   "process and two DDS hops fewer per verified step (one robot)")
    p.add_argument("--recorder-nice", dest="recorder_nice", type=int, default=10,
                   choices=range(20), metavar="0..19",
                   help="CPU niceness of the bag recorder, off the control path (default 10)")
    p.add_argument("--timeout", type=positive_float, default=3600.0,
                   help="stop the graph after this many seconds (default 3600)")
    p.add_argument("--topology", help="a fleet topology (config/fleet.yaml): every robot runs "
                   "the mode under its own namespace (NS/<robot>/...) and its family's server "
                   "nodes and links serve it; one bag; analyze prints per-robot and per-server "
                   "tables")
    for family in registry.families():
        family.add_arguments(p, "bringup")
    p.set_defaults(func=cmd_bringup)

    p = sub.add_parser("analyze", help="metrics table of recorded bags (same schema as eval)",
                       description="Read rosbag2 directories recorded by bringup or the launch "
                       "file and print the same table and JSON as `eval` (one mode per bag; "
                       "several bags make one table), plus the counts of fallbacks, rejected "
                       "messages and link losses.")
    p.add_argument("bags", nargs="+", help="bag directories")
    p.add_argument("--json", help="write the results as JSON to this file")
    p.set_defaults(func=cmd_analyze)


def cmd_bringup(args: argparse.Namespace) -> int:
    from hybrid_policy.families import run

    modes = registry.parse_modes(args.mode)
    family = registry.family_of_modes(modes)
    bag = run.fresh_bag(args)
    return run_graphs(args, modes, bag, family.graphs(args, modes, bag))


def run_graphs(args: argparse.Namespace, modes: list[str], bag: Path | None,
               config_for: Callable[[str, Path | None], Any]) -> int:
    """One graph per mode, in turn (several modes: one bag each under ``bag``); then the
    table of the bags."""
    from hybrid_policy.ros.bringup import bringup

    bags = []
    for mode in modes:
        mode_bag = None if bag is None else (bag if len(modes) == 1 else bag / mode)
        log.info("bringup: %s on %s, %d episodes%s", mode, args.task or "its topology's task",
                 args.episodes, f" per robot of {args.topology}" if args.topology else "")
        rc = bringup(config_for(mode, mode_bag), args.timeout)
        if rc != 0:
            return rc
        if mode_bag is not None:
            bags.append(mode_bag)
    if bags:
        print_bags(bags)
    return 0


def print_bags(bags) -> dict:
    """Print the metrics table and counts of one or several bags; return the document."""
    from hybrid_policy.bag_analysis import analyze, format_counts
    from hybrid_policy.core import stepmetrics

    docs = [analyze(bag) for bag in bags]
    doc = docs[0] if len(docs) == 1 else stepmetrics.merge(docs)
    print(stepmetrics.format_table(doc))
    if any("robots" in m for m in doc["modes"].values()):
        print(stepmetrics.format_fleet(doc))
    print(format_counts(doc))
    return doc


def cmd_analyze(args: argparse.Namespace) -> int:
    from hybrid_policy.core import stepmetrics

    doc = print_bags(args.bags)
    if args.json:
        stepmetrics.write_json(doc, args.json)
        log.info("wrote %s", args.json)
    return 0
