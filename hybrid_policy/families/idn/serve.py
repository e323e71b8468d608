"""The inference delivery network's per-step logic: the robot's ``plan``/``resolve``
(``IdnMode``) and a node's ``serve_variants``, shared by the in-process fleet and the ROS
nodes.

Each step the robot asks its ``Placement`` view which option serves it now (``IdnNetwork.
serve``: the best-gain variant held and loaded on its path, else the repository's). On its
own node it acts at once with its own model; otherwise the observation window goes to that
node as an ``act`` request naming the variant (``Plan.variant``), and the node answers with
that variant's action, drawn from the request's seed (so the answer does not depend on
where or when it is computed). A node asked for a variant it no longer holds refuses the
request (``VariantMissing``); the robot then, like with a lost answer, acts with its own
model if it holds one for its task, else holds still.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sim_envs.spec import ACTION_DIM
from hybrid_policy.families.idn.idn import IdnNetwork, Option, Where
from hybrid_policy.families.idn.catalogue import Variant, message_bytes  # noqa: F401
from hybrid_policy.core.plan import Plan
from hybrid_policy.core.protocol import ProtocolError, Request, Response
from hybrid_policy.policies import ObsHistory



class VariantMissing(ProtocolError):
    """A request for a variant the node does not hold (or has not loaded yet)."""


class VariantModels:
    """Loads variants' models from ``root/<task>/{draft,target,early_exit}``, once each (the
    exits of one task share their early-exit net)."""

    def __init__(self, root: str | Path = "models") -> None:
        self.root = Path(root)
        self._cache: dict[tuple[str, str], Any] = {}

    def model(self, v: Variant) -> Any:
        kind = "early_exit" if v.name.startswith("exit") else v.name
        key = (v.task, kind)
        if key not in self._cache:
            from hybrid_policy.policies.checkpoint import load_policy
            from hybrid_policy.families.exits.net import load_early_exit

            path = self.root / v.task / kind
            self._cache[key] = load_early_exit(path, task=v.task) if kind == "early_exit" \
                else load_policy(path, role=kind, task=v.task)
        return self._cache[key]


def act_batch(model: Any, v: Variant, requests: list[Request]) -> list[Response]:
    """Variant ``v``'s answers to ``act`` requests: each window cut to the variant's history,
    codes drawn from each request's seed."""
    for req in requests:
        if req.kind != "act" or req.window.ndim != 2 or req.window.shape[0] < v.history:
            raise ProtocolError(f"{v.key} answers 'act' requests of at least {v.history} "
                                f"observations, got {req.label()}")
    windows = [req.window[-v.history:] for req in requests]
    if v.name.startswith("exit"):
        from hybrid_policy.families.exits.early_exit import answer

        layer = int(v.name[4:])
        tokens = model.advance(model.start(windows), 0, layer)
        return [answer(step, req.seed, layer) for step, req in
                zip(model.exit(tokens, layer), requests)]
    out = []
    for req, step in zip(requests, model.begin_batch(windows)):
        codes = step.sample(np.random.default_rng(req.seed))
        out.append(Response(step.action(codes), codes, True, len(codes), ()))
    return out


@dataclass
class NodeStore:
    """What one node holds: its models by variant key (``load``/``unload`` follow the
    placement), and its answers."""

    models: VariantModels
    held: dict[str, Variant] = field(default_factory=dict)

    def load(self, v: Variant) -> None:
        self.models.model(v)
        self.held[v.key] = v

    def unload(self, key: str) -> None:
        self.held.pop(key, None)

    def serve(self, key: str, requests: list[Request]) -> list[Response]:
        if key not in self.held:
            raise VariantMissing(f"this node does not hold {key}; it holds "
                                 f"{', '.join(sorted(self.held)) or 'nothing'}")
        v = self.held[key]
        return act_batch(self.models.model(v), v, requests)


def serve_variants(store: NodeStore, batch: list[tuple[str, Request]]
                   ) -> list[Response | VariantMissing]:
    """One node operation: each ``(variant key, request)`` answered, grouped by variant; a
    request for a variant the node does not hold gets its ``VariantMissing``."""
    out: list[Any] = [None] * len(batch)
    by_key: dict[str, list[int]] = {}
    for i, (key, _) in enumerate(batch):
        by_key.setdefault(key, []).append(i)
    for key, idx in by_key.items():
        try:
            answers = store.serve(key, [batch[i][1] for i in idx])
        except VariantMissing as exc:
            answers = [exc] * len(idx)
        for i, a in zip(idx, answers):
            out[i] = a
    return out


@dataclass
class Placement:
    """The robot's view of what is held and loaded (``available``, one flag per slot of the
    network); the fleet refreshes it each tick, the ROS draft node from the placement topic."""

    network: IdnNetwork
    available: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.available = np.zeros(len(self.network.slots), bool)


class IdnMode:
    """The robot side of the placement modes (module doc)."""

    def __init__(self, name: str, robot: str, where: Where, placement: Placement,
                 store: NodeStore, local_only: bool = False) -> None:
        self.name, self.robot, self.where = name, robot, where
        self.placement, self.store, self.local_only = placement, store, local_only
        net = placement.network
        self.history = max(v.history for v in net.catalogue.of(where.task))
        import sim_envs

        self._history = ObsHistory(self.history, sim_envs.task_spec(where.task).obs_dim)
        self.last: Option | None = None

    def reset(self) -> None:
        self._history.reset()

    def choose(self) -> Option:
        return self.placement.network.serve(self.placement.available, self.robot, self.where,
                                            self.local_only)

    def plan(self, obs: np.ndarray, rng: np.random.Generator) -> Plan:
        window = self._history.push(obs).copy()
        seed = int(rng.integers(2**31))
        opt = self.last = self.choose()
        req = Request("act", window, seed)
        if opt.node == self.robot:
            action = self.store.serve(opt.variant.key, [req])[0].action
            return Plan(action, None, window=window, route_to=opt.node, variant=opt.variant.key)
        return Plan(None, req, window=window, route_to=opt.node, variant=opt.variant.key)

    def own(self) -> Variant | None:
        """The model this robot holds for its task (its fallback), if any."""
        net, ok = self.placement.network, self.placement.available
        mine = [v for v in self.store.held.values() if v.task == self.where.task
                and ok[net.slot_of[(self.robot, v.key)]]]
        return max(mine, key=lambda v: v.success) if mine else None

    def resolve(self, plan: Plan, response: Response | None) -> np.ndarray:
        if response is not None:
            return response.action
        if plan.request is None:
            return plan.draft_action
        own = self.own()
        if own is None:
            return np.zeros(ACTION_DIM, np.float32)
        return self.store.serve(own.key, [plan.request])[0].action
