"""The installed ``hybrid-policy`` command, run as a user runs it."""

import json
import subprocess

from conftest import run_cli

import numpy as np
import yaml

import sim_envs
from hybrid_policy.families.adahi.modes import MODE_NAMES
from sim_envs import dataset


def run(cli, *args):
    """The command in this process (``conftest.run_cli``); the console script itself runs as a
    process in ``test_tasks_lists_all_tasks``."""
    return run_cli(*args)


def test_tasks_lists_all_tasks(cli):
    out = subprocess.run([*cli, "tasks"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    for name in sim_envs.task_names():
        spec = sim_envs.task_spec(name)
        line = next(ln for ln in out.stdout.splitlines() if ln.startswith(name + " "))
        assert str(spec.obs_dim) in line.split() and str(spec.max_steps) in line.split()


def test_demos_writes_reproducible_data_set(cli, tmp_path):
    out_dir = tmp_path / "d"
    args = ("demos", "--task", "fetch_push", "--episodes", "5", "--out", str(out_dir), "--seed", "0")
    first = run(cli, *args)
    assert first.returncode == 0, first.stderr
    data = (out_dir / "fetch_push.demos.npz").read_bytes()
    second = run(cli, *args)
    assert second.returncode == 0, second.stderr
    assert (out_dir / "fetch_push.demos.npz").read_bytes() == data
    ds = dataset.load(out_dir)
    assert ds.meta["episodes_requested"] == 5 and ds.num_episodes >= 4
    assert np.all(np.abs(ds.actions) <= 1.0)


def test_bad_inputs_exit_2_with_a_clear_message(cli, tmp_path):
    out = run(cli, "demos", "--task", "nope", "--episodes", "2", "--out", str(tmp_path / "x"))
    assert out.returncode == 2 and "valid tasks: fetch_reach" in out.stderr
    assert not (tmp_path / "x").exists()
    for bad in ("0", "-3", "two"):
        out = run(cli, "demos", "--task", "fetch_reach", "--episodes", bad, "--out", str(tmp_path))
        assert out.returncode == 2 and "--episodes" in out.stderr and "positive integer" in out.stderr
    garbage = tmp_path / "g"
    garbage.write_text("not a directory")
    out = run(cli, "demos", "--task", "fetch_reach", "--episodes", "1", "--out", str(garbage))
    assert out.returncode == 2 and "not a directory" in out.stderr


def test_train_then_eval(cli, tiny, tmp_path):
    out = tmp_path / "m"
    for role in ("draft", "target"):
        res = run(cli, "train", "--task", "fetch_reach", "--role", role, "--data",
                  str(tiny["data"]), "--out", str(out / role), "--epochs", "2")
        assert res.returncode == 0, res.stderr
        assert (out / role / "model.safetensors").exists()
    assert (out / "tokenizer" / "config.json").exists()  # fitted once, shared by both
    res = run(cli, "eval", "--task", "fetch_reach", "--modes", "draft_only,target_only",
              "--episodes", "2", "--draft", str(out / "draft"), "--target", str(out / "target"),
              "--json", str(tmp_path / "e.json"))
    assert res.returncode == 0, res.stderr
    assert "target_only" in res.stdout and (tmp_path / "e.json").exists()


def test_train_and_eval_bad_inputs(cli, tiny, tmp_path):
    res = run(cli, "train", "--task", "fetch_push", "--role", "draft", "--data",
              str(tiny["data"]), "--out", str(tmp_path / "d"))
    assert res.returncode == 2 and "holds demonstrations of 'fetch_reach'" in res.stderr
    res = run(cli, "eval", "--task", "fetch_reach", "--modes", "draft_only", "--episodes", "1",
              "--draft", str(tmp_path / "missing"), "--target", str(tiny["target"]))
    assert res.returncode == 2 and "missing: no such checkpoint directory" in res.stderr
    res = run(cli, "eval", "--task", "fetch_reach", "--modes", "teleport", "--episodes", "1",
              "--draft", str(tiny["draft"]), "--target", str(tiny["target"]))
    assert res.returncode == 2 and "valid modes: draft_only, target_only" in res.stderr


def test_calibrate_then_eval_every_mode(cli, tiny, tmp_path):
    models = ["--draft", str(tiny["draft"]), "--target", str(tiny["target"])]
    cal = tmp_path / "cal.json"
    res = run(cli, "calibrate", "--task", "fetch_reach", *models, "--link", "wifi",
              "--episodes", "4", "--sweep-episodes", "1", "--calibration", str(cal))
    assert res.returncode == 0, res.stderr
    assert "tau* =" in res.stdout and "Spearman" in res.stdout
    doc = json.loads(cal.read_text())
    assert doc["task"] == "fetch_reach" and doc["link"] == "wifi" and doc["thresholds"]["tau"] >= 0
    # the draft ran alone on the same 4 scenes; the quality bound follows the rule
    alone, costs = doc["draft_alone"], doc["costs"]
    assert alone["episodes"] == 4 and "calibration scenes" in res.stdout
    lifted = alone["draft_only_successes"] >= alone["hybrid_successes"]
    assert alone["quality_bound"] == ("lifted" if lifted else "kept")
    assert costs["quality_bound"] == (None if lifted else costs["mean_rejection"])
    assert (tmp_path / "wifi_deviation.png").stat().st_size > 10_000
    assert (tmp_path / "wifi_tradeoff.png").stat().st_size > 10_000
    res = run(cli, "eval", "--task", "fetch_reach", *models, "--link", "wifi", "--modes", "all",
              "--episodes", "2", "--calibration", str(cal), "--json", str(tmp_path / "e.json"))
    assert res.returncode == 0, res.stderr
    modes = json.loads((tmp_path / "e.json").read_text())["modes"]
    assert sorted(modes) == sorted(MODE_NAMES)
    # a calibration made for another link is refused, not silently used
    res = run(cli, "eval", "--task", "fetch_reach", *models, "--link", "5g_embb", "--modes",
              "adahi", "--episodes", "1", "--calibration", str(cal))
    assert res.returncode == 2 and "calibrated for other settings: link 'wifi'" in res.stderr


def test_eval_refuses_bad_link_and_tau_before_loading_models(cli, tmp_path):
    res = run(cli, "eval", "--task", "fetch_reach", "--link", "carrier_pigeon",
              "--models", str(tmp_path / "none"))
    assert res.returncode == 2 and "valid profiles: 6g_hrllc, 5g_urllc, 5g_embb" in res.stderr
    for bad in ("-0.5", "inf", "nan"):
        res = run(cli, "eval", "--task", "fetch_reach", "--tau", bad, "--models",
                  str(tmp_path / "none"))
        assert res.returncode == 2 and "finite number >= 0" in res.stderr, res.stderr
    assert not (tmp_path / "none").exists()  # nothing trained for a bad command line


def test_eval_in_real_time_reports_ticks(cli, tiny, tmp_path):
    """Real time is eval's default clock: on a link slower than the 40 ms period verified
    steps miss their ticks, draft-only steps never do, one robot or a fleet; lockstep waits
    and misses none; the JSON says which clock ran."""
    common = ["eval", "--task", "fetch_reach", "--modes", "draft_only,target_only",
              "--episodes", "1", "--draft", str(tiny["draft"]), "--target", str(tiny["target"]),
              "--link", "lossy_wifi"]
    for clock in ("realtime", "lockstep"):
        res = run(cli, *common, *(["--eval-clock", "lockstep"] if clock == "lockstep" else []),
                  "--json", str(tmp_path / f"{clock}.json"))
        assert res.returncode == 0, res.stderr
        doc = json.loads((tmp_path / f"{clock}.json").read_text())
        assert doc["clock"] == clock and doc["period_ms"] == 40.0
        assert doc["modes"]["draft_only"]["missed_ticks_per_step"] == 0
        assert (doc["modes"]["target_only"]["missed_ticks_per_step"] > 0) == (
            clock == "realtime")
    topo = tmp_path / "fleet.yaml"
    topo.write_text(yaml.safe_dump({
        "nodes": {"edge": {"tier": "edge", "max_batch": 4}},
        "robots": [{"name": "r", "count": 2, "task": "fetch_reach", "mode": "target_only",
                    "access": "edge", "link": "lossy_wifi"}]}))
    res = run(cli, *common, "--topology", str(topo), "--loop", "wait", "--json",
              str(tmp_path / "fleet.json"))
    assert res.returncode == 0, res.stderr
    doc = json.loads((tmp_path / "fleet.json").read_text())
    assert doc["clock"] == "realtime" and doc["loop"] == "wait"
    robots = doc["modes"]["target_only"]["robots"]
    assert [r["robot"] for r in robots] == ["r_0", "r_1"]
    assert all(r["missed_ticks_per_step"] > 0 for r in robots)


def test_eval_pins_the_compute_model(cli, tiny, tmp_path):
    """--draft-ms/--target-ms replace the measured compute (results then do not move with the
    machine's load): with a 45 ms server on an ideal link every command lands a tick late
    in real time (the first tick holds, every later one applies the state before), and the
    JSON records the pinned figures."""
    res = run(cli, "eval", "--task", "fetch_reach", "--modes", "target_only", "--episodes", "1",
              "--draft", str(tiny["draft"]), "--target", str(tiny["target"]), "--link", "ideal",
              "--draft-ms", "1.5", "--target-ms", "45", "--json", str(tmp_path / "e.json"))
    assert res.returncode == 0, res.stderr
    doc = json.loads((tmp_path / "e.json").read_text())
    assert (doc["compute"]["draft_ms"], doc["compute"]["target_ms"]) == (1.5, 45.0)
    m = doc["modes"]["target_only"]
    assert m["missed_ticks_per_step"] > 0
    assert m["missed_ticks_per_step"] + m["stale_ticks_per_step"] == 1.0
    assert "pinned" in res.stderr
