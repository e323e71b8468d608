"""Typed parameter helpers: a missing required value is a clear refusal to start."""

from __future__ import annotations

from typing import Any

from rclpy.node import Node
from rclpy.parameter import Parameter

from hybrid_policy.errors import HybridPolicyError


def require(node: Node, name: str, default: Any) -> Any:
    """Declare ``name`` with ``default``'s type; refuse an empty string."""
    value = node.declare_parameter(name, default).value
    if isinstance(default, str) and not value:
        raise HybridPolicyError(f"parameter '{name}' is required (set it in the YAML or with "
                                f"-p {name}:=...)")
    return value


def string_list(node: Node, name: str) -> list[str]:
    """Declare a string-array parameter with no default; unset → empty list."""
    value = node.declare_parameter(name, Parameter.Type.STRING_ARRAY).value
    return [v for v in (value or []) if v]
