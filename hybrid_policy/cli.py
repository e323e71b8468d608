"""The ``hybrid-policy`` command: one entry point, one subcommand per job."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Callable, Sequence

from sim_envs import SimEnvError
from hybrid_policy.errors import HybridPolicyError

log = logging.getLogger("hybrid_policy")

USER_ERRORS: tuple[type[Exception], ...] = (SimEnvError, HybridPolicyError)


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


def cmd_train(args: argparse.Namespace) -> int:
    from pathlib import Path

    from sim_envs import task_spec
    from hybrid_policy.policies.build import ensure_tokenizer, load_task_data, train_role
    from hybrid_policy.policies.training import role_training

    task_spec(args.task)
    ds, data_file = load_task_data(args.data, args.task)
    out = Path(args.out)
    tok = ensure_tokenizer(Path(args.tokenizer) if args.tokenizer else out.parent / "tokenizer",
                           ds, data_file)
    path = train_role(out, args.role, ds, data_file, tok, role_training(args.role, args.epochs))
    log.info("wrote %s", path)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch

    from sim_envs import task_spec
    from hybrid_policy.core import evaluator
    from hybrid_policy.core.modes import make_mode, parse_modes
    from hybrid_policy.policies import check_pair, load_policy
    from hybrid_policy.policies.build import ensure_default_models

    task_spec(args.task)
    names = parse_modes(args.modes)
    torch.set_num_threads(1)  # batch-1 inference: threads only add overhead
    draft_path, target_path = args.draft, args.target
    if draft_path is None or target_path is None:
        models = ensure_default_models(args.task, Path(args.models))
        draft_path = draft_path or models.draft
        target_path = target_path or models.target
    draft = load_policy(draft_path, role="draft", task=args.task)
    target = load_policy(target_path, role="target", task=args.task)
    check_pair(draft, target)
    modes = [make_mode(n, draft, target) for n in names]
    results = evaluator.evaluate(args.task, modes, args.episodes, args.seed)
    doc = evaluator.report(args.task, results, {
        "seed": args.seed, "draft": str(draft_path), "target": str(target_path)})
    print(evaluator.format_table(doc))
    if args.json:
        evaluator.write_json(doc, args.json)
        log.info("wrote %s", args.json)
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

    p = sub.add_parser("train", help="train a draft or target policy on demonstrations",
                       description="Fit the task's action tokenizer (once: reused if it exists "
                       "at --tokenizer, default OUT/../tokenizer) and train one policy. Writes "
                       "OUT/model.safetensors and OUT/config.json.")
    p.add_argument("--task", required=True, help="task name (see `hybrid-policy tasks`)")
    p.add_argument("--role", required=True, choices=("draft", "target"))
    p.add_argument("--data", required=True, help="data set file or directory (from `demos`)")
    p.add_argument("--out", required=True, help="checkpoint directory to write")
    p.add_argument("--tokenizer", help="tokenizer checkpoint directory (default OUT/../tokenizer)")
    p.add_argument("--epochs", type=_positive_int, help="override the role's epoch count")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="closed-loop evaluation of inference modes (no ROS)",
                       description="Run each mode on the same seeded episodes in process and "
                       "print success rates. Without --draft/--target, default models under "
                       "--models/<task> are used, trained first if missing or stale.")
    p.add_argument("--task", required=True, help="task name (see `hybrid-policy tasks`)")
    p.add_argument("--modes", default="all", help="comma-separated modes, or 'all' (default)")
    p.add_argument("--episodes", type=_positive_int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--draft", help="draft checkpoint directory")
    p.add_argument("--target", help="target checkpoint directory")
    p.add_argument("--models", default="models", help="root of the default models (default models/)")
    p.add_argument("--json", help="write the results as JSON to this file")
    p.set_defaults(func=cmd_eval)
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
