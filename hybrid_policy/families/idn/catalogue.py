"""The catalogue of an inference delivery network: per task, the policy variants a node may
hold, each with its measured closed-loop success and its compute cost.

A variant is one way to act on a task's observation window: ``draft`` (the robot's small
policy), ``exit<L>`` (the early-exit net cut after layer ``L``: its trunk up to ``L`` and
that exit's head) and ``target``. Its ``success`` is the success rate of the variant acting
alone in closed loop (``idn_setup.measure_catalogue``); its ``params`` what a node must hold
to serve it; its ``ms`` the time of one step at batch 1 on this machine (a node of speed
``s`` takes ``ms / s``). Read from and written to JSON (``models/<task>/catalogue.json``);
every error names the entry and what is valid. No torch.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hybrid_policy.errors import HybridPolicyError

VERSION = 1
CATALOGUE_EPISODES = 20  # episodes that measure a variant's success by default
LEVELS = 2  # code levels of an answer, for its size in the gain's latency estimate
_NAME = re.compile(r"^(draft|target|exit\d+)$")


class CatalogueError(HybridPolicyError, ValueError):
    """A catalogue that cannot be used; the message names the entry."""


@dataclass(frozen=True)
class Variant:
    name: str  # draft | exit<L> | target
    task: str
    params: int  # parameters a node holds to serve it
    success: float  # closed-loop success rate acting alone
    episodes: int  # episodes that measured it
    ms: float  # one step at batch 1, speed 1 (this machine)
    history: int  # observations it conditions on

    def __post_init__(self) -> None:
        where = f"catalogue: {self.task}/{self.name}"
        if not _NAME.match(str(self.name)):
            raise CatalogueError(f"{where}: variant name must be draft, target or exit<L>")
        if isinstance(self.params, bool) or not isinstance(self.params, int) or self.params < 1:
            raise CatalogueError(f"{where}: params must be a positive integer, got "
                                 f"{self.params!r}")
        if not isinstance(self.success, (int, float)) or not 0.0 <= self.success <= 1.0:
            raise CatalogueError(f"{where}: success must be a rate in [0, 1], got "
                                 f"{self.success!r}")
        if not isinstance(self.episodes, int) or self.episodes < 1:
            raise CatalogueError(f"{where}: episodes must be a positive integer, got "
                                 f"{self.episodes!r}")
        if not isinstance(self.ms, (int, float)) or not math.isfinite(self.ms) or self.ms <= 0:
            raise CatalogueError(f"{where}: ms must be a positive time per step, got "
                                 f"{self.ms!r}")
        if not isinstance(self.history, int) or self.history < 1:
            raise CatalogueError(f"{where}: history must be a positive integer, got "
                                 f"{self.history!r}")

    @property
    def key(self) -> str:
        return f"{self.task}/{self.name}"

    def step_ms(self, speed: float) -> float:
        return self.ms / speed


@dataclass(frozen=True)
class Catalogue:
    variants: tuple[Variant, ...]

    def __post_init__(self) -> None:
        if not self.variants:
            raise CatalogueError("catalogue: no variants; it needs at least one per task")
        keys = [v.key for v in self.variants]
        dup = sorted({k for k in keys if keys.count(k) > 1})
        if dup:
            raise CatalogueError(f"catalogue: variant(s) {', '.join(dup)} given twice")

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(v.task for v in self.variants))

    def of(self, task: str) -> tuple[Variant, ...]:
        out = tuple(v for v in self.variants if v.task == task)
        if not out:
            raise CatalogueError(f"catalogue has no variant of task {task!r}; its tasks: "
                                 f"{', '.join(self.tasks)}")
        return out

    def find(self, task: str, name: str) -> Variant:
        for v in self.of(task):
            if v.name == name:
                return v
        raise CatalogueError(f"catalogue has no variant {name!r} of {task}; its variants: "
                             f"{', '.join(v.name for v in self.of(task))}")

    def merge(self, other: "Catalogue") -> "Catalogue":
        return Catalogue(self.variants + other.variants)

    def to_json(self) -> dict[str, Any]:
        return {"version": VERSION, "variants": [asdict(v) for v in self.variants]}

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=1))
        return path


def parse(doc: Any, where: str = "catalogue") -> Catalogue:
    """A validated catalogue from its JSON document."""
    if not isinstance(doc, dict) or doc.get("version") != VERSION or not isinstance(
            doc.get("variants"), list):
        raise CatalogueError(f"{where}: expected {{version: {VERSION}, variants: [...]}}")
    fields = set(Variant.__dataclass_fields__)
    out = []
    for i, v in enumerate(doc["variants"]):
        if not isinstance(v, dict) or set(v) != fields:
            got = sorted(v) if isinstance(v, dict) else type(v).__name__
            raise CatalogueError(f"{where}: variants[{i}] must have exactly the keys "
                                 f"{', '.join(sorted(fields))}; got {got}")
        out.append(Variant(**v))
    return Catalogue(tuple(out))


def load(path: str | Path) -> Catalogue:
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except OSError as exc:
        raise CatalogueError(f"{path}: cannot read the catalogue ({exc.strerror})") from None
    except json.JSONDecodeError as exc:
        raise CatalogueError(f"{path}: not valid JSON ({exc})") from None
    return parse(doc, str(path))


def message_bytes(v: Variant) -> tuple[int, int]:
    """Bytes of one request (the task's observation window) and one answer on the wire."""
    import numpy as np

    import sim_envs
    from hybrid_policy.core.protocol import Request, Response
    from sim_envs.spec import ACTION_DIM

    window = np.zeros((v.history, sim_envs.task_spec(v.task).obs_dim), np.float32)
    answer = Response(np.zeros(ACTION_DIM, np.float32), (0,) * LEVELS, True, LEVELS, ())
    return Request("act", window, 0).payload_bytes(), answer.payload_bytes()
