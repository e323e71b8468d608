"""A discrete-event clock in simulated milliseconds, and a server that queues and batches.

``Clock`` runs callbacks in time order (ties in the order they were scheduled, so a run is
deterministic). ``BatchServer`` keeps a FIFO of requests; when idle it serves up to
``max_batch`` of them in one operation, after waiting ``window_ms`` from the first arrival
for more (unless the batch fills first). A request whose deadline passed while it waited
is dropped unserved (its robot has already acted) and counted as expired. Its statistics
are what the fleet reports per server: utilisation, queue length, batch sizes and queueing
delay.
"""

from __future__ import annotations

import heapq
import itertools
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self._queue: list[tuple[float, bool, int, Callable[[], None]]] = []
        self._seq = itertools.count()

    def at(self, t: float, callback: Callable[[], None], last: bool = False) -> None:
        """Run ``callback`` at simulated time ``t`` (ms; not before now); ``last``: after
        every other event of that instant (a robot's tick sees what arrived at it)."""
        heapq.heappush(self._queue, (max(t, self.now), last, next(self._seq), callback))

    def run(self) -> None:
        """Until nothing is scheduled."""
        while self._queue:
            self.now, _, _, callback = heapq.heappop(self._queue)
            callback()


@dataclass
class ServerStats:
    busy_ms: float = 0.0
    batches: Counter = field(default_factory=Counter)  # batch size -> count
    waits_ms: list[float] = field(default_factory=list)  # arrival -> start of service
    queue_area: float = 0.0  # integral of the queue length over time (ms)
    expired: int = 0  # dropped unserved: their deadline passed in the queue
    last_change: float = 0.0
    end_ms: float = 0.0

    def summary(self) -> dict[str, Any]:
        span = max(self.end_ms, 1e-9)
        served = sum(n * c for n, c in self.batches.items())
        return {
            "requests": served, "operations": sum(self.batches.values()),
            "expired": self.expired,
            "utilisation": self.busy_ms / span,
            "queue_length_mean": self.queue_area / span,
            "queueing_ms_mean": float(np.mean(self.waits_ms)) if self.waits_ms else 0.0,
            "queueing_ms_p95": float(np.percentile(self.waits_ms, 95)) if self.waits_ms else 0.0,
            "batch_sizes": {str(n): c for n, c in sorted(self.batches.items())},
        }


class BatchServer:
    """A FIFO queue in front of one batching compute node.

    ``service_ms(items)`` is the time of one operation on ``items``; ``work(items)`` does
    the operation (returns one answer per item) and ``done(item, answer, waited_ms,
    service_ms)`` receives each answer when the operation ends, with the time the item
    waited in the queue and the operation's duration.
    """

    def __init__(self, clock: Clock, max_batch: int, window_ms: float,
                 service_ms: Callable[[list], float], work: Callable[[list], list],
                 done: Callable[[Any, Any, float, float], None],
                 expired: Callable[[Any, float], bool] = lambda item, now: False) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.clock, self.max_batch, self.window_ms = clock, max_batch, window_ms
        self.service_ms, self.work, self.done = service_ms, work, done
        self.is_expired = expired
        self.queue: deque[tuple[float, Any]] = deque()
        self.busy = False
        self.window_open = False
        self.stats = ServerStats()

    def arrive(self, item: Any) -> None:
        self._queue_changed()
        self.queue.append((self.clock.now, item))
        if self.busy:
            return
        if self.window_ms <= 0 or len(self.queue) >= self.max_batch:
            self._start()
        elif not self.window_open:
            self.window_open = True
            self.clock.at(self.clock.now + self.window_ms, self._window_ends)

    def _window_ends(self) -> None:
        self.window_open = False
        if not self.busy and self.queue:
            self._start()

    def _start(self) -> None:
        self._queue_changed()
        now = self.clock.now
        batch = []
        while self.queue and len(batch) < self.max_batch:
            arrived, item = self.queue.popleft()
            if self.is_expired(item, now):
                self.stats.expired += 1
            else:
                batch.append((arrived, item))
        if not batch:
            return
        waits = [now - arrived for arrived, _ in batch]
        self.stats.waits_ms += waits
        self.stats.batches[len(batch)] += 1
        items = [item for _, item in batch]
        duration = self.service_ms(items)
        self.stats.busy_ms += duration
        self.busy = True
        answers = self.work(items)
        self.clock.at(now + duration, lambda: self._finish(items, answers, waits, duration))

    def _finish(self, items: list, answers: list, waits: list[float], duration: float) -> None:
        self.busy = False
        self.stats.end_ms = max(self.stats.end_ms, self.clock.now)
        for item, answer, waited in zip(items, answers, waits):
            self.done(item, answer, waited, duration)
        if self.queue:  # those waiting have waited long enough: serve at once
            self._start()

    def _queue_changed(self) -> None:
        now = self.clock.now
        self.stats.queue_area += len(self.queue) * (now - self.stats.last_change)
        self.stats.last_change = now
        self.stats.end_ms = max(self.stats.end_ms, now)
