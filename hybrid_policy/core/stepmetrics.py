"""The per-step record both runtimes produce and the metrics table both report.

The in-process evaluator fills ``ModeResult`` from its ``StepRecord``s; ``hybrid-policy
analyze`` fills it from a bag's ``step`` topic and server responses. One summary, one JSON
schema, one table.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hybrid_policy.core.protocol import Request, Response
from hybrid_policy.text_table import text_table

# Labels of the ROS ``step`` message (sensor_msgs/JointState), in order.
FIELDS = ("episode", "step", "uplink", "uplink_bytes", "deviation", "uncertainty", "verdict",
          "accepted", "fallback", "latency_ms", "exit_layer")  # exit_layer: early-exit modes
# Labels of a server's ``server/batches`` message, one per operation; then one "wait_ms"
# per request it served (its time in the queue).
BATCH_FIELDS = ("batch_size", "service_ms", "queue_left")


def rejected(request: Request | None, response: Response | None) -> bool | None:
    """Whether verification rejected the draft's codes this step; ``None`` when there was no
    verdict (nothing sent, an ``act`` request, or no answer in time)."""
    if request is None or response is None or request.kind != "verify":
        return None
    return not response.accepted


@dataclass
class ModeResult:
    mode: str
    episodes: int = 0
    successes: int = 0
    steps: int = 0
    uplink_tx: int = 0
    server_ops: int = 0
    uplink_bytes: int = 0
    rejections: int = 0
    fallbacks: int = 0
    latencies: list[float] = field(default_factory=list)
    episode_success: list[bool] = field(default_factory=list)
    # modes that answer from part of a model: steps by the layer whose answer acted
    answered_at: Counter = field(default_factory=Counter)
    missed_ticks: int = 0  # real time: ticks with no new command (the hold rule acted)
    stale_ticks: int = 0  # real time: ticks that applied an older state's late command

    @property
    def success_rate(self) -> float:
        return self.successes / self.episodes if self.episodes else 0.0

    def add_step(self, latency_ms: float, uplink_bytes: int | None, rejected: bool | None,
                 fallback: bool) -> None:
        """One control step: ``uplink_bytes`` None when nothing was sent, ``rejected`` None
        when no verdict came back (or none was asked for)."""
        self.steps += 1
        self.latencies.append(latency_ms)
        if uplink_bytes is not None:
            self.uplink_tx += 1
            self.uplink_bytes += uplink_bytes
        self.rejections += bool(rejected)
        self.fallbacks += fallback

    def add_tick(self, missed: bool, stale: bool) -> None:
        self.missed_ticks += missed
        self.stale_ticks += stale

    def add_episode(self, success: bool) -> None:
        self.episodes += 1
        self.successes += success
        self.episode_success.append(success)

    def summary(self) -> dict[str, Any]:
        steps = max(self.steps, 1)
        lat = np.asarray(self.latencies) if self.latencies else np.zeros(1)
        return {"success_rate": self.success_rate, "episodes": self.episodes,
                "steps": self.steps, "uplink_tx_per_step": self.uplink_tx / steps,
                "server_ops_per_step": self.server_ops / steps,
                "uplink_bytes_per_step": self.uplink_bytes / steps,
                "rejections_per_step": self.rejections / steps,
                "fallbacks_per_step": self.fallbacks / steps,
                "latency_ms_mean": float(lat.mean()),
                "latency_ms_p95": float(np.percentile(lat, 95)),
                "missed_ticks_per_step": self.missed_ticks / steps,
                "stale_ticks_per_step": self.stale_ticks / steps,
                **({"exit_shares": {str(k): v / steps
                                    for k, v in sorted(self.answered_at.items())}}
                   if self.answered_at else {})}


def combine(name: str, results: list[ModeResult]) -> ModeResult:
    """Several robots' steps and episodes as one result (a fleet as a whole)."""
    out = ModeResult(name)
    for r in results:
        out.episodes += r.episodes
        out.successes += r.successes
        out.steps += r.steps
        out.uplink_tx += r.uplink_tx
        out.server_ops += r.server_ops
        out.uplink_bytes += r.uplink_bytes
        out.rejections += r.rejections
        out.fallbacks += r.fallbacks
        out.latencies += r.latencies
        out.episode_success += r.episode_success
        out.answered_at += r.answered_at
        out.missed_ticks += r.missed_ticks
        out.stale_ticks += r.stale_ticks
    return out


def report(task: str, results: dict[str, ModeResult], meta: dict[str, Any]) -> dict[str, Any]:
    """The JSON document of an evaluation: per mode under ``modes.<name>``."""
    modes = {name: r.summary() for name, r in results.items()}
    _add_ratios(modes)
    return {"task": task, **meta, "modes": modes}


def _add_ratios(modes: dict[str, dict[str, Any]]) -> None:
    """``success_vs_target`` and ``latency_vs_hybrid`` of every mode, where both exist."""
    target = modes.get("target_only", {}).get("success_rate")
    hybrid = modes.get("hybrid", {}).get("latency_ms_mean")
    for m in modes.values():
        m["success_vs_target"] = m["success_rate"] / target if target else None
        m["latency_vs_hybrid"] = m["latency_ms_mean"] / hybrid if hybrid else None


def merge(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """One document from several (one mode each, same task): ratios recomputed."""
    tasks = {d["task"] for d in docs}
    if len(tasks) != 1:
        raise ValueError(f"cannot merge results of different tasks: {sorted(tasks)}")
    modes: dict[str, Any] = {}
    for d in docs:
        modes.update(d["modes"])
    _add_ratios(modes)
    meta = {k: v for k, v in docs[0].items() if k not in ("modes", "bag")}
    return {**meta, "bags": [d.get("bag") for d in docs], "modes": modes}


COLUMNS = [("mode", "{}"), ("success_rate", "{:.1%}"), ("success_vs_target", "{:.3f}"),
           ("uplink_tx_per_step", "{:.3f}"), ("server_ops_per_step", "{:.3f}"),
           ("uplink_bytes_per_step", "{:.0f}"), ("fallbacks_per_step", "{:.3f}"),
           ("latency_ms_mean", "{:.2f}"), ("latency_ms_p95", "{:.2f}"),
           ("latency_vs_hybrid", "{:.3f}"), ("episodes", "{}")]


def format_table(doc: dict[str, Any]) -> str:
    rows = [[c for c, _ in COLUMNS]]
    for name, m in doc["modes"].items():
        vals = {"mode": name, **m}
        rows.append([fmt.format(vals[c]) if vals.get(c) is not None else "-"
                     for c, fmt in COLUMNS])
    return text_table(rows)


def format_fleet(doc: dict[str, Any]) -> str:
    """Per-robot and per-server tables of a fleet evaluation (``eval --topology``)."""
    rows = [["mode", "robot", "server", "success", "uplink/step", "server_ops/step",
             "latency_mean", "latency_p95"]]
    for name, m in doc["modes"].items():
        for r in m.get("robots", []):
            rows.append([name, r["robot"], r["server"], f"{r['success_rate']:.1%}",
                         f"{r['uplink_tx_per_step']:.3f}", f"{r['server_ops_per_step']:.3f}",
                         f"{r['latency_ms_mean']:.2f}", f"{r['latency_ms_p95']:.2f}"])
    out = [text_table(rows, left=2), ""]
    rows = [["mode", "server", "requests", "operations", "mean_batch", "utilisation",
             "queue_mean", "queueing_ms_p95"]]
    for name, m in doc["modes"].items():
        for server, s in m.get("servers", {}).items():
            rows.append([name, server, str(s["requests"]), str(s["operations"]),
                         f"{s['requests'] / max(s['operations'], 1):.2f}",
                         f"{s['utilisation']:.1%}", f"{s['queue_length_mean']:.2f}",
                         f"{s['queueing_ms_p95']:.2f}"])
    out.append(text_table(rows, left=2))
    return "\n".join(out)


def write_json(doc: dict[str, Any], path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(doc, indent=1, sort_keys=True))
