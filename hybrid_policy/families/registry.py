"""The families, and every mode by name.

``BUILT_IN`` lists the package's families, each the module holding its ``FAMILY``
(``families.base.Family``). Adding a family is one new package under
``hybrid_policy/families`` and one line here; a family kept outside the package is
registered by naming its module in ``HYBRID_POLICY_FAMILIES`` (colon-separated), which
every process of a graph inherits from ``bringup``. No torch, no rclpy.
"""

from __future__ import annotations

import importlib
import os
from functools import cache
from typing import Any

from hybrid_policy.core import topology as topology_mod
from hybrid_policy.core.topology import Topology, TopologyError
from hybrid_policy.errors import HybridPolicyError
from hybrid_policy.families.base import Family

BUILT_IN = (
    "hybrid_policy.families.adahi.family",
    "hybrid_policy.families.exits.family",
    "hybrid_policy.families.rocoin.family",
    "hybrid_policy.families.idn.family",
    "hybrid_policy.families.federated.family",
)
ENV = "HYBRID_POLICY_FAMILIES"


class UnknownModeError(HybridPolicyError, KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


@cache
def _load(extra: str) -> tuple[Family, ...]:
    out: list[Family] = []
    for module in [*BUILT_IN, *(m for m in extra.split(":") if m)]:
        try:
            family = importlib.import_module(module).FAMILY
        except (ImportError, AttributeError) as exc:
            raise HybridPolicyError(f"family module {module!r} ({ENV}?) cannot be loaded: "
                                    f"{exc}") from None
        clash = [m for m in family.modes for f in out if m in f.modes]
        if clash or any(f.name == family.name for f in out):
            raise HybridPolicyError(f"family {family.name!r} ({module}) repeats a family or "
                                    f"mode name: {', '.join(clash) or family.name}")
        out.append(family)
    return tuple(out)


def families() -> tuple[Family, ...]:
    """Every family: the package's, then those named in ``HYBRID_POLICY_FAMILIES``."""
    return _load(os.environ.get(ENV, ""))


def all_modes() -> tuple[str, ...]:
    return tuple(m for f in families() for m in f.modes)


def family(name: str) -> Family:
    for f in families():
        if f.name == name:
            return f
    raise HybridPolicyError(f"unknown family {name!r}; families: "
                            f"{', '.join(f.name for f in families())}")


def family_of(mode: str) -> Family:
    """The family that owns ``mode``."""
    for f in families():
        if mode in f.modes:
            return f
    raise UnknownModeError(f"unknown mode {mode!r}; valid modes: {', '.join(all_modes())}")


def _groups() -> dict[str, tuple[str, ...]]:
    return {f.group: f.modes for f in families() if f.group}


def parse_modes(text: str) -> list[str]:
    """A family's group word (``all``: the draft/target modes; ``exits``, ``students``,
    ``placement``, …) or a comma-separated list of mode names, checked against the
    registry."""
    groups = _groups()
    names = list(groups[text.strip()]) if text.strip() in groups else [
        m.strip() for m in text.split(",") if m.strip()]
    valid = all_modes()
    bad = [m for m in names if m not in valid]
    if bad or not names:
        words = ", ".join(f"'{g}' for {family_of(modes[0]).summary}"
                          for g, modes in groups.items())
        raise UnknownModeError(
            f"unknown mode(s) {', '.join(map(repr, bad)) or '(none given)'}; valid modes: "
            f"{', '.join(valid)} (or {words})")
    return names


def check_mode(name: str) -> str:
    """One mode name (a node or a graph runs one mode at a time)."""
    if parse_modes(name) != [name]:
        raise UnknownModeError(f"one mode is needed here, got {name!r}; valid modes: "
                               f"{', '.join(all_modes())}")
    return name


def family_of_modes(names: list[str]) -> Family:
    """The one family that owns every mode of ``names`` (one run runs one family)."""
    owners = {family_of(m).name for m in names}
    if len(owners) > 1:
        raise HybridPolicyError(f"modes {', '.join(names)} belong to different families "
                                f"({', '.join(sorted(owners))}): run each family on its own")
    return family_of(names[0])


def parse_topology(doc: Any, where: str = "topology") -> Topology:
    """A topology checked for what the families need: every robot's mode is a known one,
    every extra block belongs to a family, and each family checks its blocks."""
    topo = topology_mod.parse(doc, where)
    valid = all_modes()
    for spec in doc["robots"]:  # named as the file names them (before ``count``)
        if spec["mode"] not in valid:
            raise TopologyError(f"{where}: robot {spec['name']}: unknown mode "
                                f"{spec['mode']!r}; valid: {', '.join(valid)}")
    owned = {b: f for f in families() for b in f.blocks}
    unknown = sorted(set(topo.blocks) - set(owned))
    if unknown:
        raise TopologyError(f"{where}: unknown key {unknown[0]!r}; valid: nodes, robots, "
                            f"{', '.join(sorted(owned))}")
    for f in dict.fromkeys(owned[b] for b in topo.blocks).keys():
        f.check_topology(topo)
    return topo


def load_topology(path: str) -> Topology:
    """The topology in ``path``, checked as ``parse_topology`` does."""
    return parse_topology(topology_mod.read(path), str(path))
