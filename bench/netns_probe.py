"""Robot-side probe of ``netns_link.py`` (bench and test): sends real verify/act requests of a
given observation-window length to ``server/request`` and times each response.

Usage (in the robot namespace, see netns_link.py): python netns_probe.py NAMESPACE OBS_DIM
ROWS[,ROWS...] REPEATS
Prints one JSON object: {"<rows>": {"bytes": payload, "rtt_ms": [...]}, ...}.
"""

import json
import sys
import time

import numpy as np
import rclpy
from lifecycle_msgs.msg import State
from rclpy.node import Node
from sensor_msgs.msg import JointState

from hybrid_policy.core.protocol import Request
from hybrid_policy.ros import messages, qos
from hybrid_policy.ros.lifecycle_client import LifecycleClient


def main() -> None:
    ns, obs_dim, rows_list, repeats = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    rclpy.init()
    node = Node("netns_probe", namespace=ns)
    got: dict[int, float] = {}
    node.create_subscription(JointState, "server/response",
                             lambda m: got.setdefault(messages.stamp_key(m.header.stamp),
                                                      time.perf_counter()),
                             qos.profile("downlink"))
    pub = node.create_publisher(JointState, "server/request", qos.profile("uplink"))
    end = time.monotonic() + 60
    while (pub.get_subscription_count() < 1 or node.count_publishers("server/response") < 1) \
            and time.monotonic() < end:
        rclpy.spin_once(node, timeout_sec=0.1)
    if pub.get_subscription_count() < 1:
        print(json.dumps({"error": "no server discovered across the namespaces"}))
        sys.exit(1)
    lifecycle = LifecycleClient(node, "target_node")
    if lifecycle.state() != State.PRIMARY_STATE_ACTIVE:  # a managed node: bring it up
        lifecycle.bring_up()
    out = {}
    rng = np.random.default_rng(0)
    for rows in (int(r) for r in rows_list.split(",")):
        rtts, size = [], 0
        for i in range(repeats + 2):  # the first two warm the path up
            req = Request("act", rng.random((rows, obs_dim)).astype(np.float32), seed=i)
            stamp = node.get_clock().now().to_msg()
            key = messages.stamp_key(stamp)
            msg = messages.request_msg(stamp, req)
            size = req.payload_bytes()
            t0 = time.perf_counter()
            pub.publish(msg)
            while key not in got and time.perf_counter() - t0 < 10:
                rclpy.spin_once(node, timeout_sec=0.01)
            if key in got and i >= 2:
                rtts.append((got[key] - t0) * 1e3)
        out[str(rows)] = {"bytes": size, "rtt_ms": rtts}
    print(json.dumps(out))
    node.destroy_node()
    rclpy.shutdown()


if __name__ == "__main__":
    main()
