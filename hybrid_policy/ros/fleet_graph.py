"""The ROS graph of a fleet (``bringup --topology FILE``): many robots, shared servers.

Built from the same pieces as one robot's graph (``graph.nodes``) and the fleet's topology
(``core.topology``), under the graph's namespace ``NS``:

- each robot ``R`` gets its simulator, draft node and own link node under ``NS/R``, with the
  parameters a single-robot graph gives them; robot ``i`` of ``E`` episodes runs the run's
  episodes ``i·E …`` (``first_episode``), as ``core.fleet`` does;
- each compute node ``X`` on a route has the topics ``NS/X/server/R/request`` and
  ``…/response`` per robot ``R`` whose requests reach it. The robot's link node is remapped
  onto those of its access node; a hop ``X → parent`` is one link node ``NS/X/link_to_<parent>``
  for all robots that cross it (``clients``: ``R:k``, the hop's place ``k`` on R's route picks
  the packet randomness, as in ``core.fleet``); a server's target node
  (``NS/X/target_node``, batching with the node's ``max_batch`` and ``batch_window_ms``)
  answers on each robot's own response topic, so answers go back the way they came;
- one lifecycle manager (``NS/lifecycle_manager``) drives every target, then every draft;
  every node's ``ready`` is remapped to ``NS/ready``; one recorder writes one bag.

No ROS imports and no torch here (the launch file reads it). ROS fleets run one task (one
target model per server node).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from hybrid_policy.core import topology as topo_mod
from hybrid_policy.core.link import LinkProfile, link_profile
from hybrid_policy.core.topology import Robot, Topology
from hybrid_policy.errors import HybridPolicyError
from hybrid_policy.ros.graph import (
    JOINT_STATE, MANAGER, GraphConfig, NodeSpec, active_topics, nodes, run_info,
)

SERVER_TOPICS = ("server/request", "server/response")  # per robot in a fleet
BATCHES = "server/batches"  # a server's operations (target_node.BATCH_FIELDS)


@dataclass
class Wire:
    """One topic of the fleet graph: its name under ``NS``, its publishers (node key →
    the name the node gives it) and subscribers (node keys)."""

    name: str
    type: str
    role: str
    publishers: dict[str, str] = field(default_factory=dict)
    subscribers: set[str] = field(default_factory=set)
    recorded: bool = True


def load(cfg: GraphConfig) -> Topology:
    """The fleet of ``cfg``, checked for what a ROS fleet can run."""
    topo = topo_mod.load(cfg.topology)
    other = sorted({r.task for r in topo.robots} - {cfg.task})
    if other:
        raise HybridPolicyError(f"{cfg.topology}: a ROS fleet runs one task ({cfg.task}); "
                                f"robots of other tasks: {', '.join(other)}")
    clash = sorted({r.name for r in topo.robots} & set(topo.nodes))
    if clash:
        raise HybridPolicyError(f"{cfg.topology}: robot and node names share a namespace; "
                                f"rename {', '.join(clash)}")
    return topo


def _robot_cfg(cfg: GraphConfig, robot: Robot) -> GraphConfig:
    """One robot's single-robot graph: its own link, no bag, the fleet's other settings."""
    return replace(cfg, topology="", bag="", link=robot.link.name)


def _link_overrides(link: LinkProfile) -> dict[str, float]:
    """Link node parameters for a topology link whose figures differ from its profile's."""
    base = link_profile(link.name)
    return {k: getattr(link, k) for k in ("uplink_mbps", "downlink_mbps", "delay_ms")
            if getattr(link, k) != getattr(base, k)}


def wires(cfg: GraphConfig, topo: Topology) -> list[Wire]:
    """Every topic of the fleet graph (see the module doc)."""
    ns = cfg.namespace.rstrip("/")
    out: dict[str, Wire] = {}

    def wire(name: str, type_: str, role: str, recorded: bool = True) -> Wire:
        return out.setdefault(name, Wire(name, type_, role, recorded=recorded))

    for r in topo.robots:
        local = {"sim_node", "draft_node", "link_node"}
        for t in active_topics(_robot_cfg(cfg, r)):
            if t.name in SERVER_TOPICS:
                continue
            w = wire(f"{r.name}/{t.name}", t.type, t.role)
            w.publishers.update({f"{r.name}/{p}": t.name for p in t.publishers if p in local})
            w.subscribers |= {f"{r.name}/{s}" for s in t.subscribers if s in local}
        hops = topo.nodes_on_route(r)
        for j, node in enumerate(hops):
            req = wire(f"{node}/server/{r.name}/request", JOINT_STATE, "uplink", recorded=False)
            resp = wire(f"{node}/server/{r.name}/response", JOINT_STATE, "downlink",
                        recorded=node == r.server)  # the server's answers: its operations
            if j == 0:
                req.publishers[f"{r.name}/link_node"] = "server/request"
                resp.subscribers.add(f"{r.name}/link_node")
            else:
                below = f"{hops[j - 1]}/link_to_{node}"
                req.publishers[below] = f"{ns}/{node}/server/{r.name}/request"
                resp.subscribers.add(below)
            if node == r.server:
                req.subscribers.add(f"{node}/target_node")
                resp.publishers[f"{node}/target_node"] = f"server/{r.name}/response"
            else:
                hop = f"{node}/link_to_{hops[j + 1]}"
                req.subscribers.add(hop)
                resp.publishers[hop] = f"server/{r.name}/response"
    for server in topo.servers():
        w = wire(f"{server}/{BATCHES}", JOINT_STATE, "telemetry")
        w.publishers[f"{server}/target_node"] = BATCHES
    keys = {k for w in out.values() for k in [*w.publishers, *w.subscribers]}
    for key in sorted(k for k in keys if not k.startswith(tuple(f"{r.name}/"
                                                                for r in topo.robots))):
        w = wire(f"{key.rsplit('/', 1)[0]}/events", "diagnostic_msgs/msg/DiagnosticStatus",
                 "telemetry")
        w.publishers[key] = "events"
    return list(out.values())


def fleet_nodes(cfg: GraphConfig) -> list[NodeSpec]:
    """The nodes of a fleet graph and their parameters (see the module doc)."""
    topo = load(cfg)
    ns = cfg.namespace.rstrip("/")
    everything = wires(cfg, topo)
    specs: list[NodeSpec] = []
    n_episodes = cfg.episodes
    ready = (("ready", f"{ns}/ready"),)
    hop_clients: dict[tuple[str, str], list[str]] = {}
    for i, r in enumerate(topo.robots):
        hops = topo.nodes_on_route(r)
        for k, (a, b) in enumerate(zip(hops, hops[1:])):  # place k + 1 on this route
            hop_clients.setdefault((a, b), []).append(f"{r.name}:{k + 1}")
        waits = [f"{ns}/{r.name}/link_node",
                 *(f"{ns}/{a}/link_to_{b}" for a, b in zip(hops, hops[1:])),
                 f"{ns}/{MANAGER}"]
        for s in nodes(_robot_cfg(cfg, r)):
            if s.name not in ("sim_node", "draft_node", "link_node"):
                continue
            first = {"first_episode": i * n_episodes}
            extra, remaps = {"sim_node": {**first, "wait_for": waits}, "draft_node": first,
                             "link_node": _link_overrides(r.link)}[s.name], ready
            if s.name == "link_node":
                remaps += tuple((t, f"{ns}/{r.access}/server/{r.name}/{t.split('/')[1]}")
                                for t in SERVER_TOPICS)
            specs.append(replace(s, parameters={**s.parameters, **extra}, namespace=r.name,
                                 remaps=remaps))
    for (a, b), clients in hop_clients.items():
        link = topo.nodes[a].uplink
        specs.append(NodeSpec("link_node", "hybrid_policy.ros.link_node", f"link_to_{b}", {
            "link": link.name, **_link_overrides(link), "clients": clients,
            "upstream": f"{ns}/{b}"}, respawn=True, namespace=a, remaps=ready))
    for server in topo.servers():
        node = topo.nodes[server]
        specs.append(NodeSpec("target_node", "hybrid_policy.ros.target_node", "target_node", {
            "task": cfg.task, "target": cfg.target_path, "temperature": cfg.temperature,
            "max_batch": node.max_batch, "batch_window_ms": node.batch_window_ms,
            "clients": [r.name for r in topo.robots_of(server)]},
            respawn=True, namespace=server, remaps=ready))
    managed = [f"{ns}/{s}/target_node" for s in topo.servers()] + [
        f"{ns}/{r.name}/draft_node" for r in topo.robots]
    specs.append(NodeSpec("lifecycle_manager", "hybrid_policy.ros.lifecycle_manager", MANAGER,
                          {"node_names": managed}))
    if cfg.bag:
        specs.append(NodeSpec("recorder_node", "hybrid_policy.ros.recorder_node",
                              "recorder_node", {
                                  "bag": cfg.bag,
                                  "topics": [f"{w.name}:{w.type}" for w in everything
                                             if w.recorded],
                                  "run_info": [*run_info(cfg), *fleet_info(topo)]}))
    out = []
    for s in specs:
        params = {**s.parameters, **cfg.extra.get(s.name, {})}
        if s.name not in ("recorder_node", MANAGER):
            params["expect"] = _expected(everything, s.key, bool(cfg.bag))
        out.append(replace(s, parameters=params))
    return out


def _expected(everything: list[Wire], key: str, bag: bool) -> list[str]:
    """``"topic count"`` for each topic node ``key`` publishes (readiness handshake)."""
    return [f"{w.publishers[key]} {len(w.subscribers) + (1 if bag and w.recorded else 0)}"
            for w in everything if key in w.publishers]


def fleet_info(topo: Topology) -> list[str]:
    """The fleet's shape for the bag's metadata: robots (name:server:link) and servers."""
    return [f"robots={','.join(f'{r.name}:{r.server}:{r.link.name}' for r in topo.robots)}",
            f"servers={','.join(topo.servers())}"]

