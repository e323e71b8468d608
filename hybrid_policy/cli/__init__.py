"""The ``hybrid-policy`` command: one entry point, one subcommand per job.

One module per command group: ``data`` (tasks, demonstrations, training, a fleet's file),
``evaluate`` (``eval``, in process), ``ros`` (``bringup`` and ``analyze``); each family adds
its own commands (``Family.commands``: ``calibrate``, ``exit-plan``, ``fl-train``) and its
options to ``eval`` and ``bringup`` (``Family.add_arguments``)."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Callable, Sequence

from sim_envs import SimEnvError
from hybrid_policy.cli import data, evaluate, ros
from hybrid_policy.errors import HybridPolicyError
from hybrid_policy.families import registry

log = logging.getLogger("hybrid_policy")

USER_ERRORS: tuple[type[Exception], ...] = (SimEnvError, HybridPolicyError)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hybrid-policy",
        description="Cooperative draft/target inference of BC robot policies over ROS 2.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    data.add_commands(sub)
    evaluate.add_command(sub)
    ros.add_commands(sub)
    for family in registry.families():
        family.commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        args = build_parser().parse_args(argv)
    except USER_ERRORS as exc:  # a family that cannot be loaded (HYBRID_POLICY_FAMILIES)
        log.error("%s", exc)
        return 2
    if args.verbose:
        logging.getLogger().setLevel(logging.DEBUG)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except USER_ERRORS as exc:
        log.error("%s", exc)
        return 2
    except KeyboardInterrupt:
        log.error("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
