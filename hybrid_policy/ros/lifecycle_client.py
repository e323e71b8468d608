"""Driving a managed node from a script or a test, with the standard lifecycle services:
what an outside driver does instead of running ``lifecycle_manager``."""

from __future__ import annotations

import time

import rclpy
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rclpy.executors import Executor
from rclpy.node import Node

CONFIGURE, ACTIVATE = Transition.TRANSITION_CONFIGURE, Transition.TRANSITION_ACTIVATE
DEACTIVATE = Transition.TRANSITION_DEACTIVATE


class LifecycleClient:
    """``get_state`` and ``change_state`` of one managed node, spinning ``node`` (in
    ``executor`` when it has one) meanwhile."""

    def __init__(self, node: Node, target: str, executor: Executor | None = None) -> None:
        self.node = node
        self._spin = (executor.spin_once if executor is not None
                      else lambda timeout_sec: rclpy.spin_once(node, timeout_sec=timeout_sec))
        self._get = node.create_client(GetState, f"{target}/get_state")
        self._change = node.create_client(ChangeState, f"{target}/change_state")

    def _call(self, client, request, timeout: float):
        if not client.wait_for_service(timeout_sec=timeout):
            raise TimeoutError(f"{client.srv_name} is not available")
        future = client.call_async(request)
        end = time.monotonic() + timeout
        while not future.done():
            self._spin(timeout_sec=0.01)
            if time.monotonic() > end:
                raise TimeoutError(f"{client.srv_name} did not answer")
        return future.result()

    def state(self, timeout: float = 60.0) -> int:
        """The node's primary state id (``lifecycle_msgs/State``)."""
        return self._call(self._get, GetState.Request(), timeout).current_state.id

    def change(self, transition: int, timeout: float = 60.0) -> bool:
        req = ChangeState.Request()
        req.transition.id = transition
        return self._call(self._change, req, timeout).success

    def bring_up(self, timeout: float = 60.0) -> None:
        """configure, then activate; an activation refused because the node's readers are not
        matched yet is retried until ``timeout``."""
        if not self.change(CONFIGURE, timeout):
            raise RuntimeError(f"{self._change.srv_name}: configure failed (see the node's log)")
        end = time.monotonic() + timeout
        while not self.change(ACTIVATE, timeout):
            if time.monotonic() > end:
                raise TimeoutError(f"{self._change.srv_name}: activation refused for {timeout} s")
            time.sleep(0.05)

    def destroy(self) -> None:
        self.node.destroy_client(self._get)
        self.node.destroy_client(self._change)
