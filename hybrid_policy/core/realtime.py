"""Real-time control in simulated time: the world does not wait for the network.

The robot ticks every control period ``T`` whatever has arrived. At tick ``k`` the world is
sampled (observation ``o_k``) and the robot plans on it at once, even while earlier steps
are still in flight (as the ROS draft node does). Each step's command reaches the actuator
at its modelled arrival time (draft compute + round trip, or the deadline). At tick ``k+1``
the actuator applies the command that answers the newest state among those arrived since
the last applied one, and the world integrates it for one period (no substeps: an action
takes effect from the first tick after it arrives, as ``sim_node``'s real-time tick does).
A tick with no new command runs the hold rule (``hold``): zero action, i.e. hold still
(zero displacement, fingers where they are), and counts a *missed tick*. A command that
answers a state older than one already applied is never applied.

With every step's command back within one period this is exactly lockstep: the same
plans, samples and actions in the same order (a test checks it).

Loops (``LOOPS``), how a verified step waits for its verdict:

- ``wait``: the command is the verdict's action, or the draft's at ``deadline_ms`` (the
  exact mode: every verified step executes a target sample when the verdict makes it);
- ``period``: the same with the deadline at most ``PERIOD_SHARE`` · T, so a command is
  always ready for the next tick;
- ``draft_first``: the draft's action is sent to the actuator at once; a verdict that
  arrives before the next tick replaces it (same state, later and verified); a later
  verdict is overtaken by the next state's draft command and never applied.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hybrid_policy.errors import HybridPolicyError

CLOCKS = ("realtime", "lockstep")
LOOPS = ("wait", "period", "draft_first")
PERIOD_SHARE = 0.7  # the ``period`` loop's deadline, as a share of the control period


@dataclass(frozen=True)
class Clock:
    """How simulated time relates to the network: ``lockstep`` waits for every answer;
    ``realtime`` ticks every ``period_ms`` (the task's own control period)."""

    kind: str = "lockstep"
    period_ms: float = 40.0
    loop: str = "wait"

    def __post_init__(self) -> None:
        if self.kind not in CLOCKS:
            raise HybridPolicyError(f"clock {self.kind!r} is not one of {', '.join(CLOCKS)}")
        if self.loop not in LOOPS:
            raise HybridPolicyError(f"loop {self.loop!r} is not one of {', '.join(LOOPS)}")
        if not self.period_ms > 0:
            raise HybridPolicyError(f"control period must be > 0 ms, got {self.period_ms}")

    @property
    def realtime(self) -> bool:
        return self.kind == "realtime"

    def deadline_ms(self, given_ms: float, period_ms: float | None = None) -> float:
        """The verification deadline this loop uses (``given_ms``: the user's) for a robot
        whose period is ``period_ms`` (default: this clock's): ``period`` waits at most a
        share of the period, so the fallback still makes its tick."""
        if self.loop != "period":
            return given_ms
        return min(given_ms, PERIOD_SHARE * (self.period_ms if period_ms is None else period_ms))


def round_trip_ms(up_ms: float | None, server_ms: float, down_ms: float | None,
                  deadline_ms: float) -> float | None:
    """A verification's modelled time from the request leaving the robot to its verdict
    back: ``None`` when a packet was lost (``up_ms`` or ``down_ms`` None) or the verdict
    would come after ``deadline_ms`` (the robot then acts at the deadline without it).
    The in-process evaluators and the draft node's modelled step time (``sim_time``
    graphs) both decide a step's fate here."""
    if up_ms is None or down_ms is None:
        return None
    rtt = up_ms + server_ms + down_ms
    return rtt if rtt <= deadline_ms else None


def tick_kind(answered: int | None, step: int) -> tuple[bool, bool]:
    """``(missed, stale)`` of the tick after step ``step``, given the state its applied
    command answers (``Actuator.tick``): nothing new arrived, or an older state's command."""
    return answered is None, answered is not None and answered < step


def clock_for(kind: str, control_period_ms: float, rate_hz: float | None = None,
              loop: str = "wait") -> Clock:
    """The clock of a run: the task's own control period unless ``rate_hz`` is given."""
    if rate_hz is not None and not rate_hz > 0:
        raise HybridPolicyError(f"rate_hz must be > 0, got {rate_hz}")
    return Clock(kind, control_period_ms if rate_hz is None else 1e3 / rate_hz, loop)


@dataclass
class _Command:
    arrival_ms: float
    state: int  # index of the tick whose observation it answers
    priority: int  # within one state: a verified command (1) beats the draft's (0)
    action: np.ndarray


class Actuator:
    """What the robot executes at each tick: the newest command arrived in time, or the hold
    rule. ``applied`` counts what happened, for the step metrics."""

    def __init__(self, action_dim: int) -> None:
        self.action_dim = action_dim
        self.reset()

    def reset(self) -> None:
        self._commands: list[_Command] = []
        self.applied_state = -1

    def send(self, state: int, arrival_ms: float, action: np.ndarray, priority: int = 1) -> None:
        """A command answering tick ``state``'s observation, arriving at ``arrival_ms``; one
        for a state no newer than the applied one is never applied."""
        if state > self.applied_state:
            self._commands.append(_Command(arrival_ms, state, priority, action))

    def send_draft(self, loop: str, state: int, arrival_ms: float,
                   action: np.ndarray | None) -> None:
        """``draft_first``: the draft's own action goes to the actuator at once; a verdict for
        the same state that arrives in time replaces it. Other loops send nothing here."""
        if loop == "draft_first" and action is not None:
            self.send(state, arrival_ms, action, priority=0)

    def tick(self, now_ms: float) -> tuple[np.ndarray, int | None]:
        """The action for the period starting at ``now_ms`` and the state it answers
        (``None``: nothing new arrived, the hold rule acts)."""
        arrived = [c for c in self._commands if c.arrival_ms <= now_ms + 1e-9]
        if arrived:
            best = max(arrived, key=lambda c: (c.state, c.priority, c.arrival_ms))
            self.applied_state = best.state
        # what is left to come: only commands for states newer than the applied one
        self._commands = [c for c in self._commands if c.arrival_ms > now_ms + 1e-9
                          and c.state > self.applied_state]
        if not arrived:
            return self.hold(), None
        return best.action, best.state

    def hold(self) -> np.ndarray:
        """Hold still: zero displacement, fingers where they are (``sim_node``'s rule)."""
        return np.zeros(self.action_dim, np.float32)
