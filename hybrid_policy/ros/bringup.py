"""``hybrid-policy bringup``: the graph's nodes as separate OS processes, without
``ros2 launch`` (the pip install has none).

Nodes and parameters come from ``graph.nodes`` (the launch file uses the same). Each node
gets its own parameter file and runs as ``python -m <module> --ros-args ...`` in its own
session, so a Ctrl-C reaches only this supervisor, which then stops every node in order.
The run ends when the simulator finishes its episodes; if any node dies before that, the
rest are stopped too and the exit status says so. No process outlives the supervisor.
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

from hybrid_policy.ros.graph import GraphConfig, NodeSpec, nodes

log = logging.getLogger(__name__)


def command(spec: NodeSpec, params_file: Path, namespace: str) -> list[str]:
    return [sys.executable, "-m", spec.module, "--ros-args", "-r", f"__node:={spec.name}",
            "-r", f"__ns:={namespace}", "--params-file", str(params_file)]


def write_params(spec: NodeSpec, folder: Path) -> Path:
    path = folder / f"{spec.name}.yaml"
    path.write_text(yaml.safe_dump({"/**": {"ros__parameters": spec.parameters}}))
    return path


class Supervisor:
    """Starts, watches and stops the node processes of one run."""

    def __init__(self, specs: list[NodeSpec], namespace: str, folder: Path) -> None:
        self.procs: dict[str, subprocess.Popen] = {}
        for spec in specs:
            cmd = command(spec, write_params(spec, folder), namespace)
            self.procs[spec.name] = subprocess.Popen(cmd, start_new_session=True)
            log.debug("started %s: %s", spec.name, " ".join(cmd))

    def wait(self, main: str, timeout_s: float) -> int:
        """Until ``main`` exits (its status) or another node dies (1) or time runs out (1)."""
        deadline = time.monotonic() + timeout_s
        while True:
            rc = self.procs[main].poll()
            if rc is not None:
                if rc != 0:
                    log.error("%s exited with status %d", main, rc)
                return rc
            for name, proc in self.procs.items():
                if name != main and proc.poll() is not None:
                    log.error("%s died (status %d): stopping the graph", name, proc.returncode)
                    return 1
            if time.monotonic() > deadline:
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


def bringup(cfg: GraphConfig, timeout_s: float = 3600.0) -> int:
    """Run ``cfg``'s graph to the end of its episodes. Returns 0 on a clean run."""
    specs = nodes(cfg)
    with tempfile.TemporaryDirectory(prefix="hybrid_bringup_") as tmp:
        sup = Supervisor(specs, cfg.namespace, Path(tmp))
        log.info("started %s", ", ".join(f"{n} (pid {p.pid})" for n, p in sup.procs.items()))
        try:
            rc = sup.wait("sim_node", timeout_s)
            if rc == 0:
                time.sleep(0.3)  # the recorder's last messages
        except KeyboardInterrupt:
            log.warning("interrupted: stopping the graph")
            rc = 130
        finally:
            sup.stop()
        log.info("nodes exited: %s", sup.status())
    return rc
