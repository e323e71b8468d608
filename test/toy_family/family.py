"""The toy family behind the seam: the robot asks its server every step and executes the
constant action the server answers (``ACTION``); no draft, no model. It runs in process
(``eval --topology``), in the fleet and over ROS through ``families.base.Family`` alone."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from hybrid_policy.families.base import Family

ACTION = np.array([0.25, -0.25, 0.0, 0.0], np.float32)
SERVE_MS = 2.0  # one answer's modelled time at speed 1
MODULE = "toy_family"


def answer(request) -> Any:
    """The server's work: the constant action, whatever the window."""
    from hybrid_policy.core.protocol import Response

    return Response(ACTION.copy(), (), True, 0, ())


class ConstantMode:
    """Every step: ask the server (an ``act`` request with the window), do what it says;
    hold still when it does not answer in time."""

    name = "constant"

    def __init__(self, obs_dim: int, history: int = 2) -> None:
        from hybrid_policy.policies import ObsHistory

        self._history = ObsHistory(history, obs_dim)

    def reset(self) -> None:
        self._history.reset()

    def plan(self, obs, rng):
        from hybrid_policy.core.plan import Plan
        from hybrid_policy.core.protocol import Request

        window = self._history.push(obs).copy()
        return Plan(None, Request("act", window, int(rng.integers(2**31))))

    def resolve(self, plan, response):
        return np.zeros(4, np.float32) if response is None else response.action


class Toy(Family):
    name = "toy"
    modes = ("constant",)
    summary = "a constant policy on one server"

    def work(self):
        from sim_envs import task_spec
        from hybrid_policy.core.fleet import FleetWork

        class ConstantWork(FleetWork):
            def mode_for(self, spec):
                return ConstantMode(task_spec(spec.task).obs_dim)

            def batch_ms(self, fleet, node, items):
                return SERVE_MS * len(items) / fleet.topology.nodes[node].speed

            def serve(self, fleet, node, items):
                for p in items:
                    p.server_op = True
                return [answer(p.request) for p in items]

        return ConstantWork()

    def evaluate(self, args: argparse.Namespace, names: list[str]) -> dict[str, Any]:
        from hybrid_policy.core.compute import ComputeModel
        from hybrid_policy.families import registry, run

        topo = registry.load_topology(args.topology)
        return run.fleet_document(args, args.task, topo, lambda _: self.work(), names,
                                  ComputeModel(0.0, SERVE_MS), {"seed": args.seed,
                                                                **run.clock_meta(args)})

    def graphs(self, args, modes, bag):
        from hybrid_policy.families import run
        from hybrid_policy.ros.graph import GraphConfig

        def config_for(mode: str, mode_bag: Path | None) -> GraphConfig:
            return GraphConfig(mode=mode, task=args.task, link=args.link,
                               **run.graph_settings(args, mode_bag))
        return config_for

    def fleet_nodes(self, cfg) -> list:
        from toy_family.graph import toy_nodes

        return toy_nodes(cfg)

    def robot_side(self, node):
        from toy_family.robot_ros import ToySide

        return ToySide(node)

    def server_ops(self, info, topics, robot) -> int:
        servers = dict(e.split(":")[:2] for e in info.get("robots", "").split(",") if e)
        return len(topics.get(f"{servers[robot]}/exit/{robot}/{robot}/request", []))


FAMILY = Toy()
