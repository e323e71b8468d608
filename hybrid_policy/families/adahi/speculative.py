"""Speculative verification of a draft's residual codes by the target.

The draft drew ``c_l ~ q(· | h, c_<l)`` level by level. The target scores the same
prefixes with ``p(· | h, c_<l)``. Level ``l`` is accepted with probability
``min(1, p(c_l) / q(c_l))``; on the first rejection the code is redrawn from
``normalise(max(0, p − q))`` and the remaining levels come from the target given the
corrected prefix. Each level's accepted-or-corrected code is then distributed as ``p``,
so the executed codes are distributed exactly as the target's own samples.

The probability of rejecting at level ``l`` given the prefix is exactly the total-variation
distance ``TV(p, q) = ½ Σ |p − q|``; it is logged per level along the draft's path.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hybrid_policy.policies.runtime import PolicyStep, sample_categorical


@dataclass(frozen=True)
class Verdict:
    codes: tuple[int, ...]  # the codes to execute
    accepted: bool  # every draft level was accepted
    accepted_levels: int  # levels accepted before the first rejection
    level_tv: tuple[float, ...]  # TV(p, q) at each level the draft's path reached


def total_variation(p: np.ndarray, q: np.ndarray) -> float:
    return float(0.5 * np.abs(p - q).sum())


def verify(draft: PolicyStep, target: PolicyStep, draft_codes: tuple[int, ...],
           rng: np.random.Generator) -> Verdict:
    """Accept or correct ``draft_codes`` (sampled from ``draft``) against ``target``."""
    prefix: tuple[int, ...] = ()
    tvs: list[float] = []
    levels = len(draft_codes)
    for code in draft_codes:
        q, p = draft.probs(prefix), target.probs(prefix)
        tvs.append(total_variation(p, q))
        if q[code] > 0 and rng.random() * q[code] < p[code]:  # accept w.p. min(1, p/q)
            prefix += (code,)
            continue
        residual = np.maximum(p - q, 0.0)
        total = residual.sum()
        prefix += (sample_categorical(residual / total if total > 0 else p, rng),)
        accepted_levels = len(prefix) - 1
        while len(prefix) < levels:
            prefix += (sample_categorical(target.probs(prefix), rng),)
        return Verdict(prefix, False, accepted_levels, tuple(tvs))
    return Verdict(prefix, True, levels, tuple(tvs))


def rejection_prob(draft: PolicyStep, target: PolicyStep, levels: int) -> float:
    """Exact probability that level-by-level verification rejects this step's draft.

    Level ``l`` accepts with probability ``Σ_c min(p, q)(c | prefix) = 1 − TV`` and the next
    level starts from the accepted code, so the acceptance probability of a prefix is
    ``A(prefix) = Σ_c min(p(c|prefix), q(c|prefix)) · A(prefix + c)``, with ``A = 1`` once
    all ``levels`` are chosen; rejection is ``1 − A(())``. It is at least the TV distance of
    the joint code distributions: level-wise acceptance cannot beat the joint overlap.
    """
    prefixes: list[tuple[int, ...]] = [()]
    reach = np.ones(1)  # probability of accepting every level up to each prefix
    for _ in range(levels):
        overlap = np.minimum(target.probs_batch(prefixes), draft.probs_batch(prefixes))
        reach = (reach[:, None] * overlap).reshape(-1)
        prefixes = [pre + (c,) for pre in prefixes for c in range(overlap.shape[1])]
    return float(1.0 - reach.sum())
