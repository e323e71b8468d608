"""The draft/target modes' fleet graph (``bringup --topology FILE``; the shared pieces:
``ros.fleet_wiring``).

Each robot ``R`` gets its simulator, draft node and own link node under ``NS/R``. Each
compute node ``X`` on a route has the topics ``NS/X/server/R/request`` and ``…/response``
per robot ``R`` whose requests reach it. The robot's link node is remapped onto those of
its access node; a hop ``X → parent`` is one link node ``NS/X/link_to_<parent>`` for all
robots that cross it (``clients``: ``R:k``, the hop's place ``k`` on R's route picks the
packet randomness, as in ``core.fleet``); a server's target node (``NS/X/target_node``,
batching with the node's ``max_batch`` and ``batch_window_ms``) answers on each robot's
own response topic, so answers go back the way they came. ROS fleets run one task (one
target model per server node). No ROS imports, no torch.
"""

from __future__ import annotations

from dataclasses import replace

from hybrid_policy.core.topology import Topology
from hybrid_policy.core.topology import Robot
from hybrid_policy.ros.fleet_wiring import (
    BATCHES, SERVER_TOPICS, Wire, Wires, finish, link_overrides, load, robot_wires,
)
from hybrid_policy.ros.graph import JOINT_STATE, MANAGER, GraphConfig, NodeSpec, nodes

TARGET_MODULE = "hybrid_policy.families.adahi.target_node"


def robot_cfg(cfg: GraphConfig, robot: Robot) -> GraphConfig:
    """One robot's single-robot graph: its own link, no bag, the fleet's other settings."""
    return replace(cfg, topology="", bag="", link=robot.link.name)


def wires(cfg: GraphConfig, topo: Topology) -> list[Wire]:
    """Every topic of the fleet graph (see the module doc)."""
    ns = cfg.namespace.rstrip("/")
    out = Wires()
    wire = out.wire
    robot_wires(cfg, topo, wire, {"sim_node", "draft_node", "link_node"}, SERVER_TOPICS)
    for r in topo.robots:
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
        for s in nodes(robot_cfg(cfg, r)):
            if s.name not in ("sim_node", "draft_node", "link_node"):
                continue
            first = {"first_episode": i * n_episodes}
            extra, remaps = {"sim_node": {**first, "wait_for": waits}, "draft_node": first,
                             "link_node": link_overrides(r.link)}[s.name], ready
            if s.name == "link_node":
                remaps += tuple((t, f"{ns}/{r.access}/server/{r.name}/{t.split('/')[1]}")
                                for t in SERVER_TOPICS)
            specs.append(replace(s, parameters={**s.parameters, **extra}, namespace=r.name,
                                 remaps=remaps))
    for (a, b), clients in hop_clients.items():
        link = topo.nodes[a].uplink
        specs.append(NodeSpec("link_node", "hybrid_policy.ros.link_node", f"link_to_{b}", {
            "link": link.name, **link_overrides(link), "clients": clients,
            "upstream": f"{ns}/{b}"}, respawn=True, namespace=a, remaps=ready))
    for server in topo.servers():
        node = topo.nodes[server]
        specs.append(NodeSpec("target_node", TARGET_MODULE, "target_node", {
            "task": cfg.task, "target": cfg.target_path, "temperature": cfg.temperature,
            "max_batch": node.max_batch, "batch_window_ms": node.batch_window_ms,
            "clients": [r.name for r in topo.robots_of(server)]},
            respawn=True, namespace=server, remaps=ready))
    managed = [f"{ns}/{s}/target_node" for s in topo.servers()] + [
        f"{ns}/{r.name}/draft_node" for r in topo.robots]
    return finish(cfg, specs, everything, managed, fleet_info(topo))


def fleet_info(topo: Topology) -> list[str]:
    """The fleet's shape for the bag's metadata: robots (name:server:link) and servers."""
    return [f"robots={','.join(f'{r.name}:{r.server}:{r.link.name}' for r in topo.robots)}",
            f"servers={','.join(topo.servers())}"]
