"""The ``hybrid-policy`` command: one entry point, one subcommand per job."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Callable, Sequence

from sim_envs import SimEnvError
from hybrid_policy.families.adahi.server import answering
from hybrid_policy.errors import HybridPolicyError

log = logging.getLogger("hybrid_policy")

USER_ERRORS: tuple[type[Exception], ...] = (SimEnvError, HybridPolicyError)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


from hybrid_policy.families.idn.catalogue import CATALOGUE_EPISODES  # noqa: E402  (no torch)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer (1 or more), got {value}")
    return value


def _price_ms(text: str) -> float:
    """--price-ms: the ms-equivalent price of one transmission + server operation."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a price in ms (a number >= 0), got "
                                         f"{text!r}") from None
    if not 0.0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number of ms >= 0 (0 = no price), "
                                         f"got {text}")
    return value


def cmd_topology(args: argparse.Namespace) -> int:
    from hybrid_policy.core import topology

    print(topology.table(topology.load(args.file)))
    return 0


def cmd_tasks(args: argparse.Namespace) -> int:
    from sim_envs import task_names, task_spec
    from hybrid_policy.text_table import text_table

    rows = [("name", "obs", "act", "steps", "level", "source", "description")]
    for name in task_names():
        s = task_spec(name)
        rows.append((s.name, str(s.obs_dim), str(s.action_dim), str(s.max_steps),
                     str(s.difficulty), s.source, s.description))
    print(text_table(rows, left=len(rows[0])))
    return 0


def cmd_demos(args: argparse.Namespace) -> int:
    from sim_envs import dataset, task_spec
    from sim_envs.collect import collect_demos

    task_spec(args.task)  # unknown task: fail before touching the disk
    dataset.check_out_dir(args.out, args.task, args.overwrite)
    ds = collect_demos(args.task, args.episodes, args.seed)
    path = dataset.write_to_dir(ds, args.out, args.overwrite)
    log.info("wrote %s: %d episodes (%d dropped), %d steps", path, ds.num_episodes,
             len(ds.meta["dropped_seeds"]), ds.num_steps)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from pathlib import Path

    from sim_envs import task_spec
    from hybrid_policy.policies.build import ensure_tokenizer, load_task_data, train_role
    from hybrid_policy.policies.training import role_training

    task_spec(args.task)
    ds, record = load_task_data(args.data, args.task)
    out = Path(args.out)
    tok = ensure_tokenizer(Path(args.tokenizer) if args.tokenizer else out.parent / "tokenizer",
                           ds, record)
    path = train_role(out, args.role, ds, record, tok, role_training(args.role, args.epochs))
    log.info("wrote %s", path)
    return 0


def _models(args: argparse.Namespace):
    """Draft and target for ``args.task``: explicit paths, else the default models."""
    from pathlib import Path

    from hybrid_policy.policies import check_pair, load_policy
    from hybrid_policy.policies.build import ensure_default_models

    draft_path, target_path = args.draft, args.target
    if draft_path is None or target_path is None:
        models = ensure_default_models(args.task, Path(args.models))
        if draft_path is None and args.draft_kind == "distilled":
            from hybrid_policy.policies.build import ensure_distilled_draft

            draft_path = ensure_distilled_draft(args.task, Path(args.models))
        draft_path = draft_path or models.draft
        target_path = target_path or models.target
    draft = load_policy(draft_path, role="draft", task=args.task, temperature=args.temperature)
    target = load_policy(target_path, role="target", task=args.task,
                         temperature=args.temperature)
    check_pair(draft, target)
    return draft, target


def _setting(args: argparse.Namespace, draft, target):
    from dataclasses import replace

    from hybrid_policy.core import compute
    from hybrid_policy.families.adahi import timing
    from hybrid_policy.core.evaluator import Setting
    from hybrid_policy.core.link import link_profile

    link = link_profile(args.link)
    pins = {k: v for k, v in (("draft_ms", args.draft_ms), ("target_ms", args.target_ms))
            if v is not None}
    if len(pins) == 2:  # pinned: nothing to measure (results then do not move with load)
        model = compute.ComputeModel(**pins, device_speed=args.device_speed,
                                     server_speed=args.server_speed)
    else:
        model = replace(timing.measure(draft, target, compute.sample_observations(args.task),
                                        device_speed=args.device_speed,
                                        server_speed=args.server_speed), **pins)
    log.info("compute model: draft %.3f ms, target %.3f ms a step (%s; speed factors: "
             "device %.2g, server %.2g); link %s", model.draft(), model.target(),
             "pinned" if len(pins) == 2 else "measured", args.device_speed, args.server_speed,
             link.name)
    return Setting(answering(target), link, model, args.deadline_ms)


def _calibration_path(args: argparse.Namespace):
    from pathlib import Path

    from hybrid_policy.families.adahi.calibration_file import default_path

    if getattr(args, "calibration", None):
        return Path(args.calibration)
    return default_path(args.models, args.task, args.link, args.draft_kind)


def _run_calibration(args: argparse.Namespace, draft, target, setting, episodes: int):
    from dataclasses import replace

    from sim_envs import task_spec
    from hybrid_policy.families.adahi import calibration
    from hybrid_policy.families.adahi import plots

    # the closed-loop checks (draft alone, the sweep) run on the evaluation's clock: in real
    # time a verification that outlasts the period costs success, in lockstep it does not
    setting = replace(setting, clock=_control(args, args.task))
    cfg = replace(calibration.CalibrationConfig(), episodes=episodes,
                  quality_weight=args.quality_weight, price_ms=getattr(args, "price_ms", 0.0),
                  sweep_episodes=getattr(args, "sweep_episodes",
                                         calibration.CalibrationConfig().sweep_episodes))
    doc = calibration.calibrate(args.task, draft, target, setting, cfg,
                                task_spec(args.task).control_period_ms)
    path = _calibration_path(args)
    calibration.save(doc, path)
    plots.deviation_vs_rejection(doc, path.with_name(f"{args.link}_deviation.png"))
    plots.tradeoff(doc, path.with_name(f"{args.link}_tradeoff.png"))
    log.info("wrote %s and its plots", path)
    return doc, path


def _add_clock_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--eval-clock", dest="eval_clock", choices=("lockstep", "realtime"),
                   default="realtime", help="realtime: the robot ticks at its task's rate "
                   "whatever arrived, holding still where nothing did (core.realtime; every "
                   "family, one robot or a --topology fleet; the default); lockstep: the "
                   "world waits for every answer (debugging, equivalence with ROS lockstep)")
    p.add_argument("--loop", choices=("wait", "period", "draft_first"), default="wait",
                   help="realtime: how a verified step waits (wait: --deadline-ms; period: "
                   "0.7 of the control period; draft_first: the draft acts unless the verdict "
                   "beats the tick; default wait)")


def _check_model_args(args: argparse.Namespace) -> None:
    """Refuse an unknown task or link before any model is loaded or trained."""
    from sim_envs import task_spec
    from hybrid_policy.core.link import link_profile

    if args.task is None:
        raise HybridPolicyError("--task is required (placement modes alone take their tasks "
                                "from the topology)")
    task_spec(args.task)
    link_profile(args.link)


def cmd_calibrate(args: argparse.Namespace) -> int:
    import torch

    _check_model_args(args)
    torch.set_num_threads(1)
    draft, target = _models(args)
    doc, _ = _run_calibration(args, draft, target, _setting(args, draft, target), args.episodes)
    f, t = doc["fit"], doc["thresholds"]
    print(f"fit: rejection = {f['intercept']:.4f} + {f['slope']:.4f} * ln(deviation + 1e-3) over "
          f"{f['samples']} steps; Spearman rho {f['spearman']:.3f}; AUROC {f['auroc']:.3f}")
    c = doc["costs"]
    print(f"verification costs {c['verify_ms']:.2f} ms on {doc['link']}; an unverified "
          f"rejection costs {c['error_cost_ms']:.2f} ms (period {c['control_period_ms']:.1f} ms x "
          f"correction {c['rejection_error']:.3f} x weight {c['quality_weight']:g}): link bound "
          f"L_v/C_e = {c['rejection_budget']:.4f}; quality bound (mean rejection) "
          f"{c['mean_rejection']:.4f}; r* = {c['r_star']:.4f} ({c['bound']} bound)")
    a = doc["draft_alone"]
    print(f"the draft alone succeeded in {a['draft_only_successes']}/{a['episodes']} calibration "
          f"scenes, verifying every step in {a['hybrid_successes']}: quality bound "
          f"{a['quality_bound']}")
    print(f"tau* = {t['tau']:.4f} (skips {doc['calibration_skip_rate']:.0%} of calibration "
          f"steps; lowest-cost tau on the empirical curve: {doc['empirical_best_tau']:.4f})")
    if c.get("price_ms"):
        delay = c["load"]["marginal_ms"]
        print(f"price {c['price_ms']:g} ms per transmission + server operation, one robot "
              f"(server {100 * c['load']['utilisation']:.0f}% busy, marginal queueing delay "
              f"{'inf' if delay is None else f'{delay:.2f}'} ms): tau* is the load-aware fixed "
              f"point (docs/method.md section 6), {c['bound']} bound")
    return 0


def _thresholds(args: argparse.Namespace, draft, target, setting, tau: float | None,
                modes: list[str]):
    """The thresholds of ``modes`` by the rule every entry point shares
    (``core.calibration_file.thresholds_for``): ``--tau`` for adahi, the rest from the
    task's calibration for the link. The default calibration is made first when it is
    missing or was made for other models or settings; one named by ``--calibration`` is
    never overwritten."""
    from dataclasses import replace

    from hybrid_policy.families.adahi import calibration
    from hybrid_policy.families.adahi.calibration_file import calibrate_command, check_given, thresholds_for
    from hybrid_policy.core.mode_names import FROM_CALIBRATION

    path = _calibration_path(args)
    command = calibrate_command(args.task, args.link, args.models, args.draft_kind)
    loaded = []

    def calibrated():
        if not loaded:
            try:
                loaded.append(calibration.load_thresholds(path, args.task, args.link, draft,
                                                          target, command))
            except HybridPolicyError as exc:
                if args.calibration:  # the user named this file: tell them, do not overwrite
                    raise
                log.info("%s: calibrating first", exc)
                _run_calibration(args, draft, target, setting,
                                 calibration.CalibrationConfig().episodes)
                loaded.append(calibration.load_thresholds(path, args.task, args.link, draft,
                                                          target))
        return loaded[0]

    given = {"tau": FROM_CALIBRATION if tau is None else tau}
    found = [t for t in (thresholds_for(m, given, calibrated) for m in modes) if t is not None]
    if loaded:  # one set serves every mode: the calibration's, with --tau on top
        return replace(loaded[0], **check_given(given))
    return found[0] if found else None


def cmd_eval(args: argparse.Namespace) -> int:
    from dataclasses import replace

    import torch

    from hybrid_policy.core import evaluator, stepmetrics
    from hybrid_policy.core.mode_names import (
        EXIT_MODES, IDN_MODES, ROCOIN_MODES, check_tau, parse_modes,
    )
    from hybrid_policy.families.adahi.modes import make_mode

    names = parse_modes(args.modes)
    placement = [n for n in names if n in IDN_MODES]
    if placement:
        return _eval_placement(args, names, placement)
    _check_model_args(args)
    exit_modes = [n for n in names if n in EXIT_MODES]
    if exit_modes and not args.topology:
        raise HybridPolicyError(f"{', '.join(exit_modes)}: early-exit modes split the net "
                                "across robot, edge and cloud: give the nodes with --topology "
                                "(e.g. config/early_exit.yaml)")
    student_modes = [n for n in names if n in ROCOIN_MODES]
    if student_modes and not args.topology:
        raise HybridPolicyError(f"{', '.join(student_modes)}: rocoin modes run students on "
                                "edge devices: give them with --topology (e.g. "
                                "config/rocoin.yaml)")
    tau = None if args.tau is None else check_tau(args.tau)
    if tau is not None and args.load_price_ms is not None:
        raise HybridPolicyError("--tau sets adahi's threshold and --price-ms derives it for "
                                "the load: give one of them")
    torch.set_num_threads(1)  # batch-1 inference: threads only add overhead
    draft, target = _models(args)
    setting = _setting(args, draft, target)
    thresholds = _thresholds(args, draft, target, setting, tau, names)
    meta = {"seed": args.seed, "link": args.link, "compute": setting.compute.as_dict(),
            "thresholds": None if thresholds is None else thresholds.__dict__,
            "draft": draft.info["checkpoint"], "target": target.info["checkpoint"]}
    meta.update(_clock_meta(args))
    if args.topology:
        doc = _eval_fleet(args, names, draft, target, setting, thresholds, meta)
    else:
        if args.load_price_ms is not None:  # one robot on its own server
            from sim_envs import task_spec
            from hybrid_policy.families.adahi.load_threshold import Load

            load = Load(1, task_spec(args.task).control_period_ms, setting.compute.target())
            thresholds = _load_aware(args, draft, target, thresholds, meta,
                                     {"server": load}).get("server", thresholds)
        modes = [make_mode(n, draft, target, thresholds) for n in names]
        setting = replace(setting, clock=_control(args, args.task))
        meta["period_ms"] = setting.clock.period_ms
        results = evaluator.evaluate(args.task, modes, args.episodes, args.seed, setting)
        doc = stepmetrics.report(args.task, results, meta)
    print(stepmetrics.format_table(doc))
    if args.json:
        stepmetrics.write_json(doc, args.json)
        log.info("wrote %s", args.json)
    return 0


def _control(args, task: str):
    """The evaluation's clock (``--eval-clock``, ``--loop``) at ``task``'s control period; a
    fleet ticks each robot at its own task's period."""
    from sim_envs import task_spec
    from hybrid_policy.core.realtime import clock_for

    # a command without --eval-clock (bringup, calibrating first) calibrates in real time,
    # the results' default
    return clock_for(getattr(args, "eval_clock", "realtime"), task_spec(task).control_period_ms,
                     loop=getattr(args, "loop", "wait"))


def _clock_meta(args) -> dict:
    """Which clock and loop a result ran under, for its JSON."""
    return {"clock": args.eval_clock,
            "loop": args.loop if args.eval_clock == "realtime" else None}


def _eval_placement(args, names: list[str], placement: list[str]) -> int:
    """``eval --topology`` with the inference delivery network's modes (``core.idn``): each
    task's catalogue measured once, then every placement mode on the fleet in closed loop."""
    import torch

    from hybrid_policy.core import stepmetrics, topology
    from hybrid_policy.families.idn import idn
    from hybrid_policy.families.idn import setup as idn_setup

    if len(placement) != len(names) or not args.topology:
        raise HybridPolicyError("placement modes run a fleet of their own (several tasks, "
                                "variants placed on every node): give them alone, with "
                                "--topology (e.g. config/idn.yaml)")
    torch.set_num_threads(1)
    doc_in = topology.read(args.topology)
    topo = topology.parse(doc_in, str(args.topology))
    cfg = idn.config_of(topo, doc_in)
    catalogue = idn_setup.catalogue_for(topo, cfg, args.models, args.catalogue_episodes)
    results, extra = {}, {}
    for name in names:
        run = idn_setup.fleet_run(name, topo, cfg, catalogue, args.models, args.episodes,
                                  args.seed, args.deadline_ms, args.phases,
                                  control=_control(args, topo.robots[0].task))
        results[name] = run.total()
        extra[name] = {"robots": [{"robot": r.name, "link": r.link.name, "server": "placement",
                                   **run.robots[r.name].summary()} for r in topo.robots],
                       "servers": run.servers, "placement": idn_setup.placement_summary(run)}
    tasks = idn_setup.tasks_of(topo, cfg)
    doc = stepmetrics.report(",".join(tasks), results, {
        "seed": args.seed, "topology": str(args.topology), "idn": idn_setup.config_doc(cfg),
        **_clock_meta(args),
        "catalogue": catalogue.to_json()["variants"]})
    for name in names:
        doc["modes"][name].update(extra[name])
    print(stepmetrics.format_table(doc))
    print(idn_setup.format_placement(doc))
    if args.json:
        stepmetrics.write_json(doc, args.json)
        log.info("wrote %s", args.json)
    return 0


def _eval_fleet(args, names, draft, target, setting, thresholds, meta) -> dict:
    """``eval --topology``: every robot of the fleet runs each mode in turn."""
    from dataclasses import replace

    from sim_envs import task_spec
    from hybrid_policy.core import compute, fleet, stepmetrics, topology
    from hybrid_policy.families.adahi import timing
    from hybrid_policy.families.adahi.fleet import TargetWork
    from hybrid_policy.core.mode_names import EXIT_MODES, ROCOIN_MODES
    from hybrid_policy.families.adahi.modes import make_mode

    topo = topology.load(args.topology)
    exits = None
    if any(n in EXIT_MODES for n in names):
        from hybrid_policy.families.exits import setup as exit_setup

        exits = exit_setup.prepare(args.task, args.models, args.early_exit,
                                   args.exit_calibration, args.temperature,
                                   compute=args.exit_compute)
        meta["early_exit"] = {"net": exits.net.info["checkpoint"], "exits": list(exits.net.exits),
                              "loss_budget": args.loss_budget, "encoding": args.encoding,
                              "compute": exits.compute.as_dict(),
                              "calibration": exits.samples.stats(),
                              "thresholds": {str(k): v for k, v in exits.samples
                                             .thresholds_for_loss(args.loss_budget).items()}}
    students = None
    if any(n in ROCOIN_MODES for n in names):
        from hybrid_policy.families.rocoin import setup as rocoin_setup

        _, students = rocoin_setup.prepare(args.task, args.topology, args.models, args.students)
        faults = students.config.faults if args.fault_p is None else replace(
            students.config.faults, p=args.fault_p)
        meta["rocoin"] = {**students.summary(), "faults": faults.__dict__}
    other = sorted({r.task for r in topo.robots} - {args.task})
    if other:
        raise HybridPolicyError(f"{args.topology}: eval --topology runs one task ({args.task});"
                                f" robots of other tasks: {', '.join(other)}")
    largest = max(topo.nodes[s].max_batch for s in topo.servers())
    sizes = tuple(n for n in (1, 2, 4, 8, 16, 32, 64, 128) if n < largest) + (largest,)
    requests = timing.verify_requests(draft, target, compute.sample_observations(args.task),
                                       max(sizes))
    model = replace(setting.compute, batch_ms=timing.measure_batches(target, requests, sizes))
    log.info("batch curve of the target (ms per batch): %s",
             ", ".join(f"{n}: {ms:.2f}" for n, ms in model.batch_ms))
    per_server = {}
    if args.load_price_ms is not None:
        from hybrid_policy.families.adahi.load_threshold import server_loads

        per_server = _load_aware(args, draft, target, thresholds, meta, server_loads(topo, model))
    results, robots, servers = {}, {}, {}
    for name in names:
        def mode_for(spec, name=name):  # adahi's τ per server with --price-ms
            return make_mode(name, draft, target, per_server.get(spec.server, thresholds))

        work = TargetWork(mode_for, {args.task: target})
        if name in ROCOIN_MODES:
            from hybrid_policy.families.rocoin.fleet import StudentRun

            lay = rocoin_setup.layout_for(name, topo, students, args.seed)
            work = StudentRun(lay, students, faults, draft, target.history)
            meta.setdefault("layouts", {})[name] = {"groups": lay.groups,
                                                    "codes": [len(c) for c in lay.codes]}
        if name in EXIT_MODES:
            work = exit_setup.exit_run(name, topo, exits, args.loss_budget, args.encoding,
                                       task_spec(args.task).control_period_ms,
                                       model.device_speed)
            meta.setdefault("exit_plans", {})[name] = work.plan.summary()
        run = fleet.evaluate_fleet(topo, work, model, args.deadline_ms, args.episodes,
                                   args.seed, phases=args.phases,
                                   control=_control(args, args.task))
        results[name] = run.total()
        robots[name] = [{"robot": r.name, "link": r.link.name, "server": r.server,
                         **run.robots[r.name].summary()} for r in topo.robots]
        servers[name] = run.servers
    doc = stepmetrics.report(args.task, results, {**meta, "compute": model.as_dict(),
                                                  "topology": str(args.topology)})
    for name in names:
        doc["modes"][name]["robots"] = robots[name]
        doc["modes"][name]["servers"] = servers[name]
    print(stepmetrics.format_fleet(doc))
    return doc


def _load_aware(args, draft, target, thresholds, meta: dict, loads: dict) -> dict:
    """adahi's τ per server, derived for the server's load and ``--price-ms``
    (``core.load_threshold``) from the calibration ``_thresholds`` read; recorded in
    ``meta["load_threshold"]``. No skipping mode: nothing to derive."""
    from dataclasses import replace

    from hybrid_policy.families.adahi import calibration
    from hybrid_policy.families.adahi import load_threshold

    if thresholds is None:
        log.warning("--price-ms only changes adahi's threshold; these modes have none")
        return {}
    cal = load_threshold.Calibrated.from_doc(calibration.load_doc(
        _calibration_path(args), args.task, args.link, draft, target))
    out, record = {}, {}
    for server, load in loads.items():
        res = load_threshold.solve(cal, load, args.load_price_ms)
        out[server] = replace(thresholds, tau=res.tau)
        record[server] = {"robots": load.robots, "service_ms": load.service_ms, **res.as_dict()}
        print(f"load-aware tau for {server}: {load.robots} robot(s), verification "
              f"{load.service_ms:.2f} ms, price {res.price_ms:g} ms -> tau {res.tau:.4f} "
              f"(calibration's {thresholds.tau:.4f}), skips {res.skip_rate:.0%} of calibration "
              f"steps, utilisation {res.utilisation:.2f}, wait {res.wait_ms:.2f} ms, marginal "
              f"delay {res.marginal_ms:.2f} ms, {res.bound} bound")
    meta["load_threshold"] = record
    return out


def cmd_bringup(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch

    from hybrid_policy.core.mode_names import (
        EXIT_MODES, IDN_MODES, NEEDS_THRESHOLDS, ROCOIN_MODES, check_tau, parse_modes,
    )
    from hybrid_policy.ros.graph import GraphConfig

    modes = parse_modes(args.mode)
    if any(m in IDN_MODES for m in modes):
        return _bringup_placement(args, modes)
    _check_model_args(args)
    if any(m in EXIT_MODES for m in modes) and not args.topology:
        raise HybridPolicyError("early-exit modes split the net across robot, edge and cloud: "
                                "give the nodes with --topology (e.g. config/early_exit.yaml)")
    if any(m in ROCOIN_MODES for m in modes) and not args.topology:
        raise HybridPolicyError("rocoin modes run students on edge devices: give them with "
                                "--topology (e.g. config/rocoin.yaml)")
    tau = None if args.tau is None else check_tau(args.tau)
    bag = Path(args.bag).resolve() if args.bag else None
    if bag is not None and bag.exists():
        raise HybridPolicyError(f"{args.bag}: already exists; give a new directory for the bag")
    torch.set_num_threads(1)
    draft, target = _models(args)
    thresholds = None
    if any(m in NEEDS_THRESHOLDS for m in modes):
        thresholds = _thresholds(args, draft, target, _setting(args, draft, target), tau, modes)
    charged = _sim_time_compute(args, draft, target) if args.clock == "sim_time" else {}
    exits, students = None, None

    def config_for(mode: str, mode_bag) -> GraphConfig:
        nonlocal exits, students
        exit_cfg = {}
        if mode in EXIT_MODES:
            exits, exit_cfg = _exit_plan(args, mode, exits, mode_bag)
        if mode in ROCOIN_MODES:
            students, exit_cfg = _rocoin_layout(args, mode, students, target, mode_bag)
        explicit = {} if thresholds is None or mode not in NEEDS_THRESHOLDS else {
            "tau": thresholds.tau, "uncertainty_tau": thresholds.uncertainty_tau,
            "random_skip": thresholds.random_skip}
        log.info("bringup: %s on %s over %s, %d episodes%s", mode, args.task, args.link,
                 args.episodes, f" per robot of {args.topology}" if args.topology else "")
        return GraphConfig(
            mode=mode, task=args.task, link=args.link, models=args.models,
            draft_kind=args.draft_kind, draft=str(Path(draft.info["checkpoint"]).resolve()),
            target=str(Path(target.info["checkpoint"]).resolve()),
            calibration=str(_calibration_path(args)), **explicit, **charged,
            **_graph_settings(args, mode_bag),
            topology=str(Path(args.topology).resolve()) if args.topology else "", **exit_cfg)

    return _run_graphs(args, modes, bag, config_for)


def _sim_time_compute(args: argparse.Namespace, draft, target) -> dict[str, float]:
    """sim_time charges each step the compute times eval would (``_setting``'s: pinned by
    ``--draft-ms``/``--target-ms``, else measured, with the speed factors)."""
    model = _setting(args, draft, target).compute
    log.info("sim_time: each step is charged draft %.3f ms, target %.3f ms",
             model.draft(), model.target())
    return {"draft_ms": model.draft(), "target_ms": model.target()}


def _graph_settings(args: argparse.Namespace, mode_bag) -> dict:
    """The GraphConfig settings every bringup takes from the command line as they are."""
    from pathlib import Path

    return {"episodes": args.episodes, "seed": args.seed, "temperature": args.temperature,
            "deadline_ms": args.deadline_ms, "clock": args.clock, "rate_hz": args.rate_hz,
            "loop": args.loop, "interface": args.interface, "max_age_ms": args.max_age_ms,
            "robot_map": str(Path(args.robot_map).resolve()) if args.robot_map else "",
            "bag": str(mode_bag) if mode_bag else "",
            "link_in_draft": args.link_in_draft, "recorder_nice": args.recorder_nice}


def _run_graphs(args: argparse.Namespace, modes: list[str], bag, config_for) -> int:
    """One graph per mode, in turn (several modes: one bag each under ``bag``); then the
    table of the bags."""
    from hybrid_policy.ros.bringup import bringup

    bags = []
    for mode in modes:
        mode_bag = None if bag is None else (bag if len(modes) == 1 else bag / mode)
        rc = bringup(config_for(mode, mode_bag), args.timeout)
        if rc != 0:
            return rc
        if mode_bag is not None:
            bags.append(mode_bag)
    if bags:
        _print_bags(bags)
    return 0


def _bringup_placement(args: argparse.Namespace, modes: list[str]) -> int:
    """``bringup --topology`` with the inference delivery network's modes (``core.idn``), one
    graph per mode: the catalogue (``--catalogue``, else each task's, measured once and cached
    as ``eval`` does) is written next to the bag for every node to read. Over ROS the robots
    keep their cell and task: a topology with shifts is refused (they run in ``eval``)."""
    import tempfile
    from pathlib import Path

    import torch

    from hybrid_policy.core import topology
    from hybrid_policy.families.idn import catalogue as idn_catalogue
    from hybrid_policy.families.idn import setup as idn_setup
    from hybrid_policy.core.mode_names import IDN_MODES
    from hybrid_policy.ros.fleet_graph import idn_config
    from hybrid_policy.ros.graph import GraphConfig

    if any(m not in IDN_MODES for m in modes) or not args.topology:
        raise HybridPolicyError("placement modes run a fleet of their own (variants placed on "
                                "every node): give them alone, with --topology (e.g. "
                                "config/idn.yaml without its shifts)")
    topo = topology.load(args.topology)
    cfg = idn_config(args.topology, topo)
    tasks = sorted({r.task for r in topo.robots})
    if len(tasks) != 1 or (args.task and args.task != tasks[0]):
        raise HybridPolicyError(f"{args.topology}: a ROS placement fleet runs one task; its "
                                f"robots run {', '.join(tasks)}"
                                + (f" (--task {args.task})" if args.task else ""))
    bag = Path(args.bag).resolve() if args.bag else None
    if bag is not None and bag.exists():
        raise HybridPolicyError(f"{args.bag}: already exists; give a new directory for the bag")
    torch.set_num_threads(1)
    if args.catalogue:
        catalogue = idn_catalogue.load(args.catalogue)
    else:
        catalogue = idn_setup.catalogue_for(topo, cfg, args.models, args.catalogue_episodes)
    path = (bag.parent / f"{bag.name}.catalogue.json" if bag else
            Path(tempfile.mkdtemp(prefix="hybrid_idn_")) / "catalogue.json")
    catalogue.save(path)
    log.info("catalogue of %s: %s", ", ".join(catalogue.tasks), path)

    def config_for(mode: str, mode_bag) -> GraphConfig:
        log.info("bringup: %s on %s, %d episodes per robot", mode, args.topology,
                 args.episodes)
        return GraphConfig(
            mode=mode, task=tasks[0], link=topo.robots[0].link.name,
            models=str(Path(args.models).resolve()), **_graph_settings(args, mode_bag),
            topology=str(Path(args.topology).resolve()), idn_catalogue=str(path.resolve()))

    return _run_graphs(args, modes, bag, config_for)


def _rocoin_layout(args: argparse.Namespace, mode: str, students, target, bag) -> tuple:
    """A rocoin mode's layout for ``bringup`` (``rocoin_setup.layout_for``, as ``eval``
    makes it), written next to the bag (or to a temporary file) for the nodes to read; the
    students are prepared once. With ``--students`` and ``--target`` given, the default
    models are not needed (nor made). ``--fault-p`` overrides the topology's faults.p on
    the devices."""
    import tempfile
    from pathlib import Path

    from hybrid_policy.families.rocoin import setup as rocoin_setup

    if students is None:  # an explicit --target is the one the devices and students use
        students = rocoin_setup.prepare(args.task, args.topology, args.models, args.students,
                                        target=target if args.target else None)
    topo, sm = students
    lay = rocoin_setup.layout_for(mode, topo, sm, args.seed)
    path = (Path(bag).parent / f"{Path(bag).name}.layout_{mode}.json" if bag else
            Path(tempfile.mkdtemp(prefix="hybrid_rocoin_")) / f"layout_{mode}.json")
    lay.save(path)
    log.info("%s layout: groups %s, codes per group %s: %s", mode, lay.groups,
             [len(c) for c in lay.codes], path)
    extra = {} if args.fault_p is None else {"extra": {"student_node": {"fault_p": args.fault_p}}}
    return students, {"rocoin_layout": str(path.resolve()),
                      "students_path": str(Path(sm.path).resolve()), **extra}


def _exit_plan(args: argparse.Namespace, mode: str, exits, bag) -> tuple:
    """An early-exit mode's plan for ``bringup``, solved as ``eval`` solves it (dto_ee: once,
    for the robots at their control rate; the ROS nodes hold it fixed), written next to the
    bag (or to a temporary file) for the nodes to read."""
    import tempfile
    from pathlib import Path

    from sim_envs import task_spec
    from hybrid_policy.core import topology
    from hybrid_policy.families.exits import setup as exit_setup
    from hybrid_policy.families.exits.plan import ExitPlan

    if exits is None:
        exits = exit_setup.prepare(args.task, args.models, args.early_exit,
                                   args.exit_calibration, args.temperature,
                                   compute=args.exit_compute)
    net = {"early_exit": str(Path(exits.net.info["checkpoint"]).resolve())}
    if args.exit_plan:  # given (hybrid-policy exit-plan): used as it is
        plan = ExitPlan.load(args.exit_plan)
        if plan.mode != mode:
            raise HybridPolicyError(f"{args.exit_plan}: a plan for {plan.mode}, not {mode}")
        return exits, {**net, "exit_plan": str(Path(args.exit_plan).resolve())}
    run = exit_setup.exit_run(mode, topology.load(args.topology), exits, args.loss_budget,
                              args.encoding, task_spec(args.task).control_period_ms,
                              args.device_speed)
    path = (Path(bag).parent / f"{Path(bag).name}.exit_plan.json" if bag else
            Path(tempfile.mkdtemp(prefix="hybrid_exit_")) / f"{mode}.json")
    run.plan.save(path)
    log.info("%s plan: %s", mode, path)
    return exits, {**net, "exit_plan": str(path.resolve())}


def cmd_exit_plan(args: argparse.Namespace) -> int:
    """Write an early-exit mode's plan (what ``ros2 launch … exit_plan:=`` reads)."""
    from pathlib import Path

    from hybrid_policy.core.mode_names import EXIT_MODES, check_mode

    _check_model_args(args)
    if check_mode(args.mode) not in EXIT_MODES:
        raise HybridPolicyError(f"{args.mode} is not an early-exit mode ({', '.join(EXIT_MODES)})")
    args.exit_plan = None
    _models(args)  # the net is trained from the default target
    _, cfg = _exit_plan(args, args.mode, None, None)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(Path(cfg["exit_plan"]).read_text())
    print(Path(args.out).read_text())
    log.info("wrote %s", args.out)
    return 0


def cmd_fl_train(args: argparse.Namespace) -> int:
    """Federated (or baseline) training of the early-exit net over a topology's clients."""
    import json
    from pathlib import Path

    from hybrid_policy.families.federated import train
    from hybrid_policy.text_table import text_table

    if args.eval_episodes < 0:
        raise HybridPolicyError(f"--eval-episodes must be >= 0, got {args.eval_episodes}")
    run, fed = train.prepare(args.topology, args.method, args.rounds, args.out, args.seed,
                             args.models, args.serving_log, args.serving_mode, args.fail or "",
                             args.data, args.tokenizer)
    rows = [("client", "data share", "requests", "serving rates (exits "
             + " ".join(str(e) for e in fed.exits) + ")", "region")]
    rows += [(c.name, f"{c.data_share:.2f}", f"{c.requests:.2f}",
              " ".join(f"{r:.2f}" for r in c.serving_rates), str(c.region)) for c in fed.clients]
    print(text_table(rows))
    summary = train.fl_train(run, args.superlink)
    log.info("trained %s in %.0f s; per-round log %s", args.method, summary["seconds"],
             Path(args.out) / "rounds.jsonl")
    if args.eval_episodes:
        result = train.evaluate(summary, fed, args.eval_episodes, args.seed)
        summary["evaluation"] = result
        (Path(args.out) / "summary.json").write_text(json.dumps(summary, indent=1))
        rows = [("client", "success at its serving rates", "episodes")]
        rows += [(name, f"{r['success']:.3f}", str(r["episodes"]))
                 for name, r in result["clients"].items()]
        rows.append(("mean (request-weighted)", f"{result['mean']:.3f}", ""))
        print(text_table(rows))
    for name, path in summary["checkpoints"].items():
        print(f"checkpoint ({name}): {path}")
    return 0


def _print_bags(bags) -> dict:
    """Print the metrics table and counts of one or several bags; return the document."""
    from hybrid_policy.bag_analysis import analyze, format_counts
    from hybrid_policy.core import stepmetrics

    docs = [analyze(bag) for bag in bags]
    doc = docs[0] if len(docs) == 1 else stepmetrics.merge(docs)
    print(stepmetrics.format_table(doc))
    if any("robots" in m for m in doc["modes"].values()):
        print(stepmetrics.format_fleet(doc))
    print(format_counts(doc))
    return doc


def cmd_analyze(args: argparse.Namespace) -> int:
    from hybrid_policy.core import stepmetrics

    doc = _print_bags(args.bags)
    if args.json:
        stepmetrics.write_json(doc, args.json)
        log.info("wrote %s", args.json)
    return 0


def _add_model_args(p: argparse.ArgumentParser, task_required: bool = True) -> None:
    from hybrid_policy.families.adahi.calibration_file import DRAFT_KINDS
    from hybrid_policy.core.link import PROFILES
    from hybrid_policy.defaults import DEFAULT_TEMPERATURE

    p.add_argument("--task", required=task_required,
                   help="task name (see `hybrid-policy tasks`)" + (
                       "" if task_required else "; placement modes take the topology's"))
    p.add_argument("--draft", help="draft checkpoint directory (default: default models)")
    p.add_argument("--draft-kind", choices=DRAFT_KINDS, default=DRAFT_KINDS[0],
                   help="which default draft: trained on the demonstrations, or distilled from "
                   "the target to be accepted more often (made on first use, ~2 min); each "
                   "has its own calibrations (default demonstrations)")
    p.add_argument("--target", help="target checkpoint directory (default: default models)")
    p.add_argument("--models", default="models",
                   help="root of the default models and calibrations (default models/)")
    p.add_argument("--link", default="5g_embb",
                   help=f"link profile: {', '.join(PROFILES)} (default 5g_embb)")
    p.add_argument("--temperature", type=_positive_float, default=DEFAULT_TEMPERATURE,
                   help="sampling temperature of both policies' code distributions "
                   f"(default {DEFAULT_TEMPERATURE})")
    p.add_argument("--device-speed", type=_positive_float, default=1.0,
                   help="robot CPU speed relative to this machine (default 1)")
    p.add_argument("--server-speed", type=_positive_float, default=1.0,
                   help="server speed relative to this machine (default 1)")
    p.add_argument("--draft-ms", type=_positive_float,
                   help="pin the draft's compute per step (ms on this machine; the speed "
                   "factors still apply) instead of measuring it: results then do not move "
                   "with the machine's load (default: measured)")
    p.add_argument("--target-ms", type=_positive_float,
                   help="pin the target's compute per verification likewise (default: "
                   "measured)")
    p.add_argument("--deadline-ms", type=_positive_float, default=100.0,
                   help="give up on a verification after this long and fall back (default 100)")
    p.add_argument("--quality-weight", type=_positive_float, default=2.0,
                   help="control periods an uncorrected rejection costs (the wrong move and "
                   "its undoing): w in τ* (default 2)")
    p.add_argument("--calibration", help="calibration JSON to write (calibrate) or read (eval); "
                   "default MODELS/TASK/calibration/LINK.json (distilled draft: "
                   "MODELS/TASK/calibration/distilled/LINK.json)")


def _loss_budget(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a mean TV in [0, 1], got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be a mean TV distance in [0, 1], got {text}")
    return value


def _probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be a probability in [0, 1], got {text!r}")
    return value


def _add_exit_args(p: argparse.ArgumentParser) -> None:
    from hybrid_policy.families.exits.plan import DEFAULT_LOSS_BUDGET

    p.add_argument("--loss-budget", type=_loss_budget, default=DEFAULT_LOSS_BUDGET,
                   help="early-exit modes: the mean TV to the full net allowed for the steps an "
                   "early exit answers; sets the calibrated thresholds and dto_ee's accuracy "
                   f"constraint (default {DEFAULT_LOSS_BUDGET})")
    p.add_argument("--encoding", choices=("32FC1", "16FC1"), default="32FC1",
                   help="early-exit modes: features cross links as float32 (32FC1, default) or "
                   "float16 (16FC1: half the bytes)")
    p.add_argument("--early-exit", help="early-exit net checkpoint (default: MODELS/TASK/"
                   "early_exit, trained from the default target if missing)")
    p.add_argument("--exit-calibration", help="the exits' calibration JSON (default: MODELS/"
                   "TASK/calibration/early_exit.json, made if missing)")
    p.add_argument("--exit-compute", help="early-exit modes: the net's part times (JSON: "
                   "layer_ms [[batch, ms], ...], embed_ms, exit_ms; what eval --json records "
                   "as early_exit.compute) instead of measuring them here: plan for the "
                   "deployed machines' timings")
    p.add_argument("--students", help="rocoin modes: the students' checkpoint (default: "
                   "MODELS/TASK/students_<codes>, distilled for the topology's plan if missing)")
    p.add_argument("--fault-p", type=_probability, default=None,
                   help="rocoin modes: the probability that a device fails a request "
                   "(default: the topology's rocoin.faults.p)")
    if p.prog.endswith("bringup"):
        p.add_argument("--exit-plan", help="early-exit modes: use this plan (hybrid-policy "
                       "exit-plan) instead of solving one")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hybrid-policy",
        description="Cooperative draft/target inference of BC robot policies over ROS 2.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("tasks", help="list the manipulation tasks",
                       description="List the registered MuJoCo manipulation tasks with their "
                       "observation size, action size, episode length and difficulty.")
    p.set_defaults(func=cmd_tasks)

    p = sub.add_parser("demos", help="generate expert demonstrations for a task",
                       description="Roll the task's scripted expert for N seeded episodes, keep "
                       "the successful ones and write DIR/<task>.demos.npz. The same seed gives "
                       "the same bytes.")
    p.add_argument("--task", required=True, help="task name (see `hybrid-policy tasks`)")
    p.add_argument("--episodes", type=_positive_int, required=True, help="episodes to roll")
    p.add_argument("--out", required=True, help="output directory (one task per directory)")
    p.add_argument("--seed", type=int, default=0, help="seed of the episode seeds (default 0)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace another task's data set found in the output directory")
    p.set_defaults(func=cmd_demos)

    p = sub.add_parser("train", help="train a draft or target policy on demonstrations",
                       description="Fit the task's action tokenizer (once: reused if it exists "
                       "at --tokenizer, default OUT/../tokenizer) and train one policy. Writes "
                       "OUT/model.safetensors and OUT/config.json.")
    p.add_argument("--task", required=True, help="task name (see `hybrid-policy tasks`)")
    p.add_argument("--role", required=True, choices=("draft", "target"))
    p.add_argument("--data", required=True, help="data set file or directory (from `demos`)")
    p.add_argument("--out", required=True, help="checkpoint directory to write")
    p.add_argument("--tokenizer", help="tokenizer checkpoint directory (default OUT/../tokenizer)")
    p.add_argument("--epochs", type=_positive_int, help="override the role's epoch count")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("calibrate", help="fit deviation vs rejection and derive τ*",
                       description="Roll out hybrid inference (verify every step), fit the "
                       "target's rejection probability against the action deviation, derive τ* "
                       "in closed form from the fit and the link/compute costs, sweep τ for the "
                       "trade-off plot. Writes MODELS/TASK/calibration/LINK.json and two PNGs.")
    _add_model_args(p)
    p.add_argument("--episodes", type=_positive_int, default=40,
                   help="verify-every-step episodes for the fit (default 40)")
    p.add_argument("--sweep-episodes", type=_positive_int, default=20,
                   help="closed-loop episodes per point of the trade-off sweep (default 20)")
    p.add_argument("--price-ms", type=_price_ms, default=0.0,
                   help="price of one transmission + server operation in ms-equivalents: τ* "
                   "becomes the load-aware fixed point for one robot (docs/method.md §6; "
                   "default 0: τ* as before)")
    _add_clock_args(p)
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("eval", help="closed-loop evaluation of inference modes (no ROS)",
                       description="Run each mode on the same seeded episodes in process, "
                       "through the modelled link, and print one table. Without --draft/--target "
                       "the default models are used (trained first if missing or stale); modes "
                       "that skip use the task's calibration for the link (run first if missing).")
    _add_model_args(p, task_required=False)
    p.add_argument("--modes", default="all", help="comma-separated modes, or 'all' (default)")
    p.add_argument("--episodes", type=_positive_int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tau", type=float, help="override the calibrated τ* of adahi")
    p.add_argument("--json", help="write the results as JSON to this file")
    _add_clock_args(p)
    p.add_argument("--topology", help="a fleet topology (config/fleet.yaml): every robot runs "
                   "each mode, sharing its servers (queues, batches); per-robot and per-server "
                   "tables, and modes.<m>.robots / .servers in the JSON")
    p.add_argument("--price-ms", dest="load_price_ms", type=_price_ms,
                   help="derive adahi's τ for each server's load (its robots, the queueing "
                   "delay at the operating point) with this price in ms per transmission + "
                   "server operation, from the calibration's samples (docs/method.md §6); "
                   "default: the calibration's τ*")
    p.add_argument("--catalogue-episodes", type=_positive_int,
                   default=CATALOGUE_EPISODES,
                   help="placement modes: episodes that measure each variant's success for "
                   "the catalogue (cached in MODELS/TASK/catalogue.json)")
    p.add_argument("--phases", choices=("random", "even"), default="random",
                   help="with --topology: robots start at random phases within their first "
                   "control period, drawn from the seed (default), or evenly spaced")
    _add_exit_args(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("bringup", help="run the ROS 2 graph (separate processes) for one mode",
                       description="Start sim, draft, link, target and recorder nodes as separate "
                       "OS processes with the same parameters the launch file gives them, run "
                       "the episodes (lockstep or real time), then stop every node. With --bag, "
                       "record an MCAP rosbag2 and print its metrics table.")
    _add_model_args(p, task_required=False)
    p.add_argument("--mode", required=True,
                   help="a mode, a comma-separated list, or 'all': one graph after another")
    p.add_argument("--episodes", type=_positive_int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tau", type=float, help="override the calibrated τ* of adahi")
    p.add_argument("--bag", help="record a rosbag2 (MCAP) into this new directory (several "
                   "modes: one bag per mode in BAG/<mode>)")
    p.add_argument("--clock", choices=("lockstep", "realtime", "sim_time"),
                   default="lockstep",
                   help="lockstep: the simulator waits for each action (reproducible); "
                   "realtime: it steps at --rate-hz on the wall clock whatever arrived; "
                   "sim_time: the same in simulated time (/clock), each step charged its "
                   "modelled compute and link time, so the run equals eval's real time tick "
                   "for tick (default lockstep)")
    p.add_argument("--rate-hz", type=_positive_float, default=-1.0,
                   help="control rate of the realtime and sim_time clocks (default: the "
                   "task's, 25 Hz for the fetch tasks)")
    p.add_argument("--loop", choices=("period", "wait"), default="period",
                   help="realtime and sim_time: how a verified step waits (period: 0.7 of the "
                   "control period, so the fallback makes its tick; wait: --deadline-ms; "
                   "default period)")
    p.add_argument("--interface", choices=("standard", "vector"), default="standard",
                   help="robot interface: standard ROS messages as a robot driver and "
                   "perception publish them, TwistStamped commands out (default); vector: the "
                   "task's flat observation and action in one JointState each (faster)")
    p.add_argument("--robot-map", help="robot interface YAML of the standard interface "
                   "(default: the package's config/robot_TASK.yaml)")
    p.add_argument("--max-age-ms", type=_positive_float, default=-1.0,
                   help="oldest robot input the draft acts on, in ms (default: the robot "
                   "map's max_age_ms)")
    p.add_argument("--link-in-draft", dest="link_in_draft", action="store_true",
                   help="the draft node applies the link model itself: no link_node, a "
                   "process and two DDS hops fewer per verified step (one robot)")
    p.add_argument("--recorder-nice", dest="recorder_nice", type=int, default=10,
                   choices=range(20), metavar="0..19",
                   help="CPU niceness of the bag recorder, off the control path (default 10)")
    p.add_argument("--timeout", type=_positive_float, default=3600.0,
                   help="stop the graph after this many seconds (default 3600)")
    p.add_argument("--topology", help="a fleet topology (config/fleet.yaml): every robot runs "
                   "the mode under its own namespace (NS/<robot>/...), one batching target "
                   "node per server, link nodes per hop, one bag; analyze prints per-robot and "
                   "per-server tables; placement modes: an idn_node per compute node on a "
                   "robot's path and the placement node, robots in fixed cells (no idn.shifts "
                   "over ROS)")
    p.add_argument("--catalogue", help="placement modes: the variants' catalogue JSON to use "
                   "(default: each task's, measured and cached in MODELS/TASK/catalogue.json)")
    p.add_argument("--catalogue-episodes", type=_positive_int, default=CATALOGUE_EPISODES,
                   help="placement modes: episodes that measure each variant's success for "
                   "the catalogue when it is made")
    _add_exit_args(p)
    p.set_defaults(func=cmd_bringup)

    p = sub.add_parser("exit-plan", help="solve an early-exit mode's plan for a topology",
                       description="Where each part of the early-exit net runs, each node's "
                       "threshold and offloading (dto_ee: optimised) for the robots of "
                       "--topology; write it as JSON for `ros2 launch ... exit_plan:=FILE`.")
    _add_model_args(p)
    p.add_argument("--topology", required=True, help="the fleet (config/early_exit.yaml)")
    p.add_argument("--mode", required=True, help="early_exit | dto_ee | ee_fixed | ee_random "
                   "| cloud_only")
    p.add_argument("--out", required=True, help="the plan JSON to write")
    _add_exit_args(p)
    p.set_defaults(func=cmd_exit_plan)

    p = sub.add_parser("fl-train", help="federated training of the early-exit net (Flower)",
                       description="Train the early-exit net over the clients of --topology "
                       "(its robots; the topology's federated block: data shares, serving "
                       "rates): serving_rate (exit losses and aggregation weighted by how each "
                       "client's requests are served) or fedavg through Flower's simulation "
                       "engine, or the baselines central (pooled data) and local (each client "
                       "alone). Writes OUT/early_exit (for eval --early-exit), "
                       "OUT/rounds.jsonl (loss per exit per client per round) and "
                       "OUT/summary.json; docs/federated.md.")
    p.add_argument("--topology", required=True, help="topology with a federated block "
                   "(config/federated.yaml)")
    p.add_argument("--method", required=True, choices=("serving_rate", "fedavg", "central",
                                                       "local"))
    p.add_argument("--rounds", type=_positive_int, default=20, help="rounds (default 20); a "
                   "round is one pass over each client's data")
    p.add_argument("--out", required=True, help="run directory to write")
    p.add_argument("--seed", type=int, default=0, help="seed of the init, partition and "
                   "evaluation (default 0)")
    p.add_argument("--models", default="models", help="root of the task's default "
                   "demonstrations and tokenizer (made if missing; default models)")
    p.add_argument("--data", help="demonstrations the clients' shares come from (default: the "
                   "task's, under --models)")
    p.add_argument("--tokenizer", help="the task's action tokenizer (default: under --models)")
    p.add_argument("--superlink", help="HOST:PORT of a Flower SuperLink: run under the "
                   "deployment engine (SuperNodes started with --node-config "
                   "\"client='<robot>'\") instead of the simulation engine")
    p.add_argument("--serving-log", help="measured serving rates: the JSON of `eval --topology "
                   "F --modes early_exit --json FILE` (default: the rates the topology declares)")
    p.add_argument("--serving-mode", default="early_exit", help="the mode in --serving-log to "
                   "read (default early_exit)")
    p.add_argument("--eval-episodes", type=int, default=20, help="closed-loop episodes per "
                   "client at its serving rates after training (default 20; 0: none)")
    p.add_argument("--fail", help="failure drill: CLIENT:ROUND makes that client raise in that "
                   "round (the round completes with the others)")
    p.set_defaults(func=cmd_fl_train)

    p = sub.add_parser("topology", help="show a fleet topology (robots, compute nodes, links)",
                       description="Validate a fleet topology file and print its compute "
                       "nodes and robots as tables, each robot with its route to its server.")
    p.add_argument("action", choices=("show",), help="what to do with the file")
    p.add_argument("file", help="topology YAML (e.g. config/fleet.yaml)")
    p.set_defaults(func=cmd_topology)

    p = sub.add_parser("analyze", help="metrics table of recorded bags (same schema as eval)",
                       description="Read rosbag2 directories recorded by bringup or the launch "
                       "file and print the same table and JSON as `eval` (one mode per bag; "
                       "several bags make one table), plus the counts of fallbacks, rejected "
                       "messages and link losses.")
    p.add_argument("bags", nargs="+", help="bag directories")
    p.add_argument("--json", help="write the results as JSON to this file")
    p.set_defaults(func=cmd_analyze)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except USER_ERRORS as exc:
        log.error("%s", exc)
        return 2
    except KeyboardInterrupt:
        log.error("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
