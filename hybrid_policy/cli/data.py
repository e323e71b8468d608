"""Commands on the inputs of a run: the tasks, demonstrations, training, a fleet's file."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from hybrid_policy.arguments import positive_int

log = logging.getLogger("hybrid_policy")


def add_commands(sub: Any) -> None:
    p = sub.add_parser("tasks", help="list the manipulation tasks",
                       description="List the registered MuJoCo manipulation tasks with their "
                       "observation size, action size, episode length and difficulty.")
    p.set_defaults(func=cmd_tasks)

    p = sub.add_parser("demos", help="generate expert demonstrations for a task",
                       description="Roll the task's scripted expert for N seeded episodes, keep "
                       "the successful ones and write DIR/<task>.demos.npz. The same seed gives "
                       "the same bytes.")
    p.add_argument("--task", required=True, help="task name (see `hybrid-policy tasks`)")
    p.add_argument("--episodes", type=positive_int, required=True, help="episodes to roll")
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
    p.add_argument("--epochs", type=positive_int, help="override the role's epoch count")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("topology", help="show a fleet topology (robots, compute nodes, links)",
                       description="Validate a fleet topology file and print its compute "
                       "nodes and robots as tables, each robot with its route to its server.")
    p.add_argument("action", choices=("show",), help="what to do with the file")
    p.add_argument("file", help="topology YAML (e.g. config/fleet.yaml)")
    p.set_defaults(func=cmd_topology)


def cmd_topology(args: argparse.Namespace) -> int:
    from hybrid_policy.core import topology
    from hybrid_policy.families import registry

    print(topology.table(registry.load_topology(args.file)))
    return 0


def cmd_tasks(args: argparse.Namespace) -> int:
    from sim_envs import task_names, task_spec
    from hybrid_policy.text_table import text_table

    rows = [("name", "obs", "act", "steps", "level", "source", "description")]
    for name in task_names():
        s = task_spec(name)
        rows.append((s.name, str(s.obs_dim), str(s.action_dim), str(s.max_steps),
                     str(s.difficulty), s.source, s.description))
    print(text_table(rows, left=len(rows[0])))
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
    ds, record = load_task_data(args.data, args.task)
    out = Path(args.out)
    tok = ensure_tokenizer(Path(args.tokenizer) if args.tokenizer else out.parent / "tokenizer",
                           ds, record)
    path = train_role(out, args.role, ds, record, tok, role_training(args.role, args.epochs))
    log.info("wrote %s", path)
    return 0
