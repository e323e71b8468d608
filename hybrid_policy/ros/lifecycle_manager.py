"""Drives the graph's managed nodes to ``active`` and keeps them there.

The ROS convention for bringing up managed nodes (as nav2's lifecycle manager does), with
the standard ``lifecycle_msgs`` services only: for each node in ``node_names``, in order, it
calls ``configure`` and, once every node before it is active, ``activate``; an activation
the node refuses (its readers are not matched yet) is tried again. When all are active it
announces itself on the latched ``ready`` topic, which the simulator waits for. It keeps
polling their states: a node that was respawned (a crashed server) comes back
``unconfigured`` and is configured and activated again while the rest of the graph runs.
States go to ``/diagnostics``. If the nodes are not all active within ``timeout_s`` the
manager exits with status 1, and ``bringup`` stops the graph.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

from lifecycle_msgs.msg import State, Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rclpy.node import Node

from hybrid_policy.ros.node_main import Finished, run
from hybrid_policy.ros.params import declare, string_list
from hybrid_policy.ros.readiness import announce
from hybrid_policy.ros.reporting import Reporter
from hybrid_policy.ros import qos

NEXT = {State.PRIMARY_STATE_UNCONFIGURED: (Transition.TRANSITION_CONFIGURE, "configure"),
        State.PRIMARY_STATE_INACTIVE: (Transition.TRANSITION_ACTIVATE, "activate")}


@dataclass
class Managed:
    name: str
    get_state: object  # rclpy Client
    change_state: object
    state: int = State.PRIMARY_STATE_UNKNOWN
    label: str = "unknown"
    future: object = None  # the call in flight
    kind: str = ""  # what it asked: get_state, configure, activate
    sent: float = 0.0


class LifecycleManager(Node):
    def __init__(self) -> None:
        super().__init__("lifecycle_manager")
        names = string_list(self, "node_names", "managed nodes, in activation order")
        if not names:
            raise ValueError("parameter 'node_names' is empty: nothing to manage")
        self.timeout_s = float(declare(self, "timeout_s", 120.0,
                                       "s to bring every node to active before giving up"))
        self.period_s = float(declare(self, "period_s", 0.1, "s between steps of bring-up"))
        self.poll_s = float(declare(self, "poll_s", 0.25, "s between state polls of an active "
                                    "node (a respawned node is re-driven within this)"))
        # a call to a node that died is never answered; its respawned process only hears
        # the next one. A state query is answered in ms; a configure loads models, which
        # took 11 s with 22 processes starting on 2 cores (asked twice, it is refused).
        self.state_wait_s = float(declare(self, "state_wait_s", 2.0, "s to wait for a state "
                                          "answer before asking again"))
        self.transition_wait_s = float(declare(self, "transition_wait_s", 30.0, "s to wait for "
                                               "a transition's answer before asking again"))
        self.nodes = [Managed(n, self.create_client(GetState, f"{n}/get_state"),
                              self.create_client(ChangeState, f"{n}/change_state"))
                      for n in names]
        self.report = Reporter(self, qos.declare(self, "telemetry"))
        self.report.extra = lambda: {m.name: m.label for m in self.nodes}
        self.started = time.monotonic()
        self.all_active_once = False
        self.create_timer(self.period_s, self._tick)
        self.get_logger().info(f"managing {', '.join(names)}")

    def _tick(self) -> None:
        for i, m in enumerate(self.nodes):
            if m.future is not None:
                if not m.future.done():
                    wait = (self.state_wait_s if m.kind == "get_state"
                            else self.transition_wait_s)
                    if time.monotonic() - m.sent > wait:  # the node is gone: ask again
                        m.future = None
                    continue
                self._finish_call(m)
            if m.future is None:
                self._next_call(m, ready=all(p.state == State.PRIMARY_STATE_ACTIVE
                                             for p in self.nodes[:i]))
        active = all(m.state == State.PRIMARY_STATE_ACTIVE for m in self.nodes)
        if active and not self.all_active_once:
            self.all_active_once = True
            self.get_logger().info(f"all active after {time.monotonic() - self.started:.1f} s")
            announce(self)
        elif not self.all_active_once and time.monotonic() - self.started > self.timeout_s:
            self.get_logger().error(f"not all active after {self.timeout_s:.0f} s: "
                                    + ", ".join(f"{m.name} {m.label}" for m in self.nodes))
            raise Finished(1)

    def _next_call(self, m: Managed, ready: bool) -> None:
        if not m.get_state.service_is_ready():
            self._set(m, State.PRIMARY_STATE_UNKNOWN, "unknown")
            return
        now = time.monotonic()
        if m.state in NEXT and (m.state != State.PRIMARY_STATE_INACTIVE or ready):
            transition, m.kind = NEXT[m.state]
            req = ChangeState.Request()
            req.transition.id = transition
            m.future, m.sent = m.change_state.call_async(req), now
        elif m.state != State.PRIMARY_STATE_ACTIVE or now - m.sent >= self.poll_s:
            m.future, m.sent, m.kind = m.get_state.call_async(GetState.Request()), now, "get_state"

    def _finish_call(self, m: Managed) -> None:
        future, m.future = m.future, None
        result = future.result()
        if m.kind == "configure_check":  # after a refused configure: did it fail?
            if result.current_state.id == State.PRIMARY_STATE_UNCONFIGURED:
                self.get_logger().error(f"{m.name} failed to configure (its log says why)")
                raise Finished(1)
            self._set(m, result.current_state.id, result.current_state.label)
        elif m.kind == "get_state":
            self._set(m, result.current_state.id, result.current_state.label)
        elif result.success:
            self._set(m, State.PRIMARY_STATE_INACTIVE if m.kind == "configure"
                      else State.PRIMARY_STATE_ACTIVE, m.kind + "d")
        elif m.kind == "configure" and not self.all_active_once:
            # refused: it failed, or an earlier configure that looked lost (a slow load on a
            # busy machine) has configured it meanwhile; its state tells which
            m.future, m.sent = m.get_state.call_async(GetState.Request()), time.monotonic()
            m.kind = "configure_check"
        else:  # refused (activation before its readers matched): poll, then try again
            self._set(m, State.PRIMARY_STATE_UNKNOWN, f"{m.kind} refused")

    def _set(self, m: Managed, state: int, label: str) -> None:
        was_active = m.state == State.PRIMARY_STATE_ACTIVE
        m.state, m.label = state, label.replace("configured", "inactive").replace(
            "activated", "active")
        if was_active and state != State.PRIMARY_STATE_ACTIVE:
            self.report.event("managed node left active", {"node": m.name, "state": label})
        elif state == State.PRIMARY_STATE_ACTIVE and not was_active:
            self.get_logger().info(f"{m.name} active")


def main(args: list[str] | None = None) -> int:
    return run(LifecycleManager, args)


if __name__ == "__main__":
    sys.exit(main())
