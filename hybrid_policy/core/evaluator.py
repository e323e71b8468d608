"""In-process closed-loop evaluation: every mode on the same seeded episodes, no ROS.

Per step: the mode plans on the robot; a request crosses the modelled uplink, the server
answers (``serve``), the response crosses the downlink; a packet lost either way means no
response, and the robot falls back after ``deadline_ms``. Latency is the modelled
end-to-end time from observation to executed action.

The world waits for each step's action (lockstep) unless ``Setting.clock`` is real time:
then it ticks every control period whatever arrived (``core.realtime``).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np
from tqdm import tqdm

import sim_envs
from sim_envs.collect import episode_seeds
from hybrid_policy.core.compute import ComputeModel
from hybrid_policy.core.link import LinkProfile, packet_rng
from hybrid_policy.core.plan import Mode, Plan
from hybrid_policy.core.realtime import Actuator, Clock, round_trip_ms, tick_kind
from hybrid_policy.core.protocol import Request, Response
from hybrid_policy.core.stepmetrics import ModeResult, rejected


@dataclass(frozen=True)
class StepRecord:
    """One control step, as logged for calibration and analysis."""

    step: int  # index of the step in its episode
    plan: Plan
    action: np.ndarray  # what was executed
    response: Response | None  # None: no request, or no answer in time (fallback)
    latency_ms: float
    server_op: bool  # the target ran for this step
    lost: bool  # a request was sent but no response came back in time


@dataclass(frozen=True)
class Setting:
    server: Callable[[Request], Response]  # what answers a request (the family's server work)
    link: LinkProfile
    compute: ComputeModel
    deadline_ms: float = 100.0  # a response not back by then is given up: fallback
    clock: Clock = Clock()  # lockstep: the world waits; realtime: core.realtime


def episode_rng(seed: int, episode: int) -> np.random.Generator:
    """The sampling stream of one episode: the same for every mode."""
    return np.random.default_rng([seed, episode])


def control_step(mode: Mode, obs: np.ndarray, step: int, rng: np.random.Generator,
                 s: Setting) -> tuple[np.ndarray, StepRecord]:
    """One robot step through the modelled link: plan, maybe ask the server, resolve."""
    plan = mode.plan(obs, rng)
    latency = s.compute.draft() if plan.draft_action is not None else 0.0
    response, server_op = None, False
    if plan.request is not None:
        link_rng = packet_rng(plan.request.seed)
        up = s.link.deliver(plan.request.payload_bytes(), True, link_rng)
        rtt = None
        if up is not None:  # the uplink delivered: the server works
            server_op = True
            answer = s.server(plan.request)
            down = s.link.deliver(answer.payload_bytes(), False, link_rng)
            rtt = round_trip_ms(up, s.compute.target(), down, s.deadline_ms)
            response = None if rtt is None else answer
        latency += s.deadline_ms if rtt is None else rtt
    rec = resolve_step(mode, plan, response, step, latency, server_op)
    return rec.action, rec


def resolve_step(mode: Mode, plan: Plan, response: Response | None, step: int,
                 latency_ms: float, server_op: bool) -> StepRecord:
    """The step's executed action (the mode's ``resolve``) and its record; a request with
    no answer is a lost step. Both evaluators, single robot and fleet, end a step here."""
    action = mode.resolve(plan, response)
    lost = plan.request is not None and response is None
    return StepRecord(step, plan, action, response, latency_ms, server_op, lost)


def record(result: ModeResult, rec: StepRecord) -> None:
    """Count one step in ``result``: latency, transmission, verdict, fallback, server op."""
    req = rec.plan.request
    result.add_step(rec.latency_ms, None if req is None else req.payload_bytes() * rec.plan.copies,
                    rejected(req, rec.response), rec.lost)
    result.server_ops += rec.server_op


def run_episode(env: sim_envs.ManipulationTask, mode: Mode, reset_seed: int, seed: int,
                episode: int, s: Setting, result: ModeResult,
                on_step: Callable[[StepRecord], None] | None = None) -> bool:
    obs, _ = env.reset(seed=reset_seed)
    mode.reset()
    rng = episode_rng(seed, episode)
    clock = s.clock
    actuator = Actuator(env.task_spec.action_dim) if clock.realtime else None
    if clock.realtime:  # the loop's deadline (``period``: a share of the period)
        s = replace(s, deadline_ms=clock.deadline_ms(s.deadline_ms))
    for step in itertools.count():
        action, rec = control_step(mode, obs, step, rng, s)
        if actuator is not None:  # the world ticks on: the newest command that arrived
            now = step * clock.period_ms
            actuator.send_draft(clock.loop, step, now + s.compute.draft(),
                                rec.plan.draft_action)
            actuator.send(step, now + rec.latency_ms, action)
            action, answered = actuator.tick(now + clock.period_ms)
            result.add_tick(*tick_kind(answered, step))
        record(result, rec)
        if on_step is not None:
            on_step(rec)
        obs, _, terminated, truncated, info = env.step(action)
        if terminated or truncated:
            return bool(info["success"])


def evaluate(task: str, modes: list[Mode], episodes: int, seed: int, setting: Setting,
             progress: bool | None = None,
             on_step: Callable[[str, StepRecord], None] | None = None) -> dict[str, ModeResult]:
    """Run each mode for ``episodes`` episodes with the same reset seeds and rng streams."""
    if episodes < 1:
        raise ValueError(f"episodes must be a positive integer, got {episodes}")
    seeds = episode_seeds(seed, episodes, split="eval").tolist()
    env = sim_envs.make_task(task)
    results: dict[str, ModeResult] = {}
    try:
        for mode in modes:
            res = results[mode.name] = ModeResult(mode.name)
            hook = None if on_step is None else (lambda rec, n=mode.name: on_step(n, rec))
            bar = tqdm(seeds, desc=f"eval {mode.name}", unit="ep",
                       disable=None if progress is None else not progress)
            for i, reset_seed in enumerate(bar):
                res.add_episode(run_episode(env, mode, reset_seed, seed, i, setting, res, hook))
                bar.set_postfix(success=f"{res.success_rate:.0%}")
    finally:
        env.close()
    return results
