"""No function in memexp/ is over MAX_FUNCTION_LINES lines (docstring included), so each reads in one screen.

A hand-written kernel (memexp/kernels/) may stay longer when a comment at the function, within its first
lines, says why with the words "hand-written" (a backward that mirrors its forward step by step)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "memexp"
MAX_FUNCTION_LINES = 80
KERNELS = PACKAGE / "kernels"
EXEMPT_MARKER = "hand-written"
# Where the marker comment may stand: from just above the decorators to this many lines past the `def`.
MARKER_WINDOW = 12


def _functions(path: Path) -> list[ast.FunctionDef | ast.AsyncFunctionDef]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]


def _length(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    return fn.end_lineno - fn.lineno + 1


def _says_why(lines: list[str], fn: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """A comment naming the function hand-written, near its start (above it, or in the first lines of its body)."""
    first = min([fn.lineno] + [d.lineno for d in fn.decorator_list])
    window = lines[max(first - 2, 0) : fn.lineno + MARKER_WINDOW]
    return any("#" in line and EXEMPT_MARKER in line.split("#", 1)[1] for line in window)


def too_long() -> list[str]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        lines = path.read_text(encoding="utf-8").splitlines()
        for fn in _functions(path):
            n = _length(fn)
            if n <= MAX_FUNCTION_LINES:
                continue
            if path.is_relative_to(KERNELS) and _says_why(lines, fn):
                continue
            found.append(f"{rel}:{fn.lineno} {fn.name}: {n} lines")
    return found


def test_no_function_is_over_the_limit() -> None:
    found = too_long()
    assert not found, f"functions over {MAX_FUNCTION_LINES} lines (split them into helpers):\n" + "\n".join(found)


def test_the_check_catches_a_long_function(tmp_path: Path) -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    fn = _functions_of(tmp_path, f"def f():\n{body}\n")[0]
    assert _length(fn) == MAX_FUNCTION_LINES + 1
    lines = ["def f():", "    # a hand-written backward, mirroring the forward", *body.splitlines()]
    assert _says_why(lines, _functions_of(tmp_path, "\n".join(lines) + "\n")[0])
    assert not _says_why(["def f():", *body.splitlines()], fn)


def _functions_of(tmp_path: Path, source: str) -> list[ast.FunctionDef | ast.AsyncFunctionDef]:
    path = tmp_path / "f.py"
    path.write_text(source, encoding="utf-8")
    return _functions(path)
