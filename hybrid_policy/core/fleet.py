"""In-process fleet evaluation: N robots, each in its own MuJoCo episode, sharing servers
that queue and batch, all advanced by one discrete-event clock in simulated time.

Each robot acts at control ticks (its task's control period). Robots do not share a clock:
robot 0 starts at 0 and each other robot at a phase drawn uniformly within its first period
from the run's seed (``phases="random"``); ``phases="even"`` spaces them evenly instead, an
idealised fleet whose requests never collide while the server keeps up. A tick runs the
mode's ``plan`` (the same call the single-robot evaluator and the ROS draft node make); a
request crosses the robot's route hop by hop (``core.link``, each hop with the request's
own packet randomness, ``link.packet_rng(seed, hop)``, which the ROS link node of that hop
draws too), waits in its server's FIFO, is served in a batch (``events.BatchServer``; the
family says how long a batch takes and what it answers), and its answer crosses the route
back. An answer not back within ``deadline_ms`` of sending is a fallback, as in
``evaluator``; a server drops a request whose deadline passed while it queued (no server
operation for it). The robot executes its action once it has one, and its next tick is the
first control tick after that: a robot waiting on a busy server falls behind its clock,
which the step latency shows.

What differs between families is one object, the mode's ``FleetWork``
(``hybrid_policy.families``: each family makes its own): which servers the fleet has and
what they do, how long the robot computes before sending, where a request goes and what
happens to it on the way (an early exit forwards a feature node to node, RoCoIn sends a
copy to every device, a placement names the node that serves the step), and what the
family counts. This module drives it and names no family.

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
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
from tqdm import tqdm

import sim_envs
from sim_envs.collect import episode_seeds
from hybrid_policy.core.compute import ComputeModel
from hybrid_policy.core.evaluator import StepRecord, episode_rng, record, resolve_step
from hybrid_policy.core.events import BatchServer, Clock
from hybrid_policy.core.link import LinkProfile, packet_rng
from hybrid_policy.core.plan import Mode, Plan
from hybrid_policy.core.protocol import FeatureRequest, Request, Response
from hybrid_policy.core.realtime import Actuator, Clock as ControlClock, tick_kind
from hybrid_policy.core.stepmetrics import ModeResult, combine
from hybrid_policy.core.topology import Robot, Topology


PHASES = ("random", "even")  # robots' start within their first period (module doc)


@dataclass
class FleetResult:
    """One fleet run of one mode: per robot (eval's metrics) and per server, and what the
    family counted over the run (``FleetWork.summary``)."""

    mode: str
    robots: dict[str, ModeResult]
    servers: dict[str, dict[str, Any]]
    simulated_s: float
    extra: dict[str, Any] = field(default_factory=dict)

    def total(self) -> ModeResult:
        """Every robot's steps and episodes as one result (the fleet as a whole)."""
        return combine(self.mode, list(self.robots.values()))


@dataclass(frozen=True)
class StepRef:
    """Which step a plan belongs to: in real time several are in flight, and one may resolve
    after its episode ended."""

    episode: int
    step: int
    tick_ms: float  # simulated time of the tick whose observation it planned on


@dataclass
class Pending:
    """One request on its way: up the links, through queues, and its answer back."""

    robot: "FleetRobot"
    ref: StepRef
    plan: Plan
    draft_ms: float  # the robot's compute before sending (part of the step's latency)
    sent_ms: float  # simulated time the request left the robot
    request: Request | FeatureRequest  # what travels now (it may change at each node)
    links: list[LinkProfile] = field(default_factory=list)  # crossed so far, in order
    link_rngs: list[np.random.Generator] = field(default_factory=list)  # one per link
    elapsed_ms: float = 0.0  # up + wait + service + down, summed in eval's order
    server_op: bool = False
    resolved: bool = False


@dataclass
class FleetRobot:
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


class FleetWork:
    """What one mode's fleet run needs from its family. The defaults are a family whose
    robot sends each step's ``Request`` (if its plan has one) over its route to its server,
    where ``serve`` answers a batch of them in ``batch_ms``; a family overrides what
    differs. ``mode_for`` makes each robot's mode (``plan``/``resolve``)."""

    def mode_for(self, spec: Robot) -> Mode:
        raise NotImplementedError

    # -- servers ---------------------------------------------------------------------------
    def attach(self, fleet: "FleetEvaluator") -> dict[str, BatchServer]:
        """The run's servers by node, made once the robots exist; a family may schedule
        its periodic events here (``fleet.clock.at``)."""
        return {name: fleet.batch_server(
                    name, lambda items, n=name: self.batch_ms(fleet, n, items),
                    lambda items, n=name: self.serve(fleet, n, items),
                    lambda p, answer, waited, service: fleet.served(p, answer, waited, service))
                for name in fleet.topology.servers()}

    def batch_ms(self, fleet: "FleetEvaluator", node: str, items: list[Pending]) -> float:
        """One operation on ``items`` at ``node``."""
        raise NotImplementedError

    def serve(self, fleet: "FleetEvaluator", node: str, items: list[Pending]) -> list:
        """The answers of one operation, one per item (marks each ``server_op``)."""
        raise NotImplementedError

    # -- a robot's steps ---------------------------------------------------------------------
    def begin_episode(self, fleet: "FleetEvaluator", r: FleetRobot) -> None:
        """Before a robot's episode starts (a family may switch its task here)."""

    def tick(self, fleet: "FleetEvaluator", r: FleetRobot, ref: StepRef, since_ms: float) -> None:
        """One control step: plan, then act at once or send (``since_ms``: time since the
        robot's last tick)."""
        plan = r.mode.plan(r.obs, r.rng)
        draft_ms = self.robot_ms(fleet, r, plan)
        fleet.send_draft(r, ref, plan, draft_ms)
        if plan.request is None:
            fleet.resolve(r, ref, plan, None, draft_ms, server_op=False)
            return
        dest, links = self.destination(fleet, r, plan)
        fleet.send(Pending(r, ref, plan, draft_ms, fleet.clock.now + draft_ms, plan.request),
                   links, dest)

    def robot_ms(self, fleet: "FleetEvaluator", r: FleetRobot, plan: Plan) -> float:
        """The robot's compute before it acts or sends: the draft's, if its mode drafts."""
        return fleet.compute.draft() if plan.draft_action is not None else 0.0

    def destination(self, fleet: "FleetEvaluator", r: FleetRobot,
                    plan: Plan) -> tuple[str, tuple[LinkProfile, ...]]:
        """Where the step's request goes and the links it crosses: its server, its route."""
        return r.spec.server, r.hops

    def hop(self, p: Pending, i: int) -> int:
        """The packet randomness of the ``i``-th link a request crosses on its way (every
        link of the way counted, ``core.link.packet_rng``)."""
        return len(p.links)

    def resolved(self, fleet: "FleetEvaluator", r: FleetRobot, plan: Plan,
                 response: Response | None, latency_ms: float) -> None:
        """A step of ``r`` resolved (the family's own counts)."""

    def summary(self, fleet: "FleetEvaluator",
                servers: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """What the family counted over the run (``FleetResult.extra``); it may add to or
        drop from the per-server summaries."""
        return {}


class FleetEvaluator:
    def __init__(self, topology: Topology, work: FleetWork, compute: ComputeModel,
                 deadline_ms: float, episodes: int, seed: int,
                 on_step: Callable[[str, StepRecord], None] | None = None,
                 phases: str = "random", control: ControlClock = ControlClock()) -> None:
        if episodes < 1:
            raise ValueError(f"episodes must be a positive integer, got {episodes}")
        if phases not in PHASES:
            raise ValueError(f"phases {phases!r} is not one of {', '.join(PHASES)}")
        self.topology, self.work, self.compute = topology, work, compute
        self.deadline_ms, self.on_step = deadline_ms, on_step
        self.clock, self.control = Clock(), control
        n = len(topology.robots)
        seeds = episode_seeds(seed, n * episodes, split="eval").tolist()
        self.seed = seed
        self.robots: list[FleetRobot] = []
        draws = np.random.default_rng([seed, 0xF1EE7]).random(n)
        for i, spec in enumerate(topology.robots):
            period = sim_envs.task_spec(spec.task).control_period_ms
            mode = work.mode_for(spec)
            robot = FleetRobot(spec, mode, sim_envs.make_task(spec.task), topology.route(spec),
                               period, seeds[i * episodes:(i + 1) * episodes], i * episodes,
                               ModeResult(mode.name))
            self.controls(robot)
            self.robots.append(robot)
            phase = i / n if phases == "even" else (draws[i] if i else 0.0)
            self.clock.at(phase * period, lambda r=robot: self._begin_episode(r, 0))
        self.finished = 0
        self.bar: tqdm | None = None
        self.servers = work.attach(self)

    def batch_server(self, node: str, service_ms: Callable[[list], float],
                     work: Callable[[list], list],
                     done: Callable[[Any, Any, float, float], None]) -> BatchServer:
        """A FIFO in front of compute node ``node`` (its batch size and window); a request
        whose robot's deadline passed while it queued is dropped unserved."""
        spec = self.topology.nodes[node]
        return BatchServer(self.clock, spec.max_batch, spec.batch_window_ms, service_ms, work,
                           done, lambda p, now: now >= p.sent_ms + p.robot.deadline_ms)

    @property
    def done(self) -> bool:
        """Every robot has run its episodes (periodic events stop rescheduling)."""
        return self.finished == len(self.robots)

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
        extra = self.work.summary(self, servers)
        return FleetResult(self.robots[0].mode.name, {r.spec.name: r.result for r in self.robots},
                           servers, self.clock.now / 1e3, extra)

    # -- a robot's episodes and ticks ------------------------------------------------------
    def controls(self, r: FleetRobot) -> None:
        """The robot's deadline and, in real time, its actuator, for its current task."""
        if self.control.realtime:  # the loop's deadline (``period``: a share of the period)
            r.actuator = Actuator(r.env.task_spec.action_dim)
            r.deadline_ms = self.control.deadline_ms(self.deadline_ms, r.period_ms)
        else:
            r.deadline_ms = self.deadline_ms

    def _begin_episode(self, r: FleetRobot, episode: int) -> None:
        self.work.begin_episode(self, r)
        r.episode, r.step = episode, 0
        r.obs, _ = r.env.reset(seed=r.reset_seeds[episode])
        r.mode.reset()
        r.rng = episode_rng(self.seed, r.first_episode + episode)
        if r.actuator is not None:
            r.actuator.reset()
        self._tick(r)

    def _tick(self, r: FleetRobot) -> None:
        since, r.tick_ms = self.clock.now - r.tick_ms, self.clock.now
        ref = StepRef(r.episode, r.step, r.tick_ms)
        if r.actuator is not None:  # real time: the next tick comes whatever arrives
            self.clock.at(r.tick_ms + r.period_ms, lambda: self._period_end(r), last=True)
        self.work.tick(self, r, ref, since)

    def send_draft(self, r: FleetRobot, ref: StepRef, plan: Plan, draft_ms: float) -> None:
        """Real time, ``draft_first``: the draft's action goes to the actuator at once."""
        if r.actuator is not None:
            r.actuator.send_draft(self.control.loop, ref.step, ref.tick_ms + draft_ms,
                                  plan.draft_action)

    def send(self, p: Pending, links: tuple[LinkProfile, ...], dest: str) -> None:
        """``p`` leaves its robot at ``p.sent_ms`` for node ``dest``; the deadline decides
        if no answer is back in time."""
        self.clock.at(p.sent_ms, lambda: self.uplink(p, links, dest))
        self.clock.at(p.sent_ms + p.robot.deadline_ms, lambda: self.deadline(p))

    def uplink(self, p: Pending, links: tuple[LinkProfile, ...], dest: str) -> None:
        """Cross ``links`` up to node ``dest`` (link ``i`` with the family's hop randomness)
        and join its queue."""
        self.cross_up(p, links, lambda i: self.work.hop(p, i),
                      lambda: self.servers[dest].arrive(p))

    def cross_up(self, p: Pending, links, hop_of: Callable[[int], int],
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

    def cross_down(self, p: Pending, size: int) -> bool:
        """The answer of ``size`` bytes back over the links ``p`` came up, each with the
        randomness its request drew; False when it is lost on the way."""
        for hop, rng in zip(reversed(p.links), reversed(p.link_rngs)):
            t = hop.deliver(size, False, rng)
            if t is None:
                return False
            p.elapsed_ms += t
        return True

    def served(self, p: Pending, response: Response, waited_ms: float,
               service_ms: float) -> None:
        """A server answered ``p``: the answer travels back and counts if it is in time."""
        p.elapsed_ms = p.elapsed_ms + waited_ms + service_ms  # eval's order: up + target
        if self.cross_down(p, response.payload_bytes()) and p.elapsed_ms <= p.robot.deadline_ms:
            self.clock.at(p.sent_ms + p.elapsed_ms, lambda: self.answered(p, response))

    def answered(self, p: Pending, response: Response) -> None:
        if not p.resolved:
            p.resolved = True
            self.resolve(p.robot, p.ref, p.plan, response, p.draft_ms + p.elapsed_ms,
                         p.server_op)

    def deadline(self, p: Any) -> None:
        """No answer in time: the step resolves without one (``p``: anything with the
        step's robot, ref, plan, draft_ms, server_op and resolved)."""
        if not p.resolved:
            p.resolved = True
            self.resolve(p.robot, p.ref, p.plan, None, p.draft_ms + p.robot.deadline_ms,
                         p.server_op)

    def resolve(self, r: FleetRobot, ref: StepRef, plan: Plan, response: Response | None,
                latency_ms: float, server_op: bool) -> None:
        """The step's action is known: lockstep executes it, the next tick being the first
        one after it; real time hands it to the actuator, which acts at the tick."""
        rec = resolve_step(r.mode, plan, response, ref.step, latency_ms, server_op)
        record(r.result, rec)
        self.work.resolved(self, r, plan, response, latency_ms)
        if self.on_step is not None:
            self.on_step(r.spec.name, rec)
        if r.actuator is not None:
            if ref.episode == r.episode:  # a past episode's answer is never applied
                r.actuator.send(ref.step, ref.tick_ms + latency_ms, rec.action)
            return
        periods = max(1, math.ceil(latency_ms / r.period_ms - 1e-9))
        self._act(r, rec.action, r.tick_ms + periods * r.period_ms)

    def _period_end(self, r: FleetRobot) -> None:
        """Real time: the robot's tick applies the newest command that arrived (or holds
        still) for the period that starts now."""
        action, answered = r.actuator.tick(self.clock.now)
        r.result.add_tick(*tick_kind(answered, r.step))
        self._act(r, action, self.clock.now)

    def _act(self, r: FleetRobot, action: np.ndarray, next_ms: float) -> None:
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

    def _at_tick(self, r: FleetRobot, t: float, callback: Callable[[], None]) -> None:
        """Lockstep: schedule the robot's next tick; real time is at the tick already."""
        if r.actuator is not None and t <= self.clock.now:
            callback()
        else:
            self.clock.at(t, callback)


def evaluate_fleet(topology: Topology, work: FleetWork, compute: ComputeModel,
                   deadline_ms: float, episodes: int, seed: int, progress: bool | None = None,
                   on_step: Callable[[str, StepRecord], None] | None = None,
                   phases: str = "random", control: ControlClock = ControlClock()) -> FleetResult:
    """Run every robot of ``topology`` for ``episodes`` episodes of ``work``'s mode (see the
    module doc)."""
    return FleetEvaluator(topology, work, compute, deadline_ms, episodes, seed, on_step,
                          phases, control).run(progress)
