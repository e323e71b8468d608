"""The load-aware threshold (core.load_threshold): the fixed point, the queue it assumes,
the unchanged τ* without price or load, and the CLI's option."""

import json
import math

import numpy as np
import pytest
import yaml

from hybrid_policy.families.adahi.server import answering
from hybrid_policy.cli import build_parser, main
from hybrid_policy.families.adahi.load_threshold import (
    Calibrated, Load, LoadThresholdError, check_price, marginal_delay, md1_wait, solve,
)
from hybrid_policy.families.adahi.threshold import Costs, LinearFit, derive_tau, rejection_bound

from conftest import write_calibration


def instance(seed=0, n=2000, mean_rejection=0.3, verify_ms=3.3, non_finite=5):
    """A calibration like fetch_push's: log-normal Δ, r = a + b ln(Δ + ε) + noise."""
    rng = np.random.default_rng(seed)
    delta = rng.lognormal(np.log(0.05), 1.0, n).tolist() + [None] * non_finite
    fit = LinearFit(0.55, 0.09, 0.6, 0.78, n)
    costs = Costs(verify_ms, 40.0, 0.45, 2.0)  # C_e = 36 ms
    return Calibrated.from_samples(fit, costs, mean_rejection, delta)


def g(cal, load, price, tau):
    """The map τ → s(τ) → ρ → D(ρ) → τ, written out from the definitions (τ: an array)."""
    tau = np.atleast_1d(np.asarray(tau, float))
    s = (np.asarray(cal.delta)[:, None] < tau[None, :]).sum(axis=0) / cal.steps
    rho = load.robots * (1 - s) * load.service_ms / load.control_period_ms
    with np.errstate(divide="ignore"):
        delay = np.where(rho < 1, rho * (2 - rho) * load.service_ms / (2 * (1 - rho) ** 2),
                         np.inf)
    r_star = np.minimum((cal.costs.verify_ms + delay + price) / cal.costs.error_cost_ms,
                        cal.mean_rejection)
    out = np.maximum(0.0, np.exp((r_star - cal.fit.intercept) / cal.fit.slope) - 1e-3)
    return out if out.size > 1 else float(out[0])


@pytest.mark.parametrize("robots,price,mean_rejection", [
    (1, 0.0, 0.3), (8, 0.0, 0.3), (12, 0.0, 0.9), (8, 2.0, 0.9), (4, 6.0, 0.3),
    (30, 0.0, 0.3),  # overloaded: ρ ≥ 1 at every skip rate the quality bound allows
])
def test_the_fixed_point_equals_a_brute_force_search(robots, price, mean_rejection):
    cal = instance(mean_rejection=mean_rejection)
    load = Load(robots, 40.0, 3.0)
    res = solve(cal, load, price)
    # brute force: every sample value, midpoints between them and a fine grid up to g(0)
    d = np.unique(cal.delta)
    grid = np.unique(np.concatenate([d, (d[1:] + d[:-1]) / 2,
                                     np.linspace(0, g(cal, load, price, 0.0), 5001)]))
    above = g(cal, load, price, grid) >= grid
    best = grid[above].max()
    assert g(cal, load, price, res.tau) >= res.tau  # the load at τ justifies τ …
    assert g(cal, load, price, res.tau + 1e-9) < res.tau + 1e-9  # … and nothing above it
    assert best <= res.tau and not (above[grid > best]).any()  # the set below is [0, best]
    assert not ((grid > best) & (grid < res.tau)).any()  # no grid point left between
    assert res.skip_rate == pytest.approx(cal.skip_rate(res.tau))
    assert res.utilisation == pytest.approx(load.utilisation(res.skip_rate))


def test_the_fixed_point_minimises_the_modelled_fleet_cost():
    """Without the quality bound, J(s) = (1 − s)(L_v + π + W_q(ρ)) + s E[r | skipped] C_e
    over every threshold on the samples is least at the fixed point (to a few samples:
    the fixed point uses the derivative of ρ W_q where J moves by one sample)."""
    cal = instance(mean_rejection=1.0, non_finite=0)
    load, price = Load(10, 40.0, 3.0), 1.0
    d = np.sort(cal.delta)
    r = cal.fit.predict(d)
    n = len(d)
    cost = []
    for k in range(n + 1):  # skip the k smallest Δ
        s = k / n
        rho = load.utilisation(s)
        verify = (1 - s) * (cal.costs.verify_ms + price + md1_wait(rho, load.service_ms))
        cost.append(verify + r[:k].sum() / n * cal.costs.error_cost_ms)
    best = int(np.argmin(cost)) / n
    res = solve(cal, load, price)
    assert res.bound == "link" and 0.1 < res.skip_rate < 0.9
    assert abs(res.skip_rate - best) <= 3 / n


def test_price_zero_and_no_load_is_todays_tau_exactly():
    for mean_rejection, verify_ms in ((0.3, 3.3), (0.3, 12.0), (0.05, 3.3)):
        cal = instance(mean_rejection=mean_rejection, verify_ms=verify_ms)
        r_star, bound = rejection_bound(cal.costs, cal.mean_rejection)
        res = solve(cal, None, 0.0)
        assert res.tau == derive_tau(cal.fit, r_star) and res.bound == bound
        assert res.wait_ms == 0.0 and res.utilisation == 0.0
    assert {solve(instance(verify_ms=v), None).bound for v in (3.3, 12.0)} == {"link", "quality"}


def test_price_zero_and_no_load_reads_todays_tau_from_a_calibration_file():
    """Through the JSON a calibration is saved as: the same τ* to the bit."""
    cal = instance()
    r_star, bound = rejection_bound(cal.costs, cal.mean_rejection)
    tau = derive_tau(cal.fit, r_star)
    doc = json.loads(json.dumps({
        "fit": cal.fit.__dict__, "thresholds": {"tau": tau},
        "costs": {**cal.costs.__dict__, "quality_bound": cal.mean_rejection},
        "samples": {"delta": cal.delta.tolist() + [None]}}))
    assert solve(Calibrated.from_doc(doc), None).tau == doc["thresholds"]["tau"]
    with pytest.raises(LoadThresholdError, match="calibrate"):
        Calibrated.from_doc({"fit": doc["fit"], "costs": doc["costs"]})


def test_load_and_price_raise_tau_up_to_the_quality_bound():
    cal = instance()
    taus = [solve(cal, Load(n, 40.0, 3.0)).tau for n in (1, 4, 8, 12)]
    assert taus == sorted(taus) and taus[-1] > taus[0]
    prices = [solve(cal, Load(4, 40.0, 3.0), p) for p in (0, 2, 5, 50, 500)]
    assert [p.tau for p in prices] == sorted(p.tau for p in prices)
    quality = derive_tau(cal.fit, cal.mean_rejection)
    assert prices[-1].bound == "quality" and prices[-1].tau == quality
    over = solve(cal, Load(100, 40.0, 3.0))  # overloaded at any skip rate: quality bound
    assert over.bound == "quality" and over.utilisation >= 1 and over.wait_ms == math.inf
    assert over.as_dict()["wait_ms"] is None  # JSON-safe


def lindley_wait(rho, service, n=200_000, seed=0):
    """Mean wait of a FIFO queue with Poisson arrivals and deterministic service."""
    gaps = np.random.default_rng(seed).exponential(service / rho, n)
    w, total = 0.0, 0.0
    for a in gaps[1:]:
        w = max(0.0, w + service - a)
        total += w
    return total / (n - 1)


@pytest.mark.parametrize("rho", [0.3, 0.6, 0.8])
def test_the_wait_is_the_m_d_1_closed_form(rho):
    assert md1_wait(rho, 3.0) == pytest.approx(rho * 3.0 / (2 * (1 - rho)))
    assert lindley_wait(rho, 3.0) == pytest.approx(md1_wait(rho, 3.0), rel=0.06)
    h = 1e-6  # D = d(ρ W_q)/dρ
    numeric = ((rho + h) * md1_wait(rho + h, 3.0) - (rho - h) * md1_wait(rho - h, 3.0)) / (2 * h)
    assert marginal_delay(rho, 3.0) == pytest.approx(numeric, rel=1e-6)
    assert md1_wait(1.0, 3.0) == marginal_delay(1.2, 3.0) == math.inf


@pytest.mark.parametrize("kwargs,match", [
    ({"robots": 0}, "robots must be an integer >= 1"),
    ({"service_ms": -1.0}, "service_ms must be a finite number > 0"),
    ({"control_period_ms": float("nan")}, "control_period_ms must be a finite number > 0"),
])
def test_bad_loads_and_prices_say_what_is_valid(kwargs, match):
    with pytest.raises(LoadThresholdError, match=match):
        Load(**{"robots": 2, "control_period_ms": 40.0, "service_ms": 3.0, **kwargs})
    for bad in (-1.0, float("inf"), float("nan"), "5", True):
        with pytest.raises(LoadThresholdError, match="finite number of ms >= 0"):
            check_price(bad)


@pytest.mark.parametrize("command", ["eval", "calibrate"])
@pytest.mark.parametrize("value", ["-1", "nan", "inf", "five"])
def test_the_price_option_refuses_bad_values(command, value, capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args([command, "--task", "fetch_push", "--price-ms", value])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--price-ms" in err and ">= 0" in err


def test_the_defaults_are_unchanged():
    args = build_parser().parse_args(["eval", "--task", "fetch_push"])
    assert args.load_price_ms is None
    assert build_parser().parse_args(["calibrate", "--task", "fetch_push"]).price_ms == 0.0


def test_eval_refuses_tau_with_price(caplog):
    assert main(["eval", "--task", "fetch_push", "--tau", "0.1", "--price-ms", "2"]) == 2
    assert "give one of them" in caplog.text


def test_eval_topology_derives_tau_per_server(tiny, tmp_path, capsys):
    """eval --topology --price-ms: the fleet runs adahi at the τ solved for its server."""
    cal = instance(n=300)
    r_star, _ = rejection_bound(cal.costs, cal.mean_rejection)
    path = write_calibration(tmp_path / "cal.json", tiny, "6g_hrllc", {
        "tau": derive_tau(cal.fit, r_star), "uncertainty_tau": 0.5, "random_skip": 0.3})
    doc = json.loads(path.read_text())
    delta = cal.delta.tolist() + [None] * (cal.steps - len(cal.delta))
    doc.update({"fit": cal.fit.__dict__, "samples": {"delta": delta},
                "costs": {**cal.costs.__dict__, "quality_bound": cal.mean_rejection}})
    path.write_text(json.dumps(doc))
    topo = tmp_path / "fleet.yaml"
    topo.write_text(yaml.safe_dump({
        "nodes": {"edge": {"tier": "edge", "max_batch": 1, "speed": 0.5}},
        "robots": [{"name": "r", "count": 3, "task": "fetch_reach", "mode": "adahi",
                    "access": "edge", "link": "6g_hrllc"}]}))
    out = tmp_path / "out.json"
    assert main(["eval", "--task", "fetch_reach", "--link", "6g_hrllc", "--draft",
                 str(tiny["draft"]), "--target", str(tiny["target"]), "--calibration", str(path),
                 "--modes", "adahi", "--episodes", "1", "--topology", str(topo),
                 "--price-ms", "4", "--json", str(out)]) == 0
    rec = json.loads(out.read_text())["load_threshold"]["edge"]
    assert rec["robots"] == 3 and rec["price_ms"] == 4.0
    again = solve(cal, Load(3, 40.0, rec["service_ms"]), 4.0)
    assert rec["tau"] == again.tau > doc["thresholds"]["tau"]
    assert "load-aware tau for edge: 3 robot(s)" in capsys.readouterr().out


def test_calibrate_with_a_price_writes_the_one_robot_fixed_point(tiny):
    """calibrate --price-ms: τ* is the fixed point for one robot on its own server; the
    same calibration without a price keeps today's τ*."""
    from dataclasses import replace

    from hybrid_policy.families.adahi import calibration
    from hybrid_policy.core.compute import ComputeModel
    from hybrid_policy.core.evaluator import Setting
    from hybrid_policy.core.link import link_profile
    from hybrid_policy.policies import load_policy

    draft = load_policy(tiny["draft"], role="draft")
    target = load_policy(tiny["target"], role="target")
    setting = Setting(answering(target), link_profile("6g_hrllc"), ComputeModel(1.0, 2.0))
    cfg = calibration.CalibrationConfig(episodes=3, sweep_episodes=1, sweep_points=2)
    plain = calibration.calibrate("fetch_reach", draft, target, setting, cfg, 40.0)
    priced = calibration.calibrate("fetch_reach", draft, target, setting,
                                   replace(cfg, price_ms=30.0), 40.0)
    cal = Calibrated.from_doc(plain)
    r_star, _ = rejection_bound(cal.costs, cal.mean_rejection)
    assert plain["thresholds"]["tau"] == derive_tau(cal.fit, r_star)
    assert "price_ms" not in plain["costs"] and plain["config"]["price_ms"] == 0.0
    want = solve(Calibrated.from_doc(priced), Load(1, 40.0, 2.0), 30.0)
    assert priced["thresholds"]["tau"] == want.tau >= plain["thresholds"]["tau"]
    assert priced["costs"]["price_ms"] == 30.0 and priced["costs"]["load"]["tau"] == want.tau
    assert priced["calibration_skip_rate"] == want.skip_rate
