"""What every entry point shares: the Hydra app around a task function, and one-line errors."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable

from hydra_zen import zen

from memexp.errors import MemexpError


def one_line_errors(fn: Callable) -> Callable:
    """Print a MemexpError as `error: <sentence>` and exit with status 2, without a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except MemexpError as e:
            print(f"error: {e}", file=sys.stderr, flush=True)
            raise SystemExit(2) from None

    return wrapper


def launch(task_function: Callable, config_name: str, folder: str) -> None:
    """Run `task_function` as a Hydra app on the stored config `config_name`."""
    from memexp.configs.search import prepare_app

    prepare_app(config_name, folder)  # presets from ./conf/local, ./conf, memexp/conf (memexp.configs.search)
    app = zen(one_line_errors(task_function))
    app.hydra_main(config_name=config_name, config_path=None, version_base="1.3")


def chosen_model() -> str | None:
    """The `model=NAME` given on the command line of evaluate/generate, if any."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    return HydraConfig.get().runtime.choices.get("model")
