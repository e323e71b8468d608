"""The placement modes' fleet graph (``bringup --topology FILE``; the shared pieces:
``ros.fleet_wiring``): per compute node on some robot's path ``NS/X/idn_node`` (holds what
the allocation gives it; the top node, the repository, holds everything);
``NS/placement/placement_node`` publishes the allocation each period; per robot and node of
its path a flow of the robot's ``act`` requests (``NS/R/out/X/R/request`` →
``NS/X/exit/R/R/request``, JointState) over the links between them and the answers back.
Robots stay in their cell and task: a topology with ``idn.shifts`` is refused (shifts run in
process only, ``eval``). No ROS imports, no torch.
"""

from __future__ import annotations

from hybrid_policy.core.link import link_spec
from hybrid_policy.core.topology import Topology, read
from hybrid_policy.errors import HybridPolicyError
from hybrid_policy.families.idn import catalogue as idn_catalogue
from hybrid_policy.families.idn import idn
from hybrid_policy.ros import fleet_wiring
from hybrid_policy.ros.fleet_wiring import (
    Wire, draft_fleet, finish, flow_wires, load, node_wires, robot_nodes,
)
from hybrid_policy.ros.graph import JOINT_STATE, MANAGER, STATUS, GraphConfig, NodeSpec

IDN_MODULE = "hybrid_policy.families.idn.idn_node"
PLACEMENT_MODULE = "hybrid_policy.families.idn.placement_node"


PLACEMENT_NS = "placement"  # NS/placement/placement_node, NS/placement/allocation
DIAGNOSTIC_ARRAY = "diagnostic_msgs/msg/DiagnosticArray"


def idn_config(path: str, topo: Topology):
    """The topology's ``idn`` block, refused where ROS cannot run it: shifts (robots moving
    cell or switching task) run in process only, and ``placement`` names the placement
    node's namespace."""
    cfg = idn.config_of(topo, read(path))
    if cfg.shifts:
        raise HybridPolicyError(
            f"{path}: idn.shifts (robots moving cell or switching task) run in process only "
            "(hybrid-policy eval --topology FILE --modes placement); over ROS every robot stays "
            "in its cell and task: remove the shifts")
    if PLACEMENT_NS in topo.nodes or PLACEMENT_NS in {r.name for r in topo.robots}:
        raise HybridPolicyError(f"{path}: '{PLACEMENT_NS}' is the placement node's namespace: "
                                "rename that node or robot")
    return cfg


def idn_network(cfg: GraphConfig):
    """``(topology, core.idn.IdnNetwork)`` of a placement graph (``idn_config``)."""
    topo = load(cfg)
    if not cfg.idn_catalogue:
        raise HybridPolicyError(f"mode {cfg.mode} over ROS needs its catalogue (idn_catalogue: "
                                "the JSON `hybrid-policy bringup` writes)")
    return topo, idn.IdnNetwork(topo, idn_catalogue.load(cfg.idn_catalogue),
                                idn_config(cfg.topology, topo))


def idn_paths(topo: Topology, net) -> dict[str, list[str]]:
    """Each robot's compute nodes, its access node up to the repository."""
    return {r.name: net.path(r.name, r.access)[1:] for r in topo.robots}


def idn_serving(topo: Topology, net) -> list[str]:
    """The compute nodes some robot's path reaches (the others need no process: nothing
    could ask them)."""
    reached = {n for p in idn_paths(topo, net).values() for n in p}
    return [n for n in topo.nodes if n in reached]


def idn_wires(cfg: GraphConfig, topo: Topology, net) -> list[Wire]:
    """A placement fleet's topics: the robots' own; per robot and node of its path the flow
    of its act requests (``flow_wires``, recording what the robot sent, what reached the
    node and the answers that came back); the allocation, each node's holdings, and the
    robots' steps, which the placement node counts."""
    ns = cfg.namespace.rstrip("/")
    out = draft_fleet(cfg, topo)
    wire = out.wire
    placement = f"{PLACEMENT_NS}/placement_node"
    paths = idn_paths(topo, net)
    for robot, path in paths.items():
        for node in path:
            flow_wires(wire, ns, robot, robot, f"{robot}/draft_node", node,
                        f"{node}/idn_node", record_answers=True, leaf="request",
                        up_type=JOINT_STATE)
            out[f"{robot}/out/{node}/{robot}/request"].recorded = True  # where each step went
        out[f"{robot}/step"].subscribers.add(placement)
    serving = idn_serving(topo, net)
    w = wire(f"{PLACEMENT_NS}/allocation", DIAGNOSTIC_ARRAY, "telemetry")
    w.publishers[placement] = "allocation"
    w.subscribers |= {f"{n}/idn_node" for n in serving} | {f"{r}/draft_node" for r in paths}
    for node in serving:
        w = wire(f"{node}/holdings", STATUS, "telemetry")
        w.publishers[f"{node}/idn_node"] = "holdings"
        w.subscribers |= {f"{r}/draft_node" for r, p in paths.items() if node in p}
    return node_wires(out, topo, serving, "idn_node")


def idn_nodes(cfg: GraphConfig) -> list[NodeSpec]:
    """The nodes of a placement fleet (see the module doc): per robot its simulator, its
    draft node (``IdnMode``) and one link node per node of its path (link ``i`` of the way
    draws ``packet_rng(seed, i)``, as ``core.fleet``); per serving node its ``idn_node``
    (respawned when it dies); the placement node. The managed nodes: the idn nodes, then
    the drafts, which activate once the first allocation is loaded on their path."""
    topo, net = idn_network(cfg)
    ns = cfg.namespace.rstrip("/")
    everything = idn_wires(cfg, topo, net)
    ready = fleet_wiring.ready(cfg)
    paths, serving = idn_paths(topo, net), idn_serving(topo, net)
    common = {"topology": cfg.topology, "catalogue": cfg.idn_catalogue, "root": ns,
              "models": cfg.models}
    placement = f"{ns}/{PLACEMENT_NS}/placement_node"
    specs: list[NodeSpec] = []
    for i, r in enumerate(topo.robots):
        links = [f"{ns}/{r.name}/link_to_{n}" for n in paths[r.name]]
        specs += robot_nodes(cfg, i, r, [*links, placement], common)
        spec = net.robot_at(r.name, r.access)  # as core.fleet routes its requests
        for node in paths[r.name]:
            specs.append(NodeSpec("link_node", "hybrid_policy.ros.link_node", f"link_to_{node}", {
                "carries": "act", "root": ns, "flows": [f"{r.name}:{r.name}:{node}"],
                "links": [link_spec(k) for k in topo.links_between(spec, node)]},
                respawn=True, namespace=r.name, remaps=ready))
    for name in serving:
        node = topo.nodes[name]
        specs.append(NodeSpec("idn_node", IDN_MODULE, "idn_node", {
            **common, "node": name, "inputs": [r for r, p in paths.items() if name in p],
            "max_batch": node.max_batch, "batch_window_ms": node.batch_window_ms},
            respawn=True, namespace=name, remaps=ready))
    specs.append(NodeSpec("placement_node", PLACEMENT_MODULE,
                          "placement_node", {**common, "mode": cfg.mode, "seed": cfg.seed,
                                             "start_after": f"{ns}/{MANAGER}"},
                          namespace=PLACEMENT_NS, remaps=ready))
    managed = [f"{ns}/{n}/idn_node" for n in serving] + [
        f"{ns}/{r.name}/draft_node" for r in topo.robots]
    return finish(cfg, specs, everything, managed, idn_info(topo, net))


def idn_info(topo: Topology, net) -> list[str]:
    """The fleet's shape for the bag: robots (name:access:link), the serving nodes, the
    repository and each robot's path (``paths=r0=cell_a|regional|cloud;...``: where its
    requests may go)."""
    paths = idn_paths(topo, net)
    return [f"robots={','.join(f'{r.name}:{r.access}:{r.link.name}' for r in topo.robots)}",
            f"servers={','.join(idn_serving(topo, net))}", f"repository={net.repository}",
            f"paths={';'.join(f'{r}=' + '|'.join(p) for r, p in paths.items())}"]
