"""ROS ≡ in process in real time: a ``sim_time`` graph (the simulator is the clock, steps
are charged their modelled time) decides and acts as ``core.evaluator`` in real time, tick
for tick, where verdicts miss their tick, arrive stale or are lost."""

import numpy as np
import pytest
from ros_helpers import commanded, in_process, run_bringup

from hybrid_policy.bag_analysis import analyze, read_bag
from hybrid_policy.core.compute import ComputeModel
from hybrid_policy.core.realtime import PERIOD_SHARE, Clock

EPISODES, PERIOD_MS, DRAFT_MS = 2, 40.0, 1.0


@pytest.mark.parametrize("mode,interface,link,loop,target_ms", [
    # a 10 ms link, 10% loss, a 20 ms server: verdicts land a tick late or are lost
    ("hybrid", "vector", "lossy_wifi", "wait", 20.0),
    # a ~29 ms round trip against the period loop's 28 ms deadline: some fall back
    ("adahi", "standard", "5g_embb", "period", 20.0),
])
def test_sim_time_graph_acts_as_in_process_real_time(cli, tiny, tmp_path, mode, interface, link,
                                                     loop, target_ms):
    clock = Clock("realtime", PERIOD_MS, loop)
    compute = ComputeModel(DRAFT_MS, target_ms)
    tau = None
    if mode == "adahi":  # τ at the median deviation: some steps skipped, some verified
        recs, _ = in_process(tiny, "hybrid", link, EPISODES, compute=compute, clock=clock,
                             deadline_ms=100.0)
        tau = float(np.median([r.plan.deviation for r in recs]))
    records, expected = in_process(tiny, mode, link, EPISODES, tau, 100.0, compute, clock)
    bag = tmp_path / "bag"
    out = run_bringup(cli, tiny, bag, mode, link, EPISODES, "--clock", "sim_time", "--loop", loop,
                      "--rate-hz", "25", "--draft-ms", str(DRAFT_MS), "--target-ms",
                      str(target_ms), "--deadline-ms", "100", "--interface", interface,
                      *([] if tau is None else ["--tau", repr(tau)]))
    assert out.returncode == 0, out.stderr[-3000:]

    _, topics = read_bag(bag)
    steps = [dict(zip(m.name, m.position)) for _, m in topics["step"]]
    assert len(steps) == len(records)
    # every step charged exactly the in-process latency, so each command met the same tick
    assert [s["latency_ms"] for s in steps] == [r.latency_ms for r in records]
    assert [bool(s["uplink"]) for s in steps] == [r.plan.request is not None for r in records]
    assert [bool(s["fallback"]) for s in steps] == [r.lost for r in records]
    # the robot acted tick for tick as in process: the draft saw the same states
    assert [s["deviation"] for s in steps] == pytest.approx(
        [r.plan.deviation for r in records], rel=1e-6)
    told, policy = commanded(topics, interface, np.array([r.action for r in records]))
    np.testing.assert_allclose(told, policy, atol=1e-6)
    if interface == "vector":
        observed = np.array([m.position[2:] for _, m in topics["observation"]])
        np.testing.assert_allclose(observed, [r.plan.window[-1] for r in records], atol=1e-5)

    c = analyze(bag)["modes"][mode]["counts"]
    assert (c["missed_ticks"], c["stale_ticks"]) == (expected.missed_ticks, expected.stale_ticks)
    assert (c["fallbacks"], c["server_ops"]) == (expected.fallbacks, expected.server_ops)
    assert (c["successes"], c["episodes"]) == (expected.successes, EPISODES)
    if loop == "wait":  # the real-time rule was exercised: late, stale and lost verdicts
        assert expected.missed_ticks > 0 and expected.stale_ticks > 0 and c["losses"] > 0
    else:  # the period loop's fallback makes every tick
        assert expected.missed_ticks == 0 and 0 < expected.fallbacks < len(records)
        assert PERIOD_SHARE * PERIOD_MS < max(s["latency_ms"] for s in steps) <= PERIOD_MS
    # the bag's timeline is simulated time: one period a tick from 1 s
    times = [t for t, _ in topics["step"]]
    assert 1e9 <= times[0] and times[-1] - times[0] < (len(steps) + 5 * EPISODES) * PERIOD_MS * 1e6
