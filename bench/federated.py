"""Federated training of the early-exit net: serving_rate against fedavg, central and local,
with uneven serving rates and uneven, non-IID data (``--topology``, default
config/federated.yaml: three robots, the one behind the slowest link holding the least data
and served mostly by its own exit).

For each seed (``--seeds``) every method trains from the same initial net for ``--rounds``
rounds (``hybrid_policy.families.federated.train``; Flower's simulation engine for the federated
two) and is evaluated in closed loop: each client on ``--episodes`` scenes of its own region,
every step served by an exit drawn from its serving rates. Prints, per method, each client's
success and the request-weighted mean (median [min, max] over seeds), the training time, and
serving_rate's paired difference to fedavg per seed.

    .venv/bin/python bench/federated.py --json docs/federated_bench.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path

import numpy as np

from seed_spread import spread  # bench/: run as a script

log = logging.getLogger("bench.federated")
METHODS = ("serving_rate", "fedavg", "central", "local")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--topology", default="config/federated.yaml")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--local-epochs", type=int, help="override the topology's local_epochs")
    ap.add_argument("--episodes", type=int, default=30, help="evaluation episodes per client")
    ap.add_argument("--out", default="runs/bench_federated")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("TQDM_DISABLE", "1")

    from hybrid_policy.families.federated import train
    from hybrid_policy.text_table import text_table

    topology = args.topology
    if args.local_epochs:  # a copy of the topology with the override, beside the runs
        import yaml

        doc = yaml.safe_load(Path(topology).read_text())
        doc["federated"]["local_epochs"] = args.local_epochs
        topology = Path(args.out) / Path(topology).name
        topology.parent.mkdir(parents=True, exist_ok=True)
        topology.write_text(yaml.safe_dump(doc, sort_keys=False))
    seeds = [int(s) for s in args.seeds.split(",")]
    methods = args.methods.split(",")
    results: dict[str, list[dict]] = {m: [] for m in methods}
    start = time.monotonic()
    fed = None
    for seed in seeds:
        for method in methods:
            out = Path(args.out) / f"seed{seed}" / method
            run, fed = train.prepare(str(topology), method, args.rounds, str(out), seed)
            summary = train.fl_train(run)
            t = time.monotonic()
            ev = train.evaluate(summary, fed, args.episodes, seed)
            results[method].append({"seed": seed, "train_s": summary["seconds"],
                                    "eval_s": round(time.monotonic() - t, 1), **ev})
            log.info("seed %d %s: trained in %.0f s, mean success %.3f (%s)", seed, method,
                     summary["seconds"], ev["mean"], ", ".join(
                         f"{k} {v['success']:.2f}" for k, v in ev["clients"].items()))
    names = [c.name for c in fed.clients]
    rows = [("method", *names, "mean (request-weighted)", "train s")]
    for m in methods:
        rs = results[m]
        rows.append((m, *(spread([r["clients"][n]["success"] for r in rs]) for n in names),
                     spread([r["mean"] for r in rs]),
                     f"{np.median([r['train_s'] for r in rs]):.0f}"))
    print(f"\nclosed-loop success at each client's serving rates; {len(seeds)} seeds, "
          f"{args.episodes} episodes per client, {args.rounds} rounds of {fed.local_epochs} "
          f"local epoch(s); median [min, max]")
    print(text_table(rows))
    rates = {c.name: c.serving_rates for c in fed.clients}
    print("serving rates (exits " + ", ".join(map(str, fed.exits)) + "): " + "; ".join(
        f"{n} {' '.join(f'{r:.2f}' for r in rates[n])}" for n in names))
    if "serving_rate" in results and "fedavg" in results:
        diff = [[a["clients"][n]["success"] - b["clients"][n]["success"] for n in names]
                + [a["mean"] - b["mean"]]
                for a, b in zip(results["serving_rate"], results["fedavg"])]
        rows = [("seed", *names, "mean")]
        rows += [(str(s), *(f"{x:+.3f}" for x in d)) for s, d in zip(seeds, diff)]
        print("\nserving_rate − fedavg (paired, same seed)")
        print(text_table(rows))
    total = time.monotonic() - start
    train_s = sum(r["train_s"] for rs in results.values() for r in rs)
    print(f"\ntraining {train_s:.0f} s of {total:.0f} s in all")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results,
                                               "serving_rates": rates}, indent=1))


if __name__ == "__main__":
    main()
