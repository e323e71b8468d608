"""The toy family's fleet graph, from ``ros.fleet_wiring``'s pieces: each robot's requests
go to its server over a link node (a flow), one ``toy_family.server_node`` per server."""

from __future__ import annotations

from hybrid_policy.core.link import link_spec
from hybrid_policy.ros.fleet_wiring import (
    draft_fleet, finish, flow_wires, load, node_wires, ready, robot_nodes,
)
from hybrid_policy.ros.graph import JOINT_STATE, NodeSpec


def toy_nodes(cfg) -> list[NodeSpec]:
    topo = load(cfg)
    ns = cfg.namespace.rstrip("/")
    out = draft_fleet(cfg, topo)
    for r in topo.robots:
        flow_wires(out.wire, ns, r.name, r.name, f"{r.name}/draft_node", r.server,
                   f"{r.server}/server_node", record_answers=True, leaf="request",
                   up_type=JOINT_STATE)
    everything = node_wires(out, topo, [], "server_node")  # no server/batches of its own
    specs: list[NodeSpec] = []
    for i, r in enumerate(topo.robots):
        link = f"{ns}/{r.name}/link_to_{r.server}"
        specs += robot_nodes(cfg, i, r, [link, f"{ns}/{r.server}/server_node"],
                             {"server": r.server})
        specs.append(NodeSpec("link_node", "hybrid_policy.ros.link_node", f"link_to_{r.server}",
                              {"carries": "act", "root": ns,
                               "flows": [f"{r.name}:{r.name}:{r.server}"],
                               "links": [link_spec(k) for k in topo.links_between(r, r.server)]},
                              respawn=True, namespace=r.name, remaps=ready(cfg)))
    for server in topo.servers():
        specs.append(NodeSpec("server_node", "toy_family.server_node", "server_node", {
            "inputs": [r.name for r in topo.robots_of(server)]}, namespace=server,
            remaps=ready(cfg)))
    info = [f"robots={','.join(f'{r.name}:{r.server}:{r.link.name}' for r in topo.robots)}",
            f"servers={','.join(topo.servers())}"]
    return finish(cfg, specs, everything, [f"{ns}/{r.name}/draft_node" for r in topo.robots],
                  info)
