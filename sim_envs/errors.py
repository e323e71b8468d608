"""Errors raised for bad user input to the simulation layer.

They carry a message meant for a person (what was wrong, what is valid), so the CLI
prints them as they are instead of a stack trace.
"""


class SimEnvError(Exception):
    """Base class of every user-facing error in ``sim_envs``."""


class UnknownTaskError(SimEnvError, KeyError):
    """A task name that is not in the registry."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class DatasetError(SimEnvError):
    """A demonstration data set that cannot be written or read as asked."""
