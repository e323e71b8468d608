"""One link's model applied to serialised packets: a request's delay or loss on the way
up, and its response's on the way back, drawn from ``core.link.packet_rng(request seed,
hop)`` in the order the in-process evaluators draw them.

The relay (``link_node``) and the robot's own radio (``draft_node`` with ``link_in_node``)
both use it, so the two graphs see the same link for the same request.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from hybrid_policy.core.link import LinkProfile, packet_rng

MAX_OPEN = 1024  # requests whose response may still come (older ones: forgotten)


def report_loss(report, direction: str, key: int, client: str = "") -> None:
    """The ``events`` entry of a dropped packet, as ``analyze`` counts it (``report``: a
    ``ros.reporting.Reporter``)."""
    report.event(f"lost on {direction}", {"stamp": key, "direction": direction,
                                          **({"robot": client} if client else {})}, log=False)


class PacketLink:
    """``on_loss(direction, stamp key, client)`` is called for each packet the link drops."""

    def __init__(self, link: LinkProfile, on_loss: Callable[[str, int, str], None]) -> None:
        self.link, self.on_loss = link, on_loss
        self._rngs: dict[tuple[str, int], np.random.Generator] = {}

    def up(self, size: int, seed: int, key: int, hop: int = 0, client: str = "") -> float | None:
        """The request's one-way time in ms, or ``None`` when it is lost (reported)."""
        rng = packet_rng(seed, hop)
        delay = self.link.deliver(size, True, rng)
        if delay is None:
            self.on_loss("uplink", key, client)
            return None
        self._rngs[(client, key)] = rng  # the response continues this request's stream
        while len(self._rngs) > MAX_OPEN:  # a request the server never answered
            self._rngs.pop(next(iter(self._rngs)))
        return delay

    def down(self, size: int, key: int, hop: int = 0, client: str = "") -> float | None:
        """The response's one-way time in ms, or ``None`` when it is lost (reported)."""
        rng = self._rngs.pop((client, key), None) or packet_rng(key, hop)
        delay = self.link.deliver(size, False, rng)
        if delay is None:
            self.on_loss("downlink", key, client)
        return delay
