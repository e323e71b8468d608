"""``main()`` shared by every node: init, build, spin, shut down cleanly.

A node whose parameters are invalid refuses to start: it logs what was wrong and what is
valid and exits with status 2. Once it runs, no message can end it: subscription callbacks
are guarded (``reporting.Reporter.guard``) and a bad message is reported and dropped.
Ctrl-C (SIGINT), SIGTERM and an external shutdown end the spin and exit 0, also when the
signal lands inside a callback and makes it raise (a timer publishing on the context the
signal just shut down); the node's ``close()`` runs either way, so files are flushed, and
the summary it returns is logged.
"""

from __future__ import annotations

import logging
import sys
from typing import Callable, Sequence

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node

from sim_envs import SimEnvError
from hybrid_policy.errors import HybridPolicyError


class Finished(Exception):
    """Raised inside a callback when the node's job is done (the simulator after its
    last episode, or giving up): ends the spin with status ``code``."""

    def __init__(self, code: int = 0) -> None:
        super().__init__(code)
        self.code = code


def run(factory: Callable[[], Node], args: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # rclpy's own handlers turn SIGINT and SIGTERM into a context shutdown that wakes the
    # executor, so the spin ends and close() runs (the recorder closes its bag on either)
    rclpy.init(args=list(sys.argv if args is None else args))
    node = None
    name = "hybrid_policy"
    code = 0
    # made before the node, so a signal while the node is built cannot leave a half-made
    # executor for the garbage collector to complain about at exit
    executor = SingleThreadedExecutor()
    try:
        try:
            node = factory()
        except (HybridPolicyError, SimEnvError, ValueError) as exc:
            logging.getLogger("hybrid_policy").error(f"refusing to start: {exc}")
            return 2
        name = node.get_name()  # a shutdown may destroy the node's handle: keep its name
        executor.add_node(node)
        executor.spin()  # callbacks of incoming messages never raise (reporting.guard)
    except Finished as done:
        code = done.code
    except (KeyboardInterrupt, ExternalShutdownException):
        code = 0
    except Exception:
        if rclpy.ok():
            raise  # a real fault, with its traceback (exit 1)
        # SIGINT/SIGTERM shut the context down while a callback ran (a timer publishing
        # when the signal came): its publisher's context is invalid, and that is the stop
        # that was asked for, not a fault
        logging.getLogger(name).debug("callback stopped by shutdown", exc_info=True)
        code = 0
    finally:
        if node is not None:
            close = getattr(node, "close", None)
            summary = close() if close is not None else None
            if summary:  # the ROS context may be gone (Ctrl-C): log through Python
                logging.getLogger(name).info("%s", summary)
            node.destroy_node()
        executor.shutdown(timeout_sec=0)
        rclpy.try_shutdown()
    return code
