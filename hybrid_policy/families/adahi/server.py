"""The server's per-step work: sample from the target, or verify the draft's codes."""

from __future__ import annotations

from functools import partial
from typing import Callable

import numpy as np

from hybrid_policy.core.protocol import ProtocolError, Request, Response
from hybrid_policy.families.adahi.speculative import verify
from hybrid_policy.policies import Policy


class _SentDraft:
    """The draft's distributions along its own path, as the request carried them: all that
    verification reads (``probs`` of the accepted prefixes of the draft's codes)."""

    def __init__(self, codes: tuple[int, ...], probs: np.ndarray) -> None:
        self._rows = {codes[:lvl]: probs[lvl] for lvl in range(len(codes))}

    def probs(self, prefix: tuple[int, ...]) -> np.ndarray:
        return self._rows[prefix]


def serve(target: Policy, req: Request) -> Response:
    """Answer one request. Raises ``ProtocolError`` for a request the target cannot use."""
    check_request(target, req)
    return _answer(target, req, target.begin(req.window))


def serve_batch(target: Policy, requests: list[Request]) -> list[Response]:
    """Answer several requests with one forward pass of the target's trunk (a batching
    server). Each answer depends only on its own request (its seed draws its sampling); a
    batch of one is ``serve``. Raises ``ProtocolError`` if any request is unusable."""
    for req in requests:
        check_request(target, req)
    steps = target.begin_batch([req.window for req in requests])
    return [_answer(target, req, step) for req, step in zip(requests, steps)]


def check_request(target: Policy, req: Request) -> None:
    """Raise ``ProtocolError`` unless ``target`` can answer ``req`` (a batching server
    checks each request as it arrives, so one bad request never spoils a batch)."""
    if req.window.shape[1] != target.obs_dim:
        raise ProtocolError(f"request observations have {req.window.shape[1]} elements, the "
                            f"target expects {target.obs_dim}")
    if req.kind != "act" and (req.draft_probs is None or req.draft_probs.shape != (
            target.levels, target.codebook_size)):
        raise ProtocolError(f"verify request needs draft probabilities of shape "
                            f"({target.levels}, {target.codebook_size})")


def _answer(target: Policy, req: Request, step) -> Response:
    rng = np.random.default_rng(req.seed)
    if req.kind == "act":
        codes = step.sample(rng)
        return Response(step.action(codes), codes, True, target.levels, ())
    verdict = verify(_SentDraft(req.codes, req.draft_probs), step, req.codes, rng)
    return Response(step.action(verdict.codes), verdict.codes, verdict.accepted,
                    verdict.accepted_levels, verdict.level_tv)


def answering(target: Policy) -> Callable[[Request], Response]:
    """The target as a single robot's server (``core.evaluator.Setting.server``): each
    request served on its own, as ``target_node`` serves it."""
    return partial(serve, target)
