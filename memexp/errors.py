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


def require_positive_ints(section: str, fields: dict[str, object]) -> None:
    """A ConfigError naming `<section>.<field>` for the first value that is not an int >= 1 (bools excluded)."""
    for field, value in fields.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{section}.{field}={value!r} must be a positive integer")
