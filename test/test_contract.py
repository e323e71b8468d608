"""The graph's contract without running it: every parser refuses garbage with a clear error
(never anything else), thresholds follow one rule in every entry point, the launch
description is right for every link, and the graph description loads without torch."""

import json
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sensor_msgs.msg import JointState

from hybrid_policy.families.adahi.calibration_file import thresholds_for
from hybrid_policy.core.link import PROFILES
from hybrid_policy.families.adahi.names import Thresholds
from hybrid_policy.errors import HybridPolicyError
from hybrid_policy.ros import messages
from hybrid_policy.ros.fleet_graph import launch_nodes
from hybrid_policy.ros.graph import MANAGER, load_config
from sim_envs import task_spec

from conftest import REPO

SPEC = task_spec("fetch_reach")
FLOATS = st.floats(allow_nan=True, allow_infinity=True, width=64)
LABELS = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["episode", "step", *SPEC.obs_fields, "verify:h2x13:l2:k8",
                     "act:h2x13:l0:k0", "a4:l2:tv2", "a4:l0:tv0", "verify:h0x0:l1:k1"]))


def _msg(names, values):
    msg = JointState()
    msg.name = list(names)
    msg.position = [float(v) for v in values]
    return msg


@settings(max_examples=300, deadline=None)
@given(names=st.lists(LABELS, max_size=20), values=st.lists(FLOATS, max_size=60))
def test_parsers_refuse_garbage_only_with_message_errors(names, values):
    """Whatever arrives, a parser returns a value or raises MessageError: never another
    exception that would escape a callback."""
    msg = _msg(names, values)
    for parse in (lambda m: messages.parse_observation(m, SPEC.obs_fields),
                  messages.parse_request, messages.parse_response,
                  lambda m: messages.parse_action(m, 4)):
        try:
            parse(msg)
        except messages.MessageError:
            pass


@settings(max_examples=200, deadline=None)
@given(episode=FLOATS, step=FLOATS)
def test_episode_and_step_must_be_whole_numbers_from_zero(episode, step):
    msg = _msg(["episode", "step", *SPEC.obs_fields], [episode, step, *np.zeros(SPEC.obs_dim)])
    valid = all(np.isfinite(v) and v >= 0 and v == int(v) and v < 2**31 for v in (episode, step))
    if valid:
        assert messages.parse_observation(msg, SPEC.obs_fields)[:2] == (int(episode), int(step))
    else:
        with pytest.raises(messages.MessageError, match="must be a whole number"):
            messages.parse_observation(msg, SPEC.obs_fields)


def test_threshold_rule_is_explicit_or_calibrated_never_a_default():
    cal = Thresholds(0.2, 1.5, 0.4)
    assert thresholds_for("hybrid", {"tau": -1.0}, None) is None
    assert thresholds_for("adahi", {"tau": 0.05}, None).tau == 0.05  # explicit: no file needed
    assert thresholds_for("adahi", {"tau": -1.0}, lambda: cal) == cal
    assert thresholds_for("random_skip", {"tau": 0.05}, lambda: cal) == Thresholds(0.05, 1.5, 0.4)
    with pytest.raises(HybridPolicyError, match="none was given"):
        thresholds_for("adahi", {"tau": -1.0}, None)
    with pytest.raises(HybridPolicyError, match="or -1 to take it from the calibration"):
        thresholds_for("adahi", {"tau": -0.5}, lambda: cal)
    with pytest.raises(HybridPolicyError, match="random_skip must be a probability"):
        thresholds_for("random_skip", {"random_skip": 1.5}, lambda: cal)


def _config(tmp_path, **graph):
    path = tmp_path / "hybrid.yaml"
    doc = json.loads(json.dumps({"graph": graph}))
    import yaml

    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.mark.parametrize("link", PROFILES)
def test_launch_description_takes_the_calibration_of_the_chosen_link(link, tiny, calibrations):
    """What the launch file starts for `mode:=adahi link:=<link>` with the shipped
    config/hybrid.yaml: the calibration of that link, its τ, the link node's profile."""
    overrides = {"mode": "adahi", "task": "fetch_reach", "link": link,
                 "models": str(tiny["root"]), "draft": str(tiny["draft"]),
                 "target": str(tiny["target"])}
    cfg, specs = launch_nodes(REPO / "config" / "hybrid.yaml", overrides)
    by_name = {s.name: s.parameters for s in specs}
    assert set(by_name) == {"sim_node", "draft_node", "link_node", "target_node", MANAGER}
    cal = json.loads(calibrations[link].read_text())
    draft = by_name["draft_node"]
    assert draft["calibration"] == str(calibrations[link])
    assert draft["tau"] == cal["thresholds"]["tau"] == cfg.tau
    assert draft["link"] == by_name["link_node"]["link"] == link
    assert by_name[MANAGER]["node_names"] == ["target_node", "draft_node"]
    assert by_name["sim_node"]["wait_for"] == ["link_node", MANAGER]


def test_launch_refuses_a_missing_calibration_with_the_command_that_makes_it(tiny, tmp_path):
    overrides = {"mode": "adahi", "task": "fetch_reach", "link": "wifi",
                 "models": str(tmp_path), "draft": str(tiny["draft"]),
                 "target": str(tiny["target"])}
    with pytest.raises(HybridPolicyError, match=r"no calibration: run `hybrid-policy calibrate "
                       r"--task fetch_reach --link wifi --models .*` first"):
        launch_nodes(REPO / "config" / "hybrid.yaml", overrides)


def test_launch_with_the_distilled_draft_takes_its_checkpoint_and_its_calibrations(tiny,
                                                                                   tmp_path):
    """`draft_kind:=distilled`: the draft node loads MODELS/TASK/draft_distilled with the
    threshold of calibration/distilled/LINK.json, never the demonstration draft's; a missing
    one is refused with the command that makes it for that draft; an unknown kind is
    refused with the valid ones."""
    import shutil

    from conftest import write_calibration
    from hybrid_policy.families.adahi.calibration_file import default_path

    shutil.copytree(tiny["draft"], tmp_path / "fetch_reach" / "draft_distilled")
    write_calibration(default_path(tmp_path, "fetch_reach", "wifi"), tiny, "wifi",
                      {"tau": 0.5, "uncertainty_tau": 0.5, "random_skip": 0.3})
    write_calibration(default_path(tmp_path, "fetch_reach", "wifi", "distilled"), tiny, "wifi",
                      {"tau": 0.123, "uncertainty_tau": 0.5, "random_skip": 0.3})
    overrides = {"mode": "adahi", "task": "fetch_reach", "link": "wifi", "models": str(tmp_path),
                 "target": str(tiny["target"]), "draft_kind": "distilled"}
    cfg, specs = launch_nodes(REPO / "config" / "hybrid.yaml", overrides)
    draft = {s.name: s.parameters for s in specs}["draft_node"]
    assert draft["draft"] == str(tmp_path / "fetch_reach" / "draft_distilled")
    assert draft["calibration"] == str(tmp_path / "fetch_reach" / "calibration" / "distilled"
                                       / "wifi.json")
    assert draft["tau"] == cfg.tau == 0.123
    with pytest.raises(HybridPolicyError, match=r"no calibration: run `hybrid-policy calibrate "
                       r"--task fetch_reach --link 6g_hrllc --models \S+ --draft-kind "
                       r"distilled` first"):
        launch_nodes(REPO / "config" / "hybrid.yaml", {**overrides, "link": "6g_hrllc"})
    with pytest.raises(HybridPolicyError, match="unknown draft kind 'teacher'; valid: "
                       "demonstrations, distilled"):
        launch_nodes(REPO / "config" / "hybrid.yaml", {**overrides, "draft_kind": "teacher"})


def test_calibration_of_other_models_is_refused(tiny, calibrations, tmp_path):
    from conftest import write_calibration

    doc = json.loads(calibrations["wifi"].read_text())
    stale = write_calibration(tmp_path / "cal.json", tiny, "wifi", doc["thresholds"])
    data = json.loads(stale.read_text())
    data["models"]["target"] = "0123456789abcdef"
    stale.write_text(json.dumps(data))
    cfg = _config(tmp_path, mode="adahi", task="fetch_reach", link="wifi",
                  draft=str(tiny["draft"]), target=str(tiny["target"]), calibration=str(stale))
    with pytest.raises(HybridPolicyError, match="calibrated for other settings: models"):
        load_config(cfg)
    assert load_config(cfg, {"tau": "0.07"}).tau == 0.07  # explicit: the file is not needed


def test_checkpoint_identity_from_files_equals_the_loaded_policy(tiny):
    from hybrid_policy.policies import load_policy
    from hybrid_policy.policies.card import checkpoint_identity

    for role in ("draft", "target"):
        assert checkpoint_identity(tiny[role]) == load_policy(tiny[role]).identity()


@pytest.mark.parametrize("code", [
    "import hybrid_policy.ros.graph",
    "from hybrid_policy.cli import build_parser; build_parser().parse_args(['eval', '--task', "
    "'fetch_push'])",
    "from hybrid_policy.ros.fleet_graph import launch_nodes; launch_nodes('config/hybrid.yaml', "
    "{'mode': 'hybrid'})",
])
def test_graph_launch_and_argument_parsing_do_not_import_torch(code):
    out = subprocess.run([sys.executable, "-c", f"{code}\nimport sys\n"
                          "assert 'torch' not in sys.modules, 'torch was imported'"],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]


def test_every_launch_argument_is_a_graph_setting():
    """The launch file maps its arguments onto `fleet_graph.launch_nodes` (read without importing
    `launch`, which the pip wheels lack): each one must be a setting `load_config` knows."""
    import ast
    from dataclasses import fields

    from hybrid_policy.ros.graph import GraphConfig

    tree = ast.parse((REPO / "launch" / "hybrid_launch.py").read_text())
    args = next(ast.literal_eval(node.value) for node in tree.body
                if isinstance(node, ast.Assign) and node.targets[0].id == "ARGUMENTS")
    settings = {f.name for f in fields(GraphConfig)}
    assert set(args) <= settings, set(args) - settings
    assert {"link", "calibration", "tau", "models"} <= set(args)
    assert "launch_nodes" in {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
