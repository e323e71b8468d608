import subprocess
import sys
from pathlib import Path

import pytest

from hybrid_policy.policies.build import ensure_tokenizer, train_role
from hybrid_policy.policies.tokenizer import TokenizerConfig
from hybrid_policy.policies.training import TrainConfig, data_record
from sim_envs import dataset
from sim_envs.collect import collect_demos

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def cli() -> list[str]:
    """The installed ``hybrid-policy`` console script of the interpreter running the tests."""
    exe = Path(sys.executable).with_name("hybrid-policy")
    if not exe.exists():
        pytest.fail(f"{exe} is missing: install the package (make setup)")
    return [str(exe)]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    """``hybrid-policy ARGS`` in this process (``cli.main``): its exit status, what it printed
    and what it logged, as ``subprocess.run`` would give them, without paying a new
    interpreter's imports per call (the console script itself: ``test_cli.py``)."""
    import contextlib
    import io
    import logging

    from hybrid_policy import cli as cli_module

    out, err = io.StringIO(), io.StringIO()
    handler = logging.StreamHandler(err)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("hybrid_policy")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)  # as main's basicConfig sets it in a process of its own
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = cli_module.main(list(args))
            except SystemExit as exc:  # argparse refused the command line
                code = exc.code if isinstance(exc.code, int) else 1
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    return subprocess.CompletedProcess(["hybrid-policy", *args], code, out.getvalue(),
                                       err.getvalue())


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """One torch thread per test worker: `make test` runs two workers on two cores, and two
    processes spinning two threads each made batch-1 inference up to 30x slower whenever a
    third process (a node, a Flower client) wanted a core as well."""
    import torch

    torch.set_num_threads(1)
    yield


@pytest.fixture(autouse=True)
def _quiet_tqdm(monkeypatch):
    monkeypatch.setenv("TQDM_DISABLE", "1")
    yield


SMALL_TOK = TokenizerConfig(levels=2, codebook_size=8, steps=200)


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """A tiny fetch_reach data set, its tokenizer, and a draft + target trained on it."""
    root = tmp_path_factory.mktemp("models")
    ds = collect_demos("fetch_reach", episodes=30, seed=0, progress=False)
    data_file = dataset.write_to_dir(ds, root / "demos", overwrite=False)
    record = data_record(ds, data_file)
    tok = ensure_tokenizer(root / "tokenizer", ds, record, SMALL_TOK)
    train = TrainConfig(epochs=8, lr=3e-3)
    draft = train_role(root / "draft", "draft", ds, record, tok, train, progress=False)
    target = train_role(root / "target", "target", ds, record, tok, train, progress=False)
    return {"root": root, "ds": ds, "data": data_file, "tok": tok, "draft": draft,
            "target": target}




@pytest.fixture(scope="session")
def tiny_ee(tiny):
    """An early-exit net (exits after layers 1, 2, 4) trained from the tiny target, saved
    under the tiny models' root with its exits' calibration at the default place."""
    from hybrid_policy.families.exits import calibration as exit_calibration
    from hybrid_policy.families.exits.setup import calibration_path
    from hybrid_policy.policies import load_policy
    from hybrid_policy.policies.card import checkpoint_identity
    from hybrid_policy.families.exits.net import (
        load_early_exit, save_early_exit, train_early_exit,
    )

    target = load_policy(tiny["target"], role="target")
    net, losses = train_early_exit(tiny["ds"], tiny["tok"], target.model, (1, 2, 4), (1, 1, 1),
                                   TrainConfig(epochs=4, lr=3e-3), progress=False)
    path = save_early_exit(tiny["root"] / "fetch_reach" / "early_exit", net, tiny["tok"],
                           "fetch_reach", {"losses": losses})
    loaded = load_early_exit(path, "fetch_reach")
    samples = exit_calibration.collect("fetch_reach", loaded, 4, 1000, progress=False)
    exit_calibration.save(samples, calibration_path(tiny["root"], "fetch_reach"),
                          "fetch_reach", checkpoint_identity(path))
    return {"net": loaded, "losses": losses, "target": target, "path": path,
            "samples": samples}


def write_calibration(path, tiny, link, thresholds, temperature=0.5):
    """A calibration file for the tiny models, as ``hybrid-policy calibrate`` writes one."""
    import json

    from hybrid_policy.families.adahi.calibration_file import VERSION
    from hybrid_policy.policies.card import checkpoint_identity

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({
        "version": VERSION, "task": "fetch_reach", "link": link, "temperature": temperature,
        "models": {"draft": checkpoint_identity(tiny["draft"]),
                   "target": checkpoint_identity(tiny["target"])},
        "thresholds": thresholds}))
    return path


@pytest.fixture(scope="session")
def calibrations(tiny):
    """``{link: calibration path}`` for every link profile, at the default place under the
    tiny models' root, each with its own τ (0.01 · (index + 1))."""
    from hybrid_policy.families.adahi.calibration_file import default_path
    from hybrid_policy.core.link import PROFILES

    return {link: write_calibration(default_path(tiny["root"], "fetch_reach", link), tiny, link,
                                    {"tau": 0.01 * (i + 1), "uncertainty_tau": 0.5,
                                     "random_skip": 0.3})
            for i, link in enumerate(PROFILES)}


@pytest.fixture(scope="session")
def tiny_students(tiny):
    """Two students of the tiny target (half the level-0 codes each), briefly distilled on
    the tiny demonstrations and saved under the tiny models' root."""
    from hybrid_policy.policies import load_policy
    from hybrid_policy.families.rocoin.students import (
        DistilConfig, distil, partition_codes, save_students,
    )
    from hybrid_policy.policies.training import history_windows

    target = load_policy(tiny["target"], role="target")
    k = target.codebook_size
    codes = partition_codes(target.code_table.reshape(k, k, -1), [k // 2, k - k // 2])
    nets, losses = distil(target, history_windows(tiny["ds"], target.history), codes,
                          DistilConfig(epochs=4, lr=3e-3), progress=False)
    path = save_students(tiny["root"] / "fetch_reach" / "students", nets, "fetch_reach",
                         {"losses": losses})
    return {"path": path, "nets": nets, "codes": codes, "target": target}


IDN_TOPOLOGY = """
nodes:
  cell_a: {tier: edge, speed: 0.5, max_batch: 4, memory_params: %(cell)d, parent: regional,
           link: {profile: 5g_urllc, delay_ms: 5}}
  cell_b: {tier: edge, speed: 0.5, max_batch: 4, memory_params: %(cell)d, parent: regional,
           link: {profile: 5g_urllc, delay_ms: 5}}
  regional: {tier: regional, speed: 1.0, max_batch: 8, memory_params: %(cell)d, parent: cloud,
             link: {profile: 5g_embb, delay_ms: 20}}
  cloud: {tier: cloud, speed: 4.0, max_batch: 16}
robots:
  - {name: robot, count: 2, task: fetch_reach, mode: idn, access: cell_a, link: wifi}
idn:
  period_ms: 200
  latency_weight: 0.01
  robot_params: %(robot)d
  load_ms_per_mparam: 0
  shifts:
    - {at_s: 1.0, robots: [robot_0, robot_1], access: cell_b}
"""


@pytest.fixture(scope="session")
def tiny_idn(tiny, tiny_ee, tmp_path_factory):
    """An inference delivery network of the tiny fetch_reach models: a models root with
    ``fetch_reach/{draft,target,early_exit}``, its measured catalogue (3 episodes per
    variant, with successes then set to 0.2 / 0.6 / 0.8 / 0.9 for draft / exit1 / exit2 /
    target: the tiny models rarely succeed, which would leave nothing to place) and a
    two-cell topology whose robots move cell after 1 s. Every node can hold the largest
    variant; a robot only the draft."""
    import shutil
    from dataclasses import replace

    from hybrid_policy.families.idn.catalogue import Catalogue
    from hybrid_policy.families.idn.setup import measure_catalogue

    root = tmp_path_factory.mktemp("idn_models")
    for kind in ("draft", "target"):
        shutil.copytree(tiny[kind], root / "fetch_reach" / kind)
    shutil.copytree(tiny_ee["path"], root / "fetch_reach" / "early_exit")
    measured = measure_catalogue(root, "fetch_reach", 3, progress=False)
    graded = {"draft": 0.2, "exit1": 0.6, "exit2": 0.8, "target": 0.9}
    catalogue = Catalogue(tuple(replace(v, success=graded[v.name]) for v in measured.variants))
    sizes = {v.name: v.params for v in catalogue.variants}
    topo = root / "idn.yaml"
    topo.write_text(IDN_TOPOLOGY % {"cell": max(sizes.values()), "robot": sizes["draft"]})
    return {"root": root, "catalogue": catalogue, "measured": measured, "topology": topo}
