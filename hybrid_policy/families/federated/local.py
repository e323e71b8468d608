"""What runs on one client: its share of the demonstrations, a round of local training of
the early-exit net, and the closed-loop evaluation of its requests as they are served.

Every client starts from the same net, created from a seed (``new_net``): the federation
trains from scratch on the clients' data; only the action tokenizer, the shared vocabulary
of the net's outputs, is fixed beforehand.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Sequence

import numpy as np
import torch

from sim_envs.dataset import DemoDataset
from hybrid_policy.families.exits.early_exit import answer
from hybrid_policy.families.federated.clients import FederatedError
from hybrid_policy.policies import ObsHistory
from hybrid_policy.families.exits.net import (
    EarlyExitNet, EarlyExitPolicy, ExitData, exit_data, fit_exits,
)
from hybrid_policy.policies.training import TrainConfig, policy_config

log = logging.getLogger(__name__)


def episodes_of(ds: DemoDataset, idx: Sequence[int]) -> DemoDataset:
    """The episodes ``idx`` of ``ds`` as a data set of their own."""
    idx = np.asarray(idx, dtype=int)
    if len(idx) == 0:
        raise FederatedError(f"a client with no data: no {ds.task} episodes were given to it")
    starts, lengths = ds.episode_starts[idx], ds.episode_lengths[idx]
    rows = np.concatenate([np.arange(s, s + n) for s, n in zip(starts, lengths)])
    return replace(ds, observations=ds.observations[rows], actions=ds.actions[rows],
                   episode_starts=np.concatenate([[0], np.cumsum(lengths)[:-1]]),
                   episode_lengths=lengths, episode_seeds=ds.episode_seeds[idx])


def first_observations(ds: DemoDataset) -> np.ndarray:
    return ds.observations[ds.episode_starts]


def client_data(ds: DemoDataset, idx: Sequence[int], tok, history: int) -> ExitData:
    return exit_data(episodes_of(ds, idx), tok, history)


def new_net(tok, obs_dim: int, exits: Sequence[int], seed: int) -> EarlyExitNet:
    """The federation's initial net: the target's shape, weights drawn from ``seed``."""
    torch.manual_seed(seed)
    return EarlyExitNet(policy_config("target", obs_dim, tok), exits)


def obs_moments(obs: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    """(count, Σx, Σx²) of a client's observations: what it shares for normalisation."""
    x = obs.astype(np.float64)
    return len(x), x.sum(0), (x * x).sum(0)


def set_normalisation(net: EarlyExitNet, moments: Sequence[tuple[int, np.ndarray, np.ndarray]]
                      ) -> None:
    """The net's observation mean and std from the clients' pooled moments."""
    n = sum(m[0] for m in moments)
    mean = sum(m[1] for m in moments) / n
    var = np.maximum(sum(m[2] for m in moments) / n - mean ** 2, 0.0)
    net.obs_mean.copy_(torch.from_numpy(mean.astype(np.float32)))
    net.obs_std.copy_(torch.from_numpy(np.sqrt(var).astype(np.float32)).clamp_min(1e-3))


def train_round(net: EarlyExitNet, data: ExitData, exit_weights: Sequence[float],
                epochs: int, lr: float, batch_size: int, seed: int) -> list[float]:
    """One round of local training (constant ``lr``); each exit's mean loss over the
    round's last epoch."""
    train = TrainConfig(epochs=epochs, lr=lr, batch_size=batch_size, seed=seed)
    history = fit_exits(net, data, exit_weights, train, schedule="constant", progress=False)
    return history[-1]


def round_lr(base: float, server_round: int, rounds: int) -> float:
    """Cosine decay over the rounds, from ``base`` to a tenth of it."""
    t = (server_round - 1) / max(rounds - 1, 1)
    return base * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * t)))


# -- closed-loop evaluation at a client's serving rates -------------------------------------

def region_seeds(task: str, region: int, regions: int, count: int, seed: int,
                 partition: str = "direction") -> list[int]:
    """Reset seeds of evaluation scenes in a client's region (disjoint from training's)."""
    import sim_envs
    from sim_envs.collect import episode_seeds
    from hybrid_policy.families.federated.clients import region as region_of

    if partition != "direction":
        return episode_seeds(seed, count, split="eval").tolist()
    env, fields, out = sim_envs.make_task(task), sim_envs.task_spec(task).obs_fields, []
    try:
        for candidate in episode_seeds(seed, count * regions * 20, split="eval").tolist():
            obs, _ = env.reset(seed=candidate)
            if region_of(obs, fields, regions) == region:
                out.append(candidate)
                if len(out) == count:
                    return out
    finally:
        env.close()
    raise FederatedError(f"{task}: found only {len(out)} evaluation scenes in region {region}")


def served_success(policy: EarlyExitPolicy, task: str, reset_seeds: Sequence[int],
                   rates: Sequence[float], seed: int) -> list[bool]:
    """Closed-loop episodes whose every step is served by an exit drawn from ``rates`` (a
    client's serving rates): the success of its requests as they are served."""
    import sim_envs

    env = sim_envs.make_task(task)
    hist = ObsHistory(policy.history, policy.obs_dim)
    p = np.asarray(rates, dtype=float)
    out = []
    try:
        for i, reset_seed in enumerate(reset_seeds):
            rng = np.random.default_rng([seed, i, 0x5E7])
            obs, _ = env.reset(seed=int(reset_seed))
            hist.reset()
            while True:
                layer = policy.exits[int(rng.choice(len(p), p=p / p.sum()))]
                tokens = policy.advance(policy.start([hist.push(obs).copy()]), 0, layer)
                step = policy.exit(tokens, layer)[0]
                act = answer(step, int(rng.integers(2**31)), layer).action
                obs, _, term, trunc, info = env.step(act)
                if term or trunc:
                    out.append(bool(info["success"]))
                    break
    finally:
        env.close()
    return out
