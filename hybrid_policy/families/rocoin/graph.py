"""The RoCoIn modes' fleet graph (``bringup --topology FILE``; the shared pieces:
``ros.fleet_wiring``): per device of the layout ``NS/D/student_node``; each robot's window
goes to every device through its own link node ``NS/R/link_to_D`` (a flow, the robot its
own sender). No ROS imports, no torch.
"""

from __future__ import annotations

from hybrid_policy.core.link import link_spec
from hybrid_policy.core.topology import Topology, read
from hybrid_policy.errors import HybridPolicyError
from hybrid_policy.families.rocoin.rocoin import Layout, config_of, device_hop
from hybrid_policy.ros import fleet_wiring
from hybrid_policy.ros.fleet_wiring import (
    Wire, draft_fleet, finish, flow_wires, load, node_wires, robot_nodes,
)
from hybrid_policy.ros.graph import GraphConfig, NodeSpec

STUDENT_MODULE = "hybrid_policy.families.rocoin.student_node"


def rocoin_flows(topo: Topology, layout) -> list[tuple[str, str, int]]:
    """``(robot, device, device index)``: every robot sends each window to every device."""
    return [(r.name, d, i) for r in topo.robots for i, d in enumerate(layout.devices)]


def rocoin_wires(cfg: GraphConfig, topo: Topology, layout) -> list[Wire]:
    """A rocoin fleet's topics: the robots' own, and per robot and device the flow of its
    windows (``flow_wires``, sender = the robot), recording the windows that reached each
    device and the answers that reached the robot (per device and so per group)."""
    ns = cfg.namespace.rstrip("/")
    out = draft_fleet(cfg, topo)
    wire = out.wire
    for robot, dev, _ in rocoin_flows(topo, layout):
        flow_wires(wire, ns, robot, robot, f"{robot}/draft_node", dev,
                    f"{dev}/student_node", record_answers=True)
    return node_wires(out, topo, list(layout.devices), "student_node")


def rocoin_nodes(cfg: GraphConfig) -> list[NodeSpec]:
    """The nodes of a rocoin fleet: per robot its simulator and draft node and one link node
    per device (``NS/R/link_to_D``, the copy's own packet randomness ``device_hop(i)``); per
    device of the layout its ``NS/D/student_node`` (respawned when it crashes)."""
    topo = load(cfg)
    if not cfg.rocoin_layout:
        raise HybridPolicyError(f"mode {cfg.mode} over ROS needs its layout (rocoin_layout: the "
                                "JSON `hybrid-policy bringup` writes)")
    layout = Layout.load(cfg.rocoin_layout)
    if layout.mode != cfg.mode:
        raise HybridPolicyError(f"{cfg.rocoin_layout}: a layout for {layout.mode}, not "
                                f"{cfg.mode}")
    faults = config_of(topo, read(cfg.topology)).faults
    ns = cfg.namespace.rstrip("/")
    everything = rocoin_wires(cfg, topo, layout)
    ready = fleet_wiring.ready(cfg)
    specs: list[NodeSpec] = []
    for i, r in enumerate(topo.robots):
        links = [f"{ns}/{r.name}/link_to_{d}" for d in layout.devices]
        specs += robot_nodes(cfg, i, r, links, {"draft": cfg.draft_path,
                                                "target": cfg.target_path,
                                                "rocoin_layout": cfg.rocoin_layout})
        for j, d in enumerate(layout.devices):
            specs.append(NodeSpec("link_node", "hybrid_policy.ros.link_node", f"link_to_{d}", {
                "carries": "features", "root": ns, "flows": [f"{r.name}:{r.name}:{d}"],
                "links": [link_spec(k) for k in topo.links_between(r, d)],
                "packet_hop": device_hop(j)}, respawn=True, namespace=r.name, remaps=ready))
    for d in layout.devices:
        node = topo.nodes[d]
        specs.append(NodeSpec("student_node", STUDENT_MODULE, "student_node", {
            "task": cfg.task, "students": cfg.students_path,
            "target": cfg.target_path if cfg.mode == "rocoin_target" else "",
            "temperature": cfg.temperature, "layout": cfg.rocoin_layout, "device": d,
            "inputs": [r.name for r in topo.robots], "max_batch": node.max_batch,
            "batch_window_ms": node.batch_window_ms, "seed": cfg.seed,
            "fault_p": faults.p, "fault_per": faults.per, "fault_kind": faults.kind,
            "slow_ms": faults.slow_ms, "episode_ms": faults.episode_ms,
            "fault_devices": list(faults.devices) or [""]},
            respawn=True, namespace=d, remaps=ready))
    managed = [f"{ns}/{d}/student_node" for d in layout.devices] + [
        f"{ns}/{r.name}/draft_node" for r in topo.robots]
    return finish(cfg, specs, everything, managed, rocoin_info(topo, layout))


def rocoin_info(topo: Topology, layout) -> list[str]:
    """The fleet's shape for the bag: robots (name:access:link), the devices, and the
    layout's groups (``layout=d0|d1;d2|d3``: group j's devices) so analysis can map each
    device's answers to its group."""
    return [f"robots={','.join(f'{r.name}:{r.access}:{r.link.name}' for r in topo.robots)}",
            f"servers={','.join(layout.devices)}",
            f"layout={';'.join('|'.join(g) for g in layout.groups)}"]
