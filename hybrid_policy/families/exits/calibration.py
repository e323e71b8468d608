"""What the early-exit modes are decided from: each exit's confidence and quality on the
states the policy visits, and the compute time of each part of the net.

Calibration rolls the full net (its last exit acts, as in ``cloud_only``) and records, at
every step and for every exit, the confidence (``early_exit.confidence``) and the exit's
**loss**: the total-variation distance between its joint code distribution and the last
exit's, i.e. the probability that the full net would have rejected the exit's sample in
speculative verification. An exit's threshold for a loss budget ε is the lowest confidence
at which the steps it would answer have a mean loss ≤ ε (``thresholds_for_loss``).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import spearmanr
from tqdm import tqdm

from hybrid_policy.core.compute import single_thread
from hybrid_policy.families.exits.early_exit import answer, confidence
from hybrid_policy.errors import HybridPolicyError
from hybrid_policy.policies import ObsHistory

VERSION = 1


class ExitCalibrationError(HybridPolicyError, ValueError):
    pass


@dataclass
class ExitSamples:
    exits: tuple[int, ...]
    confidence: np.ndarray  # [steps, exits]
    loss: np.ndarray  # [steps, exits]: TV to the last exit (0 in its column)
    episode_success: list[bool]

    def thresholds_for_loss(self, budget: float) -> dict[int, float]:
        """Per early exit, the lowest threshold whose answered steps have mean loss ≤
        ``budget`` (1.0: none qualifies, the exit hardly ever answers)."""
        if not 0.0 <= budget <= 1.0:
            raise ExitCalibrationError(f"loss budget must be in [0, 1] (a mean TV), got {budget}")
        out = {}
        for k, layer in enumerate(self.exits[:-1]):
            order = np.argsort(-self.confidence[:, k], kind="stable")
            conf, loss = self.confidence[order, k], self.loss[order, k]
            mean = np.cumsum(loss) / np.arange(1, len(loss) + 1)  # top-i steps' mean loss
            ok = np.nonzero(mean <= budget)[0]
            # the largest prefix within budget, cut where confidence changes
            best = 1.0
            for i in ok[::-1]:
                if i + 1 == len(conf) or conf[i + 1] < conf[i]:
                    best = float(conf[i])
                    break
            out[layer] = best
        return out

    def stats(self) -> dict[str, Any]:
        """Per exit: mean confidence and loss, and Spearman's ρ between them (how well the
        confidence predicts the exit's disagreement with the full net)."""
        out = {}
        for k, layer in enumerate(self.exits[:-1]):
            rho = spearmanr(self.confidence[:, k], self.loss[:, k]).statistic
            out[str(layer)] = {"confidence_mean": float(self.confidence[:, k].mean()),
                               "loss_mean": float(self.loss[:, k].mean()),
                               "spearman_confidence_loss": float(rho)}
        return out

    def as_doc(self) -> dict[str, Any]:
        return {"exits": list(self.exits), "confidence": self.confidence.round(6).tolist(),
                "loss": self.loss.round(6).tolist(), "episode_success": self.episode_success,
                "stats": self.stats()}

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> "ExitSamples":
        return cls(tuple(doc["exits"]), np.asarray(doc["confidence"]), np.asarray(doc["loss"]),
                   list(doc["episode_success"]))


def collect(task: str, net, episodes: int, seed: int,
            progress: bool | None = None) -> ExitSamples:
    """Roll the full net for ``episodes`` calibration episodes; record every exit's
    confidence and loss at every step."""
    import sim_envs
    from sim_envs.collect import episode_seeds

    env = sim_envs.make_task(task)
    hist = ObsHistory(net.history, net.obs_dim)
    conf_rows, loss_rows, success = [], [], []
    rng = np.random.default_rng([seed, 0xCA1])
    try:
        for reset_seed in tqdm(episode_seeds(seed, episodes, split="eval").tolist(),
                               desc="calibrate exits", unit="ep",
                               disable=None if progress is None else not progress):
            obs, _ = env.reset(seed=reset_seed)
            hist.reset()
            while True:
                tokens, start = net.start([hist.push(obs).copy()]), 0
                steps = []
                for layer in net.exits:
                    tokens = net.advance(tokens, start, layer)
                    start = layer
                    steps.append(net.exit(tokens, layer)[0])
                final = steps[-1].joint()
                conf_rows.append([confidence(s) for s in steps])
                loss_rows.append([0.5 * float(np.abs(s.joint() - final).sum()) for s in steps])
                obs, _, term, trunc, info = env.step(
                    answer(steps[-1], int(rng.integers(2**31)), net.layers).action)
                if term or trunc:
                    success.append(bool(info["success"]))
                    break
    finally:
        env.close()
    return ExitSamples(tuple(net.exits), np.asarray(conf_rows), np.asarray(loss_rows), success)


def save(samples: ExitSamples, path: Path, task: str, net_id: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"version": VERSION, "task": task, "net": net_id,
                                **samples.as_doc()}))


def load(path: Path, task: str, net_id: str) -> ExitSamples:
    """The samples at ``path``, refusing a file of another task or net."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ExitCalibrationError(f"{path}: no usable exit calibration ({exc})") from None
    if doc.get("version") != VERSION or doc.get("task") != task or doc.get("net") != net_id:
        raise ExitCalibrationError(f"{path}: made for task {doc.get('task')!r}, net "
                                   f"{doc.get('net')!r} (version {doc.get('version')}), not "
                                   f"{task!r}, {net_id!r}: recalibrate")
    return ExitSamples.from_doc(doc)


@dataclass(frozen=True)
class ExitCompute:
    """Measured time of the net's parts on this machine: one transformer layer for a batch
    of n (``layer_ms``, rising sizes from 1), the embedding, and one exit per request (head,
    confidence, sampling, decoding). A part's time on a node of speed ``s`` scales by 1/s."""

    layer_ms: tuple[tuple[int, float], ...]
    embed_ms: float
    exit_ms: float

    def part_ms(self, start: int, end: int, n: int = 1, speed: float = 1.0) -> float:
        """ms for layers ``start`` .. ``end`` − 1 and the exit at ``end`` on ``n`` requests."""
        sizes = np.array([s for s, _ in self.layer_ms], float)
        times = np.array([t for _, t in self.layer_ms])
        per_layer = (np.interp(n, sizes, times) if n <= sizes[-1]
                     else times[-1] * n / sizes[-1])
        return float(((end - start) * per_layer + n * (self.exit_ms
                                                       + (self.embed_ms if start == 0 else 0)))
                     / speed)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def load(cls, path: str | Path) -> ExitCompute:
        """Part times from a JSON file in ``as_dict``'s form (what ``eval --json`` records as
        ``early_exit.compute``): a plan for another machine's timings, or one that does not
        move with this machine's load."""
        form = ('{"layer_ms": [[1, ms], [n, ms], ...] (batch sizes rising from 1, ms not '
                'falling), "embed_ms": ms, "exit_ms": ms}, every ms finite and >= 0')
        try:
            doc = json.loads(Path(path).read_text())
            layer = [(int(n), float(ms)) for n, ms in doc["layer_ms"]]
            out = cls(tuple(layer), float(doc["embed_ms"]), float(doc["exit_ms"]))
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise HybridPolicyError(f"{path}: cannot read the exit compute ({exc})") from None
        except (KeyError, TypeError, ValueError) as exc:
            raise HybridPolicyError(f"{path}: not an exit compute ({exc!r}); expected "
                                    f"{form}") from None
        sizes, times = [n for n, _ in layer], [ms for _, ms in layer]
        values = [*times, out.embed_ms, out.exit_ms]
        if (not layer or sizes[0] != 1 or any(b <= a for a, b in zip(sizes, sizes[1:]))
                or any(b < a for a, b in zip(times, times[1:]))
                or not all(np.isfinite(v) and v >= 0 for v in values)):
            raise HybridPolicyError(f"{path}: bad exit compute {doc}; expected {form}")
        return out


def measure_compute(net, windows: np.ndarray, sizes: tuple[int, ...] = (1, 2, 4, 8, 16),
                    rounds: int = 20) -> ExitCompute:
    """Median wall times on real observation windows [n, history, obs_dim], on one torch
    thread whoever calls."""
    def timed(fn) -> float:
        fn()
        out = []
        with single_thread():
            for _ in range(rounds):
                t0 = time.perf_counter()
                fn()
                out.append((time.perf_counter() - t0) * 1e3)
        return float(np.median(out))

    one = net.start([windows[0]])
    embed = timed(lambda: net.start([windows[0]]))
    layer = []
    for n in sizes:
        tokens = net.start([windows[i % len(windows)] for i in range(n)])
        layer.append(timed(lambda t=tokens: net.advance(t, 0, 1)))

    def one_exit() -> None:
        step = net.exit(one, net.exits[0])[0]
        confidence(step)
        answer(step, 0, net.exits[0])

    step_exit = timed(one_exit)
    return ExitCompute(tuple(zip(sizes, np.maximum.accumulate(layer).tolist())), embed,
                       step_exit)


@dataclass
class ExitModels:
    """What an early-exit run uses: the net, its exits' calibration, its parts' times."""

    net: object  # net.EarlyExitPolicy
    samples: ExitSamples
    compute: ExitCompute
