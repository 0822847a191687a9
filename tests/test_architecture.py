"""The house rules of docs/architecture.md, checked on the source: imports only go down the layers
(also imports inside functions), no import cycles, Hydra only in configs/ and the entry points,
and every file read in one sitting."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "memexp"
MAX_LINES = 400
WHOLE_MARKER = "# read whole:"  # a file longer than MAX_LINES says in this comment why it is better whole

# Lower number = lower layer. A module may import its own layer or lower ones.
LAYERS = {
    "memexp": 0,
    "memexp.errors": 0,
    "memexp.files": 0,
    "memexp.stopping": 0,
    "memexp.console": 0,  # the console lines of every layer (logging only)
    "memexp.kernels": 1,
    "memexp.models": 2,
    "memexp.data": 3,
    "memexp.tasks": 3,
    "memexp.evals": 3,
    "memexp.memory": 3,
    "memexp.runs": 4,
    "memexp.configs": 5,
    # `python -m memexp.memory` runs this file: a shim that calls the entry point memexp.memory_cli
    "memexp.memory.__main__": 6,
}
ENTRY_LAYER = 6  # memexp/<name>.py that is not listed above: run, prepare, evaluate, generate, chat, report, entry
HYDRA = ("hydra", "hydra_zen", "omegaconf")
HYDRA_ALLOWED_FROM = 5
LIGHTNING = ("lightning", "pytorch_lightning")
LIGHTNING_FORBIDDEN_BELOW = 3  # models and kernels are plain torch


def layer_of(module: str) -> int:
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        key = ".".join(parts[:n])
        if key in LAYERS and (n > 1 or len(parts) == 1):
            return LAYERS[key]
    return ENTRY_LAYER


def module_name(path: Path, root: Path = PACKAGE) -> str:
    rel = path.relative_to(root.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, modules: set[str], root: Path = PACKAGE) -> tuple[set[str], set[str]]:
    """(memexp modules imported anywhere in the file, top-level names of other packages imported)."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    inner, outer = set(), set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(up + ([base] if base else []))
            # `from pkg import sub` imports the submodule when there is one, else a name of pkg
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        for t in targets:
            if t == "memexp" or t.startswith("memexp."):
                while t not in modules and "." in t:
                    t = t.rpartition(".")[0]
                if t != name:
                    inner.add(t)
            else:
                outer.add(t.split(".")[0])
    return inner, outer


def import_graph(root: Path = PACKAGE) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    files = {module_name(p, root): p for p in root.rglob("*.py")}
    modules = set(files)
    inner, outer = {}, {}
    for name, path in files.items():
        inner[name], outer[name] = imports_of(path, modules, root)
    return inner, outer


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return sorted(
        f"{a} (layer {layer_of(a)}) imports {b} (layer {layer_of(b)})"
        for a, targets in graph.items()
        for b in targets
        if layer_of(b) > layer_of(a)
    )


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


# ----------------------------------------------------------------------------- the checker, checked


def test_checker_finds_an_upward_import_a_hidden_cycle_and_a_relative_import(tmp_path):
    pkg = tmp_path / "memexp"
    for sub in ("models", "runs", "tasks"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "models" / "net.py").write_text("def f():\n    from memexp.runs.train import g\n")  # up, inside a function
    (pkg / "runs" / "train.py").write_text("from memexp.models.net import f\nfrom memexp.tasks import lm\n")
    (pkg / "tasks" / "lm.py").write_text("from . import other\n")
    (pkg / "tasks" / "other.py").write_text("def h():\n    from .lm import x\n")  # a cycle hidden in a function
    graph, _ = import_graph(pkg)
    assert graph["memexp.runs.train"] == {"memexp.models.net", "memexp.tasks.lm"}
    assert upward_imports(graph) == ["memexp.models.net (layer 2) imports memexp.runs.train (layer 4)"]
    assert sorted(cycles(graph)) == [["memexp.models.net", "memexp.runs.train"], ["memexp.tasks.lm", "memexp.tasks.other"]]


# ----------------------------------------------------------------------------- the house


def test_imports_only_go_down_the_layers():
    graph, _ = import_graph()
    assert upward_imports(graph) == []


def test_no_import_cycles_even_inside_functions():
    graph, _ = import_graph()
    assert cycles(graph) == []


def test_hydra_only_in_configs_and_entry_points_lightning_not_in_models():
    _, outer = import_graph()
    hydra = sorted(m for m, libs in outer.items() if set(libs) & set(HYDRA) and layer_of(m) < HYDRA_ALLOWED_FROM)
    lightning = sorted(m for m, libs in outer.items() if set(libs) & set(LIGHTNING) and layer_of(m) < LIGHTNING_FORBIDDEN_BELOW)
    assert hydra == []
    assert lightning == []


def test_model_files_do_no_file_io():
    offenders = []
    for path in (PACKAGE / "models").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) in (
                "open",
                "read_text",
                "write_text",
                "read_bytes",
                "write_bytes",
                "load_inline",
                "mkdir",
            ):
                offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert offenders == []


SOURCES = sorted([*PACKAGE.rglob("*.py"), *PACKAGE.rglob("*.cpp")])


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_every_file_is_read_in_one_sitting(path):
    text = path.read_text(encoding="utf-8")
    n = text.count("\n")
    marker = WHOLE_MARKER if path.suffix == ".py" else WHOLE_MARKER.replace("#", "//")
    assert n <= MAX_LINES or marker in text, f"{path.relative_to(PACKAGE)} has {n} lines (> {MAX_LINES})"


def folder_of(module: str) -> str | None:
    """memexp.data.explicit.stream -> memexp.data (the folder under memexp/ a module lives in; None for a file
    directly in memexp/)."""
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 2 or (PACKAGE / parts[-1]).is_dir() else None


def test_no_two_folders_import_each_other():
    """Within a layer folders may use each other, in one direction only (data/ and memory/ did both ways)."""
    graph, _ = import_graph()
    folders: dict[str, set[str]] = {}
    for a, targets in graph.items():
        for b in targets:
            fa, fb = folder_of(a), folder_of(b)
            if fa and fb and fa != fb:
                folders.setdefault(fa, set()).add(fb)
    assert cycles(folders) == []
