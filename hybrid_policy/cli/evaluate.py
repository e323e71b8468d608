"""``hybrid-policy eval``: any family's modes in process, one table and one JSON.

The modes name their family (``families.registry``); the family runs them
(``Family.evaluate``) and this command prints and writes what it returns. No family is
named here."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from hybrid_policy.arguments import add_clock_args, add_model_args, positive_int
from hybrid_policy.families import registry

log = logging.getLogger("hybrid_policy")


def add_command(sub: Any) -> None:
    p = sub.add_parser("eval", help="closed-loop evaluation of inference modes (no ROS)",
                       description="Run each mode on the same seeded episodes in process, "
                       "through the modelled link, and print one table. Without --draft/--target "
                       "the default models are used (trained first if missing or stale); modes "
                       "that skip use the task's calibration for the link (run first if missing).")
    add_model_args(p, task_required=False)
    p.add_argument("--modes", default="all", help="comma-separated modes of one family, or a "
                   "family's word: " + ", ".join(f"'{f.group}' ({f.summary})"
                                                 for f in registry.families() if f.group)
                   + " (default all)")
    p.add_argument("--episodes", type=positive_int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="write the results as JSON to this file")
    add_clock_args(p)
    p.add_argument("--topology", help="a fleet topology (config/fleet.yaml): every robot runs "
                   "each mode, sharing its servers (queues, batches); per-robot and per-server "
                   "tables, and modes.<m>.robots / .servers in the JSON")
    p.add_argument("--phases", choices=("random", "even"), default="random",
                   help="with --topology: robots start at random phases within their first "
                   "control period, drawn from the seed (default), or evenly spaced")
    for family in registry.families():
        family.add_arguments(p, "eval")
    p.set_defaults(func=cmd_eval)


def cmd_eval(args: argparse.Namespace) -> int:
    from hybrid_policy.core import stepmetrics

    names = registry.parse_modes(args.modes)
    family = registry.family_of_modes(names)
    doc = family.evaluate(args, names)
    if any("robots" in m for m in doc["modes"].values()):
        print(stepmetrics.format_fleet(doc))
    print(stepmetrics.format_table(doc))
    extra = family.report(doc)
    if extra:
        print(extra)
    if args.json:
        stepmetrics.write_json(doc, args.json)
        log.info("wrote %s", args.json)
    return 0
