"""Everything a placement run is built from: each task's catalogue, measured once and cached
beside its models, the network, and the placer of each mode.

A variant's success is measured by rolling it alone in closed loop for ``episodes`` episodes
(calibration seeds, not the evaluation's); its time per step as the median of timed batch-1
answers. The cache (``models/<task>/catalogue.json``) is remade when the models it measured
change or another episode count is asked for.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from pathlib import Path

import numpy as np
from tqdm import tqdm

from hybrid_policy.families.idn import catalogue as idn_catalogue
from hybrid_policy.core.compute import single_thread
from hybrid_policy.families.idn.idn import IdnConfig, IdnNetwork, Shift, Where, make_placer
from hybrid_policy.families.idn.catalogue import CATALOGUE_EPISODES, Catalogue, Variant
from hybrid_policy.families.idn.serve import VariantModels, act_batch
from hybrid_policy.core.protocol import Request
from hybrid_policy.core.realtime import Clock
from hybrid_policy.core.topology import Topology
from hybrid_policy.policies import ObsHistory

log = logging.getLogger(__name__)

CATALOGUE_SEED = 2000  # catalogue episodes differ from evaluation (seed 0) and calibration


def variant_names(models: VariantModels, task: str) -> list[str]:
    """draft, every early exit but the last (the last one is the target's size), target."""
    ee = models.model(Variant("exit1", task, 1, 0.0, 1, 1.0, 1))
    return ["draft", *(f"exit{e}" for e in ee.exits[:-1]), "target"]


def _params(model, name: str) -> int:
    if name.startswith("exit"):
        layer, parts = int(name[4:]), model.layer_params()
        return parts["embed"] + sum(parts[f"layer{i}"] for i in range(1, layer + 1)) + \
            parts[f"exit{layer}"]
    return int(sum(p.numel() for p in model.model.parameters()))


def measure_variant(models: VariantModels, task: str, name: str, episodes: int,
                    seed: int = CATALOGUE_SEED, progress: bool | None = None) -> Variant:
    """One variant's closed-loop success and time per step (module doc)."""
    import sim_envs
    from sim_envs.collect import episode_seeds

    probe = Variant(name, task, 1, 0.0, 1, 1.0, 1)
    model = models.model(probe)
    history = model.history
    v = Variant(name, task, _params(model, name), 0.0, episodes, 1.0, history)
    env = sim_envs.make_task(task)
    hist = ObsHistory(history, sim_envs.task_spec(task).obs_dim)
    rng = np.random.default_rng([seed, 0xCA7])
    wins, requests = 0, []
    try:
        for reset in tqdm(episode_seeds(seed, episodes, split="eval").tolist(),
                          desc=f"catalogue {task}/{name}", unit="ep",
                          disable=None if progress is None else not progress):
            obs, _ = env.reset(seed=reset)
            hist.reset()
            while True:
                req = Request("act", hist.push(obs).copy(), int(rng.integers(2**31)))
                requests.append(req)
                obs, _, terminated, truncated, info = env.step(act_batch(model, v, [req])[0]
                                                                .action)
                if terminated or truncated:
                    wins += bool(info["success"])
                    break
    finally:
        env.close()
    return Variant(name, task, v.params, wins / episodes, episodes,
                   time_ms(model, v, requests[::max(1, len(requests) // TIMED_STEPS)]), history)


TIMED_STEPS = 50


def time_ms(model, v: Variant, requests: list[Request]) -> float:
    """Median ms of one batch-1 answer after a warm-up."""
    for req in requests[:5]:
        act_batch(model, v, [req])
    times = []
    for req in requests:
        t0 = time.perf_counter()
        act_batch(model, v, [req])
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1e3)


def measure_catalogue(root: str | Path, task: str, episodes: int,
                      progress: bool | None = None) -> Catalogue:
    """Every variant of the models under ``root/<task>`` measured (no cache)."""
    vm = VariantModels(root)
    with single_thread():
        return Catalogue(tuple(measure_variant(vm, task, n, episodes, progress=progress)
                               for n in variant_names(vm, task)))


def _identities(root: Path, task: str) -> dict[str, str]:
    from hybrid_policy.policies.card import checkpoint_identity

    return {kind: checkpoint_identity(root / task / kind)
            for kind in ("draft", "target", "early_exit")}


def ensure_catalogue(task: str, models: str | Path = "models",
                     episodes: int = CATALOGUE_EPISODES,
                     progress: bool | None = None) -> Catalogue:
    """The task's catalogue: cached under ``models/<task>/catalogue.json`` unless its models
    or the episode count changed; the default models are trained first if missing."""
    from hybrid_policy.families.exits.setup import ensure_early_exit

    root = Path(models)
    ensure_early_exit(task, root, progress=progress)
    path = root / task / "catalogue.json"
    ids = _identities(root, task)
    try:
        doc = json.loads(path.read_text())
        if doc.get("models") == ids and doc.get("episodes") == episodes:
            return idn_catalogue.parse(doc, str(path))
        log.info("%s: made for other models or episode counts: measuring again", path)
    except (OSError, json.JSONDecodeError, idn_catalogue.CatalogueError):
        log.info("%s: measuring the catalogue of %s (%d episodes per variant)", path, task,
                 episodes)
    cat = measure_catalogue(root, task, episodes, progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**cat.to_json(), "models": ids, "episodes": episodes},
                               indent=1))
    return cat


def tasks_of(topology: Topology, cfg: IdnConfig) -> list[str]:
    return list(dict.fromkeys([r.task for r in topology.robots] +
                              [s.task for s in cfg.shifts if s.task]))


def catalogue_for(topology: Topology, cfg: IdnConfig, models: str | Path = "models",
                  episodes: int = CATALOGUE_EPISODES, progress: bool | None = None
                  ) -> Catalogue:
    cats = [ensure_catalogue(t, models, episodes, progress) for t in tasks_of(topology, cfg)]
    out = cats[0]
    for c in cats[1:]:
        out = out.merge(c)
    return out


def where_at(net: IdnNetwork, shifts: tuple[Shift, ...], t_s: float) -> dict[str, Where]:
    """Every robot's task and cell at ``t_s`` seconds into the run."""
    where = net.start()
    for s in sorted(shifts, key=lambda s: s.at_s):
        if s.at_s > t_s:
            break
        for r in s.robots:
            where[r] = Where(s.task or where[r].task, s.access or where[r].access)
    return where


def average_mix(net: IdnNetwork, duration_s: float, steps_per_s: dict[str, float]) -> Counter:
    """The run's average request mix (what ``idn_static`` optimises for): each robot's
    requests per second, split over the (task, cell) it is in for how long."""
    times = sorted({0.0, duration_s, *(s.at_s for s in net.cfg.shifts if s.at_s < duration_s)})
    mix: Counter = Counter()
    for a, b in zip(times, times[1:]):
        for robot, w in where_at(net, net.cfg.shifts, a).items():
            mix[(robot, w.task, w.access)] += (b - a) * steps_per_s[robot]
    return mix


def schedule_s(cfg: IdnConfig) -> float:
    """The workload's length by its shifts: the last shift plus the mean phase before it
    (what ``idn_static`` averages over when a run's length is not known in advance)."""
    times = sorted({0.0, *(s.at_s for s in cfg.shifts)})
    return times[-1] + (times[-1] / (len(times) - 1) if len(times) > 1 else 1.0)


def placer_for(mode: str, net: IdnNetwork, seed: int, steps_per_s: dict[str, float],
               duration_s: float | None = None):
    """The placer of ``mode``; ``idn_static`` optimises for the average mix over
    ``duration_s`` (default ``schedule_s``)."""
    duration_s = schedule_s(net.cfg) if duration_s is None else duration_s
    average = average_mix(net, duration_s, steps_per_s) if mode == "idn_static" else None
    return make_placer(mode, net, seed, average)


def steps_per_s(topology: Topology) -> dict[str, float]:
    import sim_envs

    return {r.name: 1e3 / sim_envs.task_spec(r.task).control_period_ms for r in topology.robots}


def fleet_run(mode: str, topology: Topology, cfg: IdnConfig, catalogue: Catalogue,
              models: str | Path, episodes: int, seed: int, deadline_ms: float = 100.0,
              phases: str = "random", progress: bool | None = None, on_step=None,
              control: Clock = Clock()):
    """One placement mode on the fleet in closed loop (``core.fleet``, ``IdnRun``);
    ``control``: real time or lockstep (``core.realtime``; default lockstep)."""
    from hybrid_policy.core.compute import ComputeModel
    from hybrid_policy.core.fleet import evaluate_fleet
    from hybrid_policy.families.idn.fleet import IdnRun
    from hybrid_policy.families.idn.serve import NodeStore, Placement

    net = IdnNetwork(topology, catalogue, cfg)
    placer = placer_for(mode, net, seed, steps_per_s(topology))
    vm = VariantModels(models)
    stores = {n: NodeStore(vm) for n in [*net.robots, *topology.nodes]}
    run = IdnRun(mode, net, placer, stores, Placement(net))
    # the compute model times the draft/target modes only; placement modes time variants
    unused = ComputeModel(1.0, 1.0)
    return evaluate_fleet(topology, run, unused, deadline_ms, episodes, seed, progress,
                          on_step, phases, control=control)


def config_doc(cfg: IdnConfig) -> dict:
    from dataclasses import asdict

    return asdict(cfg)


def placement_summary(run) -> dict:
    """A placement run's counts: where steps were served, loads, refusals, mean gain per
    step, and what every node held in each period."""
    p = dict(run.extra)
    steps = max(p.get("steps", 0), 1)
    return {"gain_per_step": float(p.get("gain_sum", 0.0)) / steps,
            "served": {k[len("served_"):]: int(v) for k, v in p.items()
                       if k.startswith("served_")},
            "loads": int(p.get("loads", 0)), "load_ms": float(p.get("load_ms", 0.0)),
            "refused": int(p.get("refused", 0)), "fallbacks": int(p.get("fallbacks", 0)),
            "periods": p.get("periods", [])}


def format_placement(doc: dict) -> str:
    """Per mode: gain per step, where steps were served, loads."""
    from hybrid_policy.text_table import text_table

    rows = [["mode", "gain/step", "served at (steps)", "loads", "load_ms", "refused"]]
    for name, m in doc["modes"].items():
        p = m["placement"]
        rows.append([name, f"{p['gain_per_step']:.3f}",
                     ", ".join(f"{k} {v}" for k, v in sorted(p["served"].items())),
                     str(p["loads"]), f"{p['load_ms']:.0f}", str(p["refused"])])
    return text_table(rows, left=2)
