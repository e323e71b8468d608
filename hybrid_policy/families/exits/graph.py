"""The early-exit modes' fleet graph (``bringup --topology FILE``; the shared pieces:
``ros.fleet_wiring``).

Each computing node ``X`` of the plan (``exit_plan``, written by ``bringup``) runs
``NS/X/exit_node``; every hop a robot's features may take, ``robot:sender:dest`` (the robot
itself or a node, to the next node its plan may draw), is a flow (``fleet_wiring``): one
link node per sender and next node, ``NS/sender/link_to_dest``, carries the features over
the chain of links between them and the answers back. No ROS imports, no torch.
"""

from __future__ import annotations

from hybrid_policy.core.link import link_spec
from hybrid_policy.core.topology import Topology
from hybrid_policy.errors import HybridPolicyError
from hybrid_policy.families.exits.plan import ExitPlan
from hybrid_policy.ros import fleet_wiring
from hybrid_policy.ros.fleet_wiring import (
    Wire, draft_fleet, finish, flow_wires, load, node_wires, robot_nodes,
)
from hybrid_policy.ros.graph import GraphConfig, NodeSpec

EXIT_MODULE = "hybrid_policy.families.exits.exit_node"


def flows(topo: Topology, plan: ExitPlan) -> list[tuple[str, str, str]]:
    """``(robot, sender, dest)`` of every hop a robot's features may take under ``plan``."""
    out: list[tuple[str, str, str]] = []
    for r in topo.robots:
        todo = [r.name]
        while todo:
            sender = todo.pop(0)
            for dest in plan.offload.get(sender, {}):
                if (r.name, sender, dest) not in out:
                    out.append((r.name, sender, dest))
                    if plan.ends.get(dest, 0) < plan.layers:
                        todo.append(dest)
    return out


def serving_nodes(topo: Topology, plan: ExitPlan) -> list[str]:
    """The computing nodes some robot's features can reach (the others need no process)."""
    reached = {dest for _, _, dest in flows(topo, plan)}
    return [n for n in plan.computing_nodes(topo) if n in reached]


def _sender_key(topo: Topology, sender: str) -> str:
    return f"{sender}/draft_node" if sender in {r.name for r in topo.robots} \
        else f"{sender}/exit_node"


def exit_wires(cfg: GraphConfig, topo: Topology, plan: ExitPlan) -> list[Wire]:
    ns = cfg.namespace.rstrip("/")
    out = draft_fleet(cfg, topo)
    wire = out.wire
    for robot, sender, dest in flows(topo, plan):
        flow_wires(wire, ns, robot, sender, _sender_key(topo, sender), dest,
                    f"{dest}/exit_node", record_answers=False)
    return node_wires(out, topo, serving_nodes(topo, plan), "exit_node")


def exit_nodes(cfg: GraphConfig) -> list[NodeSpec]:
    """The nodes of an early-exit fleet (see the module doc)."""
    topo = load(cfg)
    if not cfg.exit_plan:
        raise HybridPolicyError(f"mode {cfg.mode} over ROS needs its plan (exit_plan: the JSON "
                                "`hybrid-policy bringup` writes; it solves dto_ee's)")
    plan = ExitPlan.load(cfg.exit_plan)
    if plan.mode != cfg.mode:
        raise HybridPolicyError(f"{cfg.exit_plan}: a plan for {plan.mode}, not {cfg.mode}")
    missing = sorted({r.name for r in topo.robots} - set(plan.ends))
    if missing:
        raise HybridPolicyError(f"{cfg.exit_plan}: no plan for robots {', '.join(missing)}")
    ns = cfg.namespace.rstrip("/")
    everything = exit_wires(cfg, topo, plan)
    ready = fleet_wiring.ready(cfg)
    net = cfg.early_exit_path
    specs: list[NodeSpec] = []
    pairs: dict[tuple[str, str], list[str]] = {}
    for robot, sender, dest in flows(topo, plan):
        pairs.setdefault((sender, dest), []).append(f"{robot}:{sender}:{dest}")
    robots = {r.name: r for r in topo.robots}
    links = [f"{ns}/{s}/link_to_{d}" for s, d in pairs]
    for i, r in enumerate(topo.robots):
        specs += robot_nodes(cfg, i, r, links, {"early_exit": net, "exit_plan": cfg.exit_plan})
    for (sender, dest), entries in pairs.items():
        src = robots.get(sender, sender)
        specs.append(NodeSpec("link_node", "hybrid_policy.ros.link_node", f"link_to_{dest}", {
            "carries": "features", "root": ns, "flows": entries,
            "links": [link_spec(k) for k in topo.links_between(src, dest)]},
            respawn=True, namespace=sender, remaps=ready))
    inputs: dict[str, list[str]] = {}
    for robot, sender, dest in flows(topo, plan):
        inputs.setdefault(dest, []).append(f"{robot}:{sender}")
    computing = serving_nodes(topo, plan)
    for name in computing:
        node = topo.nodes[name]
        specs.append(NodeSpec("exit_node", EXIT_MODULE, "exit_node", {
            "task": cfg.task, "early_exit": net, "temperature": cfg.temperature,
            "end": plan.ends[name], "threshold": plan.thresholds.get(name, 1.0),
            "offload": [f"{d}:{p!r}" for d, p in plan.offload.get(name, {}).items()],
            "max_batch": node.max_batch, "batch_window_ms": node.batch_window_ms,
            "inputs": inputs[name]}, respawn=True, namespace=name, remaps=ready))
    managed = [f"{ns}/{n}/exit_node" for n in computing] + [
        f"{ns}/{r.name}/draft_node" for r in topo.robots]
    return finish(cfg, specs, everything, managed, exit_info(topo, plan))


def exit_info(topo: Topology, plan: ExitPlan) -> list[str]:
    """The fleet's shape for the bag: robots (name:first node:link), the computing nodes,
    and each robot's first nodes (its features' first hop: one server operation each)."""
    first = ";".join(f"{r.name}=" + "|".join(plan.offload.get(r.name, {})) for r in topo.robots)
    return [f"robots={','.join(f'{r.name}:{r.access}:{r.link.name}' for r in topo.robots)}",
            f"servers={','.join(serving_nodes(topo, plan))}", f"first_nodes={first}"]
