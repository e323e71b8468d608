"""In-process fleet evaluation: N robots, each in its own MuJoCo episode, sharing servers
that queue and batch, all advanced by one discrete-event clock in simulated time.

Each robot acts at control ticks (its task's control period). Robots do not share a clock:
robot 0 starts at 0 and each other robot at a phase drawn uniformly within its first period
from the run's seed (``phases="random"``); ``phases="even"`` spaces them evenly instead, an
idealised fleet whose requests never collide while the server keeps up. A tick runs the
mode's ``plan`` (the same call the single-robot evaluator and the ROS draft node make); a
request crosses the robot's route hop by hop (``core.link``, each hop with the request's
own packet randomness, ``link.packet_rng(seed, hop)``, which the ROS link node of that hop
draws too), waits in its server's FIFO, is verified in a batch (``server.serve_batch``;
time from the measured batch curve, ``ComputeModel.target_batch``), and its answer crosses
the route back. An answer not back within ``deadline_ms`` of sending is a fallback, as in
``evaluator``; a server drops a request whose deadline passed while it queued (no server
operation for it). The robot executes its action once it has one, and its next tick is the
first control tick after that: a robot waiting on a busy server falls behind its clock,
which the step latency shows.

Early-exit modes (``core.early_exit``; ``ExitRun``): the robot's plan names the node its
feature goes to; every node on the way runs its part of the net in its queue and either
answers (the answer crosses every link back to the robot) or forwards the feature to the
next node its offloading draws; link ``i`` of the transfer that carries the feature after
layer ``L`` draws ``packet_rng(seed, early_exit.feature_hop(L, i))``.
``dto_ee`` re-optimises its thresholds and offloading every ``reoptimise_ms`` of simulated
time from the request rates the robots were observed to send.

Rocoin modes (``core.rocoin``; ``StudentRun``): a tick sends a copy of the window to every
device of the layout, each over the robot's link with its own packet randomness
(``rocoin.device_hop``); a device that the fault model fails drops it (crash: and everything
else for ``restart_ms``, its queue included) or answers ``slow_ms`` late (timeout). The step
resolves when every group's first answer is back, or falls back to the draft at the
deadline.

Placement modes (``core.idn``; ``IdnRun``): every ``period_ms`` the placer decides what each
node holds from the requests of the period just ended (loading takes time, ``Holdings``);
each tick the robot's plan names the node and variant that serve it now
(``idn_serve.IdnMode``), and the request crosses the links from the robot's current cell to
that node, queues and is answered by that variant (``idn_serve.serve_variants``; a node that
dropped the variant meanwhile refuses it). The workload's shifts move robots between cells
at once and switch their task at their next episode.

Real time (``control=realtime.Clock("realtime", loop=...)``): each robot ticks every
control period of its task whatever has arrived, with ``core.realtime``'s actuator and
rules, the single-robot evaluator's: a tick applies the newest command that arrived (or
holds still), steps the world and plans on the new observation while older steps are still
in flight. A step's command reaches the actuator at its tick plus its latency; one that
answers a past episode's state is recorded and never applied. The ``period`` loop's
deadline is its share of the period; ``draft_first`` sends the draft's action at once.

With one robot on a one-hop route this is exactly ``evaluator.evaluate``: the same plans,
verdicts, actions, latencies and successes (a test checks it). Robot ``i`` of ``N`` with
``E`` episodes runs the run's episodes ``i·E … i·E + E − 1`` (reset seeds and sampling
streams), so robot 0 of any fleet runs what ``eval`` runs.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
from tqdm import tqdm

import sim_envs
from sim_envs.collect import episode_seeds
from hybrid_policy.core.compute import ComputeModel
from hybrid_policy.core.evaluator import StepRecord, episode_rng, record, resolve_step
from hybrid_policy.core.events import BatchServer, Clock
from hybrid_policy.families.exits.early_exit import ExitPlan, feature_hop, serve_features
from hybrid_policy.core.link import LinkProfile, packet_rng
from hybrid_policy.families.adahi.modes import Mode, Plan
from hybrid_policy.core.protocol import FeatureRequest, Request, Response
from hybrid_policy.core.realtime import Actuator, Clock as ControlClock, tick_kind
from hybrid_policy.families.adahi.server import serve_batch
from hybrid_policy.core.stepmetrics import ModeResult, combine
from hybrid_policy.core.topology import Robot, Topology
from hybrid_policy.policies import Policy


PHASES = ("random", "even")  # robots' start within their first period (module doc)


@dataclass
class FleetResult:
    """One fleet run of one mode: per robot (eval's metrics) and per server."""

    mode: str
    robots: dict[str, ModeResult]
    servers: dict[str, dict[str, Any]]
    simulated_s: float
    placement: dict[str, Any] = field(default_factory=dict)  # placement modes' counts

    def total(self) -> ModeResult:
        """Every robot's steps and episodes as one result (the fleet as a whole)."""
        return combine(self.mode, list(self.robots.values()))


@dataclass
class ExitRun:
    """What an early-exit mode's fleet run needs besides the topology: the net, the plan
    (parts, thresholds, offloading), the parts' measured compute, and for ``dto_ee`` the
    online re-optimisation (called with each robot's observed request rate per ms)."""

    net: Any
    plan: ExitPlan
    compute: Any  # exit_calibration.ExitCompute
    reoptimise: Callable[[dict[str, float]], None] | None = None
    reoptimise_ms: float = 2000.0

    def robot_ms(self, robot: str, speed: float) -> float:
        end = self.plan.ends[robot]
        return self.compute.part_ms(0, end, 1, speed) if end else 0.0

    def batch_ms(self, node: str, speed: float, items: list) -> float:
        """One operation on ``items`` (features after various layers) at ``node``."""
        end = self.plan.ends[node]
        sizes = Counter(p.request.layer for p in items)
        return sum(self.compute.part_ms(layer, end, n, speed) for layer, n in sizes.items())


@dataclass
class StudentRun:
    """What a rocoin mode's fleet run needs besides the topology (``core.rocoin``): the
    layout, the students (``rocoin_setup.StudentModels``) and the faults."""

    layout: Any  # core.rocoin.Layout
    models: Any  # core.rocoin_setup.StudentModels
    faults: Any  # core.rocoin.FaultConfig


@dataclass
class IdnRun:
    """What a placement mode's fleet run needs besides the topology: the network, the
    placer, and each node's store of models (robots' and compute nodes' alike)."""

    network: Any  # core.idn.IdnNetwork
    placer: Any  # core.idn.PLACERS[mode]
    stores: dict[str, Any]  # node or robot name -> idn_serve.NodeStore
    placement: Any  # idn_serve.Placement: the view every robot's mode reads
    holdings: Any = None  # core.idn.Holdings (made by the run)
    stats: Counter = field(default_factory=Counter)
    periods: list = field(default_factory=list)  # per period: demand, loads, held, steps, gain

    def batch_ms(self, speed: float, items: list) -> float:
        """One operation: each variant's requests as one batch (+25% per extra window, as
        ``rocoin_setup.StudentModels.service_ms``)."""
        sizes = Counter(p.plan.variant for p in items)
        cat = {v.key: v for v in self.network.catalogue.variants}
        return sum(cat[k].step_ms(speed) * (1 + 0.25 * (n - 1)) for k, n in sizes.items())


@dataclass(frozen=True)
class _StepRef:
    """Which step a plan belongs to: in real time several are in flight, and one may resolve
    after its episode ended."""

    episode: int
    step: int
    tick_ms: float  # simulated time of the tick whose observation it planned on


@dataclass
class _Fanout:
    """One rocoin step: its copies travel to every device; the step resolves once every
    group answered (or at the deadline)."""

    robot: "_Robot"
    ref: _StepRef
    plan: Plan
    draft_ms: float
    gather: Any  # core.rocoin.Gather
    server_op: bool = False
    resolved: bool = False


@dataclass
class _Pending:
    robot: "_Robot"
    ref: _StepRef
    plan: Plan
    draft_ms: float  # the robot's compute before sending (part of the step's latency)
    sent_ms: float  # simulated time the request left the robot
    request: Request | FeatureRequest  # what travels now (a feature changes at each node)
    links: list[LinkProfile] = field(default_factory=list)  # crossed so far, in order
    link_rngs: list[np.random.Generator] = field(default_factory=list)  # one per link
    elapsed_ms: float = 0.0  # up + wait + service + down, summed in eval's order
    server_op: bool = False
    resolved: bool = False
    fanout: _Fanout | None = None  # rocoin: the step this copy belongs to
    device: int = -1  # rocoin: the device's index in the layout
    arrived_ms: float = 0.0  # rocoin: when it reached the device
    late_ms: float = 0.0  # rocoin: a timed-out device answers this much late


@dataclass
class _Robot:
    spec: Robot
    mode: Mode
    env: Any
    hops: tuple
    period_ms: float
    reset_seeds: list[int]
    first_episode: int  # index of its first episode in the run's sequence
    result: ModeResult
    episode: int = -1
    step: int = 0
    obs: np.ndarray | None = None
    rng: np.random.Generator | None = None
    tick_ms: float = 0.0  # time of the current step's tick
    actuator: Actuator | None = None  # real time: what the robot executes each tick
    deadline_ms: float = 0.0  # its verification deadline (real time: its loop's)


class FleetEvaluator:
    def __init__(self, topology: Topology, modes: Callable[[Robot], Mode],
                 targets: dict[str, Policy], compute: ComputeModel, deadline_ms: float,
                 episodes: int, seed: int,
                 on_step: Callable[[str, StepRecord], None] | None = None,
                 phases: str = "random", exits: ExitRun | None = None,
                 students: StudentRun | None = None, idn: IdnRun | None = None,
                 control: ControlClock = ControlClock()) -> None:
        if episodes < 1:
            raise ValueError(f"episodes must be a positive integer, got {episodes}")
        if phases not in PHASES:
            raise ValueError(f"phases {phases!r} is not one of {', '.join(PHASES)}")
        self.topology, self.targets, self.compute = topology, targets, compute
        self.deadline_ms, self.on_step, self.exits = deadline_ms, on_step, exits
        self.students, self.idn, self.modes = students, idn, modes
        self.clock, self.control = Clock(), control
        n = len(topology.robots)
        seeds = episode_seeds(seed, n * episodes, split="eval").tolist()
        self.seed = seed
        self.robots: list[_Robot] = []
        draws = np.random.default_rng([seed, 0xF1EE7]).random(n)
        for i, spec in enumerate(topology.robots):
            period = sim_envs.task_spec(spec.task).control_period_ms
            mode = modes(spec)
            robot = _Robot(spec, mode, sim_envs.make_task(spec.task), topology.route(spec),
                           period, seeds[i * episodes:(i + 1) * episodes], i * episodes,
                           ModeResult(mode.name))
            self._controls(robot)
            self.robots.append(robot)
            phase = i / n if phases == "even" else (draws[i] if i else 0.0)
            self.clock.at(phase * period, lambda r=robot: self._begin_episode(r, 0))
        expired = lambda p, now: now >= p.sent_ms + p.robot.deadline_ms  # noqa: E731
        if students is not None:
            self._student_servers(students, expired)
        elif idn is not None:
            self._idn_servers(idn, expired)
        elif exits is None:
            self.servers = {
                name: BatchServer(self.clock, node.max_batch, node.batch_window_ms,
                                  lambda items, s=node.speed: compute.target_batch(len(items), s),
                                  self._work, self._served, expired)
                for name, node in topology.nodes.items() if name in topology.servers()}
        else:
            self.servers = {
                name: BatchServer(self.clock, node.max_batch, node.batch_window_ms,
                                  lambda items, n=name, s=node.speed: exits.batch_ms(n, s, items),
                                  lambda items, n=name: self._work_exits(n, items),
                                  lambda *a, n=name: self._served_exit(n, *a), expired)
                for name, node in topology.nodes.items()
                if name in exits.plan.computing_nodes(topology)}
            self.steps_begun: Counter = Counter()  # per robot: dto_ee's observed load
            if exits.reoptimise is not None:
                self.clock.at(exits.reoptimise_ms, self._reoptimise)
        self.finished = 0
        self.bar: tqdm | None = None

    def _student_servers(self, run: StudentRun, expired) -> None:
        """rocoin: one queue per device of the layout, with its fault state."""
        lay, sm = run.layout, run.models
        self.servers = {}
        for d in lay.devices:
            node, group = self.topology.nodes[d], lay.group_of(d)
            self.servers[d] = BatchServer(
                self.clock, node.max_batch, node.batch_window_ms,
                lambda items, g=group, s=node.speed: sm.service_ms(lay, g, len(items), s),
                lambda items, g=group: self._work_students(g, items),
                lambda *a, d=d: self._served_student(d, *a), expired)
        self.down_until = {d: -1.0 for d in lay.devices}
        self.crashed_at = {d: -1.0 for d in lay.devices}
        self.faults = Counter()  # (device, kind) -> count
        self.answers = Counter()  # (group, device) -> answers that counted

    def _idn_servers(self, run: IdnRun, expired) -> None:
        """Placement modes: one queue per compute node; the first allocation now, the next
        at every period's end."""
        from hybrid_policy.families.idn.idn import Holdings

        self.servers = {
            name: BatchServer(self.clock, node.max_batch, node.batch_window_ms,
                              lambda items, s=node.speed: run.batch_ms(s, items),
                              lambda items, n=name: self._work_idn(n, items),
                              lambda *a, n=name: self._served_idn(n, *a), expired)
            for name, node in self.topology.nodes.items()}
        run.holdings = Holdings(run.network)
        for v in run.network.catalogue.variants:  # the repository holds every variant
            run.stores[run.network.repository].load(v)
        self.where = run.network.start()
        self.period_counts: Counter = Counter()
        self._place(run.placer.decide(Counter()), Counter())
        self.clock.at(run.network.cfg.period_ms, self._idn_period)
        for s in run.network.cfg.shifts:
            self.clock.at(s.at_s * 1e3, lambda s=s: self._shift(s))

    def _place(self, x, counts: Counter) -> None:
        run = self.idn
        net, now = run.network, self.clock.now
        loads = run.holdings.apply(x, now)
        run.stats["loads"] += len(loads)
        held = run.holdings.held()
        for name, store in run.stores.items():
            if name == net.repository:
                continue
            keep = set(held.get(name, ()))
            for key in list(store.held):
                if key not in keep:
                    store.unload(key)
            for key in keep - set(store.held):
                store.load(next(v for v in net.catalogue.variants if v.key == key))
        self._close_period()
        run.periods.append({"t_s": now / 1e3, "demand": sum(counts.values()),
                            "loads": len(loads), "held": held, "steps": 0, "gain": 0.0})

    def _close_period(self) -> None:
        """The period that ends now: its steps and their summed gain."""
        if self.idn.periods:
            last = self.idn.periods[-1]
            last["steps"], last["gain"] = self.idn.stats["steps"] - self.steps_before, \
                self.idn.stats["gain_sum"] - self.gain_before
        self.steps_before = self.idn.stats["steps"]
        self.gain_before = self.idn.stats["gain_sum"]

    def _idn_period(self) -> None:
        if self.finished == len(self.robots):
            return
        counts, self.period_counts = self.period_counts, Counter()
        self._place(self.idn.placer.decide(counts), counts)
        self.clock.at(self.clock.now + self.idn.network.cfg.period_ms, self._idn_period)

    def _shift(self, s) -> None:
        from hybrid_policy.families.idn.idn import Where

        for name in s.robots:
            w = self.where[name]
            self.where[name] = Where(s.task or w.task, s.access or w.access)

    def run(self, progress: bool | None = None) -> FleetResult:
        total = sum(len(r.reset_seeds) for r in self.robots)
        self.bar = tqdm(total=total, desc=f"fleet {self.robots[0].mode.name}", unit="ep",
                        disable=None if progress is None else not progress)
        try:
            self.clock.run()
        finally:
            self.bar.close()
            for r in self.robots:
                r.env.close()
        servers = {name: s.stats.summary() for name, s in self.servers.items()}
        if self.students is not None:
            for (d, kind), n in self.faults.items():
                servers[d][kind + "s"] = n
            for (g, d), n in self.answers.items():
                servers[d]["answers_counted"] = n
                servers[d]["group"] = g
        placement = {}
        if self.idn is not None:
            self._close_period()
            servers = {n: s for n, s in servers.items() if s["requests"]}
            placement = {**self.idn.stats, "load_ms": self.idn.holdings.load_ms,
                         "periods": self.idn.periods}
        return FleetResult(self.robots[0].mode.name, {r.spec.name: r.result for r in self.robots},
                           servers, self.clock.now / 1e3, placement)

    # -- a robot's episodes and ticks ------------------------------------------------------
    def _controls(self, r: _Robot) -> None:
        """The robot's deadline and, in real time, its actuator, for its current task."""
        if self.control.realtime:  # the loop's deadline (``period``: a share of the period)
            r.actuator = Actuator(r.env.task_spec.action_dim)
            r.deadline_ms = self.control.deadline_ms(self.deadline_ms, r.period_ms)
        else:
            r.deadline_ms = self.deadline_ms

    def _begin_episode(self, r: _Robot, episode: int) -> None:
        if self.idn is not None and self.where[r.spec.name].task != r.spec.task:
            from dataclasses import replace

            r.env.close()  # a shift switched its task: from this episode on
            r.spec = replace(r.spec, task=self.where[r.spec.name].task)
            r.env, r.mode = sim_envs.make_task(r.spec.task), self.modes(r.spec)
            r.period_ms = sim_envs.task_spec(r.spec.task).control_period_ms
            self._controls(r)
        r.episode, r.step = episode, 0
        r.obs, _ = r.env.reset(seed=r.reset_seeds[episode])
        r.mode.reset()
        r.rng = episode_rng(self.seed, r.first_episode + episode)
        if r.actuator is not None:
            r.actuator.reset()
        self._tick(r)

    def _tick(self, r: _Robot) -> None:
        since, r.tick_ms = self.clock.now - r.tick_ms, self.clock.now
        ref = _StepRef(r.episode, r.step, r.tick_ms)
        if r.actuator is not None:  # real time: the next tick comes whatever arrives
            self.clock.at(r.tick_ms + r.period_ms, lambda: self._period_end(r), last=True)
        if self.idn is not None:
            self._tick_idn(r, ref, max(1, round(since / r.period_ms)) if r.step else 1)
            return
        plan = r.mode.plan(r.obs, r.rng)
        if self.exits is not None:
            draft_ms = self.exits.robot_ms(r.spec.name, self.compute.device_speed)
            self.steps_begun[r.spec.name] += 1
        else:
            draft_ms = self.compute.draft() if plan.draft_action is not None else 0.0
        if r.actuator is not None:
            r.actuator.send_draft(self.control.loop, ref.step, ref.tick_ms + draft_ms,
                                  plan.draft_action)
        if self.students is not None:
            self._fan_out(r, ref, plan, draft_ms)
            return
        if plan.request is None:
            self._resolve(r, ref, plan, None, draft_ms, server_op=False)
            return
        p = _Pending(r, ref, plan, draft_ms, self.clock.now + draft_ms, plan.request)
        if self.exits is None:
            dest, links = r.spec.server, r.hops
        else:
            dest = plan.route_to
            links = self.topology.links_between(r.spec, dest)
        self.clock.at(p.sent_ms, lambda: self._uplink(p, links, dest))
        self.clock.at(p.sent_ms + p.robot.deadline_ms, lambda: self._deadline(p))

    def _uplink(self, p: _Pending, links: tuple[LinkProfile, ...], dest: str) -> None:
        """Cross ``links`` up to node ``dest`` (hop k of the journey draws its own
        randomness) and join its queue."""
        self._cross_up(p, links, lambda i: (feature_hop(p.request.layer, i) if isinstance(
            p.request, FeatureRequest) else len(p.links)), lambda: self.servers[dest].arrive(p))

    def _cross_up(self, p: _Pending, links, hop_of: Callable[[int], int],
                  arrive: Callable[[], None]) -> None:
        """Cross ``links`` in order, link ``i`` drawing ``packet_rng(seed, hop_of(i))``
        (kept for the answer's way back); ``arrive`` when the last one delivered. A loss
        ends the journey: the deadline decides."""
        size = p.request.payload_bytes()
        for i, link in enumerate(links):
            rng = packet_rng(p.plan.request.seed, hop_of(i))
            p.links.append(link)
            p.link_rngs.append(rng)
            t = link.deliver(size, True, rng)
            if t is None:
                return
            p.elapsed_ms += t
        self.clock.at(p.sent_ms + p.elapsed_ms, arrive)

    def _cross_down(self, p: _Pending, size: int) -> bool:
        """The answer of ``size`` bytes back over the links ``p`` came up, each with the
        randomness its request drew; False when it is lost on the way."""
        for hop, rng in zip(reversed(p.links), reversed(p.link_rngs)):
            t = hop.deliver(size, False, rng)
            if t is None:
                return False
            p.elapsed_ms += t
        return True

    def _work(self, batch: list[_Pending]) -> list[Response]:
        """One server operation: the batch's requests, grouped by task (one model each)."""
        answers: dict[int, Response] = {}
        by_task: dict[str, list[int]] = defaultdict(list)
        for i, p in enumerate(batch):
            p.server_op = True
            by_task[p.robot.spec.task].append(i)
        for task, idx in by_task.items():
            for i, resp in zip(idx, serve_batch(self.targets[task],
                                                [batch[i].plan.request for i in idx])):
                answers[i] = resp
        return [answers[i] for i in range(len(batch))]

    # -- placement: the node and variant the placement names serve the step ---------------
    def _tick_idn(self, r: _Robot, ref: _StepRef, periods: int) -> None:
        """A placement step. Its demand is the control periods since the robot's last tick:
        a robot kept waiting by a far node still needs an answer every period, and counting
        only the requests it managed to send would hide exactly the robots served worst."""
        run, name = self.idn, r.spec.name
        w = self.where[name]
        r.mode.where.access = w.access  # a move takes effect at once
        run.placement.available = run.holdings.available(self.clock.now)
        self.period_counts[(name, r.spec.task, w.access)] += periods
        plan = r.mode.plan(r.obs, r.rng)
        opt = r.mode.last
        run.stats[f"served_{'robot' if opt.node == name else opt.node}"] += 1
        if plan.request is None:
            self._resolve(r, ref, plan, None, opt.variant.step_ms(run.network.speed(name)),
                          False)
            return
        p = _Pending(r, ref, plan, 0.0, self.clock.now, plan.request)
        links = self.topology.links_between(run.network.robot_at(name, w.access), opt.node)
        self.clock.at(p.sent_ms, lambda: self._cross_up(
            p, links, lambda i: i, lambda: self.servers[opt.node].arrive(p)))
        self.clock.at(p.sent_ms + p.robot.deadline_ms, lambda: self._deadline(p))

    def _work_idn(self, node: str, batch: list[_Pending]) -> list:
        from hybrid_policy.families.idn.serve import serve_variants

        for p in batch:
            p.server_op = True
        return serve_variants(self.idn.stores[node], [(p.plan.variant, p.request)
                                                      for p in batch])

    def _served_idn(self, node: str, p: _Pending, answer, waited_ms: float,
                    service_ms: float) -> None:
        if not isinstance(answer, Response):
            self.idn.stats["refused"] += 1  # the node dropped the variant meanwhile
            return
        self._served(p, answer, waited_ms, service_ms)

    # -- rocoin: every device gets a copy, the first answer per group counts -------------
    def _fan_out(self, r: _Robot, ref: _StepRef, plan: Plan, draft_ms: float) -> None:
        from hybrid_policy.families.rocoin.rocoin import device_hop

        sent = self.clock.now + draft_ms
        g = _Fanout(r, ref, plan, draft_ms, r.mode.gather(plan))
        for i, d in enumerate(self.students.layout.devices):
            p = _Pending(r, ref, plan, draft_ms, sent, plan.request, fanout=g, device=i)
            link = self.topology.links_between(r.spec, d)
            self.clock.at(sent, lambda p=p, d=d, link=link, hop=device_hop(i): self._cross_up(
                p, link, lambda _: hop, lambda: self._reach_device(p, d)))
        self.clock.at(sent + r.deadline_ms, lambda: self._deadline(g))

    def _reach_device(self, p: _Pending, device: str) -> None:
        """A copy reaches its device: down (crashed earlier), crashing now, slow, or queued."""
        now = self.clock.now
        if now < self.down_until[device]:
            self.faults[(device, "down_drop")] += 1
            return
        kind = self.students.faults.fault(p.request.seed, p.device, device, now, self.seed)
        if kind == "crash":
            self.faults[(device, "crash")] += 1
            self.down_until[device] = now + self.students.faults.restart_ms
            self.crashed_at[device] = now
            return
        if kind == "timeout":
            self.faults[(device, "timeout")] += 1
            p.late_ms = self.students.faults.slow_ms
        p.arrived_ms = now
        self.servers[device].arrive(p)

    def _work_students(self, group: int, batch: list[_Pending]) -> list:
        from hybrid_policy.families.rocoin.rocoin import serve_students

        lay = self.students.layout
        for p in batch:
            p.fanout.server_op = True
        return serve_students(self.students.models.model(lay, group), group,
                              [p.request for p in batch])

    def _served_student(self, device: str, p: _Pending, answer, waited_ms: float,
                        service_ms: float) -> None:
        if self.crashed_at[device] >= p.arrived_ms:
            return  # the device crashed with this copy in its queue
        p.elapsed_ms += waited_ms + service_ms + p.late_ms
        if self._cross_down(p, answer.payload_bytes()) and p.elapsed_ms <= p.robot.deadline_ms:
            self.clock.at(p.sent_ms + p.elapsed_ms,
                          lambda: self._student_answer(p, device, answer))

    def _student_answer(self, p: _Pending, device: str, answer) -> None:
        g = p.fanout
        if g.resolved or not g.gather.add(device, answer):
            return
        self.answers[(self.students.layout.group_of(device), device)] += 1
        if g.gather.complete:
            g.resolved = True
            self._resolve(g.robot, g.ref, g.plan, g.gather.response(),
                          g.draft_ms + p.elapsed_ms, True)

    def _work_exits(self, node: str, batch: list[_Pending]) -> list:
        """One operation of an early-exit node: its part of the net on every feature."""
        plan = self.exits.plan
        for p in batch:
            p.server_op = True
        return serve_features(self.exits.net, plan.ends[node], plan.thresholds.get(node, 0.0),
                              plan.offload.get(node, {}), [p.request for p in batch])

    def _served_exit(self, node: str, p: _Pending, outcome: tuple, waited_ms: float,
                     service_ms: float) -> None:
        answer, next_node, _ = outcome
        if isinstance(answer, Response):
            self._served(p, answer, waited_ms, service_ms)
            return
        p.elapsed_ms += waited_ms + service_ms
        p.request = answer
        self._uplink(p, self.topology.links_between(node, next_node), next_node)

    def _reoptimise(self) -> None:
        """dto_ee: every node re-optimises from the load it observed (module doc)."""
        if self.finished == len(self.robots):
            return
        span = self.clock.now
        self.exits.reoptimise({r.spec.name: self.steps_begun[r.spec.name] / span
                               for r in self.robots})
        self.clock.at(self.clock.now + self.exits.reoptimise_ms, self._reoptimise)

    def _served(self, p: _Pending, response: Response, waited_ms: float,
                service_ms: float) -> None:
        p.elapsed_ms = p.elapsed_ms + waited_ms + service_ms  # eval's order: up + target
        if self._cross_down(p, response.payload_bytes()) and p.elapsed_ms <= p.robot.deadline_ms:
            self.clock.at(p.sent_ms + p.elapsed_ms, lambda: self._answered(p, response))

    def _answered(self, p: _Pending, response: Response) -> None:
        if not p.resolved:
            p.resolved = True
            self._resolve(p.robot, p.ref, p.plan, response, p.draft_ms + p.elapsed_ms,
                          p.server_op)

    def _deadline(self, p: _Pending | _Fanout) -> None:
        if not p.resolved:
            p.resolved = True
            self._resolve(p.robot, p.ref, p.plan, None, p.draft_ms + p.robot.deadline_ms,
                          p.server_op)

    def _resolve(self, r: _Robot, ref: _StepRef, plan: Plan, response: Response | None,
                 latency_ms: float, server_op: bool) -> None:
        """The step's action is known: lockstep executes it, the next tick being the first
        one after it; real time hands it to the actuator, which acts at the tick."""
        rec = resolve_step(r.mode, plan, response, ref.step, latency_ms, server_op)
        record(r.result, rec)
        if self.exits is not None:  # which exit acted: the answer's, else the robot's own
            r.result.exits[response.exit_layer if response is not None
                           else self.exits.plan.ends[r.spec.name]] += 1
        if self.idn is not None:
            self._idn_gain(r, plan, response, latency_ms)
        if self.on_step is not None:
            self.on_step(r.spec.name, rec)
        if r.actuator is not None:
            if ref.episode == r.episode:  # a past episode's answer is never applied
                r.actuator.send(ref.step, ref.tick_ms + latency_ms, rec.action)
            return
        periods = max(1, math.ceil(latency_ms / r.period_ms - 1e-9))
        self._act(r, rec.action, r.tick_ms + periods * r.period_ms)

    def _period_end(self, r: _Robot) -> None:
        """Real time: the robot's tick applies the newest command that arrived (or holds
        still) for the period that starts now."""
        action, answered = r.actuator.tick(self.clock.now)
        r.result.add_tick(*tick_kind(answered, r.step))
        self._act(r, action, self.clock.now)

    def _act(self, r: _Robot, action: np.ndarray, next_ms: float) -> None:
        """The world integrates ``action``; the robot's next tick (or episode) at
        ``next_ms``."""
        r.obs, _, terminated, truncated, info = r.env.step(action)
        r.step += 1
        if terminated or truncated:
            r.result.add_episode(bool(info["success"]))
            self.bar.update(1)
            if r.episode + 1 < len(r.reset_seeds):
                self._at_tick(r, next_ms, lambda: self._begin_episode(r, r.episode + 1))
            else:
                self.finished += 1
            return
        self._at_tick(r, next_ms, lambda: self._tick(r))

    def _at_tick(self, r: _Robot, t: float, callback: Callable[[], None]) -> None:
        """Lockstep: schedule the robot's next tick; real time is at the tick already."""
        if r.actuator is not None and t <= self.clock.now:
            callback()
        else:
            self.clock.at(t, callback)


    def _idn_gain(self, r: _Robot, plan: Plan, response: Response | None,
                  latency_ms: float) -> None:
        """The step's gain: the success of the variant that acted minus λ·latency."""
        cat = {v.key: v for v in self.idn.network.catalogue.variants}
        if response is not None or plan.request is None:
            success = cat[plan.variant].success
        else:
            own = r.mode.own()
            success = own.success if own is not None else 0.0
            self.idn.stats["fallbacks"] += 1
        self.idn.stats["steps"] += 1
        self.idn.stats["gain_sum"] += success - self.idn.network.cfg.latency_weight * latency_ms


def evaluate_fleet(topology: Topology, modes: Callable[[Robot], Mode],
                   targets: dict[str, Policy], compute: ComputeModel, deadline_ms: float,
                   episodes: int, seed: int, progress: bool | None = None,
                   on_step: Callable[[str, StepRecord], None] | None = None,
                   phases: str = "random", exits: ExitRun | None = None,
                   students: StudentRun | None = None, idn: IdnRun | None = None,
                   control: ControlClock = ControlClock()) -> FleetResult:
    """Run every robot of ``topology`` for ``episodes`` episodes (see the module doc)."""
    return FleetEvaluator(topology, modes, targets, compute, deadline_ms, episodes, seed,
                          on_step, phases, exits, students, idn, control).run(progress)
