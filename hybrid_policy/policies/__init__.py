"""Draft and target BC policies (VQ-BeT style) sharing one action tokenizer per task.

Names are imported on first use (PEP 562), so ``hybrid_policy.policies.identity`` and the
other light modules can be used without loading torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "PolicyCard": "card", "check_pair": "card", "load_policy": "checkpoint",
    "load_tokenizer": "checkpoint", "read_policy_card": "card",
    "ROLE_SIZES": "model", "BCPolicy": "model", "ObsHistory": "model", "PolicyConfig": "model",
    "Policy": "runtime", "PolicyStep": "runtime",
    "ActionTokenizer": "tokenizer", "TokenizerConfig": "tokenizer",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value
