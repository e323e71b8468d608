"""``hybrid-policy analyze``: a recorded bag → the metrics table and JSON of ``eval``.

Reads the rosbag2 (MCAP or sqlite3) with ``rosbags``, no ROS install needed. Per-step
figures come from the draft node's ``step`` topic (a fallback is a step whose verdict did
not come back before the deadline), server operations from the server's responses (in a
fleet, the mode's family counts them: ``Family.server_ops``),
successes and real-time missed ticks from the simulator's episode events, and the counts
of rejected messages and link losses from ``events``. A fleet's bag (``bringup
--topology``) gives the same per robot (its topics under ``NS/<robot>/``) and per server
(its ``server/batches``: operations, batch sizes, queueing, utilisation). The run's
settings (mode, task, link, seed…) are in the bag's metadata (``custom_data``), written by
the recorder.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from rosbags.rosbag2 import Reader
from rosbags.rosbag2.errors import ReaderError
from rosbags.typesys import Stores, get_typestore

from hybrid_policy.core.stepmetrics import BATCH_FIELDS, FIELDS, ModeResult, combine, report
from hybrid_policy.errors import HybridPolicyError
from hybrid_policy.families import registry
from hybrid_policy.ros.graph import NAMESPACE_DEFAULT

INFO_PREFIX = "hybrid_policy."


def read_bag(path: str | Path) -> tuple[dict[str, str], dict[str, list[tuple[int, Any]]]]:
    """``(run info, {topic suffix: [(log time ns, message)]})`` of a bag directory."""
    path = Path(path)
    if not (path / "metadata.yaml").exists():
        raise HybridPolicyError(f"{path}: not a rosbag2 directory (no metadata.yaml)")
    store = get_typestore(Stores.ROS2_KILTED)
    try:
        meta = yaml.safe_load((path / "metadata.yaml").read_text())
        custom = meta["rosbag2_bagfile_information"].get("custom_data") or {}
    except (yaml.YAMLError, KeyError, TypeError) as exc:
        raise HybridPolicyError(f"{path}/metadata.yaml: unreadable ({exc})") from None
    info = {k[len(INFO_PREFIX):]: v for k, v in custom.items() if k.startswith(INFO_PREFIX)}
    try:
        with Reader(path) as reader:
            ns = f"/{info.get('namespace', NAMESPACE_DEFAULT).strip('/')}/"
            topics: dict[str, list[tuple[int, Any]]] = {}
            for conn, t, raw in reader.messages():
                name = conn.topic[len(ns):] if conn.topic.startswith(ns) else conn.topic
                topics.setdefault(name, []).append((t, store.deserialize_cdr(raw, conn.msgtype)))
    except ReaderError as exc:
        raise HybridPolicyError(f"{path}: unreadable bag ({exc})") from None
    if "mode" not in info:
        raise HybridPolicyError(f"{path}: no hybrid_policy run info in its metadata (was it "
                                "recorded by hybrid_policy's recorder?)")
    return info, topics


def _values(msg: Any) -> dict[str, str]:
    return {kv.key: kv.value for kv in msg.values}


def analyze(path: str | Path) -> dict[str, Any]:
    """The eval-schema document of one bag (one mode), plus ``counts``; for a fleet's bag
    also ``robots`` (a list) and ``servers`` (a dict), as ``eval --topology`` writes them."""
    info, topics = read_bag(path)
    mode = info["mode"]
    robots = _fleet_robots(info)
    if not robots:
        res, counts = _robot_result(path, topics, "", len(topics.get("server/response", [])))
        res.mode = mode
        results = {mode: res}
    else:
        family = registry.family_of(mode)
        per_robot = {name: _robot_result(path, topics, f"{name}/",
                                         family.server_ops(info, topics, name))
                     for name, _, _ in robots}
        results = {mode: combine(mode, [r for r, _ in per_robot.values()])}
        counts = {k: sum(c[k] for _, c in per_robot.values()) for k in _SUMMED}
        counts["events"] = dict(sum((Counter(c["events"]) for _, c in per_robot.values()),
                                    Counter()))
    doc = report(info.get("task", "?"), results, {
        k: info[k] for k in ("seed", "link", "tau", "temperature", "topology") if k in info})
    doc["bag"] = str(path)
    doc["modes"][mode]["counts"] = counts
    if robots:
        doc["modes"][mode]["robots"] = [
            {"robot": name, "link": link, "server": server, **per_robot[name][0].summary()}
            for name, server, link in robots]
        doc["modes"][mode]["servers"] = {
            s: server_stats(topics.get(f"{s}/server/batches", []), _span_ns(topics))
            for s in info.get("servers", "").split(",") if s}
    return doc


_SUMMED = ("steps", "uplink_tx", "server_ops", "fallbacks", "losses", "missed_ticks",
           "stale_ticks", "overruns", "successes", "episodes", "rejections")


def _fleet_robots(info: dict[str, str]) -> list[tuple[str, str, str]]:
    """``(robot, server, link)`` of a fleet's bag (run info ``robots``); [] for one robot."""
    if not info.get("topology"):
        return []
    return [tuple(entry.split(":")) for entry in info.get("robots", "").split(",") if entry]


def _robot_result(path, topics, prefix: str, server_ops: int) -> tuple[ModeResult, dict]:
    """One robot's steps, episodes and counts from its topics (``prefix``: its namespace
    under the graph's, "" for a single-robot graph) and the server operations its steps
    caused (its family counts them)."""
    res = ModeResult(prefix.rstrip("/"))
    for _, msg in topics.get(f"{prefix}step", []):
        if list(msg.name) != list(FIELDS):
            raise HybridPolicyError(f"{path}: step message labels {list(msg.name)} are not "
                                    f"{list(FIELDS)} (recorded by another version?)")
        v = dict(zip(FIELDS, np.asarray(msg.position, float)))
        res.add_step(float(v["latency_ms"]), int(v["uplink_bytes"]) if v["uplink"] else None,
                     None if not v["verdict"] or np.isnan(v["accepted"]) else not v["accepted"],
                     bool(v["fallback"]))
        if not np.isnan(v["exit_layer"]):  # early-exit modes: the exit that acted
            res.answered_at[int(v["exit_layer"])] += 1
    res.server_ops = server_ops
    overruns = 0
    for _, msg in topics.get(f"{prefix}episode", []):
        values = _values(msg)
        if msg.message == "episode end":
            res.add_episode(values.get("success") == "1")
            res.missed_ticks += int(values.get("missed_ticks", 0))
            res.stale_ticks += int(values.get("stale_ticks", 0))
        elif msg.message == "done":
            overruns = int(values.get("overruns", 0))
    events = Counter(f"{m.name}: {m.message}" for _, m in topics.get(f"{prefix}events", []))
    # the link node's losses, or the draft node's where it applies the link (link_in_draft)
    losses = sum(n for k, n in events.items() if k.startswith(("link_node: lost",
                                                               "draft_node: lost")))
    if prefix:  # lost on a hop between compute nodes (reported there, with the robot)
        robot = prefix.rstrip("/")
        losses += sum(1 for name, msgs in topics.items() if name.endswith("/events")
                      for _, m in msgs if m.message.startswith("lost on")
                      and _values(m).get("robot") == robot)
    return res, {
        "steps": res.steps, "uplink_tx": res.uplink_tx, "server_ops": res.server_ops,
        "fallbacks": res.fallbacks, "losses": losses, "missed_ticks": res.missed_ticks,
        "stale_ticks": res.stale_ticks,
        "overruns": overruns,
        "successes": res.successes, "episodes": res.episodes, "rejections": res.rejections,
        "events": dict(events)}


def _span_ns(topics: dict[str, list[tuple[int, Any]]]) -> float:
    """The run's duration in the bag: first to last per-step message of any robot (ns)."""
    times = [t for name, msgs in topics.items() if name.endswith("step") for t, _ in msgs]
    return float(max(times) - min(times)) if len(times) > 1 else 0.0


def server_stats(batches: list[tuple[int, Any]], span_ns: float) -> dict[str, Any]:
    """A server's figures from its ``server/batches`` messages, with the keys of
    ``core.events.ServerStats.summary`` (the queue length by Little's law: total wait
    over the span)."""
    sizes: Counter[int] = Counter()
    waits: list[float] = []
    busy_ms = 0.0
    for _, msg in batches:
        v = np.asarray(msg.position, float)
        n = len(BATCH_FIELDS)
        if list(msg.name[:n]) != list(BATCH_FIELDS) or len(v) != n + int(v[0]):
            raise HybridPolicyError(f"server/batches message {list(msg.name)} is not "
                                    f"{list(BATCH_FIELDS)} + one wait_ms per request")
        sizes[int(v[0])] += 1
        busy_ms += float(v[1])
        waits += v[n:].tolist()
    span_ms = max(span_ns / 1e6, 1e-9)
    return {"requests": sum(k * c for k, c in sizes.items()),
            "operations": sum(sizes.values()),
            "utilisation": busy_ms / span_ms,
            "queue_length_mean": float(np.sum(waits)) / span_ms,
            "queueing_ms_mean": float(np.mean(waits)) if waits else 0.0,
            "queueing_ms_p95": float(np.percentile(waits, 95)) if waits else 0.0,
            "batch_sizes": {str(k): c for k, c in sorted(sizes.items())}}


def format_counts(doc: dict[str, Any]) -> str:
    lines = []
    for mode, m in doc["modes"].items():
        c = m.get("counts")
        if c is None:
            continue
        ev = ", ".join(f"{k} x{v}" for k, v in sorted(c["events"].items())) or "none"
        lines.append(f"{mode}: {c['steps']} steps, {c['uplink_tx']} uplink, {c['server_ops']} "
                     f"server ops, {c['fallbacks']} deadline fallbacks, {c['losses']} packets "
                     f"lost, {c['missed_ticks']} missed and {c.get('stale_ticks', 0)} stale ticks, "
                     f"{c['overruns']} simulator overruns, "
                     f"{c['successes']}/{c['episodes']} "
                     f"successes; events: {ev}")
    return "\n".join(lines)
