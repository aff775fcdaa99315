"""Errors that sparse_lab reports to the user as one clear message (no stack trace)."""


class SparseLabError(Exception):
    """A problem the user can fix: the message says what went wrong and how to fix it."""


class DataNotFoundError(SparseLabError):
    """A dataset is missing or unreadable and cannot be downloaded."""


class ConfigError(SparseLabError):
    """A config value is invalid or two choices do not fit together."""
