"""Everything a rocoin fleet run is built from, in one place for ``eval``, ``bringup``, the
bench and the tests: the students (distilled once for the topology's partition and cached
under ``models/<task>/students_<sizes>``), their measured compute, and each mode's layout.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hybrid_policy.core import topology as topo_mod
from hybrid_policy.families.rocoin.rocoin import (
    Layout, RocoinConfig, StudentAnswer, TargetPart, config_of, layout, plan_students, rtt_ms,
)
from hybrid_policy.core.protocol import FeatureRequest
from hybrid_policy.families.rocoin.assign import CostModel
from hybrid_policy.core.topology import Topology

log = logging.getLogger(__name__)
TIMING_SHARES = (0.25, 1.0)  # student sizes timed to fit the solver's cost model


@dataclass
class StudentModels:
    task: str
    config: RocoinConfig
    target: object  # policies.Policy
    path: Path  # the students' checkpoint
    nets: list  # StudentNet per student (group order)
    groups: list[list[str]]  # the solver's groups (student j on groups[j])
    cost: CostModel  # ms of one student answer at speed 1 (fixed + per share)
    part_ms: list[float]  # measured ms per answer of each part at speed 1 (batch of one)
    target_ms: float  # the full target as one part

    def summary(self) -> dict:
        return {"students": str(self.path), "codes": [list(n.codes) for n in self.nets],
                "parameters": [n.num_parameters() for n in self.nets],
                "target_parameters": self.target.model.num_parameters(),
                "ms_per_answer": [round(m, 4) for m in self.part_ms],
                "target_ms": round(self.target_ms, 4), "groups": self.groups}

    def model(self, lay: Layout, group: int):
        return TargetPart(self.target) if lay.mode == "rocoin_target" else self.nets[group]

    def service_ms(self, lay: Layout, group: int, n: int, speed: float) -> float:
        """One device operation on ``n`` windows: measured per answer, batched answers
        cost one forward pass plus a quarter of one per extra window (assumed)."""
        one = self.target_ms if lay.mode == "rocoin_target" else self.part_ms[group]
        return one * (1 + 0.25 * (n - 1)) / speed


def _time_ms(fn, repeat: int = 60) -> float:
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1e3)


def time_part(model, history: int, obs_dim: int) -> float:
    """Median ms of one answer (one window) of a student or the target on this machine."""
    window = np.zeros((1, history, obs_dim), np.float32)
    return _time_ms(lambda: model.answer(window))


def cost_model(target, cfg) -> CostModel:
    """The solver's cost of a student of share x: fixed + per share, fitted to the timing
    of untrained students of two sizes (timing does not depend on the weights)."""
    from hybrid_policy.families.rocoin.students import StudentNet, width_for

    k = target.codebook_size
    ms = []
    for share in TIMING_SHARES:
        n = max(1, round(share * k))
        net = StudentNet(target.obs_dim, target.history, range(n), k, 4, width_for(n / k, cfg))
        net.eval()
        ms.append(time_part(net, target.history, target.obs_dim))
    per = max((ms[1] - ms[0]) / (TIMING_SHARES[1] - TIMING_SHARES[0]), 1e-3)
    return CostModel(max(ms[0] - per * TIMING_SHARES[0], 0.0), per)


def typical_rtt(topo: Topology, cfg: RocoinConfig, target) -> float:
    """The expected round trip of a window and a half-size answer on the first rocoin
    robot's link (the solver's rtt, the same for every device)."""
    robot = topo.robots[0]
    k = target.codebook_size
    req = FeatureRequest(0, np.zeros((target.history, target.obs_dim), np.float32), 0)
    half = max(1, k // max(cfg.students, 1))
    ans = StudentAnswer(0, tuple(range(half)), np.zeros(half), np.zeros((half, k)),
                        np.zeros((half, k, 4)))
    return rtt_ms(robot.link, req.payload_bytes(), ans.payload_bytes())


def prepare(task: str, topology: str | Path, models: str | Path = "models",
            students: str | Path | None = None, progress: bool | None = None,
            target=None) -> tuple[Topology, StudentModels]:
    """The topology, the students for its partition (distilled if missing) and timings.
    ``target``: a loaded target policy instead of the task's default one (with
    ``students`` given too, the default models are neither needed nor made)."""
    from hybrid_policy.policies import load_policy
    from hybrid_policy.policies.build import ensure_default_models
    from hybrid_policy.families.rocoin.students import DistilConfig, load_students

    doc = topo_mod.read(topology)
    topo = topo_mod.parse(doc, str(topology))
    cfg = config_of(topo, doc)
    if target is None:
        paths = ensure_default_models(task, Path(models), progress)
        target = load_policy(paths.target, role="target", task=task)
    distil_cfg = DistilConfig()
    cost = cost_model(target, distil_cfg)
    groups, sizes, predicted = plan_students(topo, cfg, cost, target.codebook_size,
                                             typical_rtt(topo, cfg, target))
    path = Path(students) if students else ensure_students(
        task, Path(models), sizes, distil_cfg, progress)
    nets, info = load_students(path, task)
    if [len(n.codes) for n in nets] != sizes:
        log.warning("%s: students of %s codes, the topology's plan wants %s: using the "
                    "checkpoint's", path, [len(n.codes) for n in nets], sizes)
    part_ms = [time_part(n, n.history, n.obs_dim) for n in nets]
    target_ms = time_part(TargetPart(target), target.history, target.obs_dim)
    log.info("rocoin: groups %s, codes per student %s, predicted slowest group %.2f ms; "
             "ms per answer at speed 1: students %s, target %.2f", groups,
             [len(n.codes) for n in nets], predicted, [round(m, 3) for m in part_ms],
             target_ms)
    return topo, StudentModels(task, cfg, target, path, nets, groups, cost, part_ms, target_ms)


def layout_for(mode: str, topo: Topology, sm: StudentModels, seed: int = 0) -> Layout:
    return layout(mode, topo, sm.config, sm.groups, [list(n.codes) for n in sm.nets],
                  sm.target.codebook_size, seed)


def ensure_students(task: str, root: Path, sizes: list[int], cfg=None,
                    progress: bool | None = None) -> Path:
    """Students of ``sizes`` level-0 codes each, distilled from the task's default target
    on its demonstrations' windows (cached; rebuilt when the target changes)."""
    from dataclasses import asdict

    from sim_envs import dataset
    from hybrid_policy.errors import CheckpointError
    from hybrid_policy.policies import load_policy
    from hybrid_policy.policies.build import ensure_default_models
    from hybrid_policy.policies.card import checkpoint_identity, read_config
    from hybrid_policy.families.rocoin.students import (
        DistilConfig, distil, partition_codes, save_students,
    )
    from hybrid_policy.policies.training import history_windows

    cfg = cfg or DistilConfig()
    paths = ensure_default_models(task, root, progress)
    out = paths.target.parent / f"students_{'-'.join(map(str, sizes))}"
    wanted = {"target_id": checkpoint_identity(paths.target), "distil": asdict(cfg)}
    try:
        info = read_config(out)
        if all(info.get(k) == v for k, v in wanted.items()):
            return out
    except CheckpointError:
        pass
    target = load_policy(paths.target, role="target", task=task)
    ds = dataset.load(dataset.dataset_path(paths.data, task))
    k = target.codebook_size
    codes = partition_codes(target.code_table.reshape(k, k, -1), sizes)
    log.info("distilling %d students (codes %s) from %s", len(sizes), codes, paths.target)
    nets, losses = distil(target, history_windows(ds, target.history), codes, cfg, progress)
    return save_students(out, nets, task, {**wanted, "losses": losses})
