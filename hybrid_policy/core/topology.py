"""A fleet: robots, the compute nodes that serve them, and the links between them.

Read from YAML (``config/fleet.yaml``; ``hybrid-policy topology show FILE`` prints it).
Compute nodes form a tree towards the cloud: each names its ``parent`` (the next hop
up) and the link profile of that hop. A robot names its ``access`` node (the first hop,
over its own ``link``) and its ``server``, the node that verifies its requests; the server
must lie on the path up from the access node. Every error names the entry and what is
valid. No ROS, no torch.

A topology may carry blocks of its own for the families that run on it (the early-exit
net's ``partitions``, ``rocoin``, ``idn``, ``federated``): they are kept as read
(``Topology.blocks``) and each family parses and checks its own; a robot's ``mode`` is
checked against the families' modes likewise (``hybrid_policy.families.parse_topology``
does both, and refuses a block no family owns).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from hybrid_policy.core.link import PROFILES, LinkProfile, link_profile
from hybrid_policy.errors import HybridPolicyError
from hybrid_policy.text_table import text_table

TIERS = ("robot", "edge", "regional", "cloud")


class TopologyError(HybridPolicyError, ValueError):
    """A topology that cannot be used; the message names the entry."""


@dataclass(frozen=True)
class ComputeNode:
    name: str
    tier: str
    speed: float  # compute speed relative to this machine (2 = twice as fast)
    max_batch: int  # the most requests verified in one forward pass
    batch_window_ms: float  # wait this long for more requests after the first (0: none)
    memory_params: int  # parameters the node can hold (0 = unlimited)
    parent: str  # the next node towards the cloud ("" = top of the tree)
    uplink: LinkProfile | None  # the hop to the parent (None at the top)
    offload: dict[str, LinkProfile] = field(default_factory=dict)  # other next hops up


@dataclass(frozen=True)
class Robot:
    name: str
    task: str
    mode: str
    access: str  # the compute node its link reaches first
    server: str  # the compute node that verifies its requests
    link: LinkProfile  # robot → access node
    reach: tuple[str, ...] = ()  # the nodes its link reaches directly (access first)


@dataclass(frozen=True)
class Topology:
    path: str
    robots: tuple[Robot, ...]
    nodes: dict[str, ComputeNode]
    blocks: dict[str, Any] = field(default_factory=dict)  # the families' own, as read

    def nodes_on_route(self, robot: Robot) -> list[str]:
        """The compute nodes a request of ``robot`` visits: its access node … its server."""
        up = _path_up(self.nodes, robot.access, self.path)
        return up[: up.index(robot.server) + 1]

    def route(self, robot: Robot) -> tuple[LinkProfile, ...]:
        """The hops a request of ``robot`` crosses to its server, in order: its own link,
        then the uplink of each node below the server."""
        return (robot.link, *(self.nodes[n].uplink for n in self.nodes_on_route(robot)[:-1]))

    def servers(self) -> list[str]:
        """Nodes that serve at least one robot, in the order the file names them."""
        used = {r.server for r in self.robots}
        return [n for n in self.nodes if n in used]

    def robots_of(self, server: str) -> list[Robot]:
        return [r for r in self.robots if r.server == server]

    def next_hops(self, node: str) -> dict[str, LinkProfile]:
        """The nodes ``node`` can pass work to directly (its parent, then its ``offload``
        nodes) and the link of each hop."""
        n = self.nodes[node]
        return {**({n.parent: n.uplink} if n.parent else {}), **n.offload}

    def links_between(self, src: Robot | str, dst: str) -> tuple[LinkProfile, ...]:
        """The links a message crosses from a robot or node ``src`` to the node ``dst``: one
        hop to a node it reaches directly, else up the tree (its own link, then uplinks)."""
        if isinstance(src, Robot):
            if dst in src.reach:
                return (src.link,)
            up, links = _path_up(self.nodes, src.access, self.path), [src.link]
        else:
            if dst in self.nodes[src].offload:
                return (self.nodes[src].offload[dst],)
            up, links = _path_up(self.nodes, src, self.path), []
        if dst not in up:
            raise TopologyError(f"{self.path}: no path from {getattr(src, 'name', src)} to {dst}")
        return (*links, *(self.nodes[n].uplink for n in up[:up.index(dst)]))


def read(path: str | Path) -> Any:
    """The YAML document in ``path`` (a topology, maybe with a ``federated`` block)."""
    path = Path(path)
    try:
        return yaml.safe_load(path.read_text())
    except OSError as exc:
        raise TopologyError(f"{path}: cannot read the topology ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise TopologyError(f"{path}: not valid YAML ({exc})") from None


def load(path: str | Path) -> Topology:
    """The validated topology in ``path``."""
    return parse(read(path), str(path))


def parse(doc: Any, where: str = "topology") -> Topology:
    if not isinstance(doc, dict):
        raise TopologyError(f"{where}: expected a mapping with 'nodes' and 'robots'")
    check_keys(doc, where, {"nodes", "robots"}, set(doc) - {"nodes", "robots"})
    if not isinstance(doc["nodes"], dict) or not doc["nodes"]:
        raise TopologyError(f"{where}: 'nodes' must map node names to their settings")
    nodes = {name: _node(where, str(name), spec) for name, spec in doc["nodes"].items()}
    for node in nodes.values():
        if node.parent and node.parent not in nodes:
            raise TopologyError(f"{where}: node {node.name}: parent {node.parent!r} is not a "
                                f"node; nodes: {', '.join(nodes)}")
        _path_up(nodes, node.name, where)  # refuses a cycle
        for other in node.offload:
            if other not in nodes:
                raise TopologyError(f"{where}: node {node.name}: offload node {other!r} is not a "
                                    f"node; nodes: {', '.join(nodes)}")
            if TIERS.index(nodes[other].tier) <= TIERS.index(node.tier):
                raise TopologyError(f"{where}: node {node.name}: offload node {other} "
                                    f"({nodes[other].tier}) must be of a tier above "
                                    f"{node.tier}, so work only moves up")
    if not isinstance(doc["robots"], list) or not doc["robots"]:
        raise TopologyError(f"{where}: 'robots' must be a non-empty list")
    robots: list[Robot] = []
    for i, spec in enumerate(doc["robots"]):
        robots += _robots(where, i, spec, nodes)
    names = [r.name for r in robots]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise TopologyError(f"{where}: robot names must be unique; repeated: {', '.join(dup)}")
    return Topology(where, tuple(robots), nodes,
                    {k: v for k, v in doc.items() if k not in ("nodes", "robots")})


def check_keys(spec: dict, entry: str, required: set[str], optional: set[str],
               error: type[Exception] = TopologyError) -> None:
    """Refuse an unknown or a missing key of ``spec`` with ``error`` naming ``entry``."""
    unknown = sorted(set(spec) - required - optional)
    if unknown:
        raise error(f"{entry}: unknown key {unknown[0]!r}; valid: "
                    f"{', '.join(sorted(required | optional))}")
    missing = sorted(required - set(spec))
    if missing:
        raise error(f"{entry}: missing {missing[0]!r}")


def number(entry: str, key: str, value: Any, low: float, integer: bool = False) -> float:
    bad = isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= low
    if integer and not bad and value != int(value):
        bad = True
    if bad:
        kind = "a whole number" if integer else "a number"
        raise TopologyError(f"{entry}: {key} must be {kind} >= {low:g}, got {value!r}")
    return int(value) if integer else float(value)


def _link(entry: str, spec: Any) -> LinkProfile:
    """A link profile by name, or ``{profile, uplink_mbps?, downlink_mbps?, delay_ms?}``."""
    if isinstance(spec, str):
        spec = {"profile": spec}
    if not isinstance(spec, dict):
        raise TopologyError(f"{entry}: link must be a profile name or a mapping with "
                            "'profile'")
    check_keys(spec, entry, {"profile"}, {"uplink_mbps", "downlink_mbps", "delay_ms"})
    if spec["profile"] not in PROFILES:
        raise TopologyError(f"{entry}: unknown link profile {spec['profile']!r}; valid: "
                            f"{', '.join(PROFILES)}")
    base = link_profile(spec["profile"])
    overrides = {k: number(entry, k, spec[k], 0.0) for k in
                 ("uplink_mbps", "downlink_mbps", "delay_ms") if k in spec}
    for k in ("uplink_mbps", "downlink_mbps"):
        if overrides.get(k) == 0:
            raise TopologyError(f"{entry}: {k} must be > 0")
    return replace(base, **overrides) if overrides else base


def _node(where: str, name: str, spec: Any) -> ComputeNode:
    entry = f"{where}: node {name}"
    if not isinstance(spec, dict):
        raise TopologyError(f"{entry}: expected a mapping (tier, speed, max_batch, ...)")
    check_keys(spec, entry, {"tier"}, {"speed", "max_batch", "batch_window_ms", "memory_params",
                                  "parent", "link", "offload"})
    if spec["tier"] not in TIERS:
        raise TopologyError(f"{entry}: tier {spec['tier']!r} is not one of {', '.join(TIERS)}")
    parent = str(spec.get("parent", "") or "")
    if bool(parent) != ("link" in spec):
        raise TopologyError(f"{entry}: a node with a parent needs the 'link' of that hop, and "
                            "a node without one has no link")
    speed = number(entry, "speed", spec.get("speed", 1.0), 0.0)
    if speed == 0:
        raise TopologyError(f"{entry}: speed must be > 0")
    max_batch = number(entry, "max_batch", spec.get("max_batch", 1), 1, integer=True)
    return ComputeNode(name, spec["tier"], speed, int(max_batch),
                       number(entry, "batch_window_ms", spec.get("batch_window_ms", 0.0), 0.0),
                       int(number(entry, "memory_params", spec.get("memory_params", 0), 0,
                                   integer=True)),
                       parent, _link(entry, spec["link"]) if parent else None,
                       _offload(entry, spec.get("offload", {})))


def _offload(entry: str, spec: Any) -> dict[str, LinkProfile]:
    """``offload: {node: link}``: next hops besides the parent, to nodes of a higher tier."""
    if not isinstance(spec, dict):
        raise TopologyError(f"{entry}: offload must map node names to the link of that hop")
    return {str(name): _link(f"{entry}: offload {name}", link) for name, link in spec.items()}


def _path_up(nodes: dict[str, ComputeNode], start: str, where: str) -> list[str]:
    path, node = [start], nodes[start].parent
    while node:
        if node in path:
            raise TopologyError(f"{where}: node {start}: its parents form a cycle "
                                f"({' -> '.join([*path, node])}); the nodes must form a tree")
        path.append(node)
        node = nodes[node].parent
    return path


def _robots(where: str, index: int, spec: Any, nodes: dict[str, ComputeNode]) -> list[Robot]:
    entry = f"{where}: robots[{index}]"
    if not isinstance(spec, dict):
        raise TopologyError(f"{entry}: expected a mapping (name, task, mode, access, server, "
                            "link)")
    check_keys(spec, entry, {"name", "task", "mode", "access", "link"},
               {"server", "count", "reach"})
    name = str(spec["name"])
    entry = f"{where}: robot {name}"
    from sim_envs import task_names  # the registry: a robot's task must be one

    if spec["task"] not in task_names():
        raise TopologyError(f"{entry}: unknown task {spec['task']!r}; valid: "
                            f"{', '.join(task_names())}")
    if not isinstance(spec["mode"], str) or not spec["mode"]:
        raise TopologyError(f"{entry}: mode must be a mode's name, got {spec['mode']!r}")
    for key in ("access", "server"):
        if key in spec and spec[key] not in nodes:
            raise TopologyError(f"{entry}: {key} {spec[key]!r} is not a node; nodes: "
                                f"{', '.join(nodes)}")
    reach = spec.get("reach", [spec["access"]])
    if not isinstance(reach, list) or any(n not in nodes for n in reach):
        raise TopologyError(f"{entry}: reach must list nodes its link reaches; nodes: "
                            f"{', '.join(nodes)}")
    reach = tuple(dict.fromkeys([spec["access"], *reach]))
    access = spec["access"]
    server = spec.get("server", access)
    up = _path_up(nodes, access, where)
    if server not in up:
        raise TopologyError(f"{entry}: no path to its server {server!r}: requests go up from "
                            f"{access} through {' -> '.join(up)}")
    count = int(number(entry, "count", spec.get("count", 1), 1, integer=True))
    link = _link(entry, spec["link"])
    names = [name] if "count" not in spec else [f"{name}_{i}" for i in range(count)]
    return [Robot(n, str(spec["task"]), spec["mode"], access, server, link, reach)
            for n in names]


def table(topo: Topology) -> str:
    """The topology as text tables: compute nodes, then robots with their route."""
    rows = [("node", "tier", "speed", "max_batch", "window_ms", "memory_params", "parent",
             "uplink")]
    for n in topo.nodes.values():
        rows.append((n.name, n.tier, f"{n.speed:g}", str(n.max_batch), f"{n.batch_window_ms:g}",
                     f"{n.memory_params:,}" if n.memory_params else "-", n.parent or "-",
                     _describe(n.uplink) if n.uplink else "-"))
    out = [text_table(rows, left=len(rows[0])), ""]
    rows = [("robot", "task", "mode", "access link", "route to server")]
    for r in topo.robots:
        route = " -> ".join([r.name, *topo.nodes_on_route(r)])
        rows.append((r.name, r.task, r.mode, _describe(r.link), route))
    out.append(text_table(rows, left=len(rows[0])))
    return "\n".join(out)


def _describe(link: LinkProfile) -> str:
    return (f"{link.name} ({link.delay_ms:g} ms, {link.uplink_mbps:g}/{link.downlink_mbps:g} "
            "Mb/s)")
