"""What a run says: a line on the console that also lands in the run folder's log file.

Hydra configures logging for every entry point (`JOB_LOGGING`): the console shows warnings and our own lines
(`say`), the file `<run folder>/memexp.log` holds those and every library's INFO records (Lightning's accelerator
and checkpoint lines, the full model summary), and is created only when something is written to it.
"""

from __future__ import annotations

import logging

_CONSOLE = logging.getLogger("memexp.console")

# Hydra's job_logging for memexp's apps (memexp.configs.apps): the console handler passes warnings and the lines of
# `say`; the file handler everything from INFO up, opened on the first record (`delay`), so no empty log is left
JOB_LOGGING = {
    "version": 1,
    "formatters": {
        "plain": {"format": "%(message)s"},
        "stamped": {"format": "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"},
    },
    "filters": {"ours": {"()": "memexp.console.OursOrWarnings"}},
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain", "stream": "ext://sys.stdout", "filters": ["ours"]},
        "file": {
            "class": "logging.FileHandler",
            "formatter": "stamped",
            "filename": "${hydra.runtime.output_dir}/${hydra.job.name}.log",
            "delay": True,
        },
    },
    "root": {"level": "INFO", "handlers": ["console", "file"]},
    "disable_existing_loggers": False,
}


class OursOrWarnings(logging.Filter):
    """The console's filter: memexp's own lines, and anything of WARNING or above."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.name == _CONSOLE.name or record.levelno >= logging.WARNING


def configured() -> bool:
    """True inside an app whose logging Hydra configured from JOB_LOGGING."""
    return any(isinstance(f, OursOrWarnings) for h in logging.getLogger().handlers for f in h.filters)


def say(*parts: object) -> None:
    """A console line, also written to the run's log file (plain `print` outside a configured app: tests, scripts)."""
    text = " ".join(str(p) for p in parts)
    if configured():
        _CONSOLE.info(text)
    else:
        print(text, flush=True)


def to_log(text: str) -> None:
    """Lines for the log file only (the full model summary, the final table as text)."""
    if configured():
        logging.getLogger("memexp.log").info(text)


def libraries_to_log() -> None:
    """Lightning's INFO lines (accelerators, checkpoint restored, `fit` stopped) into the log file, not the console.

    Lightning gives its loggers a console handler of their own when it is imported before logging is configured
    (memexp imports it while registering its configs); here they hand their records to the root logger instead.
    """
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        lg = logging.getLogger(name)
        for h in list(lg.handlers):
            if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler):
                lg.removeHandler(h)
        lg.propagate = True
    logging.captureWarnings(True)  # warnings.warn (Lightning's rank_zero_warn too) -> the console and the log file
