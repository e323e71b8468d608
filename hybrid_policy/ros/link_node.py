"""A link between two nodes of the graph, as a relay with a named link profile.

Each request is delayed by the profile's one-way time for its real serialised size (or
dropped with the profile's loss probability) before it is passed on; each response
likewise on the way back. Loss and jitter are drawn from ``core.link.packet_rng(request
seed, hop)`` in the same order as the in-process evaluators, so both see the same link for
the same request. Losses are reported on ``events``.

A robot's own link (``clients`` unset) relays ``uplink/request`` → ``server/request`` and
``server/response`` → ``downlink/response``; a fleet remaps the server side to its server's
topics for this robot. A hop between two compute nodes of a fleet relays, for each client
robot ``c`` (``clients``: ``c:k``, the hop's place ``k`` on c's route; ``upstream``: the next
node's namespace), ``server/c/request`` → ``UPSTREAM/server/c/request`` and the responses
back. ``uplink_mbps``, ``downlink_mbps`` and ``delay_ms`` override the profile's figures (as
a topology may per hop).

Early-exit fleets (``carries: features``): the link between a sender (a robot or a compute
node) and the next computing node carries, for each ``flows`` entry ``robot:sender:dest``,
the features ``ROOT/sender/out/dest/robot/feature`` (``sensor_msgs/Image``) to
``ROOT/dest/exit/robot/sender/feature`` and the answers back from ``…/answer``; ``links``
is the chain of links between the two (``profile`` or ``profile:up_mbps:down_mbps:delay_ms``,
-1 = the profile's), crossed one after the other, the ``i``-th drawing
``packet_rng(seed, protocol.feature_hop(layer, i))`` as ``core.fleet`` does; rocoin
fleets set ``packet_hop`` (``core.rocoin.device_hop`` of the device): every link then draws
``packet_rng(seed, packet_hop)``, both ways, as ``core.fleet`` does for a copy.

Placement fleets (``carries: act``): the same chain of links and ``flows``, carrying a
robot's ``act`` requests (``sensor_msgs/JointState``, ``protocol.Request``; the variant key in
``header.frame_id``) from ``ROOT/sender/out/dest/robot/request`` to
``ROOT/dest/exit/robot/sender/request`` and the answers back; the ``i``-th link draws
``packet_rng(seed, i)``, as ``core.fleet`` does for a request of a placement mode.
"""

from __future__ import annotations

import sys
from dataclasses import replace

import numpy as np
from rclpy.node import Node
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import Image, JointState

from hybrid_policy.core.link import LinkProfile, link_profile, packet_rng, parse_link_spec
from hybrid_policy.core.protocol import feature_hop
from hybrid_policy.errors import HybridPolicyError
from hybrid_policy.ros import messages, qos
from hybrid_policy.ros.delay_line import DelayLine
from hybrid_policy.ros.packet_link import PacketLink, report_loss
from hybrid_policy.ros.node_main import run
from hybrid_policy.ros.params import declare, require, string_list
from hybrid_policy.ros.readiness import ReadyGate
from hybrid_policy.ros.reporting import Reporter


class LinkNode(Node):
    def __init__(self) -> None:
        super().__init__("link_node")
        self.carries = declare(self, "carries", "requests", "requests (draft/target modes) | "
                               "features (early-exit modes: flows, links, root) | act "
                               "(placement modes: flows, links, root)")
        if self.carries not in ("requests", "features", "act"):
            raise HybridPolicyError(f"parameter 'carries' must be requests, features or act, "
                                    f"got {self.carries!r}")
        if self.carries in ("features", "act"):
            self._carry_features()
            return
        self.link = _profile(self)
        clients = dict(_client(c) for c in string_list(
            self, "clients", "robot:hop for each robot whose requests this link carries, hop = "
            "the link's place on its route (fleet hops between compute nodes; unset = one "
            "robot's own link, place 0)"))
        upstream = declare(self, "upstream", "", "namespace of the next node up (with clients)")
        if clients and not upstream:
            raise HybridPolicyError("parameter 'upstream' is required with 'clients'")
        self.hops = clients or {"": 0}
        routes = ([("uplink/request", "server/request", "server/response",
                    "downlink/response", "")] if not clients else
                  [(f"server/{c}/request", f"{upstream}/server/{c}/request",
                    f"{upstream}/server/{c}/response", f"server/{c}/response", c)
                   for c in clients])
        up, down = qos.declare(self, "uplink"), qos.declare(self, "downlink")
        self.report = Reporter(self, qos.declare(self, "telemetry"))
        self.events = self.report.events
        publishers = {"events": self.events}
        for req_in, req_out, resp_in, resp_out, client in routes:
            to_server = self.create_publisher(JointState, req_out, up)
            to_robot = self.create_publisher(JointState, resp_out, down)
            publishers.update({req_out: to_server, resp_out: to_robot})
            self.create_subscription(
                JointState, resp_in, self.report.guard(
                    "response", lambda raw, c=client, p=to_robot: self.on_response(raw, c, p)),
                down, raw=True)
            self.create_subscription(
                JointState, req_in, self.report.guard(
                    "request", lambda raw, c=client, p=to_server: self.on_request(raw, c, p)),
                up, raw=True)
        self.packets = PacketLink(self.link, self._report_loss)
        self.delay = DelayLine()
        self.lost = {"uplink": 0, "downlink": 0}
        self.gate = ReadyGate(self, publishers)
        self.get_logger().info(f"link {self.link.name}: {self.link.delay_ms} ms one way, "
                               f"{self.link.uplink_mbps}/{self.link.downlink_mbps} Mb/s, "
                               f"loss {self.link.loss}"
                               + (f", clients {', '.join(clients)}" if clients else ""))

    def on_request(self, raw: bytes, client: str, out) -> None:
        msg = deserialize_message(raw, JointState)
        key = messages.stamp_key(msg.header.stamp)
        try:
            seed = int(messages.parse_request(msg).seed)
        except messages.MessageError:
            seed = key  # the link carries what it is given; the server will refuse it
        delay = self.packets.up(len(raw), seed, key, self.hops[client], client)
        if delay is not None:
            self.delay.schedule(delay, lambda: out.publish(raw))

    def on_response(self, raw: bytes, client: str, out) -> None:
        key = messages.stamp_key(deserialize_message(raw, JointState).header.stamp)
        delay = self.packets.down(len(raw), key, self.hops[client], client)
        if delay is not None:
            self.delay.schedule(delay, lambda: out.publish(raw))

    # -- early-exit features ----------------------------------------------------------------
    def _carry_features(self) -> None:
        self.chain = [parse_link_spec(spec) for spec in string_list(
            self, "links", "the links crossed, in order: profile[:up_mbps:down_mbps:delay_ms]")]
        flows = [_flow(f) for f in string_list(self, "flows", "robot:sender:dest per robot "
                                                "whose features cross this link")]
        root = require(self, "root", "", "the graph's namespace").rstrip("/")
        self.packet_hop = int(declare(self, "packet_hop", -1, "rocoin: every link draws "
                                      "packet_rng(seed, packet_hop) (-1 = feature_hop; act: "
                                      "the link's place i)"))
        if not self.chain or not flows:
            raise HybridPolicyError(f"carries: {self.carries} needs 'links' and 'flows'")
        up, down = qos.declare(self, "uplink"), qos.declare(self, "downlink")
        self.report = Reporter(self, qos.declare(self, "telemetry"))
        publishers = {"events": self.report.events}
        # what travels up: an early-exit feature (Image) or a placement mode's act request
        self.up_type, leaf = (Image, "feature") if self.carries == "features" else (
            JointState, "request")
        for robot, sender, dest in flows:
            out = f"{root}/{sender}/out/{dest}/{robot}"
            inn = f"{root}/{dest}/exit/{robot}/{sender}"
            to_node = self.create_publisher(self.up_type, f"{inn}/{leaf}", up)
            to_sender = self.create_publisher(JointState, f"{out}/answer", down)
            publishers.update({f"{inn}/{leaf}": to_node, f"{out}/answer": to_sender})
            self.create_subscription(self.up_type, f"{out}/{leaf}", self.report.guard(
                leaf, lambda raw, c=robot, p=to_node: self.on_feature(raw, c, p)), up,
                raw=True)
            self.create_subscription(JointState, f"{inn}/answer", self.report.guard(
                "answer", lambda raw, c=robot, p=to_sender: self.on_answer(raw, c, p)), down,
                raw=True)
        self._chain_rngs: dict[tuple[str, int], list[np.random.Generator]] = {}
        self.delay = DelayLine()
        self.lost = {"uplink": 0, "downlink": 0}
        self.gate = ReadyGate(self, publishers)
        self.get_logger().info(f"{self.carries} over {' + '.join(k.name for k in self.chain)} "
                               f"for {', '.join(':'.join(f) for f in flows)}")

    def on_feature(self, raw: bytes, robot: str, out) -> None:
        """A feature or an act request on its way up the chain."""
        msg = deserialize_message(raw, self.up_type)
        key = messages.stamp_key(msg.header.stamp)
        try:
            if self.carries == "act":
                seed, layer = messages.parse_request(msg).seed, 0
            else:
                feature = messages.parse_feature(msg)
                seed, layer = feature.seed, feature.layer
        except messages.MessageError:
            seed, layer = key % 2**31, 0  # carried as given; the node will refuse it
        rngs = [packet_rng(seed, self._hop(layer, i)) for i in range(len(self.chain))]
        total = 0.0
        for link, rng in zip(self.chain, rngs):
            t = link.deliver(len(raw), True, rng)
            if t is None:
                self._report_loss("uplink", key, robot)
                return
            total += t
        self._chain_rngs[(robot, key)] = rngs
        self.delay.schedule(total, lambda: out.publish(raw))

    def on_answer(self, raw: bytes, robot: str, out) -> None:
        key = messages.stamp_key(deserialize_message(raw, JointState).header.stamp)
        rngs = self._chain_rngs.pop((robot, key), None) or [
            packet_rng(key % 2**31, self._hop(0, i)) for i in range(len(self.chain))]
        total = 0.0
        for link, rng in zip(reversed(self.chain), reversed(rngs)):
            t = link.deliver(len(raw), False, rng)
            if t is None:
                self._report_loss("downlink", key, robot)
                return
            total += t
        self.delay.schedule(total, lambda: out.publish(raw))

    def _hop(self, layer: int, i: int) -> int:
        if self.packet_hop >= 0:
            return self.packet_hop
        return i if self.carries == "act" else feature_hop(layer, i)

    def _report_loss(self, direction: str, key: int, client: str) -> None:
        self.lost[direction] += 1
        report_loss(self.report, direction, key, client)

    def close(self) -> str:
        self.delay.close()
        return f"lost: {self.lost}"


def _client(entry: str) -> tuple[str, int]:
    name, _, hop = entry.partition(":")
    if not name or not hop.isdigit():
        raise HybridPolicyError(f"clients entry {entry!r} is not 'robot:hop' (hop: a whole "
                                "number, the link's place on that robot's route)")
    return name, int(hop)


def _flow(entry: str) -> tuple[str, str, str]:
    parts = entry.split(":")
    if len(parts) != 3 or not all(parts):
        raise HybridPolicyError(f"flows entry {entry!r} is not 'robot:sender:dest'")
    return parts[0], parts[1], parts[2]


def _profile(node: Node) -> LinkProfile:
    """The named profile with the figures a topology may override per hop (-1 = keep)."""
    link = link_profile(require(node, "link", "", "link profile name"))
    overrides = {k: float(declare(node, k, -1.0, f"override the profile's {k} (-1 = keep)"))
                 for k in ("uplink_mbps", "downlink_mbps", "delay_ms")}
    for k, v in overrides.items():
        if v != -1.0 and not (v > 0 or (k == "delay_ms" and v == 0)):
            raise HybridPolicyError(f"parameter '{k}' must be > 0 (delay_ms >= 0) or -1 to keep "
                                    f"the profile's, got {v}")
    return replace(link, **{k: v for k, v in overrides.items() if v != -1.0})


def main(args: list[str] | None = None) -> int:
    return run(LinkNode, args)


if __name__ == "__main__":
    sys.exit(main())
