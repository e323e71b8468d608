"""Draft and target BC policies (VQ-BeT style) sharing one action tokenizer per task."""

from hybrid_policy.policies.checkpoint import (
    PolicyCard, check_pair, load_policy, load_tokenizer, read_policy_card,
)
from hybrid_policy.policies.model import ROLE_SIZES, BCPolicy, ObsHistory, PolicyConfig
from hybrid_policy.policies.runtime import Policy, PolicyStep
from hybrid_policy.policies.tokenizer import ActionTokenizer, TokenizerConfig

__all__ = [
    "ROLE_SIZES",
    "ActionTokenizer",
    "BCPolicy",
    "ObsHistory",
    "Policy",
    "PolicyConfig",
    "PolicyCard",
    "PolicyStep",
    "TokenizerConfig",
    "check_pair",
    "load_policy",
    "load_tokenizer",
    "read_policy_card",
]
