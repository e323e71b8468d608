"""``hybrid-policy analyze``: a recorded bag → the metrics table and JSON of ``eval``.

Reads the rosbag2 (MCAP or sqlite3) with ``rosbags``, no ROS install needed. Per-step
figures come from the draft node's ``step`` topic (a fallback is a step whose verdict did
not come back before the deadline), server operations from the server's responses,
successes and real-time missed ticks from the simulator's episode events, and the counts
of rejected messages and link losses from ``events``. The run's settings (mode, task, link, seed…)
are in the bag's metadata (``custom_data``), written by the recorder.
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

from hybrid_policy.core.stepmetrics import FIELDS, ModeResult, report
from hybrid_policy.errors import HybridPolicyError

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
            ns = f"/{info.get('namespace', 'hybrid').strip('/')}/"
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
    """The eval-schema document of one bag (one mode), plus ``counts``."""
    info, topics = read_bag(path)
    mode = info["mode"]
    res = ModeResult(mode)
    for _, msg in topics.get("step", []):
        if list(msg.name) != list(FIELDS):
            raise HybridPolicyError(f"{path}: step message labels {list(msg.name)} are not "
                                    f"{list(FIELDS)} (recorded by another version?)")
        v = dict(zip(FIELDS, np.asarray(msg.position, float)))
        res.add_step(float(v["latency_ms"]), int(v["uplink_bytes"]) if v["uplink"] else None,
                     None if not v["verdict"] or np.isnan(v["accepted"]) else not v["accepted"],
                     bool(v["fallback"]))
    res.server_ops = len(topics.get("server/response", []))
    missed_ticks = overruns = 0
    for _, msg in topics.get("episode", []):
        values = _values(msg)
        if msg.message == "episode end":
            res.add_episode(values.get("success") == "1")
            missed_ticks += int(values.get("missed_ticks", 0))
        elif msg.message == "done":
            overruns = int(values.get("overruns", 0))
    events = Counter(f"{m.name}: {m.message}" for _, m in topics.get("events", []))
    losses = sum(n for k, n in events.items() if k.startswith("link_node: lost"))
    doc = report(info.get("task", "?"), {mode: res}, {
        k: info[k] for k in ("seed", "link", "tau", "temperature") if k in info})
    doc["bag"] = str(path)
    doc["modes"][mode]["counts"] = {
        "steps": res.steps, "uplink_tx": res.uplink_tx, "server_ops": res.server_ops,
        "fallbacks": res.fallbacks, "losses": losses, "missed_ticks": missed_ticks,
        "overruns": overruns,
        "successes": res.successes, "episodes": res.episodes, "rejections": res.rejections,
        "events": dict(events)}
    return doc


def format_counts(doc: dict[str, Any]) -> str:
    lines = []
    for mode, m in doc["modes"].items():
        c = m.get("counts")
        if c is None:
            continue
        ev = ", ".join(f"{k} x{v}" for k, v in sorted(c["events"].items())) or "none"
        lines.append(f"{mode}: {c['steps']} steps, {c['uplink_tx']} uplink, {c['server_ops']} "
                     f"server ops, {c['fallbacks']} deadline fallbacks, {c['losses']} packets "
                     f"lost, {c['missed_ticks']} missed ticks, {c['overruns']} simulator overruns, "
                     f"{c['successes']}/{c['episodes']} "
                     f"successes; events: {ev}")
    return "\n".join(lines)
