"""The ``hybrid-policy`` command: one entry point, one subcommand per job."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Callable, Sequence

from sim_envs import SimEnvError

log = logging.getLogger("hybrid_policy")

USER_ERRORS: tuple[type[Exception], ...] = (SimEnvError,)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer (1 or more), got {value}")
    return value


def cmd_tasks(args: argparse.Namespace) -> int:
    from sim_envs import task_names, task_spec

    rows = [("name", "obs", "act", "steps", "level", "source", "description")]
    for name in task_names():
        s = task_spec(name)
        rows.append((s.name, str(s.obs_dim), str(s.action_dim), str(s.max_steps),
                     str(s.difficulty), s.source, s.description))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    return 0


def cmd_demos(args: argparse.Namespace) -> int:
    from sim_envs import dataset, task_spec
    from sim_envs.collect import collect_demos

    task_spec(args.task)  # unknown task: fail before touching the disk
    dataset.check_out_dir(args.out, args.task, args.overwrite)
    ds = collect_demos(args.task, args.episodes, args.seed)
    path = dataset.write_to_dir(ds, args.out, args.overwrite)
    log.info("wrote %s: %d episodes (%d dropped), %d steps", path, ds.num_episodes,
             len(ds.meta["dropped_seeds"]), ds.num_steps)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hybrid-policy",
        description="Cooperative draft/target inference of BC robot policies over ROS 2.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("tasks", help="list the manipulation tasks",
                       description="List the registered MuJoCo manipulation tasks with their "
                       "observation size, action size, episode length and difficulty.")
    p.set_defaults(func=cmd_tasks)

    p = sub.add_parser("demos", help="generate expert demonstrations for a task",
                       description="Roll the task's scripted expert for N seeded episodes, keep "
                       "the successful ones and write DIR/<task>.demos.npz. The same seed gives "
                       "the same bytes.")
    p.add_argument("--task", required=True, help="task name (see `hybrid-policy tasks`)")
    p.add_argument("--episodes", type=_positive_int, required=True, help="episodes to roll")
    p.add_argument("--out", required=True, help="output directory (one task per directory)")
    p.add_argument("--seed", type=int, default=0, help="seed of the episode seeds (default 0)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace another task's data set found in the output directory")
    p.set_defaults(func=cmd_demos)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
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
