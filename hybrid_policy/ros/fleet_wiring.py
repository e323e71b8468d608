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

Early-exit modes (``exit_nodes``): each computing node ``X`` of the plan (``exit_plan``,
written by ``bringup``) runs ``NS/X/exit_node``; for every flow of a robot's features
``robot:sender:dest`` (the robot itself or a node, to the next node its plan may draw) the
sender publishes ``NS/sender/out/dest/robot/feature`` and one link node per sender and
next node, ``NS/sender/link_to_dest`` (the chain of links between them), carries it to
``NS/dest/exit/robot/sender/feature`` and the answers back.

Rocoin modes (``rocoin_nodes``): per device of the layout ``NS/D/student_node``; each robot's
window goes to every device through its own link node ``NS/R/link_to_D``.

Placement modes (``idn_nodes``): per compute node on some robot's path ``NS/X/idn_node``
(holds what the allocation gives it; the top node, the repository, holds everything);
``NS/placement/placement_node`` publishes the allocation each period; per robot and node of
its path one link node ``NS/R/link_to_X`` carries the robot's ``act`` requests
(``NS/R/out/X/R/request`` → ``NS/X/exit/R/R/request``, JointState) over the links between
them and the answers back. Robots stay in their cell and task: a topology with ``idn.shifts``
is refused (shifts run in process only, ``eval``).

No ROS imports and no torch here (the launch file reads it). ROS fleets run one task (one
target model per server node).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from hybrid_policy.core import topology as topo_mod
from hybrid_policy.families.exits.plan import ExitPlan
from hybrid_policy.core.link import LinkProfile, link_profile, link_spec
from hybrid_policy.core.mode_names import EXIT_MODES, IDN_MODES, ROCOIN_MODES
from hybrid_policy.core.topology import Robot, Topology
from hybrid_policy.errors import HybridPolicyError
from hybrid_policy.ros.graph import (
    IMAGE, JOINT_STATE, MANAGER, STATUS, GraphConfig, NodeSpec, active_topics, nodes, run_info,
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
    """One robot's single-robot graph: its own link, no bag, the fleet's other settings
    (early-exit modes: the simulator and the robot's node, as draft_only has them)."""
    mode = "draft_only" if cfg.mode in EXIT_MODES + ROCOIN_MODES + IDN_MODES else cfg.mode
    return replace(cfg, topology="", bag="", link=robot.link.name, mode=mode)


def _link_overrides(link: LinkProfile) -> dict[str, float]:
    """Link node parameters for a topology link whose figures differ from its profile's."""
    base = link_profile(link.name)
    return {k: getattr(link, k) for k in ("uplink_mbps", "downlink_mbps", "delay_ms")
            if getattr(link, k) != getattr(base, k)}


class _Wires(dict):
    """A graph's topics by name; ``wire`` makes one on its first mention."""

    def wire(self, name: str, type_: str, role: str, recorded: bool = True) -> Wire:
        return self.setdefault(name, Wire(name, type_, role, recorded=recorded))


def _draft_fleet(cfg: GraphConfig, topo: Topology) -> _Wires:
    """The robots' own topics of a fleet whose draft nodes send their requests themselves
    (no link or server nodes of their own): the start of every features/requests graph."""
    out = _Wires()
    _robot_wires(cfg, topo, out.wire, {"sim_node", "draft_node"}, REQUEST_TOPICS)
    return out


def _robot_wires(cfg: GraphConfig, topo: Topology, wire, local: set[str],
                 skip: tuple[str, ...]) -> None:
    """Each robot's own topics under ``NS/<robot>/`` (those of ``local`` nodes, without
    ``skip``), as a one-robot graph has them."""
    for r in topo.robots:
        for t in active_topics(_robot_cfg(cfg, r)):
            if t.name in skip:
                continue
            w = wire(f"{r.name}/{t.name}", t.type, t.role)
            w.publishers.update({f"{r.name}/{p}": t.name for p in t.publishers if p in local})
            w.subscribers |= {f"{r.name}/{s}" for s in t.subscribers if s in local}


def wires(cfg: GraphConfig, topo: Topology) -> list[Wire]:
    """Every topic of the fleet graph (see the module doc)."""
    ns = cfg.namespace.rstrip("/")
    out = _Wires()
    wire = out.wire
    _robot_wires(cfg, topo, wire, {"sim_node", "draft_node", "link_node"}, SERVER_TOPICS)
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
    if cfg.mode in EXIT_MODES:
        return exit_nodes(cfg)
    if cfg.mode in ROCOIN_MODES:
        return rocoin_nodes(cfg)
    if cfg.mode in IDN_MODES:
        return idn_nodes(cfg)
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
        specs.append(NodeSpec("target_node", "hybrid_policy.families.adahi.target_node", "target_node", {
            "task": cfg.task, "target": cfg.target_path, "temperature": cfg.temperature,
            "max_batch": node.max_batch, "batch_window_ms": node.batch_window_ms,
            "clients": [r.name for r in topo.robots_of(server)]},
            respawn=True, namespace=server, remaps=ready))
    managed = [f"{ns}/{s}/target_node" for s in topo.servers()] + [
        f"{ns}/{r.name}/draft_node" for r in topo.robots]
    return _finish(cfg, specs, everything, managed, fleet_info(topo))


def _finish(cfg: GraphConfig, specs: list[NodeSpec], everything: list[Wire],
            managed: list[str], info: list[str]) -> list[NodeSpec]:
    """The lifecycle manager (``managed`` in activation order), the recorder of every
    recorded wire, each node's readiness ``expect`` and the user's per-node overrides."""
    specs = [*specs, NodeSpec("lifecycle_manager", "hybrid_policy.ros.lifecycle_manager",
                              MANAGER, {"node_names": managed})]
    if cfg.bag:
        specs.append(NodeSpec("recorder_node", "hybrid_policy.ros.recorder_node",
                              "recorder_node", {
                                  "bag": cfg.bag,
                                  "topics": [f"{w.name}:{w.type}" for w in everything
                                             if w.recorded],
                                  "run_info": [*run_info(cfg), *info],
                                  "nice": cfg.recorder_nice}))
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



# -- early-exit fleets -------------------------------------------------------------------
REQUEST_TOPICS = ("uplink/request", "downlink/response", *SERVER_TOPICS)


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


def _flow_wires(wire, ns: str, robot: str, sender: str, sender_key: str, dest: str,
                node_key: str, record_answers: bool, leaf: str = "feature",
                up_type: str = IMAGE) -> None:
    """The four topics of one flow of features, ``sender`` → ``dest`` for ``robot``, and
    its link node ``NS/sender/link_to_dest``: ``sender/out/dest/robot/{feature,answer}`` on
    the sender's side, ``dest/exit/robot/sender/{feature,answer}`` on the node's. Recorded:
    the features a robot sent as they reach the node (a server operation each), and with
    ``record_answers`` the answers as they reach the sender. Placement modes send ``act``
    requests instead (``leaf`` ``request``, ``up_type`` JointState)."""
    link = f"{sender}/link_to_{dest}"
    src, via = f"{sender}/out/{dest}/{robot}", f"{dest}/exit/{robot}/{sender}"
    w = wire(f"{src}/{leaf}", up_type, "uplink", recorded=False)
    w.publishers[sender_key] = f"out/{dest}/{robot}/{leaf}"
    w.subscribers.add(link)
    w = wire(f"{via}/{leaf}", up_type, "uplink", recorded=sender == robot)
    w.publishers[link] = f"{ns}/{via}/{leaf}"
    w.subscribers.add(node_key)
    w = wire(f"{via}/answer", JOINT_STATE, "downlink", recorded=False)
    w.publishers[node_key] = f"exit/{robot}/{sender}/answer"
    w.subscribers.add(link)
    w = wire(f"{src}/answer", JOINT_STATE, "downlink", recorded=record_answers)
    w.publishers[link] = f"{ns}/{src}/answer"
    w.subscribers.add(sender_key)


def _node_wires(out: _Wires, topo: Topology, servers: list[str], node: str) -> list[Wire]:
    """Each serving node's ``server/batches`` and every non-robot node's (and link's)
    ``events``: the telemetry that closes a features graph's list of topics."""
    wire = out.wire
    for name in servers:
        w = wire(f"{name}/{BATCHES}", JOINT_STATE, "telemetry")
        w.publishers[f"{name}/{node}"] = BATCHES
    keys = {k for w in out.values() for k in [*w.publishers, *w.subscribers]}
    robots = tuple(f"{r.name}/" for r in topo.robots)
    for key in sorted(k for k in keys if not k.startswith(robots) or "/link_to_" in k):
        w = wire(f"{key.rsplit('/', 1)[0]}/events", "diagnostic_msgs/msg/DiagnosticStatus",
                 "telemetry")
        w.publishers[key] = "events"
    return list(out.values())


def exit_wires(cfg: GraphConfig, topo: Topology, plan: ExitPlan) -> list[Wire]:
    ns = cfg.namespace.rstrip("/")
    out = _draft_fleet(cfg, topo)
    wire = out.wire
    for robot, sender, dest in flows(topo, plan):
        _flow_wires(wire, ns, robot, sender, _sender_key(topo, sender), dest,
                    f"{dest}/exit_node", record_answers=False)
    return _node_wires(out, topo, serving_nodes(topo, plan), "exit_node")


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
    ready = (("ready", f"{ns}/ready"),)
    net = cfg.early_exit_path
    specs: list[NodeSpec] = []
    pairs: dict[tuple[str, str], list[str]] = {}
    for robot, sender, dest in flows(topo, plan):
        pairs.setdefault((sender, dest), []).append(f"{robot}:{sender}:{dest}")
    robots = {r.name: r for r in topo.robots}
    for i, r in enumerate(topo.robots):
        links = [f"{ns}/{s}/link_to_{d}" for s, d in pairs]
        for s in nodes(_robot_cfg(cfg, r)):
            if s.name == "sim_node":
                specs.append(replace(s, parameters={
                    **s.parameters, "first_episode": i * cfg.episodes,
                    "wait_for": [*links, f"{ns}/{MANAGER}"]}, namespace=r.name, remaps=ready))
            elif s.name == "draft_node":
                params = {k: v for k, v in s.parameters.items()
                          if k not in ("draft", "target", "calibration", "tau",
                                       "uncertainty_tau", "random_skip", "link")}
                specs.append(replace(s, parameters={
                    **params, "mode": cfg.mode, "early_exit": net, "exit_plan": cfg.exit_plan,
                    "robot": r.name, "first_episode": i * cfg.episodes},
                    namespace=r.name, remaps=ready))
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
        specs.append(NodeSpec("exit_node", "hybrid_policy.families.exits.exit_node", "exit_node", {
            "task": cfg.task, "early_exit": net, "temperature": cfg.temperature,
            "end": plan.ends[name], "threshold": plan.thresholds.get(name, 1.0),
            "offload": [f"{d}:{p!r}" for d, p in plan.offload.get(name, {}).items()],
            "max_batch": node.max_batch, "batch_window_ms": node.batch_window_ms,
            "inputs": inputs[name]}, respawn=True, namespace=name, remaps=ready))
    managed = [f"{ns}/{n}/exit_node" for n in computing] + [
        f"{ns}/{r.name}/draft_node" for r in topo.robots]
    return _finish(cfg, specs, everything, managed, exit_info(topo, plan))


def exit_info(topo: Topology, plan: ExitPlan) -> list[str]:
    """The fleet's shape for the bag: robots (name:first node:link), the computing nodes,
    and each robot's first nodes (its features' first hop: one server operation each)."""
    first = ";".join(f"{r.name}=" + "|".join(plan.offload.get(r.name, {})) for r in topo.robots)
    return [f"robots={','.join(f'{r.name}:{r.access}:{r.link.name}' for r in topo.robots)}",
            f"servers={','.join(serving_nodes(topo, plan))}", f"first_nodes={first}"]


# -- rocoin fleets -----------------------------------------------------------------------
def rocoin_flows(topo: Topology, layout) -> list[tuple[str, str, int]]:
    """``(robot, device, device index)``: every robot sends each window to every device."""
    return [(r.name, d, i) for r in topo.robots for i, d in enumerate(layout.devices)]


def rocoin_wires(cfg: GraphConfig, topo: Topology, layout) -> list[Wire]:
    """A rocoin fleet's topics: the robots' own, and per robot and device the flow of its
    windows (``_flow_wires``, sender = the robot), recording the windows that reached each
    device and the answers that reached the robot (per device and so per group)."""
    ns = cfg.namespace.rstrip("/")
    out = _draft_fleet(cfg, topo)
    wire = out.wire
    for robot, dev, _ in rocoin_flows(topo, layout):
        _flow_wires(wire, ns, robot, robot, f"{robot}/draft_node", dev,
                    f"{dev}/student_node", record_answers=True)
    return _node_wires(out, topo, list(layout.devices), "student_node")


def rocoin_nodes(cfg: GraphConfig) -> list[NodeSpec]:
    """The nodes of a rocoin fleet: per robot its simulator and draft node and one link node
    per device (``NS/R/link_to_D``, the copy's own packet randomness ``device_hop(i)``); per
    device of the layout its ``NS/D/student_node`` (respawned when it crashes)."""
    from hybrid_policy.families.rocoin.rocoin import Layout, config_of, device_hop

    topo = load(cfg)
    if not cfg.rocoin_layout:
        raise HybridPolicyError(f"mode {cfg.mode} over ROS needs its layout (rocoin_layout: the "
                                "JSON `hybrid-policy bringup` writes)")
    layout = Layout.load(cfg.rocoin_layout)
    if layout.mode != cfg.mode:
        raise HybridPolicyError(f"{cfg.rocoin_layout}: a layout for {layout.mode}, not "
                                f"{cfg.mode}")
    faults = config_of(topo, topo_mod.read(cfg.topology)).faults
    ns = cfg.namespace.rstrip("/")
    everything = rocoin_wires(cfg, topo, layout)
    ready = (("ready", f"{ns}/ready"),)
    specs: list[NodeSpec] = []
    for i, r in enumerate(topo.robots):
        links = [f"{ns}/{r.name}/link_to_{d}" for d in layout.devices]
        for s in nodes(_robot_cfg(cfg, r)):
            if s.name == "sim_node":
                specs.append(replace(s, parameters={
                    **s.parameters, "first_episode": i * cfg.episodes,
                    "wait_for": [*links, f"{ns}/{MANAGER}"]}, namespace=r.name, remaps=ready))
            elif s.name == "draft_node":
                params = {k: v for k, v in s.parameters.items()
                          if k not in ("calibration", "tau", "uncertainty_tau", "random_skip",
                                       "link")}
                specs.append(replace(s, parameters={
                    **params, "mode": cfg.mode, "target": cfg.target_path,
                    "rocoin_layout": cfg.rocoin_layout, "robot": r.name,
                    "first_episode": i * cfg.episodes}, namespace=r.name, remaps=ready))
        for j, d in enumerate(layout.devices):
            specs.append(NodeSpec("link_node", "hybrid_policy.ros.link_node", f"link_to_{d}", {
                "carries": "features", "root": ns, "flows": [f"{r.name}:{r.name}:{d}"],
                "links": [link_spec(k) for k in topo.links_between(r, d)],
                "packet_hop": device_hop(j)}, respawn=True, namespace=r.name, remaps=ready))
    for d in layout.devices:
        node = topo.nodes[d]
        specs.append(NodeSpec("student_node", "hybrid_policy.families.rocoin.student_node", "student_node", {
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
    return _finish(cfg, specs, everything, managed, rocoin_info(topo, layout))


def rocoin_info(topo: Topology, layout) -> list[str]:
    """The fleet's shape for the bag: robots (name:access:link), the devices, and the
    layout's groups (``layout=d0|d1;d2|d3``: group j's devices) so analysis can map each
    device's answers to its group."""
    return [f"robots={','.join(f'{r.name}:{r.access}:{r.link.name}' for r in topo.robots)}",
            f"servers={','.join(layout.devices)}",
            f"layout={';'.join('|'.join(g) for g in layout.groups)}"]


# -- placement fleets (inference delivery network) ---------------------------------------
PLACEMENT_NS = "placement"  # NS/placement/placement_node, NS/placement/allocation
DIAGNOSTIC_ARRAY = "diagnostic_msgs/msg/DiagnosticArray"


def idn_config(path: str, topo: Topology):
    """The topology's ``idn`` block, refused where ROS cannot run it: shifts (robots moving
    cell or switching task) run in process only, and ``placement`` names the placement
    node's namespace."""
    from hybrid_policy.families.idn import idn

    cfg = idn.config_of(topo, topo_mod.read(path))
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
    from hybrid_policy.families.idn import idn
    from hybrid_policy.families.idn import catalogue as idn_catalogue

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
    of its act requests (``_flow_wires``, recording what the robot sent, what reached the
    node and the answers that came back); the allocation, each node's holdings, and the
    robots' steps, which the placement node counts."""
    ns = cfg.namespace.rstrip("/")
    out = _draft_fleet(cfg, topo)
    wire = out.wire
    placement = f"{PLACEMENT_NS}/placement_node"
    paths = idn_paths(topo, net)
    for robot, path in paths.items():
        for node in path:
            _flow_wires(wire, ns, robot, robot, f"{robot}/draft_node", node,
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
    return _node_wires(out, topo, serving, "idn_node")


def idn_nodes(cfg: GraphConfig) -> list[NodeSpec]:
    """The nodes of a placement fleet (see the module doc): per robot its simulator, its
    draft node (``IdnMode``) and one link node per node of its path (link ``i`` of the way
    draws ``packet_rng(seed, i)``, as ``core.fleet``); per serving node its ``idn_node``
    (respawned when it dies); the placement node. The managed nodes: the idn nodes, then
    the drafts, which activate once the first allocation is loaded on their path."""
    topo, net = idn_network(cfg)
    ns = cfg.namespace.rstrip("/")
    everything = idn_wires(cfg, topo, net)
    ready = (("ready", f"{ns}/ready"),)
    paths, serving = idn_paths(topo, net), idn_serving(topo, net)
    common = {"topology": cfg.topology, "catalogue": cfg.idn_catalogue, "root": ns,
              "models": cfg.models}
    placement = f"{ns}/{PLACEMENT_NS}/placement_node"
    specs: list[NodeSpec] = []
    for i, r in enumerate(topo.robots):
        links = [f"{ns}/{r.name}/link_to_{n}" for n in paths[r.name]]
        for s in nodes(_robot_cfg(cfg, r)):
            if s.name == "sim_node":
                specs.append(replace(s, parameters={
                    **s.parameters, "first_episode": i * cfg.episodes,
                    "wait_for": [*links, placement, f"{ns}/{MANAGER}"]}, namespace=r.name,
                    remaps=ready))
            elif s.name == "draft_node":
                params = {k: v for k, v in s.parameters.items()
                          if k not in ("draft", "target", "calibration", "tau",
                                       "uncertainty_tau", "random_skip", "link")}
                specs.append(replace(s, parameters={
                    **params, **common, "mode": cfg.mode, "robot": r.name,
                    "first_episode": i * cfg.episodes}, namespace=r.name, remaps=ready))
        spec = net.robot_at(r.name, r.access)  # as core.fleet routes its requests
        for node in paths[r.name]:
            specs.append(NodeSpec("link_node", "hybrid_policy.ros.link_node", f"link_to_{node}", {
                "carries": "act", "root": ns, "flows": [f"{r.name}:{r.name}:{node}"],
                "links": [link_spec(k) for k in topo.links_between(spec, node)]},
                respawn=True, namespace=r.name, remaps=ready))
    for name in serving:
        node = topo.nodes[name]
        specs.append(NodeSpec("idn_node", "hybrid_policy.families.idn.idn_node", "idn_node", {
            **common, "node": name, "inputs": [r for r, p in paths.items() if name in p],
            "max_batch": node.max_batch, "batch_window_ms": node.batch_window_ms},
            respawn=True, namespace=name, remaps=ready))
    specs.append(NodeSpec("placement_node", "hybrid_policy.families.idn.placement_node",
                          "placement_node", {**common, "mode": cfg.mode, "seed": cfg.seed,
                                             "start_after": f"{ns}/{MANAGER}"},
                          namespace=PLACEMENT_NS, remaps=ready))
    managed = [f"{ns}/{n}/idn_node" for n in serving] + [
        f"{ns}/{r.name}/draft_node" for r in topo.robots]
    return _finish(cfg, specs, everything, managed, idn_info(topo, net))


def idn_info(topo: Topology, net) -> list[str]:
    """The fleet's shape for the bag: robots (name:access:link), the serving nodes, the
    repository and each robot's path (``paths=r0=cell_a|regional|cloud;...``: where its
    requests may go)."""
    paths = idn_paths(topo, net)
    return [f"robots={','.join(f'{r.name}:{r.access}:{r.link.name}' for r in topo.robots)}",
            f"servers={','.join(idn_serving(topo, net))}", f"repository={net.repository}",
            f"paths={';'.join(f'{r}=' + '|'.join(p) for r, p in paths.items())}"]
