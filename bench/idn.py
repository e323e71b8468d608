"""The inference delivery network's placement policies as the workload moves: INFIDA
(``idn``) against a static allocation optimal for the run's average mix, greedy (most
requested first), cloud only and robot only.

Two parts, both on ``--topology`` (default config/idn.yaml: robots in two cells under a
regional node and the cloud; two tasks; the robots switch task, the busy cell moves, they
switch back) and each task's measured catalogue:

1. **Trace** (``core.idn_sim``): ``--phase-periods`` periods per phase of the topology's
   shifts (its ``at_s`` times are rescaled to phases of equal length), every robot sending
   its control steps' requests, its activity drawn per period; per seed, every mode sees
   the same requests. Time-averaged gain, success and latency, models loaded, and after
   each shift how many periods ``idn`` takes until its gain (averaged over 3 periods) stays
   at least greedy's and static's for the rest of the phase. The plot: gain per period,
   median over seeds with the [min, max] band, the shifts marked.
2. **Closed loop** (``core.fleet``, the robots in MuJoCo): every mode for ``--episodes``
   episodes per robot and seed, the shifts moved to phases of ``--closed-phase-s`` seconds
   (0: as the topology has them): success, latency, gain per step, loads.

Median [min, max] over ``--seeds``.

    .venv/bin/python bench/idn.py --json docs/idn_bench.json --plot docs/img/idn.png
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import asdict, replace

import numpy as np
import torch

from seed_spread import spread  # bench/: run as a script

log = logging.getLogger("bench.idn")
RIVALS = ("idn_static", "idn_greedy")


def rescaled(cfg, phase_s: float):
    """``cfg`` with its shifts moved so that every phase lasts ``phase_s`` seconds."""
    times = sorted({s.at_s for s in cfg.shifts})
    at = {t: (i + 1) * phase_s for i, t in enumerate(times)}
    return replace(cfg, shifts=tuple(replace(s, at_s=at[s.at_s]) for s in cfg.shifts))


def trace(net, modes, seeds, phase_periods, window):
    """Per seed and mode the period records, and per seed and shift idn's catch-up."""
    from hybrid_policy.families.idn import setup as idn_setup
    from hybrid_policy.families.idn import sim as idn_sim

    period_s = net.cfg.period_ms / 1e3
    phases = len({s.at_s for s in net.cfg.shifts}) + 1
    net = type(net)(net.topology, net.catalogue, rescaled(net.cfg, phase_periods * period_s))
    periods = phase_periods * phases
    sps = idn_setup.steps_per_s(net.topology)
    per_period = {r: v * period_s for r, v in sps.items()}
    runs, catch = {}, []
    starts = list(range(0, periods + 1, phase_periods))
    for seed in seeds:
        runs[seed] = {m: idn_sim.simulate(
            net, idn_setup.placer_for(m, net, seed, sps, periods * period_s), periods,
            per_period, seed) for m in modes}
        catch.append([idn_sim.caught_up(runs[seed], "idn", RIVALS, a, b, window)
                      for a, b in zip(starts, starts[1:])])
    return runs, catch, starts


def closed_loop(topo, cfg, catalogue, models, modes, seeds, episodes):
    from hybrid_policy.families.idn import setup as idn_setup

    out = {m: [] for m in modes}
    for seed in seeds:
        for m in modes:
            t0 = time.time()
            run = idn_setup.fleet_run(m, topo, cfg, catalogue, models, episodes, seed,
                                      progress=False)
            s, p = run.total().summary(), idn_setup.placement_summary(run)
            out[m].append({"seed": seed, "success": s["success_rate"],
                           "latency_ms_mean": s["latency_ms_mean"],
                           "latency_ms_p95": s["latency_ms_p95"],
                           "gain_per_step": p["gain_per_step"], "loads": p["loads"],
                           "load_ms": p["load_ms"], "refused": p["refused"],
                           "fallbacks_per_step": p["fallbacks"] / max(s["steps"], 1),
                           "served": p["served"], "simulated_s": run.simulated_s,
                           "gain_by_phase": phase_gains(run, cfg)})
            log.info("closed loop %s seed %d: success %.3f, gain/step %.3f (%.0f s)", m, seed,
                     s["success_rate"], p["gain_per_step"], time.time() - t0)
    return out


def phase_gains(run, cfg) -> list[float]:
    """A closed-loop run's gain per step in each phase of its shifts (from its periods)."""
    cuts = sorted({0.0, *(s.at_s for s in cfg.shifts), float("inf")})
    out = []
    for a, b in zip(cuts, cuts[1:]):
        rows = [p for p in run.extra["periods"] if a <= p["t_s"] < b]
        steps = sum(p.get("steps", 0) for p in rows)
        out.append(sum(p.get("gain", 0.0) for p in rows) / steps if steps else float("nan"))
    return out


def plot(runs, starts, modes, path, period_s):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.2))
    for m in modes:
        g = np.array([[r.gain for r in runs[s][m]] for s in runs])
        t = np.arange(g.shape[1]) * period_s
        ax.plot(t, np.median(g, 0), label=m, lw=1.4)
        ax.fill_between(t, g.min(0), g.max(0), alpha=0.15)
    for s in starts[1:-1]:
        ax.axvline(s * period_s, color="k", ls="--", lw=0.8)
    ax.set_xlabel("simulated time (s); dashed: workload shifts")
    ax.set_ylabel("gain per request (success − λ·latency)")
    ax.set_title("Placement as the workload moves (median over seeds, band: min–max)")
    ax.legend(ncol=2, fontsize=8, loc="center right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--topology", default="config/idn.yaml")
    parser.add_argument("--models", default="models")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--phase-periods", type=int, default=40)
    parser.add_argument("--window", type=int, default=3, help="catch-up: periods averaged")
    parser.add_argument("--episodes", type=int, default=200, help="closed loop, per robot")
    parser.add_argument("--closed-phase-s", type=float, default=40.0,
                        help="closed loop: seconds per phase (0: the topology's shifts)")
    parser.add_argument("--catalogue-episodes", type=int, default=20)
    parser.add_argument("--no-closed-loop", action="store_true")
    parser.add_argument("--json")
    parser.add_argument("--plot")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(1)

    from hybrid_policy.core import topology
    from hybrid_policy.families.idn import idn
    from hybrid_policy.families.idn import setup as idn_setup

    doc_in = topology.read(args.topology)
    topo = topology.parse(doc_in, args.topology)
    cfg = idn.config_of(topo, doc_in)
    catalogue = idn_setup.catalogue_for(topo, cfg, args.models, args.catalogue_episodes)
    net = idn.IdnNetwork(topo, catalogue, cfg)
    seeds = [int(s) for s in args.seeds.split(",")]
    modes = tuple(idn.PLACERS)
    t0 = time.time()
    runs, catch, starts = trace(net, modes, seeds, args.phase_periods, args.window)
    log.info("trace: %d periods x %d modes x %d seeds in %.1f s", starts[-1], len(modes),
             len(seeds), time.time() - t0)

    print(f"\nTrace: {starts[-1]} periods of {cfg.period_ms:g} ms, shifts at periods "
          f"{starts[1:-1]}, seeds {seeds}; median [min, max] over seeds of the run's mean")
    print(f"{'mode':12s} {'gain':24s} {'success':24s} {'latency ms':24s} loads")
    summary = {}
    for m in modes:
        rows = [[r for r in runs[s][m]] for s in seeds]
        g = [np.mean([r.gain for r in x]) for x in rows]
        su = [np.mean([r.success for r in x]) for x in rows]
        la = [np.mean([r.latency_ms for r in x]) for x in rows]
        lo = [sum(r.loads for r in x) for x in rows]
        summary[m] = {"gain": g, "success": su, "latency_ms": la, "loads": lo}
        print(f"{m:12s} {spread(g):24s} {spread(su):24s} {spread(la):24s} {spread(lo)}")
    print("\nidn: periods after each phase start until its gain (mean of "
          f"{args.window}) stays >= {' and '.join(RIVALS)}'s to the phase's end, per seed:")
    for k, (a, b) in enumerate(zip(starts, starts[1:])):
        print(f"  phase {k} (periods {a}-{b - 1}): {[c[k] for c in catch]}")
    for k, (a, b) in enumerate(zip(starts, starts[1:])):
        line = ", ".join(
            f"{m} {spread([np.mean([r.gain for r in runs[s][m][a:b]]) for s in seeds])}"
            for m in ("idn", *RIVALS))
        print(f"  phase {k} mean gain: {line}")

    closed = {}
    if not args.no_closed_loop:
        ccfg = rescaled(cfg, args.closed_phase_s) if args.closed_phase_s else cfg
        closed = closed_loop(topo, ccfg, catalogue, args.models, modes, seeds, args.episodes)
        print(f"\nClosed loop ({args.episodes} episodes per robot and seed, shifts at "
              f"{[s.at_s for s in ccfg.shifts]} s): median [min, max] over seeds")
        print(f"{'mode':12s} {'success':24s} {'gain/step':24s} {'latency p95 ms':24s} "
              f"{'fallbacks/step':24s} loads")
        for m in modes:
            c = closed[m]
            print(f"{m:12s} {spread([x['success'] for x in c]):24s} "
                  f"{spread([x['gain_per_step'] for x in c]):24s} "
                  f"{spread([x['latency_ms_p95'] for x in c]):24s} "
                  f"{spread([x['fallbacks_per_step'] for x in c]):24s} "
                  f"{spread([x['loads'] for x in c])}")
        print("closed loop: gain per step in each phase, median over seeds")
        for m in modes:
            g = np.array([x["gain_by_phase"] for x in closed[m]], float)
            print(f"  {m:12s} " + "  ".join(f"{v:.3f}" for v in np.nanmedian(g, 0)))
    if args.plot:
        plot(runs, starts, modes, args.plot, cfg.period_ms / 1e3)
        log.info("wrote %s", args.plot)
    if args.json:
        doc = {"topology": args.topology, "idn": asdict(cfg), "seeds": seeds,
               "catalogue": catalogue.to_json()["variants"], "shift_periods": starts,
               "trace": {"summary": summary, "catch_up": catch,
                         "gain": {m: [[r.gain for r in runs[s][m]] for s in seeds]
                                  for m in modes}},
               "closed_loop": closed}
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=1, default=float)
        log.info("wrote %s", args.json)


if __name__ == "__main__":
    main()
