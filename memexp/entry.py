"""What every entry point shares: the Hydra app around a task function, and one-line errors."""

from __future__ import annotations

import functools
import inspect
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
    # a frozen backbone (ExplicitLM's) stays in eval mode by design: memexp.runs.train says so in one line of its own
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode at the start of training")
    # Lightning warns of any IterableDataset with a length, whatever the workers: memexp's split their records between
    # workers (the explicit and dialogue streams) or are drawn in the main process (the knowledge study's batches)
    warnings.filterwarnings("ignore", message=r"Your `IterableDataset` has `__len__` defined")
    # a rerun resumes from its own checkpoint folder on purpose (memexp.runs.train) and says so ("resumed from step N")
    warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
    # ... and keeps the earlier steps' rows of its metrics.csv (memexp.runs.loggers.keep_csv_history), which Lightning
    # warns it deletes
    warnings.filterwarnings("ignore", message=r"Experiment logs directory .* exists and is not empty")
    # Lightning counts the logging interval in global steps across epochs, so an epoch shorter than it still logs
    warnings.filterwarnings("ignore", message=r"The number of training batches \(\d+\) is smaller than the logging interval")
    # the run summary counts parameters, not bytes: its size estimate's dtype does not matter to us
    warnings.filterwarnings("ignore", message=r"Precision .* is not supported by the model summary")


# what Hydra writes into every run folder: a folder holding only these holds nothing a run wrote
_HYDRA_FILES = {".hydra", "memexp.log"}


def drop_empty_run_folder() -> None:
    """Remove this job's run folder when nothing but Hydra's own files is in it: a run that failed before it wrote
    anything, or a read-only entry point (generate, evaluate, chat, memory) that wrote nothing there."""
    import shutil
    from pathlib import Path

    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return
    folder = Path(HydraConfig.get().runtime.output_dir)
    if folder.is_dir() and folder.resolve() != Path.cwd().resolve() and {p.name for p in folder.iterdir()} <= _HYDRA_FILES:
        logging.shutdown()  # the log file is closed before its folder goes
        shutil.rmtree(folder, ignore_errors=True)
        for parent in (folder.parent, folder.parent.parent):  # <app>/<day>/<time>: the day's and app's, left empty
            if parent.is_dir() and not any(parent.iterdir()):
                parent.rmdir()


def in_app(fn: Callable) -> Callable:
    """The task function as Hydra runs it: library INFO lines to the log file, and no run folder left empty."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from memexp.console import libraries_to_log

        libraries_to_log()
        try:
            return fn(*args, **kwargs)
        finally:
            drop_empty_run_folder()

    return wrapper


def launch(task_function: Callable, config_name: str, folder: str) -> None:
    """Run `task_function` as a Hydra app on the stored config `config_name` (`--help`: memexp.help, fast)."""
    from memexp.configs import snapshot
    from memexp.configs.overrides import check_command_line
    from memexp.configs.search import prepare_app
    from memexp.help import answer_help

    answer_help(config_name)
    graceful_signals()
    quiet_console()
    check = one_line_errors(check_command_line)  # Hydra's composition errors in one line
    saved = snapshot.load_snapshot(config_name)  # the store as this app fills it, without importing Lightning
    if saved is not None:
        try:
            check(config_name, sys.argv[1:])
        finally:
            snapshot.restore(saved)
        prepare_app(config_name, folder)  # presets from ./conf/local, ./conf, memexp/conf (memexp.configs.search)
    else:  # the first command line of these sources: fill the store, keep its snapshot for the next ones
        prepare_app(config_name, folder)
        snapshot.save_snapshot(config_name)
        check(config_name, sys.argv[1:])
    # a task function that takes **fields gets every config field (memexp.run's `run(zen_cfg, **pieces)`)
    takes_all = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in inspect.signature(task_function).parameters.values())
    app = zen(in_app(one_line_errors(task_function)), unpack_kwargs=takes_all)
    app.hydra_main(config_name=config_name, config_path=None, version_base="1.3")


def chosen_model() -> str | None:
    """The `model=NAME` given on the command line of evaluate/generate, if any."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    return HydraConfig.get().runtime.choices.get("model")
