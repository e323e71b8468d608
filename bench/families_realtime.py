"""Every family of cooperative inference in real time and in lockstep, side by side, on
several access links.

The families and the topology each runs on (``--config``, default this checkout's config/):

* ``draft_target``: the draft/target modes (``--modes all``: draft_only, target_only,
  hybrid, adahi, uncertainty_skip, random_skip) on fleet.yaml;
* ``exits``: the early-exit family (``--modes exits``) on early_exit.yaml;
* ``rocoin``: RoCoIn and its baselines (``--modes students``) on rocoin.yaml;
* ``placement``: the inference delivery network (``--modes placement``) on idn.yaml;
* ``federated``: the early-exit net trained by ``hybrid-policy fl-train`` with
  ``serving_rate`` and with ``fedavg`` on federated.yaml (``--federated-rounds`` rounds, once
  per seed, cached under ``--out``), each net evaluated as ``--modes early_exit
  --early-exit <net>``.

For every family, link (``--links``), seed (``--seeds``) and clock (``--clocks``) it writes a
copy of the family's topology whose robots all use that access link (everything else kept)
and runs ``hybrid-policy eval --topology COPY --eval-clock CLOCK --loop LOOP --json ...`` as
a subprocess, one at a time (each eval uses one core). Per family it prints a markdown table,
one row per mode (per training method for ``federated``) and per link: success in lockstep
and in real time, pooled over the fleet's robots and the seeds, with 95% Wilson intervals;
their ratio; missed / stale ticks per step in real time (pooled over steps); the median over
seeds of the fleet's p95 step latency in real time. A second table gives each point's
success over seeds as median [min, max]. ``--json`` writes every point and every run's
whole eval document (per-robot and per-server rows included).

``--episodes`` is per robot and run; by default each family gets the fewest that give at
least ``--min-episodes`` (100) episodes per point summed over its robots and seeds
(draft_target 9, exits 5, rocoin 17, placement 9, federated 12 with three seeds). Before a
link's draft_target runs, its calibration is made in real time (``hybrid-policy calibrate``)
if missing, so that adahi's τ does not depend on which clock ran first. The first eval of a
family on a link pins what it measured on this machine for the later ones (rocoin's
students, the early-exit net's part timings: ``--students``, ``--exit-compute``), so that the
clocks and seeds compare the same system. Each command's stderr is kept in
``OUT/logs/<run>.log``; a failing command stops the bench and names its log.

Full size on a 2-core machine, one eval at a time: about 1 h, up to 1.5 h on a busy machine
(measured at the default episodes: 260 s for every family in both clocks per link and seed,
nine link-seed pairs; fl-train at 20 rounds, extrapolated from 1- and 2-round runs: about
4 min per seed), plus on first use the models, calibrations, students and catalogues made
under --models (about 15 min):

    .venv/bin/python bench/families_realtime.py --models models \\
        --json runs/bench_families/families.json

Smoke test (every family once in both clocks, a few minutes once the models exist):

    .venv/bin/python bench/families_realtime.py --models models --seeds 0 --episodes 1 \\
        --links 5g_embb --federated-rounds 1 --out runs/bench_families_smoke
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from hybrid_policy.families.adahi.frontier import wilson
from hybrid_policy.core.link import PROFILES
from hybrid_policy.families.registry import parse_modes
from seed_spread import spread  # bench/: run as a script

log = logging.getLogger("bench.families_realtime")

CLOCKS = ("realtime", "lockstep")
TASK = "fetch_push"  # the task of every topology here but idn.yaml (which names its own)
FEDERATED_METHODS = ("serving_rate", "fedavg")


@dataclass(frozen=True)
class Family:
    """One family: the topology it runs on and the ``--modes`` of its eval."""

    name: str
    topology: str  # file name under --config
    modes: str
    task: str | None = TASK  # None: placement modes take their tasks from the topology


FAMILIES = {f.name: f for f in (
    Family("draft_target", "fleet.yaml", "all"),
    Family("exits", "early_exit.yaml", "exits"),
    Family("rocoin", "rocoin.yaml", "students"),
    Family("placement", "idn.yaml", "placement", task=None),
    Family("federated", "federated.yaml", "early_exit"),
)}


@dataclass(frozen=True)
class Settings:
    """What every eval of the bench shares."""

    cli: str
    models: Path
    out: Path
    loop: str
    federated_rounds: int


@dataclass
class Point:
    """One (family, link, clock, mode) over the seeds: the mode's eval summaries."""

    family: str
    link: str
    clock: str
    mode: str
    summaries: list[dict] = field(default_factory=list)  # one per seed

    def successes(self) -> tuple[int, int]:
        """Successes and episodes pooled over seeds (and so over the fleet's robots)."""
        n = sum(m["episodes"] for m in self.summaries)
        return sum(round(m["success_rate"] * m["episodes"]) for m in self.summaries), n

    def rate(self) -> float:
        """Pooled success rate."""
        k, n = self.successes()
        return k / n

    def p95_ms(self) -> float:
        """The median over seeds of the fleet's p95 step latency (a pooled percentile
        needs the steps, which the eval JSON does not keep)."""
        return statistics.median(m["latency_ms_p95"] for m in self.summaries)

    def per_step(self, key: str) -> float:
        """A per-step rate pooled over the seeds' steps (each seed weighted by its steps)."""
        steps = sum(m["steps"] for m in self.summaries)
        return sum(m[key] * m["steps"] for m in self.summaries) / steps if steps else math.nan

    def summary(self) -> dict:
        k, n = self.successes()
        lo, hi = wilson(k, n)
        rates = [m["success_rate"] for m in self.summaries]
        return {"family": self.family, "link": self.link, "clock": self.clock,
                "mode": self.mode, "seeds": len(self.summaries), "episodes": n,
                "successes": k, "success": k / n, "ci95": [lo, hi],
                "success_over_seeds": {"min": min(rates), "median": statistics.median(rates),
                                       "max": max(rates), "per_seed": rates},
                "missed_ticks_per_step": self.per_step("missed_ticks_per_step"),
                "stale_ticks_per_step": self.per_step("stale_ticks_per_step"),
                "uplink_tx_per_step": self.per_step("uplink_tx_per_step"),
                "uplink_bytes_per_step": self.per_step("uplink_bytes_per_step"),
                "latency_ms_p95_median": self.p95_ms(),
                "latency_ms_p95_per_seed": [m["latency_ms_p95"] for m in self.summaries]}


def robots_of(topology: Path) -> int:
    """The fleet's robot count (``count`` expands an entry), for the episode budget."""
    return sum(int(r.get("count", 1)) for r in yaml.safe_load(topology.read_text())["robots"])


def episodes_for(topology: Path, seeds: int, min_episodes: int) -> int:
    """Episodes per robot and run that give at least ``min_episodes`` per point, summed over
    the robots and the seeds: the Wilson interval's width is set by that sum."""
    return max(1, math.ceil(min_episodes / (robots_of(topology) * seeds)))


def with_link(topology: Path, link: str, directory: Path) -> Path:
    """A copy of ``topology`` whose robots all reach their access node over ``link``, the
    rest (nodes, their hops, the family's own blocks) unchanged: only the access link varies."""
    doc = yaml.safe_load(topology.read_text())
    for robot in doc["robots"]:
        robot["link"] = link
    path = directory / f"{topology.stem}_{link}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def hybrid_policy(settings: Settings, args: list[str], name: str) -> None:
    """Run ``hybrid-policy ARGS`` with its stderr in ``OUT/logs/NAME.log`` (a first run
    trains models for minutes: the log shows how far it got) and stop on failure: a bench
    with a silently missing point would print a misleading table."""
    path = settings.out / "logs" / f"{name}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as stderr:
        stderr.write(f"$ {settings.cli} {' '.join(args)}\n")
        stderr.flush()
        code = subprocess.run([settings.cli, *args], stdout=subprocess.DEVNULL, stderr=stderr,
                              check=False).returncode
    if code != 0:
        last = path.read_text().strip().splitlines()[-1]
        sys.exit(f"hybrid-policy {args[0]} failed (exit {code}) for {name}: {last}\n"
                 f"its stderr: {path}")


def ensure_calibration(settings: Settings, link: str) -> None:
    """Make the link's calibration in real time (``calibrate``'s default) if it is missing:
    an eval would otherwise make it on its own clock, and adahi's τ would depend on which
    clock ran first."""
    if (settings.models / TASK / "calibration" / f"{link}.json").exists():
        return
    log.info("calibrating %s on %s first", TASK, link)
    hybrid_policy(settings, ["calibrate", "--task", TASK, "--link", link,
                             "--models", str(settings.models)], f"calibrate_{link}")


def federated_net(settings: Settings, topology: Path, method: str, seed: int) -> Path:
    """The early-exit net ``fl-train --method METHOD --seed SEED`` trains, trained once and
    reused: training does not depend on the link or the clock it is evaluated on."""
    rounds = settings.federated_rounds
    out = settings.out / "federated" / f"rounds{rounds}" / f"seed{seed}" / method
    if not (out / "summary.json").exists():
        log.info("fl-train %s, seed %d, %d rounds -> %s", method, seed, rounds, out)
        hybrid_policy(settings, ["fl-train", "--topology", str(topology), "--method", method,
                                 "--rounds", str(rounds), "--seed", str(seed),
                                 "--eval-episodes", "0", "--models", str(settings.models),
                                 "--out", str(out)], f"fl_train_{method}_seed{seed}")
    return out / "early_exit"


def evaluate(settings: Settings, family: Family, topology: Path, link: str, clock: str,
             seed: int, episodes: int, extra: list[str], name: str) -> dict:
    """One ``hybrid-policy eval`` of the family on ``topology``: its JSON document.
    ``--link`` names the access link too, so adahi's τ comes from that link's calibration."""
    path = settings.out / "eval" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    hybrid_policy(settings, [
        "eval", "--topology", str(topology), "--modes", family.modes, "--link", link,
        "--eval-clock", clock, "--loop", settings.loop, "--seed", str(seed),
        "--episodes", str(episodes), "--json", str(path), "--models", str(settings.models),
        *(["--task", family.task] if family.task else []), *extra], name)
    return json.loads(path.read_text())


def variants(settings: Settings, family: Family, topology: Path, seed: int) -> dict[str, list]:
    """The evals a family runs per link, seed and clock: a row label and its extra eval
    arguments. One for most families; the federated family evaluates each training
    method's net of the seed."""
    if family.name != "federated":
        return {"": []}
    return {m: ["--early-exit", str(federated_net(settings, topology, m, seed))]
            for m in FEDERATED_METHODS}


def pinned(settings: Settings, doc: dict, name: str) -> list[str]:
    """Eval arguments that hold what an eval measured on this machine for the later evals of
    the same family and link: rocoin's students (the code split follows the target's
    measured speed, so a busier moment would distil and run other students) and the
    early-exit net's part timings (the exits' plans follow them). Both clocks and every seed
    then compare the same system. The draft's and target's compute (``--draft-ms``,
    ``--target-ms``) is pinned for every family that measured it."""
    compute = doc.get("compute") or {}
    out = (["--draft-ms", repr(compute["draft_ms"]), "--target-ms", repr(compute["target_ms"])]
           if {"draft_ms", "target_ms"} <= set(compute) else [])
    if "rocoin" in doc:
        return out + ["--students", doc["rocoin"]["students"]]
    if "early_exit" in doc:
        path = settings.out / "pinned" / f"{name}_exit_compute.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(doc["early_exit"]["compute"]))
        return out + ["--exit-compute", str(path)]
    return out


def run_family(settings: Settings, family: Family, topology: Path, links: list[str],
               clocks: list[str], seeds: list[int], episodes: int,
               tmp: Path) -> tuple[dict[tuple, Point], list[dict]]:
    """Every link, seed and clock of one family: its points (keyed by link, clock, row)
    and its runs (each eval's document, for the JSON). Both clocks of a seed run back to
    back, so a partial log already compares them."""
    points: dict[tuple, Point] = {}
    runs = []
    for link in links:
        if family.name == "draft_target":
            ensure_calibration(settings, link)
        copy = with_link(topology, link, tmp)
        pins: list[str] | None = None  # set by the link's first eval
        for seed in seeds:
            for label, extra in variants(settings, family, topology, seed).items():
                for clock in clocks:
                    name = "_".join(filter(None, (family.name, label, link, clock,
                                                  f"seed{seed}")))
                    start = time.monotonic()
                    used = extra + (pins or [])
                    doc = evaluate(settings, family, copy, link, clock, seed, episodes, used,
                                   name)
                    seconds = time.monotonic() - start
                    log.info("%s: %.0f s", name, seconds)
                    runs.append({"family": family.name, "variant": label or None, "link": link,
                                 "clock": clock, "seed": seed, "episodes_per_robot": episodes,
                                 "extra_args": used, "seconds": round(seconds, 1), "doc": doc})
                    if pins is None:
                        pins = pinned(settings, doc, f"{family.name}_{link}")
                    for mode in parse_modes(family.modes):  # the family's order
                        row = f"{mode} ({label})" if label else mode
                        points.setdefault((link, clock, row), Point(
                            family.name, link, clock, row)).summaries.append(doc["modes"][mode])
    return points, runs


def cell(point: Point | None) -> str:
    """Pooled success with its 95% interval, or a dash for a clock that was not run."""
    if point is None:
        return "–"
    lo, hi = wilson(*point.successes())
    return f"{point.rate():.2f} [{lo:.2f}, {hi:.2f}]"


def markdown(family: str, points: dict[tuple, Point], links: list[str]) -> str:
    """The family's table: per mode and link, lockstep and real-time success, their ratio,
    real time's missed / stale ticks per step and its p95 step latency."""
    modes = list(dict.fromkeys(mode for _, _, mode in points))
    head = ["mode"]
    for link in links:
        head += [f"{link} lockstep", f"{link} real time", f"{link} rt / ls",
                 f"{link} missed / stale per step", f"{link} p95 ms (rt)"]
    rows = [head, ["---"] * len(head)]
    for mode in modes:
        row = [mode]
        for link in links:
            ls, rt = points.get((link, "lockstep", mode)), points.get((link, "realtime", mode))
            ratio = f"{rt.rate() / ls.rate():.2f}" if ls and rt and ls.rate() else "–"
            ticks = "–" if rt is None else (f"{rt.per_step('missed_ticks_per_step'):.3f} / "
                                            f"{rt.per_step('stale_ticks_per_step'):.3f}")
            p95 = "–" if rt is None else f"{rt.p95_ms():.1f}"
            row += [cell(ls), cell(rt), ratio, ticks, p95]
        rows.append(row)
    return f"### {family}\n\n" + "\n".join("| " + " | ".join(r) + " |" for r in rows)


def seed_table(family: str, points: dict[tuple, Point], links: list[str],
               clocks: list[str]) -> str:
    """Success per point over seeds, median [min, max]: whether one seed carries a result."""
    modes = list(dict.fromkeys(mode for _, _, mode in points))
    head = ["mode", *(f"{link} {clock}" for link in links for clock in clocks)]
    rows = [head, ["---"] * len(head)]
    for mode in modes:
        rows.append([mode, *(spread([m["success_rate"] for m in points[(link, clock, mode)]
                                     .summaries]) if (link, clock, mode) in points else "–"
                             for link in links for clock in clocks)])
    return (f"{family}: success over seeds, median [min, max]\n\n"
            + "\n".join("| " + " | ".join(r) + " |" for r in rows))


def names(text: str, valid, what: str) -> list[str]:
    """Comma-separated names checked against ``valid`` before anything runs: a typo in the
    last link should not surface an hour into the bench."""
    out = [n.strip() for n in text.split(",") if n.strip()]
    bad = [n for n in out if n not in valid]
    if bad or not out:
        sys.exit(f"unknown {what} {', '.join(bad) or '(none given)'}; valid: {', '.join(valid)}")
    return out


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--families", default=",".join(FAMILIES))
    ap.add_argument("--links", default="5g_embb,6g_hrllc,wifi")
    ap.add_argument("--clocks", default=",".join(CLOCKS))
    ap.add_argument("--loop", choices=("wait", "period", "draft_first"), default="wait",
                    help="real time's loop (eval --loop)")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--episodes", type=int,
                    help="episodes per robot and run (default: per family, from --min-episodes)")
    ap.add_argument("--min-episodes", type=int, default=100,
                    help="episodes per point, summed over robots and seeds, that the default "
                    "--episodes reaches")
    ap.add_argument("--models", default="models")
    ap.add_argument("--config", type=Path, default=Path(__file__).resolve().parents[1] / "config",
                    help="directory of the families' topologies")
    ap.add_argument("--federated-rounds", type=int, default=20)
    ap.add_argument("--out", type=Path, default=Path("runs/bench_families"),
                    help="run directory: each eval's JSON, the fl-train nets, the logs")
    ap.add_argument("--cli", default=str(Path(sys.executable).parent / "hybrid-policy"),
                    help="the hybrid-policy executable (default: beside this interpreter)")
    ap.add_argument("--json", type=Path, help="write every point and every run here")
    return ap.parse_args()


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: "
                        "%(message)s")
    families = [FAMILIES[f] for f in names(args.families, FAMILIES, "family")]
    links = names(args.links, PROFILES, "link")
    clocks = names(args.clocks, CLOCKS, "clock")
    seeds = [int(s) for s in args.seeds.split(",")]
    if min(1 if args.episodes is None else args.episodes, args.min_episodes,
           args.federated_rounds) < 1:
        sys.exit("--episodes, --min-episodes and --federated-rounds must be 1 or more")
    cli = shutil.which(args.cli)
    if cli is None:
        sys.exit(f"{args.cli}: no hybrid-policy executable (give --cli)")
    settings = Settings(cli, Path(args.models), args.out, args.loop, args.federated_rounds)
    start = time.monotonic()
    tables, points_out, runs_out = [], [], []
    with tempfile.TemporaryDirectory(prefix="families_") as tmp:
        for family in families:
            topology = args.config / family.topology
            episodes = args.episodes or episodes_for(topology, len(seeds), args.min_episodes)
            log.info("%s: %s, %d robots x %d episodes x %d seeds per point", family.name,
                     topology, robots_of(topology), episodes, len(seeds))
            t = time.monotonic()
            points, runs = run_family(settings, family, topology, links, clocks, seeds,
                                      episodes, Path(tmp))
            log.info("%s done in %.0f s", family.name, time.monotonic() - t)
            tables.append(markdown(family.name, points, links) + "\n\n"
                          + seed_table(family.name, points, links, clocks))
            points_out += [p.summary() for p in points.values()]
            runs_out += runs
    log.info("all families in %.0f s", time.monotonic() - start)
    print("\n\n".join(tables))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"settings": {**asdict(settings), "links": links,
                                                      "clocks": clocks, "seeds": seeds},
                                         "points": points_out, "runs": runs_out},
                                        indent=1, default=str))
        log.info("wrote %s", args.json)


if __name__ == "__main__":
    main()
