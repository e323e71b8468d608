"""Typed, documented, read-only parameters: a missing or bad value is a clear refusal to
start, and nothing changes under a running node.

Every parameter is declared with its description (``ros2 param describe`` shows it) and
``read_only``: a ``ros2 param set`` at run time is refused by rclpy with that reason instead
of silently changing what a mode means. Restart the node to change one.

A float parameter takes an integer too (``-p deadline_ms:=28`` is 28.0); any other wrong
type (a string for a number, a float for an integer) is refused with the parameter's name,
what was given and what is valid, so the node exits 2 like on any bad parameter.
"""

from __future__ import annotations

from typing import Any

from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node
from rclpy.parameter import Parameter

from hybrid_policy.errors import HybridPolicyError


# what each default's type accepts, and how a refusal names it
_VALID = {bool: "a boolean (true or false)", int: "an integer",
          float: "a number (a float or an integer)", str: "a string"}


def _kind(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a float", str: "a string"}.get(
        type(value), f"a {type(value).__name__}")


def declare(node: Node, name: str, default: Any, description: str = "") -> Any:
    """Declare ``name`` read-only with ``default``'s type and return its value.

    A float ``default`` takes an integer value too (returned as a float); a value of any
    other type than ``default``'s is a ``HybridPolicyError`` that names the parameter, what
    was given and what is valid (the node then refuses to start, exit 2)."""
    kind = type(default)
    if kind not in _VALID:
        desc = ParameterDescriptor(description=description, read_only=True)
        return node.declare_parameter(name, default, desc).value
    # A typed declaration makes rclpy raise on an override of another type (even an integer
    # for a float) with a traceback: declare it untyped, still read-only so nothing can
    # change it later, and check the type here.
    desc = ParameterDescriptor(description=description, read_only=True, dynamic_typing=True)
    value = node.declare_parameter(name, default, desc).value
    if kind is float and type(value) is int:
        return float(value)
    if type(value) is not kind:
        raise HybridPolicyError(f"parameter '{name}' must be {_VALID[kind]}, given {value!r} "
                                f"({_kind(value)})")
    return value


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
