"""The placement policies on a request trace: many periods in seconds of CPU, no simulator.

Each period every robot sends its control steps' requests (its activity, drawn per period
from the run's seed, scales how many) from the task and cell the workload's shifts put it
in; each is served by ``IdnNetwork.serve`` under the allocation in force, a newly loaded
model counting only from when its loading ends; the gain, success and latency of a
request are its option's (the catalogue's closed-loop success, the expected latency).
At the period's end the placer sees the period's counts and decides the next allocation.
The closed-loop counterpart is the fleet's ``idn`` run (``core.fleet``), which takes the
same decisions with the robots in MuJoCo.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from hybrid_policy.families.idn.idn import Holdings, IdnNetwork, Option
from hybrid_policy.families.idn.setup import where_at


@dataclass(frozen=True)
class PeriodRecord:
    period: int
    start_s: float
    requests: int
    gain: float  # mean over the period's requests
    success: float
    latency_ms: float
    loads: int  # models loaded at the period's start
    load_ms: float
    off_robot: float  # share of requests served away from the robot


def served(net: IdnNetwork, holdings: Holdings, robot: str, where, t0: float, t1: float,
           local_only: bool) -> list[tuple[float, Option]]:
    """The options serving a robot's requests spread evenly over ``[t0, t1)`` ms: one per
    stretch between loads finishing, with its share of the period."""
    cuts = sorted({t0, t1, *(t for t in holdings.ready_ms if t0 < t < t1)})
    out = []
    for a, b in zip(cuts, cuts[1:]):
        out.append(((b - a) / (t1 - t0),
                    net.serve(holdings.available(a), robot, where, local_only)))
    return out


def simulate(net: IdnNetwork, placer, periods: int, steps_per_period: dict[str, float],
             seed: int, activity: tuple[float, float] = (0.6, 1.0)) -> list[PeriodRecord]:
    rng = np.random.default_rng([seed, 0x7ACE])
    holdings = Holdings(net)
    period_ms = net.cfg.period_ms
    out = []
    loads = holdings.apply(placer.decide(Counter()), 0.0)
    load_ms = sum(net.cfg.load_ms(net.slots[s][1].params) for s in loads)
    for p in range(periods):
        t0 = p * period_ms
        where = where_at(net, net.cfg.shifts, t0 / 1e3)
        counts: Counter = Counter()
        total = gain = success = latency = off = 0.0
        for robot, w in where.items():
            n = int(round(steps_per_period[robot] * rng.uniform(*activity)))
            if n == 0:
                continue
            counts[(robot, w.task, w.access)] += n
            for share, o in served(net, holdings, robot, w, t0, t0 + period_ms,
                                   placer.local_only):
                k = n * share
                total += k
                gain += k * o.gain
                success += k * o.variant.success
                latency += k * o.latency_ms
                off += k * (o.node != robot)
        out.append(PeriodRecord(p, t0 / 1e3, int(total), gain / total, success / total,
                                latency / total, len(loads), load_ms, off / total))
        loads = holdings.apply(placer.decide(counts), t0 + period_ms)
        load_ms = sum(net.cfg.load_ms(net.slots[s][1].params) for s in loads)
    return out


def caught_up(series: dict[str, list[PeriodRecord]], mode: str, rivals: tuple[str, ...],
              start: int, end: int, window: int = 3) -> int | None:
    """Periods after ``start`` until ``mode``'s gain, averaged over ``window`` periods, is at
    least every rival's for the rest of ``[start, end)``; None if it never is."""
    def avg(name: str, p: int) -> float:
        rows = series[name][p:p + window]
        return float(np.mean([r.gain for r in rows]))

    for p in range(start, end - window + 1):
        if all(avg(mode, q) >= max(avg(r, q) for r in rivals) - 1e-12
               for q in range(p, end - window + 1)):
            return p - start
    return None
