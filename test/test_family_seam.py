"""The family seam (``families.base``): a sixth family kept outside the package
(``test/toy_family``: a constant policy on one server), registered by
``HYBRID_POLICY_FAMILIES``, runs in ``eval --topology``, in the fleet and over ROS 2 through
the seam alone, and a lockstep run over ROS equals the in-process one. The shared code names
no family, and the package has no import cycle."""

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from ros_helpers import alive  # noqa: F401  (sets the test's ROS domain)

from hybrid_policy.families import registry

REPO = Path(__file__).resolve().parents[1]
TOY = "toy_family.family"
EPISODES = 1


@pytest.fixture
def toy_env(monkeypatch):
    """This process and every process it starts know the toy family."""
    monkeypatch.setenv(registry.ENV, TOY)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(REPO / "test"), *filter(None, [os.environ.get("PYTHONPATH")])]))
    return dict(os.environ)


def _fleet(tmp_path) -> Path:
    path = tmp_path / "toy.yaml"
    path.write_text(yaml.safe_dump({
        "nodes": {"edge": {"tier": "edge", "max_batch": 2}},
        "robots": [{"name": "r", "count": 2, "task": "fetch_reach", "mode": "constant",
                    "access": "edge", "link": "ideal"}]}))
    return path


def test_a_family_outside_the_package_runs_in_process_and_over_ros(cli, tmp_path, toy_env):
    from hybrid_policy.bag_analysis import analyze, read_bag

    assert registry.family_of("constant").name == "toy"
    topo = _fleet(tmp_path)
    common = ["--topology", str(topo), "--task", "fetch_reach", "--link", "ideal",
              "--episodes", str(EPISODES), "--seed", "1"]
    out = subprocess.run([*cli, "eval", *common, "--modes", "constant", "--eval-clock",
                          "lockstep", "--json", str(tmp_path / "eval.json")],
                         capture_output=True, text=True, env=toy_env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    here = json.loads((tmp_path / "eval.json").read_text())["modes"]["constant"]
    bag = tmp_path / "bag"
    out = subprocess.run([*cli, "bringup", *common, "--mode", "constant", "--interface",
                          "vector", "--bag", str(bag), "--timeout", "240"],
                         capture_output=True, text=True, env=toy_env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "edge/server_node (pid" in out.stderr  # the family's own server node ran
    ros = analyze(bag)["modes"]["constant"]
    # lockstep: every robot took the same steps, each asked and was answered, as in process
    keys = ("robot", "steps", "success_rate", "uplink_tx_per_step", "server_ops_per_step")
    assert [[r[k] for k in keys] for r in ros["robots"]] == \
        [[r[k] for k in keys] for r in here["robots"]]
    assert here["uplink_tx_per_step"] == here["server_ops_per_step"] == 1.0
    assert ros["counts"]["fallbacks"] == 0
    _, topics = read_bag(bag)
    from toy_family.family import ACTION

    for robot in ("r_0", "r_1"):
        actions = np.array([m.position for _, m in topics[f"{robot}/action"]])
        assert len(actions) > 0 and np.allclose(actions, ACTION)  # the server's answer acted


def test_a_family_module_that_cannot_load_is_refused(cli, monkeypatch):
    monkeypatch.setenv(registry.ENV, "no_such_family.family")
    out = subprocess.run([*cli, "tasks"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "'no_such_family.family'" in out.stderr
    assert registry.ENV in out.stderr


# What dispatches across families must name none: every family's name, modes, words and
# topology blocks, as code (names, attributes, imports and strings; not prose).
SHARED = ["hybrid_policy/core/fleet.py", "hybrid_policy/ros/fleet_graph.py",
          "hybrid_policy/ros/fleet_wiring.py", "hybrid_policy/ros/bringup.py",
          "hybrid_policy/ros/draft_node.py", "hybrid_policy/ros/robot_side.py",
          "hybrid_policy/cli/evaluate.py", "hybrid_policy/cli/ros.py",
          "hybrid_policy/cli/__init__.py", "hybrid_policy/bag_analysis.py",
          "hybrid_policy/families/base.py", "hybrid_policy/families/run.py",
          "hybrid_policy/core/evaluator.py", "hybrid_policy/core/plan.py"]


def _code_words(path: Path) -> set[str]:
    """The identifiers, attribute names, imported modules and non-docstring strings of a
    module, split into words."""
    tree = ast.parse(path.read_text())
    docstrings = {id(n.value) for n in ast.walk(tree)
                  if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef))
                  for n in n.body[:1] if isinstance(n, ast.Expr)}
    words: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            words.add(node.id)
        elif isinstance(node, ast.Attribute):
            words.add(node.attr)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for part in [getattr(node, "module", None) or "",
                         *(a.name for a in node.names)]:
                words |= set(part.split("."))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and id(node) not in docstrings:
            words |= set(node.value.replace("/", " ").replace(".", " ")
                         .replace(":", " ").replace(",", " ").split())
    return words


def test_the_shared_code_names_no_family():
    names = set()
    for f in registry.families():
        names |= {f.name, *f.modes, *f.blocks,
                  *([f.group] if f.group not in ("", "all") else [])}
    for rel in SHARED:
        hits = sorted(_code_words(REPO / rel) & names)
        assert not hits, f"{rel} names {hits}"


def _imports(path: Path, package: str) -> set[str]:
    """Every hybrid_policy module ``path`` imports, at module or function level."""
    tree = ast.parse(path.read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return {m for m in out if m.split(".")[0] in ("hybrid_policy", "sim_envs")}


def test_no_import_cycles_and_models_do_not_import_the_core():
    modules = {}
    for path in (REPO / "hybrid_policy").rglob("*.py"):
        name = ".".join(path.relative_to(REPO).with_suffix("").parts)
        modules[name.removesuffix(".__init__")] = path
    graph = {m: {i for i in _imports(p, "hybrid_policy") if i in modules and i != m}
             for m, p in modules.items()}
    policies = [m for m in graph if m.startswith("hybrid_policy.policies")]
    assert not [(m, i) for m in policies for i in graph[m]
                if i.startswith(("hybrid_policy.core", "hybrid_policy.families",
                                 "hybrid_policy.ros", "hybrid_policy.cli"))]
    # no module reaches itself (Tarjan: every strongly connected component is one module)
    index, low, stack, on, cycles = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in graph:
        if v not in index:
            visit(v)
    assert not cycles, cycles


def test_only_ros_adapters_import_rclpy():
    """rclpy only in ros/ and in a family's ROS adapters (its nodes and robot side)."""
    offenders = []
    for path in (REPO / "hybrid_policy").rglob("*.py"):
        rel = path.relative_to(REPO / "hybrid_policy")
        adapter = rel.parts[0] == "ros" or rel.name.endswith(("_node.py", "robot_ros.py"))
        if not adapter and any(i.split(".")[0] in ("rclpy",) for i in _rclpy_imports(path)):
            offenders.append(str(rel))
    assert not offenders


def _rclpy_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
    return out
