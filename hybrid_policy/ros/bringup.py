"""``hybrid-policy bringup``: the graph's nodes as separate OS processes, without
``ros2 launch`` (the pip install has none).

Nodes and parameters come from ``fleet_graph.graph_nodes`` (the launch file uses the same). Each node
gets its own parameter file and runs as ``python -m <module> --ros-args ...`` in its own
session, so a Ctrl-C reaches only this supervisor, which then stops every node in order.
The run ends when the simulators (one per robot of a fleet) finish their episodes;
Ctrl-C (SIGINT) or SIGTERM stop it early (exit 130). A server-side node (``respawn`` in
the graph description) that dies is started again after a second, as ``ros2 launch`` does
with ``respawn=True``; the robot rides out the gap on its own actions. If any other node
dies, the rest are stopped and the exit status says so. No process outlives the
supervisor.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from hybrid_policy.ros.fleet_graph import graph_nodes
from hybrid_policy.ros.graph import GraphConfig, NodeSpec

log = logging.getLogger(__name__)


def command(spec: NodeSpec, params_file: Path, namespace: str) -> list[str]:
    remaps = [arg for a, b in spec.remaps for arg in ("-r", f"{a}:={b}")]
    return [sys.executable, "-m", spec.module, "--ros-args", "-r", f"__node:={spec.name}",
            "-r", f"__ns:={spec.full_namespace(namespace)}", *remaps,
            "--params-file", str(params_file)]


def write_params(spec: NodeSpec, folder: Path) -> Path:
    path = folder / f"{spec.key.replace('/', '.')}.yaml"
    path.write_text(yaml.safe_dump({"/**": {"ros__parameters": spec.parameters}}))
    return path


class Supervisor:
    """Starts, watches, restarts (``respawn`` nodes) and stops the node processes of a run."""

    def __init__(self, specs: list[NodeSpec], namespace: str, folder: Path,
                 respawn_delay_s: float = 1.0) -> None:
        self.specs = {spec.key: spec for spec in specs}
        self.cmds = {s.key: command(s, write_params(s, folder), namespace) for s in specs}
        self.respawn_delay_s = respawn_delay_s
        self.restarts: dict[str, int] = {}
        self.procs: dict[str, subprocess.Popen] = {}
        for name in self.cmds:
            self._start(name)

    def _start(self, name: str) -> None:
        self.procs[name] = subprocess.Popen(self.cmds[name], start_new_session=True)
        log.debug("started %s: %s", name, " ".join(self.cmds[name]))

    def wait(self, mains: list[str], timeout_s: float) -> int:
        """Until every node of ``mains`` has exited (0), or one exits with an error (its
        status) or a node that is not respawned dies (1) or time runs out (1). A
        ``respawn`` node that dies is started again after a delay."""
        deadline = time.monotonic() + timeout_s
        dead_since: dict[str, float] = {}
        while True:
            now = time.monotonic()
            for main in mains:
                rc = self.procs[main].poll()
                if rc:
                    log.error("%s exited with status %d", main, rc)
                    return rc
            if all(self.procs[m].poll() == 0 for m in mains):
                return 0
            for name, proc in list(self.procs.items()):
                if name in mains or proc.poll() is None:
                    continue
                if not self.specs[name].respawn:
                    log.error("%s died (status %d): stopping the graph", name, proc.returncode)
                    return 1
                if name not in dead_since:
                    log.warning("%s died (status %d): restarting it in %.1f s", name,
                                proc.returncode, self.respawn_delay_s)
                    dead_since[name] = now
                elif now - dead_since[name] >= self.respawn_delay_s:
                    del dead_since[name]
                    self._start(name)
                    self.restarts[name] = self.restarts.get(name, 0) + 1
                    log.warning("restarted %s (pid %d)", name, self.procs[name].pid)
            if now > deadline:
                log.error("the run took longer than %.0f s: stopping the graph", timeout_s)
                return 1
            time.sleep(0.1)

    def stop(self, grace_s: float = 5.0) -> None:
        """SIGINT every live node (they close files), then SIGTERM, then SIGKILL."""
        for sig, wait_s in ((signal.SIGINT, grace_s), (signal.SIGTERM, 2.0), (signal.SIGKILL, 2.0)):
            live = [p for p in self.procs.values() if p.poll() is None]
            if not live:
                return
            for p in live:
                try:
                    os.killpg(p.pid, sig)
                except ProcessLookupError:
                    pass
            end = time.monotonic() + wait_s
            while time.monotonic() < end and any(p.poll() is None for p in live):
                time.sleep(0.05)

    def status(self) -> dict[str, int | None]:
        return {name: p.poll() for name, p in self.procs.items()}


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _stoppable() -> None:
    """Ctrl-C (SIGINT) and SIGTERM stop the graph, whatever this process inherited: a
    parent may start it with those signals ignored or blocked, which ``exec`` keeps."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)


def bringup(cfg: GraphConfig, timeout_s: float = 3600.0) -> int:
    """Run ``cfg``'s graph to the end of its episodes. Returns 0 on a clean run."""
    _stoppable()
    specs = graph_nodes(cfg)
    with tempfile.TemporaryDirectory(prefix="hybrid_bringup_") as tmp:
        sup = Supervisor(specs, cfg.namespace, Path(tmp))
        log.info("started %s", ", ".join(f"{n} (pid {p.pid})" for n, p in sup.procs.items()))
        try:
            rc = sup.wait([s.key for s in specs if s.name == "sim_node"], timeout_s)
            if rc == 0:
                time.sleep(0.3)  # the recorder's last messages
        except KeyboardInterrupt as exc:
            log.warning("interrupted (%s): stopping the graph", exc or "SIGINT")
            rc = 130
        finally:
            sup.stop()
        log.info("nodes exited: %s", sup.status())
    return rc
