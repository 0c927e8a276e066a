"""The errors a user's input can cause, labelled by kind.

Each is reported by the scripts as one line, ``<kind> error: <message>``, with exit status 2;
raising one never modifies or deletes anything already saved.
"""

from __future__ import annotations


class InputError(ValueError):
    """A file or value the user supplied cannot be used; the message names it."""

    kind = "input"


class ConfigError(InputError):
    """A configuration value is unknown, mistyped or inconsistent; the message names the key."""

    kind = "config"


class DataError(InputError):
    """A corpus, shard folder or tokenizer is missing, damaged or does not fit the run."""

    kind = "data"


class CheckpointError(InputError):
    """A checkpoint folder is missing, partial, corrupt, or does not fit the configured run."""

    kind = "checkpoint"


class RunLockError(InputError):
    """Another live run holds the dump folder; the message names its host, pid and start."""

    kind = "run"
