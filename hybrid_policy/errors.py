"""User-facing errors of the hybrid_policy package: the message says what was wrong and
what is valid, and the CLI prints it without a traceback."""


class HybridPolicyError(Exception):
    """Base class of every user-facing error in ``hybrid_policy``."""


class CheckpointError(HybridPolicyError):
    """A checkpoint that is missing, corrupt, or does not fit what it is used with."""


class ObservationError(HybridPolicyError, ValueError):
    """An observation of the wrong length or with non-finite values."""
