"""The pieces every fleet's ROS graph is built from (``bringup --topology FILE``; each
family's ``graph`` module builds its own from them, ``ros.fleet_graph`` picks the family).

Built from the same pieces as one robot's graph (``graph.nodes``) and the fleet's topology
(``core.topology``), under the graph's namespace ``NS``: each robot ``R`` gets its
simulator and draft node under ``NS/R`` with the parameters a single-robot graph gives them
(robot ``i`` of ``E`` episodes runs the run's episodes ``i·E …``, ``first_episode``, as
``core.fleet`` does); one lifecycle manager (``NS/lifecycle_manager``) drives the family's
server nodes, then every draft; every node's ``ready`` is remapped to ``NS/ready``; one
recorder writes one bag of every wire marked recorded.

A *wire* is one topic: its publishers and subscribers, which give each node's readiness
``expect``. A *flow* is the way a robot's requests take from a sender (the robot, or a
node that passes them on) to the next node that serves: the sender publishes
``NS/sender/out/dest/robot/<leaf>``, one link node ``NS/sender/link_to_dest`` carries it over
the links between them to ``NS/dest/exit/robot/sender/<leaf>`` and the answers back on
``…/answer``.

No ROS imports and no torch here (the launch file reads it).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from hybrid_policy.core.link import LinkProfile, link_profile
from hybrid_policy.core.topology import Robot, Topology
from hybrid_policy.errors import HybridPolicyError
from hybrid_policy.families import registry
from hybrid_policy.ros.graph import (
    IMAGE, JOINT_STATE, MANAGER, GraphConfig, NodeSpec, active_topics, robot_specs, run_info,
)

SERVER_TOPICS = ("server/request", "server/response")  # per robot in a fleet
BATCHES = "server/batches"  # a server's operations (target_node.BATCH_FIELDS)
# a robot's own request path in one robot's graph: a fleet's families wire their own
REQUEST_TOPICS = ("uplink/request", "downlink/response", *SERVER_TOPICS)


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
    topo = registry.load_topology(cfg.topology)
    other = sorted({r.task for r in topo.robots} - {cfg.task})
    if other:
        raise HybridPolicyError(f"{cfg.topology}: a ROS fleet runs one task ({cfg.task}); "
                                f"robots of other tasks: {', '.join(other)}")
    clash = sorted({r.name for r in topo.robots} & set(topo.nodes))
    if clash:
        raise HybridPolicyError(f"{cfg.topology}: robot and node names share a namespace; "
                                f"rename {', '.join(clash)}")
    return topo


def link_overrides(link: LinkProfile) -> dict[str, float]:
    """Link node parameters for a topology link whose figures differ from its profile's."""
    base = link_profile(link.name)
    return {k: getattr(link, k) for k in ("uplink_mbps", "downlink_mbps", "delay_ms")
            if getattr(link, k) != getattr(base, k)}


class Wires(dict):
    """A graph's topics by name; ``wire`` makes one on its first mention."""

    def wire(self, name: str, type_: str, role: str, recorded: bool = True) -> Wire:
        return self.setdefault(name, Wire(name, type_, role, recorded=recorded))


def draft_fleet(cfg: GraphConfig, topo: Topology) -> Wires:
    """The robots' own topics of a fleet whose draft nodes send their requests themselves
    (no link or server nodes of their own): the start of every features/requests graph."""
    out = Wires()
    robot_wires(cfg, topo, out.wire, {"sim_node", "draft_node"}, REQUEST_TOPICS)
    return out


def robot_wires(cfg: GraphConfig, topo: Topology, wire, local: set[str],
                 skip: tuple[str, ...]) -> None:
    """Each robot's own topics under ``NS/<robot>/`` (those of ``local`` nodes, without
    ``skip``), as a one-robot graph has them."""
    topics = active_topics(cfg)
    for r in topo.robots:
        for t in topics:
            if t.name in skip:
                continue
            w = wire(f"{r.name}/{t.name}", t.type, t.role)
            w.publishers.update({f"{r.name}/{p}": t.name for p in t.publishers if p in local})
            w.subscribers |= {f"{r.name}/{s}" for s in t.subscribers if s in local}


def robot_nodes(cfg: GraphConfig, index: int, robot: Robot, wait_for: list[str],
                draft: dict[str, Any]) -> list[NodeSpec]:
    """Robot ``robot``'s simulator (waiting for ``wait_for`` and the manager) and draft node
    (with the family's parameters ``draft``), in its namespace; robot ``index`` of the fleet
    runs the run's episodes ``index·E …``."""
    ns = cfg.namespace.rstrip("/")
    first = {"first_episode": index * cfg.episodes}
    sim, node = robot_specs(cfg, [*wait_for, f"{ns}/{MANAGER}"])
    return [replace(s, parameters={**s.parameters, **extra, **first}, namespace=robot.name,
                    remaps=ready(cfg))
            for s, extra in ((sim, {}), (node, {**draft, "robot": robot.name}))]


def ready(cfg: GraphConfig) -> tuple[tuple[str, str], ...]:
    """Every node of a fleet announces itself on the graph's one ``ready`` topic."""
    return (("ready", f"{cfg.namespace.rstrip('/')}/ready"),)


def finish(cfg: GraphConfig, specs: list[NodeSpec], everything: list[Wire],
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
            params["expect"] = expected(everything, s.key, bool(cfg.bag))
        out.append(replace(s, parameters=params))
    return out


def expected(everything: list[Wire], key: str, bag: bool) -> list[str]:
    """``"topic count"`` for each topic node ``key`` publishes (readiness handshake)."""
    return [f"{w.publishers[key]} {len(w.subscribers) + (1 if bag and w.recorded else 0)}"
            for w in everything if key in w.publishers]


# -- early-exit fleets -------------------------------------------------------------------
def flow_wires(wire, ns: str, robot: str, sender: str, sender_key: str, dest: str,
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


def node_wires(out: Wires, topo: Topology, servers: list[str], node: str) -> list[Wire]:
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
