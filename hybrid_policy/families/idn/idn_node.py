"""A compute node of a placement-mode fleet (``core.idn``): it holds the policy variants the
placement gives it, loading and unloading them while the fleet runs, and answers the robots'
``act`` requests with them.

Topics (the node runs as ``NS/<node>/idn_node``; ``NS`` = parameter ``root``):

- subscribes ``NS/placement/allocation`` (``diagnostic_msgs/DiagnosticArray``, latched; see
  ``placement_node``) and applies its own entry: variants it drops are unloaded at once,
  new ones loaded into its ``NodeStore`` and usable after the topology's load time
  (``idn.load_ms_per_mparam``), as ``core.idn.Holdings`` models it. Each load and unload is
  an event (``loaded``/``unloaded`` with ``variant`` and ``period``). An allocation naming an
  unknown node or variant, or more than a node holds, is reported (``rejected placement``)
  and ignored whole: the node keeps what it holds and keeps serving;
- publishes ``holdings`` (``diagnostic_msgs/DiagnosticStatus``, latched): ``name`` = the node,
  ``message`` = ``period <k>`` (the allocation it follows), one ``KeyValue`` per variant it
  holds, ``key`` = ``task/name``, ``value`` = ``loaded`` or ``loading``. A robot routes a
  request to a variant only while its node reports it ``loaded`` (``PlacementView``);
- subscribes ``exit/<R>/<R>/request`` per robot ``R`` of ``inputs`` (``sensor_msgs/JointState``,
  a ``protocol.Request`` of kind ``act``; **the variant key travels in ``header.frame_id``**),
  as the robot's link node delivers it; requests join one FIFO (``BatchQueue``: up to
  ``max_batch``, ``batch_window_ms`` after the first) and are answered by
  ``idn_serve.serve_variants``, the call the in-process fleet makes, on
  ``exit/<R>/<R>/answer`` (a ``protocol.Response``, stamp = the request's). A request for a
  variant the node does not hold (dropped meanwhile) is reported (``refused: variant not
  held``) and dropped: the robot falls back at its deadline. Operations go to
  ``server/batches``, malformed requests to ``events``.

The repository (the topology's top node) holds every variant from ``configure`` on and is
never placed. A managed (lifecycle) node: ``configure`` loads (the repository: everything)
and warms up; placements are applied while it is active, so its first holdings follow the
first allocation once every reader matched.

Also here, for the robot's draft node: ``Holder`` (a node's store following the allocation;
the robot holds variants too) and ``PlacementView`` (the robot's ``idn_serve.Placement`` fed by
the holdings of the nodes on its path).
"""

from __future__ import annotations

import sys
import time
from typing import Callable

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.node import Node
from sensor_msgs.msg import JointState

from hybrid_policy.errors import HybridPolicyError
from hybrid_policy.ros import messages, qos
from hybrid_policy.ros.batch_queue import declare_batching, serve_flows, start_batching
from hybrid_policy.ros.managed import ManagedNode
from hybrid_policy.ros.node_main import run
from hybrid_policy.ros.params import require, string_list
from hybrid_policy.families.idn.placement_node import (
    ALLOCATION, LATCHED, LATCHED_READER, PERIOD, idn_network, parse_allocation, period_of,
)
from hybrid_policy.ros.reporting import OK, STEADY, Reporter

HOLDINGS = "holdings"
LOADED, LOADING = "loaded", "loading"


# -- messages ------------------------------------------------------------------------------
def act_request_msg(stamp, request, variant: str) -> JointState:
    """A robot's ``act`` request for ``variant`` (its key in ``header.frame_id``)."""
    msg = messages.request_msg(stamp, request)
    msg.header.frame_id = variant
    return msg


def parse_act_request(msg: JointState, catalogue) -> tuple[str, object]:
    """``(variant key, protocol.Request)``; ``MessageError`` for an unknown variant, a request
    that is not ``act`` or a window the variant cannot answer."""
    import sim_envs

    key = msg.header.frame_id
    variants = {v.key: v for v in catalogue.variants}
    if key not in variants:
        raise messages.MessageError(f"request names variant {key!r} (header.frame_id); the "
                                    f"catalogue has {', '.join(variants)}")
    req = messages.parse_request(msg)
    v = variants[key]
    dim = sim_envs.task_spec(v.task).obs_dim
    if req.kind != "act" or req.window.shape[0] < v.history or req.window.shape[1] != dim:
        raise messages.MessageError(f"{key} answers 'act' requests of at least {v.history} "
                                    f"observations of {dim} values, got {req.label()}")
    return key, req


def holdings_msg(name: str, period: int, state: dict[str, str]) -> DiagnosticStatus:
    msg = messages.status(name, OK, f"{PERIOD}{period}", state)
    msg.hardware_id = "hybrid_policy"
    return msg


def parse_holdings(msg: DiagnosticStatus, net) -> tuple[str, int, dict[str, bool]]:
    """``(node, period, {variant key: loaded})`` of a holdings message."""
    variants = {v.key for v in net.catalogue.variants}
    state = messages.status_values(msg)
    bad = sorted(set(state) - variants)
    if bad or any(s not in (LOADED, LOADING) for s in state.values()):
        raise messages.MessageError(f"holdings of {msg.name}: variants must be catalogue keys "
                                    f"with value {LOADED} or {LOADING}, got {state}")
    return msg.name, period_of(msg.message), {k: s == LOADED for k, s in state.items()}


# -- what a node holds ----------------------------------------------------------------------
def load_variant(store, v) -> None:
    """``NodeStore.load`` and one answer on a zero window: the first torch calls are slow."""
    from hybrid_policy.core.protocol import Request
    import sim_envs

    store.load(v)
    window = np.zeros((v.history, sim_envs.task_spec(v.task).obs_dim), np.float32)
    store.serve(v.key, [Request("act", window, 0)])


class Holder:
    """What node ``name`` (a compute node or a robot) holds, following the allocation topic:
    ``core.idn.Holdings`` restricted to the node's own slots (when each load is usable)
    applied to its ``NodeStore``. Enabled once the node can load models (configured or
    active); until then the latest allocation waits."""

    def __init__(self, node: Node, net, name: str, store, report: Reporter, root: str,
                 changed: Callable[[], None] = lambda: None) -> None:
        from hybrid_policy.families.idn.idn import Holdings

        self.node, self.net, self.name, self.store = node, net, name, store
        self.report, self.changed = report, changed
        self.holdings = Holdings(net)
        self.mine = np.array([n == name for n, _ in net.slots], bool)
        self.latest: tuple[int, np.ndarray] | None = None  # the last allocation received
        self.period = -1  # the allocation applied
        self.enabled = False
        self.t0 = time.monotonic()
        self._loading: dict[int, object] = {}  # slot -> the timer that ends its load
        node.create_subscription(DiagnosticArray, f"{root}/{ALLOCATION}",
                                 report.guard("placement", self.offer), LATCHED_READER)

    def now_ms(self) -> float:
        return (time.monotonic() - self.t0) * 1e3

    def offer(self, msg: DiagnosticArray) -> None:
        self.latest = parse_allocation(msg, self.net)  # a bad one raises: reported, ignored
        if self.enabled:
            self.apply()

    def enable(self) -> None:
        self.enabled = True
        if self.latest is not None:
            self.apply()

    def apply(self) -> None:
        """Drop what the allocation leaves out, load what it adds (``Holdings.apply``)."""
        period, x = self.latest
        mine = np.where(self.mine, x, 0).astype(np.int8)
        before = self.holdings.x.copy()
        loads = self.holdings.apply(mine, self.now_ms())
        for s in np.flatnonzero((before == 1) & (mine == 0)):
            key = self.net.slots[s][1].key
            timer = self._loading.pop(int(s), None)
            if timer is not None:  # dropped while loading
                self.node.destroy_timer(timer)
            self.store.unload(key)
            self.report.event("unloaded", {"variant": key, "period": period}, level=OK,
                              log=False)
        for s in loads:
            self._load(int(s), period)
        self.period = period
        self.changed()

    def _load(self, slot: int, period: int) -> None:
        load_variant(self.store, self.net.slots[slot][1])
        wait_s = (self.holdings.ready_ms[slot] - self.now_ms()) / 1e3
        if wait_s <= 0:
            self._loaded(slot, period)
            return

        def ready() -> None:
            self.node.destroy_timer(self._loading.pop(slot))
            self._loaded(slot, period)
            self.changed()

        self._loading[slot] = self.node.create_timer(wait_s, ready, clock=STEADY)

    def _loaded(self, slot: int, period: int) -> None:
        if self.holdings.x[slot]:
            self.report.event("loaded", {"variant": self.net.slots[slot][1].key,
                                         "period": period}, level=OK, log=False)

    def available(self) -> np.ndarray:
        """Per slot of the network: held here and loaded."""
        return self.holdings.available(self.now_ms()) & self.mine

    def state(self) -> dict[str, str]:
        """Every variant held: ``loaded`` or ``loading`` (the repository's: loaded)."""
        ok = self.available()
        out = {self.net.slots[s][1].key: LOADED if ok[s] else LOADING
               for s in np.flatnonzero(self.holdings.x)}
        return {**{k: LOADED for k in self.store.held if k not in out}, **out}

    @property
    def complete(self) -> bool:
        """The latest allocation is applied and every variant of it loaded."""
        return (self.latest is not None and self.period == self.latest[0]
                and LOADING not in self.state().values())


class PlacementView:
    """A robot's ``idn_serve.Placement``: a slot of a node on its path is available while that
    node reports the variant loaded and the latest allocation still gives it (a drop takes
    effect at once, as in ``core.fleet``); its own slots come from its ``Holder``."""

    def __init__(self, node: Node, net, path: list[str], own: Holder, report: Reporter,
                 root: str) -> None:
        from hybrid_policy.families.idn.serve import Placement

        self.net, self.path, self.own = net, path, own
        self.placement = Placement(net)
        self.remote: dict[str, tuple[int, dict[str, bool]]] = {}
        guarded = report.guard("holdings", self.on_holdings)
        for n in path:
            node.create_subscription(DiagnosticStatus, f"{root}/{n}/{HOLDINGS}", guarded,
                                     LATCHED_READER)

    def on_holdings(self, msg: DiagnosticStatus) -> None:
        name, period, state = parse_holdings(msg, self.net)
        if name not in self.path:
            raise messages.MessageError(f"holdings of {name!r}, not a node on this robot's "
                                        f"path ({', '.join(self.path)})")
        self.remote[name] = (period, state)

    def refresh(self) -> None:
        """What serves the next step (``IdnMode.plan`` reads ``placement.available``)."""
        avail = self.own.available()
        placed = self.own.latest[1] if self.own.latest is not None else avail
        for node, (_, state) in self.remote.items():
            for key, loaded in state.items():
                slot = self.net.slot_of.get((node, key))
                if slot is not None and loaded and placed[slot]:
                    avail[slot] = True
        self.placement.available = avail

    def blocker(self) -> str | None:
        """Why the robot cannot start yet: the first allocation not received, or not yet
        loaded here or on a node of its path."""
        if self.own.latest is None:
            return f"no allocation received on {ALLOCATION}"
        period = self.own.latest[0]
        if not self.own.complete:
            return f"its own variants of allocation {period} are not loaded"
        behind = [n for n in self.path if n not in self.remote or self.remote[n][0] < period
                  or not all(self.remote[n][1].values())]
        if behind:
            return f"{', '.join(behind)} not yet holding allocation {period} loaded"
        return None


# -- the node ----------------------------------------------------------------------------------
class IdnNode(ManagedNode):
    def __init__(self) -> None:
        from hybrid_policy.families.idn.serve import NodeStore, VariantModels

        super().__init__("idn_node")
        self.net = idn_network(self)
        self.name = require(self, "node", "", "this node's name in the topology")
        if self.name not in self.net.topology.nodes:
            raise HybridPolicyError(f"node {self.name!r} is not in the topology (nodes: "
                                    f"{', '.join(self.net.topology.nodes)})")
        self.repository = self.name == self.net.repository
        models = require(self, "models", "", "root of the variants' models "
                         "(MODELS/<task>/{draft,target,early_exit})")
        root = require(self, "root", "", "the graph's namespace (the allocation topic)")
        self.max_batch, self.window_s = declare_batching(self, "requests")
        inputs = string_list(self, "inputs", "the robots whose requests reach this node")
        if not inputs:
            raise HybridPolicyError("parameter 'inputs' is required (robot names)")
        up, down = qos.declare(self, "uplink"), qos.declare(self, "downlink")
        telemetry = qos.declare(self, "telemetry")
        self.report = Reporter(self, telemetry)
        self.store = NodeStore(VariantModels(models))
        self.holdings_pub = self.create_publisher(DiagnosticStatus, HOLDINGS, LATCHED)
        self.holder = Holder(self, self.net, self.name, self.store, self.report, root,
                             changed=self._publish_holdings)
        self.report.extra = lambda: {"state": self.state_label, "served": self.served,
                                     "holds": ",".join(sorted(self.store.held))}
        publishers = {"events": self.report.events, HOLDINGS: self.holdings_pub}
        guarded = self.report.guard("request", self.on_request)
        serve_flows(self, [(r, r) for r in inputs], JointState, "request",
                    lambda msg, robot, pub, info: guarded(msg, pub, info), up, down, publishers)
        # queue: (stamp, variant key, request, answer publisher, arrival ns) in arrival order
        self.batch_pub, self.gate, self.queue = start_batching(self, telemetry, publishers,
                                                               self._serve_batch)
        self.served = 0
        self.get_logger().info(f"{self.name}{' (repository)' if self.repository else ''}: "
                               f"serving {', '.join(inputs)}: unconfigured")

    def load(self) -> str:
        if self.repository:  # every variant, from the start, never placed
            for v in self.net.catalogue.variants:
                load_variant(self.store, v)
        return f"holds {', '.join(sorted(self.store.held)) or 'nothing yet'}"

    def activation_blocker(self) -> str | None:
        return f"readers not matched {self.gate.missing()}" if not self.gate.matched() else None

    def activated(self) -> None:
        self.holder.enable()  # the allocation in force, and every one after it
        self._publish_holdings()

    def deactivated(self) -> None:
        self.holder.enabled = False
        self.queue.drop_all("requests")

    def _publish_holdings(self) -> None:
        self.holdings_pub.publish(holdings_msg(self.name, max(self.holder.period, 0),
                                               self.holder.state()))

    def on_request(self, msg: JointState, pub, info: dict) -> None:
        if not self.active:
            raise messages.MessageError("idn_node is not active: not served")
        key, req = parse_act_request(msg, self.net.catalogue)
        self.queue.add((msg.header.stamp, key, req, pub, info["received_timestamp"]))

    def _serve_batch(self, batch: list) -> None:
        from hybrid_policy.families.idn.serve import VariantMissing, serve_variants

        answers = serve_variants(self.store, [(key, req) for _, key, req, *_ in batch])
        for (stamp, key, _, pub, _), answer in zip(batch, answers):
            if isinstance(answer, VariantMissing):
                self.report.event("refused: variant not held", {
                    "stamp": messages.stamp_key(stamp), "variant": key, "reason": answer},
                    log=False)
                continue
            pub.publish(messages.response_msg(stamp, answer))
            self.served += 1

    def close(self) -> str:
        return f"served {self.served}; holds {sorted(self.store.held)}; events: " \
               f"{dict(self.report.counts)}"


def main(args: list[str] | None = None) -> int:
    return run(IdnNode, args)


if __name__ == "__main__":
    sys.exit(main())
