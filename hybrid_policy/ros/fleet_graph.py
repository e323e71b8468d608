"""The nodes of a run's ROS graph, for any family: one robot's graph (``graph.nodes``: the
simulator, the draft node and, where the mode asks a server, the link and the target), or a
fleet's (``bringup --topology FILE``), which the mode's family builds
(``families.base.Family.fleet_nodes``, from ``ros.fleet_wiring``'s pieces). ``bringup`` and
the launch file both start what ``graph_nodes`` gives. No ROS imports and no torch here
(the launch file reads it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hybrid_policy.families import registry
from hybrid_policy.ros.graph import GraphConfig, NodeSpec, load_config, nodes


def graph_nodes(cfg: GraphConfig) -> list[NodeSpec]:
    """The nodes of ``cfg``'s graph and their parameters."""
    if cfg.topology:
        return registry.family_of(cfg.mode).fleet_nodes(cfg)
    return nodes(cfg)


def launch_nodes(config: str | Path, overrides: dict[str, Any] | None = None
                 ) -> tuple[GraphConfig, list[NodeSpec]]:
    """What ``launch/hybrid_launch.py`` starts for ``config`` and its launch arguments."""
    cfg = load_config(config, overrides)
    return cfg, graph_nodes(cfg)
