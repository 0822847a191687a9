"""The user docs keep their word: every shell command in README.md works as shown, every relative link in
README.md, CHANGELOG.md and docs/*.md resolves, they name no issue numbers or commit hashes, and docs/results.md
(with the README's results block) is what experiments/render_results.py renders from docs/results/*.json.

How each README command is checked (they are found in its ```bash blocks and on any line starting with
`python -m memexp` or `python experiments/`):
- set-up (venv, pip): its text against the install lines of .ci/run, which CI executes;
- `python -m memexp.<entry> ...`: composed by the entry point itself with Hydra's `--cfg job` (the command line check
  and the composition run, nothing trains; a `-m` sweep is composed once per job of the sweep), or run as given when
  it is `--help`;
- `python experiments/X.py ...`: the script's argparse parses exactly the listed arguments, and `--help` exits 0.
All of them run in one process (tests/helpers/command_driver.py), so torch is imported once.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO, experiment_script

README = REPO / "README.md"
USER_DOCS = [README, REPO / "CHANGELOG.md", *sorted((REPO / "docs").glob("*.md"))]


# -- the README's commands


def readme_commands(text: str) -> list[list[str]]:
    """Every command of the README's ```bash blocks (continuation lines joined, comments dropped), then any other
    line that starts with `python -m memexp` or `python experiments/`; each as its words (shell quoting removed)."""
    commands, in_bash, in_other, pending = [], False, False, ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("```"):
            if in_bash or in_other:
                in_bash = in_other = False
            elif stripped == "```bash":
                in_bash = True
            else:
                in_other = True
            continue
        if in_bash:
            if stripped.endswith("\\"):
                pending += stripped[:-1] + " "
                continue
            words = shlex.split(pending + stripped, comments=True)
            pending = ""
            if words:
                commands.append(words)
        elif not in_other and (stripped.startswith("python -m memexp") or stripped.startswith("python experiments/")):
            commands.append(shlex.split(stripped.strip("`"), comments=True))
    return commands


def ci_install_lines() -> list[list[str]]:
    """.ci/run's `pip install` lines as words, without pip's `-q`."""
    lines = (REPO / ".ci" / "run").read_text().splitlines()
    return [[w for w in shlex.split(line) if w != "-q"] for line in lines if line.strip().startswith("pip install")]


SETUP = (["python3", "-m", "venv"], [".", ".venv/bin/activate"], ["pip", "install"])


def split_steps(words: list[str]) -> list[list[str]]:
    """The steps of a `... && ... && ...` command."""
    steps, step = [], []
    for w in words:
        if w == "&&":
            steps.append(step)
            step = []
        else:
            step.append(w)
    return [*steps, step]


def sweep_jobs(args: list[str]) -> list[list[str]]:
    """The jobs of a `-m` command line: each comma-separated override value in turn (outside brackets)."""
    choices = []
    for a in args:
        key, eq, value = a.partition("=")
        if eq and "," in value and not value.startswith(("[", "{")):
            choices.append([f"{key}={v}" for v in value.split(",")])
        else:
            choices.append([a])
    return [list(job) for job in itertools.product(*choices)]


def planned_checks() -> tuple[list[list[str]], list[dict], list[str]]:
    """(set-up steps, the driver's commands, the README command behind each driver command)."""
    setup, plan, names = [], [], []
    for command in readme_commands(README.read_text()):
        for argv in split_steps(command):
            step = " ".join(argv)
            if any(argv[: len(s)] == s for s in SETUP) or argv[:3] == ["python", "-m", "pytest"]:
                setup.append(argv)
            elif argv[:2] == ["python", "-m"] and argv[2].startswith("memexp."):
                module, args = argv[2], argv[3:]
                if "--help" in args:
                    jobs = [args]
                else:
                    multirun = "-m" in args or "--multirun" in args
                    args = [a for a in args if a not in ("-m", "--multirun")]
                    jobs = [[*job, "--cfg", "job"] for job in (sweep_jobs(args) if multirun else [args])]
                for job in jobs:
                    plan.append({"kind": "memexp", "argv": [module, *job]})
                    names.append(step)
            elif argv[0] == "python" and len(argv) > 1 and argv[1].startswith("experiments/"):
                script = str(REPO / argv[1])
                plan += [{"kind": "script", "argv": [script, *argv[2:]]}, {"kind": "script", "argv": [script, "--help"]}]
                names += [step, f"{argv[1]} --help"]
            else:
                raise AssertionError(f"a README command this test cannot check (add a way, or drop it): {step}")
    return setup, plan, names


def test_readme_commands_are_found_and_few():
    commands = readme_commands(README.read_text())
    assert any(c[:3] == ["python3", "-m", "venv"] for c in commands)
    assert ["python", "-m", "memexp.run"] in commands
    _, plan, _ = planned_checks()
    assert 5 <= len(plan) <= 45, len(plan)  # the checks below must stay well under a minute


def test_setup_commands_match_what_ci_installs():
    setup, _, _ = planned_checks()
    ci, ci_run = ci_install_lines(), (REPO / ".ci" / "run").read_text()
    assert ci, ".ci/run installs nothing?"
    pips = [s for s in setup if s[:2] == ["pip", "install"]]
    assert pips, "the README's set-up commands install nothing"
    for step in pips:
        # `pip install -e .` is the test set-up's `pip install -e ".[test,reference]"` without the test extras
        assert step in ci or [".[test,reference]" if w == "." else w for w in step] in ci, f"{step} is not one of .ci/run's {ci}"
    assert all(line in pips for line in ci), f"the README does not show all of .ci/run's install lines: {ci}"
    for step in setup:
        if step[:3] == ["python3", "-m", "venv"]:
            assert step == ["python3", "-m", "venv", ".venv"] and "python3 -m venv" in ci_run
        elif step[0] == ".":
            assert step == [".", ".venv/bin/activate"]
        elif step[:3] == ["python", "-m", "pytest"]:
            assert " ".join(step) in ci_run, f"{step}: CI runs the tests otherwise"


@pytest.mark.slow
def test_every_readme_command_composes_or_parses(tmp_path):
    _, plan, names = planned_checks()
    commands, results = tmp_path / "commands.json", tmp_path / "results.json"
    commands.write_text(json.dumps(plan))
    proc = subprocess.run(
        [sys.executable, str(REPO / "tests" / "helpers" / "command_driver.py"), str(commands), str(results)],
        cwd=tmp_path,  # nothing the commands might write lands in the repository
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    failed = [
        f"{name}\n  as run: {' '.join(p['argv'])}\n  rc {r['rc']}: {r['out'][-800:]}"
        for name, p, r in zip(names, plan, json.loads(results.read_text()))
        if r["rc"] != 0
    ]
    assert not failed, "README commands that do not work as shown:\n" + "\n".join(failed)


# -- links, issue numbers, commit hashes

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def heading_anchors(path: Path) -> set[str]:
    anchors, fenced = set(), False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            anchors.add(re.sub(r"\s", "-", re.sub(r"[^\w\s-]", "", title)))
    return anchors


@pytest.mark.parametrize("doc", USER_DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_resolve(doc):
    broken = []
    for target in LINK.findall(doc.read_text()):
        if re.match(r"^[a-z]+:", target) or target.startswith("#"):
            continue
        path, _, anchor = target.partition("#")
        resolved = (doc.parent / path).resolve()
        if not resolved.exists():
            broken.append(target)
        elif anchor and resolved.suffix == ".md" and anchor not in heading_anchors(resolved):
            broken.append(f"{target} (no such heading)")
    assert not broken, f"{doc.name}: links that do not resolve: {broken}"


FORBIDDEN = [
    (re.compile(r"\b[Ii]ssues? \d+"), "an issue number"),
    (re.compile(r"(?<![\w&/])#\d+\b"), "an issue or pull-request number"),
    (re.compile(r"\b(?:PR|pull request) ?#?\d+", re.I), "a pull-request number"),
    (re.compile(r"\bcommit [0-9a-f]{6,40}\b"), "a commit hash"),
    (re.compile(r"(?<![\w-])(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{7,40}(?![\w-])"), "a commit hash"),
]


@pytest.mark.parametrize("doc", USER_DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_no_issue_numbers_or_commit_hashes(doc):
    found = [f"{what}: {m.group(0)!r}" for pattern, what in FORBIDDEN for m in pattern.finditer(doc.read_text())]
    assert not found, f"{doc.name} names {found}"


def test_readme_is_short():
    assert len(README.read_text().splitlines()) <= 250


# -- docs/results.md and its JSON


def renderer():
    return experiment_script("render_results")


def test_results_page_and_readme_block_are_what_the_json_renders():
    rr = renderer()
    sections = rr.load_all()
    assert (REPO / "docs" / "results.md").read_text() == rr.render_page(sections), (
        "docs/results.md differs from docs/results/*.json: run python experiments/render_results.py"
    )
    assert README.read_text() == rr.render_readme(README.read_text(), sections), "README's results block is stale"
    assert rr.main(["--check"]) == 0


def test_check_fails_on_a_stale_page_and_rendering_writes_it(tmp_path, monkeypatch, capsys):
    rr = renderer()
    page, readme = tmp_path / "results.md", tmp_path / "README.md"
    page.write_text((REPO / "docs" / "results.md").read_text().replace("1.884", "1.885"))
    readme.write_text(README.read_text())
    monkeypatch.setattr(rr, "PAGE", page)
    monkeypatch.setattr(rr, "README", readme)
    monkeypatch.setattr(rr, "REPO", tmp_path)
    assert rr.main(["--check"]) == 1
    assert "results.md differs" in capsys.readouterr().out
    assert rr.main([]) == 0 and rr.main(["--check"]) == 0
    assert page.read_text() == (REPO / "docs" / "results.md").read_text()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary file left


GOOD = {"title": "T", "command": "python x.py", "machine": "m", "tables": [{"columns": ["a", "b"], "rows": [["1", 2]]}]}


@pytest.mark.parametrize(
    "text, says",
    [
        ('{"title": "T", ', "not valid JSON"),
        (json.dumps({k: v for k, v in GOOD.items() if k != "machine"}), "missing field 'machine'"),
        (json.dumps({**GOOD, "tables": [{"columns": ["a", "b"], "rows": [["1"]]}]}), "expected 2 cells"),
        (json.dumps({**GOOD, "tables": [{"columns": ["a", "b"], "rows": [["1", None]]}]}), "text or a number"),
        (json.dumps({**GOOD, "tables": [{"columns": ["a", "b"], "rows": [["1", math.nan]]}]}), "NaN"),
        (json.dumps({**GOOD, "kind": "pie"}), "unknown kind"),
        (json.dumps({**GOOD, "kind": "claims", "rows": [{"claim": "c"}]}), "missing field"),
        (json.dumps([GOOD]), "JSON object"),
    ],
)
def test_renderer_fails_loudly_on_malformed_json(tmp_path, monkeypatch, capsys, text, says):
    rr = renderer()
    (tmp_path / "01_bad.json").write_text(text)
    with pytest.raises(rr.ResultsError, match=re.escape(says)) as info:
        rr.load_all(tmp_path)
    assert "01_bad.json" in str(info.value)
    monkeypatch.setattr(rr, "RESULTS_DIR", tmp_path)
    monkeypatch.setattr(rr.load_all, "__defaults__", (tmp_path,))
    assert rr.main(["--check"]) == 2
    assert capsys.readouterr().err.startswith("error: 01_bad.json")


def test_a_good_file_renders_its_rows():
    rr = renderer()
    out = rr.section(GOOD)
    assert "## T" in out and "| a | b |" in out and "| 1 | 2 |" in out and "python x.py" in out


def test_claims_are_formatted_as_the_claims_tool_formats_them():
    from memexp.evals.claims import claims_markdown

    rr = renderer()
    data = rr.load(REPO / "docs" / "results" / "02_claims.json")
    tool = claims_markdown(data["rows"], "outputs/claims").split("\n\n")[0].splitlines()
    assert rr._claims(data) == tool


def test_the_glance_keeps_rows_of_one_model_at_several_settings():
    rr = renderer()
    data = {
        "title": "T",
        "glance": ["model", "acc"],
        "tables": [
            {
                "columns": ["model", "budget", "acc"],
                "rows": [["tf", "small", "0.2"], ["tf", "large", "0.99"], ["gdn", "small", "1.0"]],
            }
        ],
    }
    block = rr.render_glance([data])
    assert "| tf | 0.2 |" in block and "| tf | 0.99 |" in block and "| gdn | 1.0 |" in block
