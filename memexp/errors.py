"""Errors that carry one sentence for the user.

Entry points catch `MemexpError` and print its message on one line (no traceback):
the message names the file, line or config field at fault and says what was expected.
"""


class MemexpError(Exception):
    """Base class: bad input that the user can fix."""


class ConfigError(MemexpError, ValueError):
    """A configuration field holds a value that cannot work (names the field)."""


class DataError(MemexpError, ValueError):
    """A data file is missing, empty or malformed (names the file, line or chunk)."""


class CheckpointError(MemexpError, ValueError):
    """A checkpoint is missing, unreadable or belongs to another model (names the path)."""
