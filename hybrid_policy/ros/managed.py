"""The lifecycle both managed nodes share: ``configure`` loads the model (torch is imported
then, not at start-up), ``activate`` is refused while something the node needs is missing,
and only an active node acts. Subclasses say what to load, what blocks activation, and
what to do on activate and deactivate."""

from __future__ import annotations

from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn

from hybrid_policy.errors import HybridPolicyError
from hybrid_policy.ros.params import declare


class ManagedNode(LifecycleNode):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.threads = int(declare(self, "threads", 1, "torch CPU threads"))
        self.active = False

    # -- what a subclass provides ---------------------------------------------------------
    def load(self) -> str:
        """Load and warm up the model; a summary for the log. Raise HybridPolicyError."""
        raise NotImplementedError

    def unload(self) -> None:
        """Drop what ``load`` made."""

    def activation_blocker(self) -> str | None:
        """Why the node cannot act yet (``None``: it can)."""
        return None

    def activated(self) -> None:
        """Called when the node starts acting."""

    def deactivated(self) -> None:
        """Called when the node stops acting."""

    # -- the transitions ------------------------------------------------------------------
    @property
    def state_label(self) -> str:
        return self._state_machine.current_state[1]

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            import torch

            torch.set_num_threads(self.threads)
            summary = self.load()
        except HybridPolicyError as exc:
            self.get_logger().error(f"configure failed: {exc}")
            return TransitionCallbackReturn.FAILURE
        self.get_logger().info(f"configured: {summary}")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        blocker = self.activation_blocker()
        if blocker:
            self.get_logger().warning(f"not activating yet: {blocker}")
            return TransitionCallbackReturn.FAILURE
        self.activated()
        self.active = True
        self.get_logger().info("active")
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.active = False
        self.deactivated()
        return TransitionCallbackReturn.SUCCESS

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.unload()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.active = False
        return TransitionCallbackReturn.SUCCESS
