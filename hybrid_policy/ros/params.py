"""Typed, documented, read-only parameters: a missing or bad value is a clear refusal to
start, and nothing changes under a running node.

Every parameter is declared with its description (``ros2 param describe`` shows it) and
``read_only``: a ``ros2 param set`` at run time is refused by rclpy with that reason instead
of silently changing what a mode means. Restart the node to change one.
"""

from __future__ import annotations

from typing import Any

from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node
from rclpy.parameter import Parameter

from hybrid_policy.errors import HybridPolicyError


def declare(node: Node, name: str, default: Any, description: str = "") -> Any:
    """Declare ``name`` read-only with ``default``'s type and return its value."""
    desc = ParameterDescriptor(description=description, read_only=True)
    return node.declare_parameter(name, default, desc).value


def require(node: Node, name: str, default: Any, description: str = "") -> Any:
    """Declare ``name`` with ``default``'s type; refuse an empty string."""
    value = declare(node, name, default, description)
    if isinstance(default, str) and not value:
        raise HybridPolicyError(f"parameter '{name}' is required (set it in the YAML or with "
                                f"-p {name}:=...)")
    return value


def string_list(node: Node, name: str, description: str = "") -> list[str]:
    """Declare a string-array parameter with no default; unset → empty list."""
    desc = ParameterDescriptor(description=description, read_only=True)
    value = node.declare_parameter(name, Parameter.Type.STRING_ARRAY, desc).value
    return [v for v in (value or []) if v]
