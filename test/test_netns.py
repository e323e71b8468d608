"""Robot side and server side in two network namespaces joined by a veth pair, so their DDS
traffic (forced onto UDP) crosses a real kernel network path that ``tc`` can shape.

The server namespace runs the real ``target_node``; the robot namespace runs a probe that
sends real protocol requests of two sizes and times the responses (``bench/netns_link.py``,
which also prints the figures for docs/results.md). Skipped with the reason where namespaces
cannot be made (not root, no iproute2).
"""

import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from netns_link import (  # noqa: E402
    LARGE, RATE_MBIT, SMALL, NamespaceError, NamespacePair, predicted_ms,
)


@pytest.fixture(scope="module")
def netns(tiny):
    if shutil.which("ip") is None or shutil.which("tc") is None:
        pytest.skip("iproute2 (ip, tc) is not installed")
    try:
        with NamespacePair("fetch_reach", str(tiny["target"])) as net:
            yield net
    except NamespaceError as exc:
        pytest.skip(str(exc))


def test_shaped_link_time_grows_with_payload_as_the_rate_predicts(netns):
    base = netns.probe()
    (small_bytes, small_rtt), (large_bytes, large_rtt) = base[SMALL], base[LARGE]
    assert large_rtt - small_rtt < 30  # unshaped veth: size barely matters
    netns.qdisc("tbf", "rate", f"{RATE_MBIT}mbit", "burst", "32kbit", "latency", "1s")
    try:
        shaped = netns.probe()
    finally:
        netns.clear_qdisc()
    predicted = predicted_ms(small_bytes, large_bytes)  # ms, uplink only
    measured = shaped[LARGE][1] - shaped[SMALL][1]
    assert predicted > 100  # the test has power: ~61 KB more at 4 Mb/s
    # the rate sets a floor; a busy machine adds its own delay on top (1.45x seen under load)
    assert 0.7 * predicted < measured < 2.0 * predicted, (predicted, measured, base, shaped)


def test_configured_delay_with_netem(netns):
    added = netns.qdisc("netem", "delay", "20ms", "2ms", check=False)
    if added.returncode != 0:
        pytest.skip(f"this kernel has no netem qdisc ({added.stderr.strip()}): the delay part "
                    "needs sch_netem; the rate part above uses tbf")
    try:
        delayed = netns.probe(rows=(SMALL,))
    finally:
        netns.clear_qdisc()
    plain = netns.probe(rows=(SMALL,))
    extra = delayed[SMALL][1] - plain[SMALL][1]
    assert 14 < extra < 30, extra  # 20 ms ± a few, one way
