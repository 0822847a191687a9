"""Run many documented commands in one process (torch and the config store are imported once), for
tests/test_readme_commands.py:

    python tests/helpers/command_driver.py commands.json results.json

commands.json is a list of {"kind": "memexp" | "script", "argv": [...]}:
- "memexp": argv[0] is the module (`memexp.run`, `memexp.memory`, ...), the rest its arguments as the user typed
  them plus `--cfg job` (or `--help`); the entry point's `main()` runs with that command line, so the command line
  check and Hydra's composition run exactly as from the shell, without training.
- "script": argv[0] is `experiments/X.py`, the rest its arguments: the script runs as `__main__` until its
  argparse parser has parsed them (then it stops: nothing is computed), or to the end of `--help`.
results.json gets one {"rc": int, "out": str} per command.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import json
import runpy
import sys
from pathlib import Path


class Parsed(Exception):
    """Raised by the patched parse_args once a script's arguments have parsed."""


@contextlib.contextmanager
def stop_after_parsing():  # noqa: ANN201
    """While inside: argparse parses a script's command line (a bad argument exits with status 2), then stops it."""
    original = argparse.ArgumentParser.parse_args

    def parse_args(self, args=None, namespace=None):  # noqa: ANN001, ANN202
        original(self, args, namespace)
        raise Parsed

    argparse.ArgumentParser.parse_args = parse_args
    try:
        yield
    finally:
        argparse.ArgumentParser.parse_args = original


def run_one(kind: str, argv: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    old_argv, old_path = sys.argv, list(sys.path)
    rc: int = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            if kind == "memexp":
                module = "memexp.memory_cli" if argv[0] == "memexp.memory" else argv[0]
                sys.argv = [module, *argv[1:]]
                importlib.import_module(module).main()
            else:
                script = Path(argv[0]).resolve()
                sys.argv = [str(script), *argv[1:]]
                sys.path.insert(0, str(script.parent))
                with stop_after_parsing():
                    runpy.run_path(str(script), run_name="__main__")
    except Parsed:
        rc = 0
    except SystemExit as e:
        rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except Exception as e:  # noqa: BLE001 - reported as the command's failure
        rc, _ = 1, out.write(f"{type(e).__name__}: {e}")
    finally:
        sys.argv, sys.path[:] = old_argv, old_path
        from hydra.core.global_hydra import GlobalHydra

        GlobalHydra.instance().clear()
    return rc, out.getvalue()[-3000:]


def main() -> None:
    commands = json.loads(Path(sys.argv[1]).read_text())
    results = []
    for c in commands:
        rc, out = run_one(c["kind"], c["argv"])
        results.append({"rc": rc, "out": out})
    Path(sys.argv[2]).write_text(json.dumps(results))


if __name__ == "__main__":
    main()
