"""What every entry point shares: the Hydra app around a task function, and one-line errors."""

from __future__ import annotations

import functools
import logging
import sys
import warnings
from collections.abc import Callable

from hydra_zen import zen

from memexp.errors import MemexpError
from memexp.stopping import graceful_signals


def one_line_errors(fn: Callable) -> Callable:
    """Print a MemexpError as `error: <sentence>` and exit with status 2, without a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except MemexpError as e:
            print(f"error: {e}", file=sys.stderr, flush=True)
            raise SystemExit(2) from None
        except KeyboardInterrupt:
            print(
                "error: interrupted (Ctrl-C); files written so far are complete, the same command continues",
                file=sys.stderr,
                flush=True,
            )
            raise SystemExit(130) from None

    return wrapper


class _DropMessages(logging.Filter):
    def __init__(self, *fragments: str):
        super().__init__()
        self.fragments = fragments

    def filter(self, record: logging.LogRecord) -> bool:
        return not any(f in record.getMessage() for f in self.fragments)


def quiet_console() -> None:
    """Filter, deliberately, the console lines that tell a user nothing about their run: Lightning's
    advertisement for another logger, its note that our model summary (memexp.runs.progress.RunSummary) replaces
    its default, a deprecation inside Lightning's own pytree helper (fixed upstream, not in our code), and the
    throughput monitor's request for a FLOPs count. The warnings our code caused are fixed where they arise (weights_only, W&B's anonymous)."""
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(
        _DropMessages("try installing [litlogger]", "Trainer already configured with model summary callbacks")
    )
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
    # the throughput monitor (memexp.runs.train.throughput_monitor) counts batches, samples and tokens; FLOPs cannot
    # be counted for every model (HOPE runs autograd inside its forward), so it is not given them
    warnings.filterwarnings("ignore", message=r"When using the `ThroughputMonitor`, you need to define a `flops_per_batch`")
    # the run summary counts parameters, not bytes: its size estimate's dtype does not matter to us
    warnings.filterwarnings("ignore", message=r"Precision .* is not supported by the model summary")


def launch(task_function: Callable, config_name: str, folder: str) -> None:
    """Run `task_function` as a Hydra app on the stored config `config_name` (`--help`: memexp.help, fast)."""
    from memexp.configs.overrides import check_command_line
    from memexp.configs.search import prepare_app
    from memexp.help import answer_help

    answer_help(config_name)
    graceful_signals()
    quiet_console()
    prepare_app(config_name, folder)  # presets from ./conf/local, ./conf, memexp/conf (memexp.configs.search)
    one_line_errors(check_command_line)(config_name, sys.argv[1:])  # Hydra's composition errors in one line
    app = zen(one_line_errors(task_function))
    app.hydra_main(config_name=config_name, config_path=None, version_base="1.3")


def chosen_model() -> str | None:
    """The `model=NAME` given on the command line of evaluate/generate, if any."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    return HydraConfig.get().runtime.choices.get("model")
