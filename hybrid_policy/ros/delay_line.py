"""Deliver callbacks after a delay, in due-time order, from one background thread.

The link node hands each packet to ``schedule(delay_ms, fn)``; a sleeping thread calls
``fn`` when it is due (rclpy publishers are thread-safe). A heap keeps the order of due
times, so a packet with more jitter can be overtaken, as on a real link.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from typing import Callable


class DelayLine:
    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._cv = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="delay_line", daemon=True)
        self._thread.start()

    def schedule(self, delay_ms: float, fn: Callable[[], None]) -> None:
        due = time.monotonic() + max(delay_ms, 0.0) / 1e3
        with self._cv:
            heapq.heappush(self._heap, (due, next(self._seq), fn))
            self._cv.notify()

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify()
        self._thread.join(timeout=1.0)

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._closed and (not self._heap or self._heap[0][0] > time.monotonic()):
                    self._cv.wait(None if not self._heap else self._heap[0][0] - time.monotonic())
                if self._closed:
                    return
                _, _, fn = heapq.heappop(self._heap)
            fn()
