"""Constructor arguments renamed to the suite's one vocabulary (dim, depth, heads, ...).

The old names keep working for one release, with a FutureWarning (shown to users, unlike a
DeprecationWarning), so saved configs, checkpoints and command lines written with them load.
"""

from __future__ import annotations

import warnings
from typing import TypeVar

T = TypeVar("T")

REMOVED_IN = "memexp 0.3"


def renamed_argument(old: str, old_value: T | None, new: str, new_value: T) -> tuple[T, str]:
    """(value, name the caller used): `old_value` and `old` when the caller used the old name (with a
    warning), else `new_value` and `new`. Validation errors name the key the user wrote."""
    if old_value is None:
        return new_value, new
    warnings.warn(
        f"model.{old} is deprecated; use model.{new} (the old name is accepted until {REMOVED_IN})", FutureWarning, stacklevel=3
    )
    return old_value, old
