"""The family seam: what every cooperative-inference family implements once.

A family is one package under ``hybrid_policy/families`` whose ``family.py`` holds a
``Family`` object (``FAMILY``), listed by ``families.registry``. The shared code drives
every family through it and names none:

- **modes and the robot side**: ``modes`` (unique across families), each a ``plan`` /
  ``resolve`` object (``core.plan.Mode``) that the family's ``evaluate`` and robot side
  make;
- **server work, in process**: ``evaluate`` runs the modes on a topology with
  ``core.fleet`` through one ``core.fleet.FleetWork`` per mode (its servers, what they
  serve and how long a batch takes, where a request goes);
- **topology block**: ``blocks`` names the top-level blocks of a topology it owns;
  ``check_topology`` parses and checks them (and anything else it needs of the fleet);
- **setup**: whatever ``evaluate`` and ``graphs`` make from a topology first (models,
  plans, layouts, catalogues), made once per run;
- **ROS**: ``graphs`` gives each mode's graph settings for ``bringup`` (files it wrote
  for the nodes), ``fleet_nodes`` the nodes of the fleet graph (its server nodes, links
  and robots; ``ros.fleet_wiring`` has the shared pieces), ``robot_side`` the draft
  node's side of the family's wire (``ros.robot_side``);
- **analyze**: ``server_ops`` counts, from a bag, the server operations of one robot;
- **command line**: ``add_arguments`` (eval, bringup) and ``commands`` (its own
  subcommands).

``family.py`` imports only this module and its family's light modules (no torch, no
rclpy): the registry loads every family to know the modes, and the launch file reads it.
Every heavier import happens inside the methods.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from hybrid_policy.core.topology import Topology


class Family:
    """One family (module doc). The defaults are those of a family with no fleet graph,
    no eval of its own and no topology block."""

    name: str = ""
    modes: tuple[str, ...] = ()
    group: str = ""  # a --modes word that names all its modes ("" = none)
    fleet_only: bool = True  # its modes run on a topology only
    blocks: tuple[str, ...] = ()  # top-level topology blocks it owns
    summary: str = ""  # one line: what the family is (help texts, errors)

    def check_topology(self, topo: "Topology") -> None:
        """Parse and check the family's blocks of ``topo`` (raise ``TopologyError``)."""

    def add_arguments(self, parser: argparse.ArgumentParser, command: str) -> None:
        """Its own options of ``command`` (``eval``, ``bringup``)."""

    def commands(self, sub: Any) -> None:
        """Its own subcommands (``sub``: the parser's subparsers)."""

    def evaluate(self, args: argparse.Namespace, names: list[str]) -> dict[str, Any]:
        """``eval``: run ``names`` in process; the evaluation's document
        (``core.stepmetrics.report``, with ``robots``/``servers`` rows for a fleet)."""
        raise NotImplementedError(f"family {self.name} has no in-process evaluation")

    def report(self, doc: dict[str, Any]) -> str:
        """Lines ``eval`` prints after the metrics table ("" = none)."""
        return ""

    def graphs(self, args: argparse.Namespace, modes: list[str],
               bag: Path | None) -> Callable[[str, Path | None], Any]:
        """``bringup``: what is made once for ``modes`` (models, plans), then, per mode and
        its bag, the graph's settings (a ``ros.graph.GraphConfig``)."""
        raise NotImplementedError(f"family {self.name} has no ROS graph")

    def fleet_nodes(self, cfg: Any) -> list:
        """The nodes of ``cfg``'s fleet graph (``ros.graph.NodeSpec``s)."""
        raise NotImplementedError(f"family {self.name} has no fleet graph")

    def robot_side(self, node: Any) -> Any:
        """The draft node's side of this family's wire (``ros.robot_side.RobotSide``)."""
        raise NotImplementedError(f"family {self.name} has no robot side over ROS")

    def server_ops(self, info: dict[str, str], topics: dict[str, list], robot: str) -> int:
        """From a fleet's bag (run info and topics by name): how many server operations
        ``robot``'s steps caused."""
        return 0
