"""Federated training behind the seam (``families.base``): the early-exit net trained over a
topology's clients with Flower (``serving_rate``: exit losses and aggregation weighted by
how each client's requests are served; ``fedavg``), or the baselines (``central``,
``local``). It has no modes of its own: its nets run as the early-exit family's
(``eval --modes early_exit --early-exit DIR``). The topology's ``federated`` block gives the
clients' data shares and serving rates."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from hybrid_policy.errors import HybridPolicyError
from hybrid_policy.families.base import Family

log = logging.getLogger("hybrid_policy")


class Federated(Family):
    name = "federated"
    blocks = ("federated",)
    summary = "federated training of the early-exit net"

    def check_topology(self, topo) -> None:
        from hybrid_policy.families.federated.clients import parse_block

        parse_block(topo)

    def commands(self, sub: Any) -> None:
        from hybrid_policy.arguments import positive_int

        p = sub.add_parser("fl-train", help="federated training of the early-exit net (Flower)",
                           description="Train the early-exit net over the clients of --topology "
                           "(its robots; the topology's federated block: data shares, serving "
                           "rates): serving_rate (exit losses and aggregation weighted by how each "
                           "client's requests are served) or fedavg through Flower's simulation "
                           "engine, or the baselines central (pooled data) and local (each client "
                           "alone). Writes OUT/early_exit (for eval --early-exit), "
                           "OUT/rounds.jsonl (loss per exit per client per round) and "
                           "OUT/summary.json; docs/families/federated.md.")
        p.add_argument("--topology", required=True, help="topology with a federated block "
                       "(config/federated.yaml)")
        p.add_argument("--method", required=True, choices=("serving_rate", "fedavg", "central",
                                                           "local"))
        p.add_argument("--rounds", type=positive_int, default=20, help="rounds (default 20); a "
                       "round is one pass over each client's data")
        p.add_argument("--out", required=True, help="run directory to write")
        p.add_argument("--seed", type=int, default=0, help="seed of the init, partition and "
                       "evaluation (default 0)")
        p.add_argument("--models", default="models", help="root of the task's default "
                       "demonstrations and tokenizer (made if missing; default models)")
        p.add_argument("--data", help="demonstrations the clients' shares come from (default: the "
                       "task's, under --models)")
        p.add_argument("--tokenizer", help="the task's action tokenizer (default: under --models)")
        p.add_argument("--superlink", help="HOST:PORT of a Flower SuperLink: run under the "
                       "deployment engine (SuperNodes started with --node-config "
                       "\"client='<robot>'\") instead of the simulation engine")
        p.add_argument("--serving-log", help="measured serving rates: the JSON of `eval --topology "
                       "F --modes early_exit --json FILE` (default: the rates the topology declares)")
        p.add_argument("--serving-mode", default="early_exit", help="the mode in --serving-log to "
                       "read (default early_exit)")
        p.add_argument("--eval-episodes", type=int, default=20, help="closed-loop episodes per "
                       "client at its serving rates after training (default 20; 0: none)")
        p.add_argument("--fail", help="failure drill: CLIENT:ROUND makes that client raise in that "
                       "round (the round completes with the others)")
        p.set_defaults(func=cmd_fl_train)


def cmd_fl_train(args: argparse.Namespace) -> int:
    """Federated (or baseline) training of the early-exit net over a topology's clients."""
    import json
    from pathlib import Path

    from hybrid_policy.families.federated import train
    from hybrid_policy.text_table import text_table

    if args.eval_episodes < 0:
        raise HybridPolicyError(f"--eval-episodes must be >= 0, got {args.eval_episodes}")
    run, fed = train.prepare(args.topology, args.method, args.rounds, args.out, args.seed,
                             args.models, args.serving_log, args.serving_mode, args.fail or "",
                             args.data, args.tokenizer)
    rows = [("client", "data share", "requests", "serving rates (exits "
             + " ".join(str(e) for e in fed.exits) + ")", "region")]
    rows += [(c.name, f"{c.data_share:.2f}", f"{c.requests:.2f}",
              " ".join(f"{r:.2f}" for r in c.serving_rates), str(c.region)) for c in fed.clients]
    print(text_table(rows))
    summary = train.fl_train(run, args.superlink)
    log.info("trained %s in %.0f s; per-round log %s", args.method, summary["seconds"],
             Path(args.out) / "rounds.jsonl")
    if args.eval_episodes:
        result = train.evaluate(summary, fed, args.eval_episodes, args.seed)
        summary["evaluation"] = result
        (Path(args.out) / "summary.json").write_text(json.dumps(summary, indent=1))
        rows = [("client", "success at its serving rates", "episodes")]
        rows += [(name, f"{r['success']:.3f}", str(r["episodes"]))
                 for name, r in result["clients"].items()]
        rows.append(("mean (request-weighted)", f"{result['mean']:.3f}", ""))
        print(text_table(rows))
    for name, path in summary["checkpoints"].items():
        print(f"checkpoint ({name}): {path}")
    return 0


FAMILY = Federated()
