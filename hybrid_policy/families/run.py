"""What every family's ``eval`` and ``bringup`` share, from the command line's arguments:
the task and link checks, the clock, the fleet runs and their document, the graph
settings, the bag directory. No family's name, no torch at import, no rclpy."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any, Callable

from hybrid_policy.errors import HybridPolicyError

log = logging.getLogger("hybrid_policy")


def check_task_link(args: argparse.Namespace) -> None:
    """Refuse an unknown task or link before any model is loaded or trained."""
    from sim_envs import task_spec
    from hybrid_policy.core.link import link_profile

    if args.task is None:
        raise HybridPolicyError("--task is required (modes that take their tasks from the "
                                "topology excepted)")
    task_spec(args.task)
    link_profile(args.link)


def control(args: argparse.Namespace, task: str):
    """The evaluation's clock (``--eval-clock``, ``--loop``) at ``task``'s control period; a
    fleet ticks each robot at its own task's period."""
    from sim_envs import task_spec
    from hybrid_policy.core.realtime import clock_for

    # a command without --eval-clock (bringup, calibrating first) runs in real time, the
    # results' default
    return clock_for(getattr(args, "eval_clock", "realtime"), task_spec(task).control_period_ms,
                     loop=getattr(args, "loop", "wait"))


def clock_meta(args: argparse.Namespace) -> dict[str, Any]:
    """Which clock and loop a result ran under, for its JSON."""
    return {"clock": args.eval_clock,
            "loop": args.loop if args.eval_clock == "realtime" else None}


def need_topology(args: argparse.Namespace, names: list[str], summary: str, example: str) -> None:
    """Refuse fleet-only modes without ``--topology``."""
    if not args.topology:
        raise HybridPolicyError(f"{', '.join(names)}: {summary}: give the nodes with "
                                f"--topology (e.g. {example})")


def fleet_document(args: argparse.Namespace, task: str, topo, works: Callable[[str], Any],
                   names: list[str], compute, meta: dict[str, Any]) -> dict[str, Any]:
    """Each mode of ``names`` on the fleet ``topo`` (``works(name)``: its
    ``core.fleet.FleetWork``), in turn: the evaluation's document with per-robot and
    per-server rows, and the family's own counts (``FleetResult.extra``) under
    ``modes.<m>.family`` where it has any."""
    from hybrid_policy.core import fleet, stepmetrics

    results, rows = {}, {}
    for name in names:
        run = fleet.evaluate_fleet(topo, works(name), compute, args.deadline_ms, args.episodes,
                                   args.seed, phases=args.phases, control=control(args, task))
        results[name] = run.total()
        rows[name] = {
            "robots": [{"robot": r.name, "link": r.link.name, "server": r.server,
                        **run.robots[r.name].summary()} for r in topo.robots],
            "servers": run.servers, **({"family": run.extra} if run.extra else {})}
    doc = stepmetrics.report(task, results, meta)
    for name in names:
        doc["modes"][name].update(rows[name])
    return doc


def fresh_bag(args: argparse.Namespace) -> Path | None:
    """``--bag`` as a new directory (an existing one is never overwritten)."""
    bag = Path(args.bag).resolve() if args.bag else None
    if bag is not None and bag.exists():
        raise HybridPolicyError(f"{args.bag}: already exists; give a new directory for the bag")
    return bag


def beside(bag: Path | None, name: str, prefix: str) -> Path:
    """Where ``bringup`` writes a file the nodes read (a plan, a layout): next to the bag,
    else in a new temporary directory."""
    import tempfile

    if bag is not None:
        return bag.parent / f"{bag.name}.{name}"
    return Path(tempfile.mkdtemp(prefix=prefix)) / name


def graph_settings(args: argparse.Namespace, bag: Path | None) -> dict[str, Any]:
    """The graph settings every bringup takes from the command line as they are."""
    return {"episodes": args.episodes, "seed": args.seed, "temperature": args.temperature,
            "deadline_ms": args.deadline_ms, "clock": args.clock, "rate_hz": args.rate_hz,
            "loop": args.loop, "interface": args.interface, "max_age_ms": args.max_age_ms,
            "robot_map": str(Path(args.robot_map).resolve()) if args.robot_map else "",
            "bag": str(bag) if bag else "", "link_in_draft": args.link_in_draft,
            "recorder_nice": args.recorder_nice, "models": str(Path(args.models).resolve()),
            "topology": str(Path(args.topology).resolve()) if args.topology else ""}
