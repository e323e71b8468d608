"""The placement modes in a fleet (``core.fleet``): every ``period_ms`` the placer decides
what each node holds from the requests of the period just ended (loading takes time,
``Holdings``); each tick the robot's plan names the node and variant that serve it now
(``serve.IdnMode``), and the request crosses the links from the robot's current cell to
that node, queues and is answered by that variant (``serve.serve_variants``; a node that
dropped the variant meanwhile refuses it). The workload's shifts move robots between cells
at once and switch their task at their next episode."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any

import sim_envs
from hybrid_policy.core.fleet import FleetEvaluator, FleetRobot, FleetWork, Pending, StepRef
from hybrid_policy.core.plan import Mode, Plan
from hybrid_policy.core.protocol import Response
from hybrid_policy.core.topology import Robot
from hybrid_policy.families.idn.idn import Holdings, Where
from hybrid_policy.families.idn.serve import IdnMode, serve_variants


@dataclass
class IdnRun(FleetWork):
    """One placement mode's fleet run: the network, the placer, each node's store of models
    (robots' and compute nodes' alike) and the placement every robot's mode reads."""

    mode: str
    network: Any  # idn.IdnNetwork
    placer: Any  # idn.PLACERS[mode]
    stores: dict[str, Any]  # node or robot name -> serve.NodeStore
    placement: Any  # serve.Placement
    holdings: Any = None  # idn.Holdings (made by the run)
    stats: Counter = field(default_factory=Counter)
    periods: list = field(default_factory=list)  # per period: demand, loads, held, steps, gain

    def mode_for(self, spec: Robot) -> Mode:
        return IdnMode(self.mode, spec.name, Where(spec.task, spec.access), self.placement,
                       self.stores[spec.name], self.placer.local_only)

    def batch_ms(self, fleet: FleetEvaluator, node: str, items: list[Pending]) -> float:
        """One operation: each variant's requests as one batch (+25% per extra window, as
        ``rocoin.setup.StudentModels.service_ms``)."""
        speed = fleet.topology.nodes[node].speed
        sizes = Counter(p.plan.variant for p in items)
        cat = {v.key: v for v in self.network.catalogue.variants}
        return sum(cat[k].step_ms(speed) * (1 + 0.25 * (n - 1)) for k, n in sizes.items())

    def attach(self, fleet: FleetEvaluator) -> dict:
        """One queue per compute node; the first allocation now, the next at every period's
        end; the shifts at their times."""
        servers = {name: fleet.batch_server(
                       name, lambda items, n=name: self.batch_ms(fleet, n, items),
                       lambda items, n=name: self.serve(fleet, n, items),
                       lambda *a: self._served(fleet, *a))
                   for name in fleet.topology.nodes}
        self.holdings = Holdings(self.network)
        for v in self.network.catalogue.variants:  # the repository holds every variant
            self.stores[self.network.repository].load(v)
        self.where = self.network.start()
        self.period_counts: Counter = Counter()
        self._place(fleet, self.placer.decide(Counter()), Counter())
        fleet.clock.at(self.network.cfg.period_ms, lambda: self._period(fleet))
        for s in self.network.cfg.shifts:
            fleet.clock.at(s.at_s * 1e3, lambda s=s: self._shift(s))
        return servers

    def _place(self, fleet: FleetEvaluator, x, counts: Counter) -> None:
        net, now = self.network, fleet.clock.now
        loads = self.holdings.apply(x, now)
        self.stats["loads"] += len(loads)
        held = self.holdings.held()
        for name, store in self.stores.items():
            if name == net.repository:
                continue
            keep = set(held.get(name, ()))
            for key in list(store.held):
                if key not in keep:
                    store.unload(key)
            for key in keep - set(store.held):
                store.load(next(v for v in net.catalogue.variants if v.key == key))
        self._close_period()
        self.periods.append({"t_s": now / 1e3, "demand": sum(counts.values()),
                             "loads": len(loads), "held": held, "steps": 0, "gain": 0.0})

    def _close_period(self) -> None:
        """The period that ends now: its steps and their summed gain."""
        if self.periods:
            last = self.periods[-1]
            last["steps"] = self.stats["steps"] - self.steps_before
            last["gain"] = self.stats["gain_sum"] - self.gain_before
        self.steps_before = self.stats["steps"]
        self.gain_before = self.stats["gain_sum"]

    def _period(self, fleet: FleetEvaluator) -> None:
        if fleet.done:
            return
        counts, self.period_counts = self.period_counts, Counter()
        self._place(fleet, self.placer.decide(counts), counts)
        fleet.clock.at(fleet.clock.now + self.network.cfg.period_ms, lambda: self._period(fleet))

    def _shift(self, s) -> None:
        for name in s.robots:
            w = self.where[name]
            self.where[name] = Where(s.task or w.task, s.access or w.access)

    def begin_episode(self, fleet: FleetEvaluator, r: FleetRobot) -> None:
        """A shift switched the robot's task: from this episode on."""
        if self.where[r.spec.name].task == r.spec.task:
            return
        r.env.close()
        r.spec = replace(r.spec, task=self.where[r.spec.name].task)
        r.env, r.mode = sim_envs.make_task(r.spec.task), self.mode_for(r.spec)
        r.period_ms = sim_envs.task_spec(r.spec.task).control_period_ms
        fleet.controls(r)

    def tick(self, fleet: FleetEvaluator, r: FleetRobot, ref: StepRef, since_ms: float) -> None:
        """A placement step. Its demand is the control periods since the robot's last tick:
        a robot kept waiting by a far node still needs an answer every period, and counting
        only the requests it managed to send would hide exactly the robots served worst."""
        periods = max(1, round(since_ms / r.period_ms)) if r.step else 1
        name = r.spec.name
        w = self.where[name]
        r.mode.where.access = w.access  # a move takes effect at once
        self.placement.available = self.holdings.available(fleet.clock.now)
        self.period_counts[(name, r.spec.task, w.access)] += periods
        plan = r.mode.plan(r.obs, r.rng)
        opt = r.mode.last
        self.stats[f"served_{'robot' if opt.node == name else opt.node}"] += 1
        if plan.request is None:
            fleet.resolve(r, ref, plan, None, opt.variant.step_ms(self.network.speed(name)),
                          False)
            return
        links = fleet.topology.links_between(self.network.robot_at(name, w.access), opt.node)
        fleet.send(Pending(r, ref, plan, 0.0, fleet.clock.now, plan.request), links, opt.node)

    def hop(self, p: Pending, i: int) -> int:
        return i

    def serve(self, fleet: FleetEvaluator, node: str, batch: list[Pending]) -> list:
        for p in batch:
            p.server_op = True
        return serve_variants(self.stores[node], [(p.plan.variant, p.request) for p in batch])

    def _served(self, fleet: FleetEvaluator, p: Pending, answer, waited_ms: float,
                service_ms: float) -> None:
        if not isinstance(answer, Response):
            self.stats["refused"] += 1  # the node dropped the variant meanwhile
            return
        fleet.served(p, answer, waited_ms, service_ms)

    def resolved(self, fleet: FleetEvaluator, r: FleetRobot, plan: Plan,
                 response: Response | None, latency_ms: float) -> None:
        """The step's gain: the success of the variant that acted minus λ·latency."""
        cat = {v.key: v for v in self.network.catalogue.variants}
        if response is not None or plan.request is None:
            success = cat[plan.variant].success
        else:
            own = r.mode.own()
            success = own.success if own is not None else 0.0
            self.stats["fallbacks"] += 1
        self.stats["steps"] += 1
        self.stats["gain_sum"] += success - self.network.cfg.latency_weight * latency_ms

    def summary(self, fleet: FleetEvaluator, servers: dict) -> dict:
        """The placement's counts; servers that served nothing are dropped."""
        self._close_period()
        for name in [n for n, s in servers.items() if not s["requests"]]:
            del servers[name]
        return {**self.stats, "load_ms": self.holdings.load_ms, "periods": self.periods}
