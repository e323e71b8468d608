"""Link and compute model: how long a verification round trip takes, and whether it arrives.

A ``LinkProfile`` gives one-way propagation delay, uplink/downlink rates, jitter and packet
loss. Transmission time uses the real serialised payload size (``payload_bytes`` mirrors
the CDR size of the ROS message that carries it; a ROS-side test checks the two agree).

Profile figures (one-way delay, user-experienced rates) follow the public targets:
ITU-R M.2410 (IMT-2020: URLLC user-plane latency 1 ms, eMBB 4 ms, user-experienced
rates 50/100 Mb/s up/down), ITU-R M.2160 (IMT-2030 framework: 0.1–1 ms latency,
hyper-reliable low-latency communication), and typical Wi-Fi 6 measurements (a few ms,
jitter of milliseconds, 1e-3 loss). ``lossy_wifi`` is a congested link with 10% loss;
``ideal`` has no delay and no loss (policy quality and compute alone).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from hybrid_policy.errors import HybridPolicyError

# Per-packet overhead on the air: RTPS/UDP/IP headers (~20 + 8 + 20 + RTPS ~44 bytes).
HEADER_BYTES = 92


class UnknownLinkError(HybridPolicyError, KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class LinkProfile:
    name: str
    delay_ms: float  # one-way propagation + access delay
    uplink_mbps: float
    downlink_mbps: float
    jitter_ms: float  # standard deviation of the extra delay (half-normal, never negative)
    loss: float  # probability that one packet is lost
    source: str

    def transfer_ms(self, payload_bytes: int, uplink: bool, rng: np.random.Generator) -> float:
        rate = self.uplink_mbps if uplink else self.downlink_mbps
        serialisation = (payload_bytes + HEADER_BYTES) * 8 / (rate * 1e3)  # bits / (bits/ms)
        return self.delay_ms + serialisation + abs(rng.normal(0.0, self.jitter_ms))

    def lost(self, rng: np.random.Generator) -> bool:
        return bool(rng.random() < self.loss)

    def deliver(self, payload_bytes: int, uplink: bool, rng: np.random.Generator) -> float | None:
        """One packet over the link: its one-way time in ms, or ``None`` when it is lost.
        Draws loss first, then jitter, from ``rng`` (see ``packet_rng``)."""
        if self.lost(rng):
            return None
        return self.transfer_ms(payload_bytes, uplink, rng)


def expected_ms(links, up_bytes: int, down_bytes: int) -> float:
    """Mean time of one message up and its answer down over ``links`` (delay, serialisation
    with the packet header, and the half-normal jitter's mean; no loss)."""
    def one(link: LinkProfile, size: int, rate: float) -> float:
        return link.delay_ms + (size + HEADER_BYTES) * 8 / (rate * 1e3) + \
            link.jitter_ms * math.sqrt(2 / math.pi)
    return sum(one(k, up_bytes, k.uplink_mbps) + one(k, down_bytes, k.downlink_mbps)
               for k in links)


def packet_rng(request_seed: int, hop: int = 0) -> np.random.Generator:
    """The randomness of one hop for one request and its response, derived from the
    request's seed and the hop's place on the route (0 = the robot's own link): the
    in-process evaluators and the ROS link node of that hop draw the same losses and
    jitter for the same request, whatever else happened before it."""
    return np.random.default_rng([request_seed, 0x11C] + ([hop] if hop else []))


PROFILES: dict[str, LinkProfile] = {p.name: p for p in (
    LinkProfile("6g_hrllc", 0.1, 1000.0, 1000.0, 0.02, 1e-7, "ITU-R M.2160 (IMT-2030 HRLLC)"),
    LinkProfile("5g_urllc", 1.0, 50.0, 100.0, 0.1, 1e-5, "ITU-R M.2410 (URLLC, 1 ms)"),
    LinkProfile("5g_embb", 4.0, 50.0, 100.0, 1.0, 1e-3, "ITU-R M.2410 (eMBB, 4 ms)"),
    LinkProfile("wifi", 3.0, 100.0, 200.0, 2.0, 1e-3, "typical Wi-Fi 6 LAN"),
    LinkProfile("lossy_wifi", 10.0, 10.0, 20.0, 5.0, 0.10, "congested Wi-Fi, 10% loss"),
    LinkProfile("ideal", 0.0, float("inf"), float("inf"), 0.0, 0.0,
                "no delay, no loss: isolates policy quality and compute time"),
)}


def link_profile(name: str) -> LinkProfile:
    try:
        return PROFILES[name]
    except KeyError:
        raise UnknownLinkError(
            f"unknown link profile {name!r}; valid profiles: {', '.join(PROFILES)}") from None


def link_spec(link: LinkProfile) -> str:
    """A link as text, ``profile`` or ``profile:up_mbps:down_mbps:delay_ms`` with -1 for a
    figure the profile keeps (a ROS link node's ``links`` parameter)."""
    base = link_profile(link.name)
    figures = [getattr(link, k) if getattr(link, k) != getattr(base, k) else -1.0
               for k in ("uplink_mbps", "downlink_mbps", "delay_ms")]
    return link.name if figures == [-1.0] * 3 else ":".join([link.name, *map(repr, figures)])


def parse_link_spec(spec: str) -> LinkProfile:
    """The link ``link_spec`` wrote."""
    from dataclasses import replace

    name, *figures = spec.split(":")
    link = link_profile(name)
    if not figures:
        return link
    try:
        up, down, delay = (float(x) for x in figures)
    except ValueError:
        raise HybridPolicyError(f"link {spec!r} is not 'profile' or "
                                "'profile:up_mbps:down_mbps:delay_ms'") from None
    keep = {k: v for k, v in (("uplink_mbps", up), ("downlink_mbps", down),
                              ("delay_ms", delay)) if v != -1.0}
    if any(not v >= 0 or (v == 0 and k != "delay_ms") for k, v in keep.items()):
        raise HybridPolicyError(f"link {spec!r}: rates must be > 0 and the delay >= 0")
    return replace(link, **keep)


# Payload sizes of the per-step messages, in bytes of serialised CDR, mirroring
# sensor_msgs/JointState (header, name[], position[], empty velocity[] and effort[]) as
# rmw_fastrtps serialises it: a 4-byte encapsulation header, the body aligned relative to
# its own start, and the buffer padding rmw adds (observed: to the next multiple of 8 after
# 4 more bytes, plus 4). A ROS-side test compares it with rclpy's serialiser.
def joint_state_bytes(names: list[str], positions: int) -> int:
    n = 8 + 4 + 1  # stamp (sec, nanosec); frame_id: length + NUL (empty)
    n = _align(n, 4) + 4  # name: sequence length
    for name in names:
        n = _align(n, 4) + 4 + len(name.encode()) + 1
    n = _align(n, 4) + 4  # position: sequence length
    if positions:
        n = _align(n, 8) + 8 * positions
    n = _align(n, 4) + 4 + 4  # empty velocity and effort: their lengths
    return _align(4 + n + 4, 8) + 4


def _align(n: int, to: int) -> int:
    return (n + to - 1) // to * to
