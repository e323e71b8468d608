"""The placement of a placement-mode fleet over ROS (``core.idn``): once per ``period_ms`` the
mode's placer (``idn_setup.placer_for``, the call the in-process fleet makes) decides what
every node holds, from the demand the robots showed in the period just ended.

Topics (the node runs as ``NS/placement/placement_node``):

- publishes ``NS/placement/allocation`` (``diagnostic_msgs/DiagnosticArray``, reliable,
  transient-local depth 1: a node that starts or restarts late gets the allocation in force):
  one ``DiagnosticStatus`` per node that can hold variants (robots too), ``name`` = the node,
  ``message`` = ``period <k>`` (0 = the first allocation), one ``KeyValue`` per variant key it
  must hold (``key`` = ``task/name``, ``value`` = its parameters). The repository (the top
  node) holds every variant and is not listed;
- subscribes ``NS/<robot>/step`` of every robot: each step adds the demand of
  ``(robot, task, access)`` as ``core.fleet`` counts a tick's: the control periods since the
  robot's last step (the periods its previous step took, by its ``latency_ms``; 1 at an
  episode's first step), so a robot kept waiting by a far node weighs as much as it needs;
- publishes ``events``: one ``placement`` event per allocation (period, demand, loads).

The first allocation (``decide`` on no requests) goes out once every expected reader matched
(``expect``), before the node announces itself ready; the periods start when the node named
by ``start_after`` (the lifecycle manager: every robot active) announces itself. A period in
which no robot stepped (before the first step, the whole fleet stalled, after the last) is
not decided on and the allocation in force stays: the in-process fleet's simulated periods
always hold steps, and it stops deciding once its robots are done. Robots stay in their
cell and task over ROS (shifts run in process only), so the counts' key is fixed.

Also here, for the nodes that read the topic: ``idn_network`` (the network from a node's
``topology`` and ``catalogue`` parameters) and ``parse_allocation``, which refuses an
allocation naming an unknown node or variant, or more than a node can hold, as a whole.
"""

from __future__ import annotations

import math
import sys
from collections import Counter

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import JointState

from hybrid_policy.errors import HybridPolicyError
from hybrid_policy.ros import messages, qos
from hybrid_policy.ros.node_main import run
from hybrid_policy.ros.params import declare, require
from hybrid_policy.ros.readiness import ReadyGate, ReadyWaiter
from hybrid_policy.ros.reporting import OK, STEADY, Reporter

ALLOCATION = "placement/allocation"  # under the graph's namespace
# Latched: the allocation in force reaches a node that (re)starts after it was published;
# readers queue more, so a node busy loading a model still sees every allocation in turn.
LATCHED = QoSProfile(reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST,
                     depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
LATCHED_READER = QoSProfile(reliability=ReliabilityPolicy.RELIABLE,
                            history=HistoryPolicy.KEEP_LAST, depth=20,
                            durability=DurabilityPolicy.TRANSIENT_LOCAL)
PERIOD = "period "


def idn_network(node: Node):
    """The run's ``core.idn.IdnNetwork`` from the node's ``topology`` and ``catalogue``
    parameters (the files ``bringup`` passes every node of a placement graph)."""
    from hybrid_policy.core import topology
    from hybrid_policy.families.idn import idn
    from hybrid_policy.families.idn import catalogue as idn_catalogue

    path = require(node, "topology", "", "the fleet's topology YAML (with its idn block)")
    cat = require(node, "catalogue", "", "the variants' catalogue JSON (bringup writes it)")
    doc = topology.read(path)
    topo = topology.parse(doc, path)
    return idn.IdnNetwork(topo, idn_catalogue.load(cat), idn.config_of(topo, doc))


def allocation_msg(net, x: np.ndarray, period: int, stamp) -> DiagnosticArray:
    """The integral allocation ``x`` (one flag per slot of ``net``) as a message."""
    msg = DiagnosticArray()
    msg.header.stamp = stamp
    for ns in net.nodes:
        held = [net.slots[s][1] for s in ns.slots if x[s]]
        msg.status.append(messages.status(ns.name, OK, f"{PERIOD}{period}",
                                          {v.key: v.params for v in held}))
    return msg


def period_of(text: str) -> int:
    if not text.startswith(PERIOD) or not text[len(PERIOD):].isdigit():
        raise messages.MessageError(f"message {text!r} is not '{PERIOD}<k>'")
    return int(text[len(PERIOD):])


def parse_allocation(msg: DiagnosticArray, net) -> tuple[int, np.ndarray]:
    """``(period, x)`` of an allocation message; ``MessageError`` (the whole message is
    ignored) when it names an unknown node or variant, a variant that does not fit the
    node, or more than the node can hold."""
    x = np.zeros(len(net.slots), np.int8)
    known = sorted({n for n, _ in net.slots})
    periods = set()
    for st in msg.status:
        periods.add(period_of(st.message))
        if st.name == net.repository and not st.values:
            continue
        if st.name not in known:
            raise messages.MessageError(
                f"allocation names node {st.name!r}, which holds no placed variants; nodes: "
                f"{', '.join(known)} (the repository {net.repository} holds every variant)")
        for kv in st.values:
            slot = net.slot_of.get((st.name, kv.key))
            if slot is None:
                fits = [v.key for n, v in net.slots if n == st.name]
                raise messages.MessageError(f"allocation puts variant {kv.key!r} on {st.name}, "
                                            f"which holds only {', '.join(fits)}")
            x[slot] = 1
    if len(periods) != 1:
        raise messages.MessageError(f"allocation has {len(periods)} periods, expected one")
    for ns in net.nodes:
        used = float(ns.sizes[x[ns.slots] == 1].sum())
        if used > ns.capacity:
            raise messages.MessageError(f"allocation gives {ns.name} {used:.0f} parameters; "
                                        f"it holds {ns.capacity:.0f}")
    return periods.pop(), x


def held_text(net, x: np.ndarray) -> str:
    """``node=variant|variant;...`` of an allocation, for events and logs."""
    out: dict[str, list[str]] = {}
    for s in np.flatnonzero(x):
        node, v = net.slots[s]
        out.setdefault(node, []).append(v.key)
    return ";".join(f"{n}={'|'.join(keys)}" for n, keys in out.items()) or "nothing"


class PlacementNode(Node):
    def __init__(self) -> None:
        from hybrid_policy.families.idn import setup as idn_setup
        from hybrid_policy.families.idn.names import MODES as IDN_MODES

        super().__init__("placement_node")
        self.mode = require(self, "mode", "", f"placement mode: {', '.join(IDN_MODES)}")
        if self.mode not in IDN_MODES:
            raise HybridPolicyError(f"mode {self.mode!r} is not a placement mode; valid: "
                                    f"{', '.join(IDN_MODES)}")
        self.net = idn_network(self)
        seed = int(declare(self, "seed", 0, "the run's seed (INFIDA's rounding, idn_static's "
                                            "optimisation)"))
        root = require(self, "root", "", "the graph's namespace (the robots' step topics)")
        start_after = declare(self, "start_after", "", "node whose ready announcement starts "
                              "the periods (the lifecycle manager; \"\" = at once)")
        self.placer = idn_setup.placer_for(self.mode, self.net, seed,
                                           idn_setup.steps_per_s(self.net.topology))
        telemetry = qos.declare(self, "telemetry")
        self.report = Reporter(self, telemetry)
        self.pub = self.create_publisher(DiagnosticArray, "allocation", LATCHED)
        for name in self.net.robots:
            self.create_subscription(JointState, f"{root}/{name}/step", self.report.guard(
                "step", lambda msg, r=name: self.on_step(r, msg)), telemetry)
        self.counts: Counter = Counter()
        self.waited: dict[str, int] = {}  # per robot: control periods its last step took
        self.period = -1
        self.x = np.zeros(len(self.net.slots), np.int8)
        self.report.extra = lambda: {"period": self.period, "held": held_text(self.net, self.x)}
        self.waiter = ReadyWaiter(self, [start_after]) if start_after else None
        self.gate = ReadyGate(self, {"allocation": self.pub, "events": self.report.events},
                              then=self._first)
        self.get_logger().info(f"{self.mode}: every {self.net.cfg.period_ms:g} ms over "
                               f"{len(self.net.slots)} slots of {len(self.net.nodes)} nodes")

    def on_step(self, robot: str, msg: JointState) -> None:
        import sim_envs

        values = dict(zip(msg.name, msg.position))
        if not {"step", "latency_ms"} <= set(values):
            raise messages.MessageError("a step message needs 'step' and 'latency_ms'")
        r = self.net.robots[robot]
        periods = 1 if values["step"] == 0 else self.waited.get(robot, 1)
        self.counts[(robot, r.task, r.access)] += periods
        period_ms = sim_envs.task_spec(r.task).control_period_ms
        self.waited[robot] = max(1, math.ceil(values["latency_ms"] / period_ms - 1e-9))

    def _first(self) -> None:
        self._publish(self.placer.decide(Counter()), Counter())
        self.counts.clear()
        self._wait = self.create_timer(0.02, self._start, clock=STEADY)

    def _start(self) -> None:
        if self.waiter is not None and not self.waiter.done:
            return
        self.destroy_timer(self._wait)
        self.counts.clear()  # the periods start with the robots
        self.create_timer(self.net.cfg.period_ms / 1e3, self._period, clock=STEADY)

    def _period(self) -> None:
        counts, self.counts = self.counts, Counter()
        if not counts:  # no robot stepped: not a period of the run (module doc)
            return
        self._publish(self.placer.decide(counts), counts)

    def _publish(self, x: np.ndarray, counts: Counter) -> None:
        x = np.asarray(x, np.int8)
        loads = int(((x == 1) & (self.x == 0)).sum())
        self.period += 1
        self.x = x
        self.pub.publish(allocation_msg(self.net, x, self.period,
                                        self.get_clock().now().to_msg()))
        held = held_text(self.net, x)
        self.report.event("placement", {"period": self.period, "demand": sum(counts.values()),
                                        "loads": loads, "held": held}, level=OK, log=False)
        if self.period == 0 or loads:
            self.get_logger().info(f"period {self.period}: {held}")


def main(args: list[str] | None = None) -> int:
    return run(PlacementNode, args)


if __name__ == "__main__":
    sys.exit(main())
