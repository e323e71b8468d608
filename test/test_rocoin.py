"""RoCoIn in process: distilled students match the target, the combination rule is exact,
the first answer per group counts, redundancy masks dead replicas, bad settings are refused."""

import numpy as np
import pytest

from hybrid_policy.core import topology
from hybrid_policy.core.compute import ComputeModel
from hybrid_policy.core.fleet import evaluate_fleet
from hybrid_policy.families.rocoin.fleet import StudentRun
from hybrid_policy.core.protocol import FeatureRequest, ProtocolError
from hybrid_policy.families.rocoin.rocoin import (
    FaultConfig, Gather, Layout, StudentAnswer, TargetPart, combine, layout,
    parse_config, serve_students,
)
from hybrid_policy.families.rocoin.assign import CostModel
from hybrid_policy.families.rocoin.setup import StudentModels
from hybrid_policy.core.topology import TopologyError
from hybrid_policy.policies import load_policy
from hybrid_policy.families.rocoin.students import (
    DistilConfig, combined_joint, distil, partition_codes,
)
from hybrid_policy.policies.training import history_windows

TASK = "fetch_reach"
COMPUTE = ComputeModel(0.8, 3.0, batch_ms=((1, 3.0),))
# The combined students' joint over code pairs is within this mean TV of the target's on
# held-out demonstration windows (measured 0.13 for these tiny models; the draft: 0.72), and closer
# than the draft trained on the demonstrations.
TV_BOUND = 0.2
DEVICES = {"d0": 0.5, "d1": 0.4, "d2": 0.3, "d3": 0.2}


@pytest.fixture(scope="module")
def models(tiny):
    return load_policy(tiny["draft"], role="draft"), load_policy(tiny["target"], role="target")


@pytest.fixture(scope="module")
def students(tiny, models):
    """Two students of the tiny target, distilled on 80% of the episodes."""
    _, target = models
    ds = tiny["ds"]
    windows = history_windows(ds, target.history)
    cut = int(ds.episode_starts[int(0.8 * ds.num_episodes)])
    k = target.codebook_size
    codes = partition_codes(target.code_table.reshape(k, k, -1), [k // 2, k - k // 2])
    nets, losses = distil(target, windows[:cut], codes, DistilConfig(epochs=15, lr=3e-3),
                          progress=False)
    return {"nets": nets, "losses": losses, "held_out": windows[cut:]}


def fleet_doc(faults=None, groups=None, mode="rocoin", fallback="draft"):
    doc = {"nodes": {d: {"tier": "edge", "speed": s} for d, s in DEVICES.items()},
           "robots": [{"name": "r", "task": TASK, "mode": mode, "access": "d0",
                       "reach": list(DEVICES), "link": "6g_hrllc"}],
           "rocoin": {"students": 2, "replicas": 2, "fallback": fallback,
                      **({"faults": faults} if faults else {}),
                      **({"groups": groups} if groups else {})}}
    return doc


def setup(doc, models, students):
    topo = topology.parse(doc, "test")
    cfg = parse_config(topo, doc["rocoin"])
    groups = [["d0", "d1"], ["d2", "d3"]]
    sm = StudentModels(TASK, cfg, models[1], None, students["nets"], groups,
                       CostModel(0.1, 1.0), [0.3, 0.3], 2.0)
    return topo, cfg, sm


def test_distillation_falls_and_students_match_the_target_better_than_the_draft(models,
                                                                                 students):
    draft, target = models
    losses = [h["loss"] for h in students["losses"]]
    assert losses[-1] < 0.5 * losses[0]
    windows = students["held_out"][::3]
    joint = combined_joint(students["nets"], windows)
    target_joint = np.stack([target.begin(w).joint() for w in windows])
    draft_joint = np.stack([draft.begin(w[-draft.history:]).joint() for w in windows])
    tv = 0.5 * np.abs(joint - target_joint).sum(1).mean()
    tv_draft = 0.5 * np.abs(draft_joint - target_joint).sum(1).mean()
    assert tv < TV_BOUND and tv < tv_draft, (tv, tv_draft)


def test_combining_exact_parts_samples_the_targets_distribution(models):
    """The target split into two 'students' by code: combined draws follow its joint."""
    _, target = models
    window = np.random.default_rng(0).normal(size=(1, target.history, target.obs_dim))
    scores, cond, actions = TargetPart(target).answer(window.astype(np.float32))
    k = target.codebook_size
    own = [list(range(0, k, 2)), list(range(1, k, 2))]
    parts = [StudentAnswer(j, tuple(c), scores[0, c], cond[0, c], actions[0, c])
             for j, c in enumerate(own)]
    counts = np.zeros(k * k)
    for seed in range(4000):
        c0, c1 = combine(parts, seed).codes
        counts[c0 * k + c1] += 1
    joint = np.exp(scores[0])[:, None] * np.exp(cond[0])
    assert 0.5 * np.abs(counts / 4000 - joint.ravel()).sum() < 0.06
    # the same seed gives the same action whichever order the parts arrive in
    assert combine(parts, 7).codes == combine(parts, 7).codes


def test_the_first_answer_per_group_counts_and_a_wrong_part_is_refused(models, students):
    topo, cfg, sm = setup(fleet_doc(), models, students)
    lay = layout("rocoin", topo, cfg, sm.groups, [list(n.codes) for n in sm.nets], 8)
    window = students["held_out"][:1]
    req = FeatureRequest(0, window[0], 5)
    a0 = serve_students(sm.nets[0], 0, [req])[0]
    a1 = serve_students(sm.nets[1], 1, [req])[0]
    g = Gather(lay, 5)
    assert g.add("d1", a0) and not g.add("d0", a0)  # d1 first: d0's copy is not used
    assert not g.complete
    with pytest.raises(ProtocolError, match="group 1 holds codes"):
        g.add("d2", a0)  # student 0's part from a device of group 1
    assert g.add("d3", a1) and g.complete
    assert g.answered == {0: "d1", 1: "d3"}
    assert np.all(np.abs(g.response().action) <= 1)
    vec = a0.to_vector()
    assert StudentAnswer.from_vector(a0.label(), vec).codes == a0.codes
    for label, bad, match in [
            ("student:s0", vec, "is not"),
            (a0.label(), vec[:-1], "carries"),
            (a0.label(), np.where(np.arange(len(vec)) == 0, 99.0, vec), "codes"),
            (a0.label(), np.concatenate([vec[:-1], [5.0]]), "outside"),
            (a0.label(), np.where(np.arange(len(vec)) == len(vec) - 1, np.nan, vec), "NaN")]:
        with pytest.raises(ProtocolError, match=match):
            StudentAnswer.from_vector(label, bad)


def run(models, students, mode, faults=None, episodes=2, records=None, fallback="draft",
        control=None):
    draft, target = models
    doc = fleet_doc(faults, mode=mode, fallback=fallback)
    topo, cfg, sm = setup(doc, models, students)
    lay = layout(mode, topo, cfg, sm.groups, [list(n.codes) for n in sm.nets], 8)
    return evaluate_fleet(topo, StudentRun(lay, sm, cfg.faults, draft, target.history),
                          COMPUTE, 100.0, episodes, 0, progress=False,
                          on_step=None if records is None else lambda _, r: records.append(r),
                          **({} if control is None else {"control": control}))


def test_one_dead_replica_per_group_leaves_every_step_answered(models, students):
    dead = {"p": 1.0, "kind": "crash", "devices": ["d0", "d3"]}
    records = []
    res = run(models, students, "rocoin", dead, records=records)
    robot = res.robots["r"]
    assert robot.steps > 0 and robot.fallbacks == 0
    # every step's window went to all four devices
    assert robot.uplink_bytes == sum(4 * r.plan.request.payload_bytes() for r in records)
    # the survivors answered every step; the dead replicas crashed and then stayed down
    assert res.servers["d1"]["answers_counted"] == robot.steps
    assert res.servers["d2"]["answers_counted"] == robot.steps
    assert "answers_counted" not in res.servers["d0"] and res.servers["d0"]["crashs"] >= 1
    # without redundancy the same dead device (d0 is group 0's fastest) fails every step
    single = run(models, students, "rocoin_single", dead).robots["r"]
    assert single.fallbacks == single.steps > 0


def test_no_faults_equals_the_same_run_and_timeouts_fall_back(models, students):
    a, b = run(models, students, "rocoin"), run(models, students, "rocoin")
    assert a.robots["r"].latencies == b.robots["r"].latencies
    assert a.robots["r"].fallbacks == 0
    slow = run(models, students, "rocoin", {"p": 1.0, "kind": "timeout", "slow_ms": 500})
    assert slow.robots["r"].fallbacks == slow.robots["r"].steps
    # the topology's `hold` reaches the robot through the layout: it holds still instead
    held = []
    run(models, students, "rocoin", {"p": 1.0, "kind": "timeout"}, records=held,
        fallback="hold")
    assert held and all(r.plan.draft_action is None and not r.action.any() for r in held)


def test_layouts_of_the_baselines(models, students):
    topo, cfg, sm = setup(fleet_doc(), models, students)
    codes = [list(n.codes) for n in sm.nets]
    single = layout("rocoin_single", topo, cfg, sm.groups, codes, 8)
    assert single.groups == [["d0"], ["d2"]] and single.devices == ["d0", "d2"]
    for seed in range(5):
        rnd = layout("rocoin_random", topo, cfg, sm.groups, codes, 8, seed)
        assert len(rnd.groups) == 2 and all(rnd.groups)
        assert sorted(d for g in rnd.groups for d in g) == sorted(DEVICES)
    full = layout("rocoin_target", topo, cfg, sm.groups, codes, 8)
    assert full.groups == [["d0"]] and full.codes == [list(range(8))]


def test_a_saved_layout_is_what_the_ros_nodes_read(models, students, tmp_path):
    topo, cfg, sm = setup(fleet_doc(fallback="hold"), models, students)
    lay = layout("rocoin", topo, cfg, sm.groups, [list(n.codes) for n in sm.nets], 8)
    back = Layout.load(lay.save(tmp_path / "layout.json"))
    assert (back.mode, back.groups, back.codes, back.devices, back.fallback) == (
        "rocoin", lay.groups, lay.codes, lay.devices, "hold")


def test_faults_fail_at_their_rate_and_draw_the_same_everywhere():
    f = FaultConfig(p=0.2, kind="mixed")
    kinds = [f.fault(seed, 1, "d1") for seed in range(5000)]
    assert abs(np.mean([k != "" for k in kinds]) - 0.2) < 0.02
    assert abs(kinds.count("crash") - kinds.count("timeout")) < 0.2 * kinds.count("crash")
    assert kinds == [f.fault(seed, 1, "d1") for seed in range(5000)]
    assert FaultConfig(p=1.0, devices=("d0",)).fault(3, 1, "d1") == ""


@pytest.mark.parametrize("change,match", [
    (lambda d: d["rocoin"].update(students=5), "4 devices cannot run 5 students"),
    (lambda d: d["rocoin"].update(groups=[["d0", "d1"], []]), "group 1 is empty"),
    (lambda d: d["rocoin"].update(devices=["d0", "dX"]), "unknown device 'dX'"),
    (lambda d: d["rocoin"].update(groups=[["d0", "d1"], ["d1", "d2"]]), "two groups"),
    (lambda d: d["rocoin"].update(groups=[["d0", "d9"], ["d2"]]), "unknown device 'd9'"),
    (lambda d: d["rocoin"].update(faults={"p": 2}), "probability"),
    (lambda d: d["rocoin"].update(faults={"kind": "melt"}), "faults.kind"),
    (lambda d: d["rocoin"].update(faults={"devices": ["dZ"]}), "unknown device 'dZ'"),
    (lambda d: d["rocoin"].update(colour=1), "unknown key 'colour'"),
    (lambda d: d["rocoin"].update(fallback="pray"), "fallback must be one of draft, hold"),
    (lambda d: d["robots"][0].update(reach=["d0"]), "must reach every device"),
])
def test_bad_rocoin_settings_are_refused(change, match):
    doc = fleet_doc()
    change(doc)
    topo = topology.parse(doc, "test")
    with pytest.raises(TopologyError, match=match):
        parse_config(topo, doc["rocoin"])


def test_rocoin_in_real_time_is_lockstep_while_answers_beat_the_tick(models, students):
    """Real time for the RoCoIn family: fast students answer within the period, so every
    tick applies the step's own answer, as lockstep; slow ones (a 500 ms timeout on every
    device) leave the robot on its deadline fallbacks, each arriving after its tick."""
    from hybrid_policy.core.realtime import Clock

    lock = run(models, students, "rocoin").robots["r"]
    rt = run(models, students, "rocoin", control=Clock("realtime")).robots["r"]
    assert max(lock.latencies) < 40.0
    assert (rt.episode_success, rt.latencies, rt.missed_ticks) == (
        lock.episode_success, lock.latencies, 0)
    slow = run(models, students, "rocoin", {"p": 1.0, "kind": "timeout", "slow_ms": 500},
               control=Clock("realtime")).robots["r"]
    assert slow.fallbacks == slow.steps > 0
    assert slow.missed_ticks > 0  # the 100 ms deadline outlasts the 40 ms period
