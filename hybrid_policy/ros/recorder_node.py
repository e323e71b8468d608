"""Records the graph's topics into a rosbag2 with MCAP storage (``ros2 bag info``, Foxglove).

Subscribes to each topic raw (serialised CDR, as it crossed DDS) and writes the bytes with
``rosbags``, so no message is re-encoded. The bag is closed on shutdown (SIGINT/SIGTERM)
and always holds every message received until then. Topics and types come from the graph
description (``topics``: ``name:type``, names relative to the node's namespace).

The recorder is off the control path, so it yields the CPU to it (``nice``, default 10);
its subscriptions queue deep enough (``RECORD_DEPTH``) that catching up between steps
loses nothing. On the 2-core machine a bag still costs the 25 Hz graph about 3 ms of step
latency p95 and 1-3% more missed ticks, at nice 0 and 10 alike (``bench/ros_overhead.py
--graph``, docs/results.md): the cost is the recorder's share of two cores, not its turn.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from rclpy.node import Node
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from hybrid_policy.errors import HybridPolicyError
from hybrid_policy.ros import qos
from hybrid_policy.ros.graph import TOPICS
from hybrid_policy.ros.node_main import run
from hybrid_policy.ros.params import declare, require, string_list

TYPESTORE = Stores.ROS2_KILTED
# Messages a subscription keeps while the node is busy writing: a control topic's depth (10)
# is a few steps, and a recorder starved of CPU for that long would lose messages.
RECORD_DEPTH = 1000


def message_class(type_name: str):
    """The rclpy message class of ``pkg/msg/Type``."""
    import importlib

    pkg, _, name = type_name.split("/")
    return getattr(importlib.import_module(f"{pkg}.msg"), name)


class RecorderNode(Node):
    def __init__(self) -> None:
        super().__init__("recorder_node")
        path = Path(require(self, "bag", ""))
        niceness = int(declare(self, "nice", 10, "CPU niceness added to the recorder's process "
                               "(0-19): it runs after the control path"))
        if not 0 <= niceness <= 19:
            raise ValueError(f"nice must be in 0..19, got {niceness}")
        os.nice(niceness)
        entries = string_list(self, "topics")
        if not entries:
            raise HybridPolicyError("parameter 'topics' is empty: nothing to record")
        if path.exists():
            raise HybridPolicyError(f"{path}: already exists; rosbag2 writes a new directory")
        store = get_typestore(TYPESTORE)
        self.writer = Writer(path, version=9, storage_plugin=StoragePlugin.MCAP)
        self.writer.open()
        for item in string_list(self, "run_info"):
            key, _, value = item.partition("=")
            self.writer.set_custom_data(f"hybrid_policy.{key}", value)
        self.count = 0
        ns = self.get_namespace().rstrip("/")
        profiles = {role: qos.declare(self, role) for role in qos.ROLES}
        for prof in profiles.values():  # a recorder that falls behind queues, never drops
            prof.depth = max(prof.depth, RECORD_DEPTH)
        for entry in entries:
            name, _, type_name = entry.partition(":")
            parts = name.split("/")  # a fleet's robot topics: NS/<robot>/<graph topic>
            role = next((TOPICS[t].role for t in ("/".join(parts[i:]) for i in range(len(parts)))
                         if t in TOPICS), "telemetry")
            conn = self.writer.add_connection(f"{ns}/{name}", type_name, typestore=store)
            self.create_subscription(message_class(type_name), name,
                                     lambda raw, c=conn: self._write(c, raw), profiles[role],
                                     raw=True)
        self.get_logger().info(f"recording {len(entries)} topics to {path}")

    def _write(self, conn, raw: bytes) -> None:
        self.writer.write(conn, self.get_clock().now().nanoseconds, raw)
        self.count += 1

    def close(self) -> str:
        self.writer.close()
        return f"closed bag with {self.count} messages"


def main(args: list[str] | None = None) -> int:
    return run(RecorderNode, args)


if __name__ == "__main__":
    sys.exit(main())
