"""The typed seams of a run: what a driver is given (`RunSpec`), what it returns (`RunResult`), and the study a run
does (`study_from_section`: the `study` section of a run config as one of three types).

`memexp.run` builds one `RunSpec` from the composed config and hands it to the driver its study names
(`memexp.runs.drivers.DRIVERS`: train, continual, knowledge); each driver returns a `RunResult`, which
`<run_dir>/metrics.json` holds as JSON (`as_dict`). Tests and scripts build a `RunSpec` directly.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import lightning as L

from memexp.errors import ConfigError
from memexp.runs.build import RunNames
from memexp.runs.studies import StudySettings
from memexp.tasks.optim import OptimizerSettings

# after_test(task, datamodule, loggers, run_dir, names) -> extra results stored under "study"
AfterTest = Callable[[L.LightningModule, L.LightningDataModule, list, Path, RunNames], dict]


@dataclass(frozen=True)
class ContinualStudy:
    """Train on tasks in sequence and test on all after each stage (memexp.runs.continual).
    board: a leaderboard column (memexp.evals.leaderboard)."""

    tasks: Sequence[str] = ("A", "B", "C")
    board: bool = False
    driver: ClassVar[str] = "continual"


@dataclass(frozen=True)
class KnowledgeStudy:
    """The ExplicitLM knowledge study (memexp.runs.knowledge): a backbone stage, a memory stage, `edits` edits.
    backbone: overrides of the backbone stage's settings (memexp.runs.knowledge.BACKBONE_DEFAULTS)."""

    edits: int = 100
    backbone: Mapping[str, Any] = field(default_factory=dict)
    driver: ClassVar[str] = "knowledge"


Study = StudySettings | ContinualStudy | KnowledgeStudy
STUDY_KINDS: dict[str | None, type] = {None: StudySettings, "continual": ContinualStudy, "knowledge": KnowledgeStudy}


def study_from_section(section: Mapping[str, Any] | None) -> Study | None:
    """The study of a run config's `study` section (None without one). `kind` picks the type (none: evaluations
    after the test); a name no study has is an error, one of another kind's is left (presets merge into one section:
    the leaderboard's evaluation settings reach its continual column)."""
    if not section:
        return None
    section = dict(section)
    kind = section.pop("kind", None)
    if kind not in STUDY_KINDS:
        raise ConfigError(f"study.kind={kind}: expected one of {', '.join(k for k in STUDY_KINDS if k)} (or none)")
    cls = STUDY_KINDS[kind]
    known = {f.name for t in STUDY_KINDS.values() for f in dataclasses.fields(t)}
    if unknown := sorted(set(section) - known):
        raise ConfigError(f"study.{unknown[0]}: no study has such a setting")
    own = {f.name for f in dataclasses.fields(cls)}
    values = {k: v for k, v in section.items() if k in own}
    if cls is StudySettings:  # the recall gaps and bins as ints, whatever the YAML held
        values = {k: [int(x) for x in v] if k in ("gaps", "lengths") else v for k, v in values.items()}
    return cls(**values)


@dataclass
class SampleSettings:
    """The text sample at the end of a run: `tokens` new tokens after `prompt` (0: none)."""

    tokens: int = 0
    prompt: str = "\n"


@dataclass
class RunSpec:
    """Everything a driver needs: the resolved config (for the run key and the loggers), the names the run is filed
    under, the factories of its pieces (partials from the config store), where it writes, and what it does after."""

    cfg: dict
    names: RunNames
    model: Callable
    data: Callable
    optim: OptimizerSettings
    trainer: Callable
    run_dir: Path
    checkpoint_root: Path | None = None
    logger: Mapping[str, Callable | None] | None = None
    callbacks: Mapping[str, Any] | None = None
    task: Mapping[str, Any] = field(default_factory=dict)  # the `task` section (memexp.tasks: each task's settings)
    study: Study | None = None
    fresh: bool = False
    ckpt_dir: Path | None = None  # None: derived from the run key (memexp.runs.train.checkpoint_dir)
    sample: SampleSettings = field(default_factory=SampleSettings)
    after_test: AfterTest | None = None
    extra_callbacks: list[L.Callback] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.run_dir = Path(self.run_dir)
        self.checkpoint_root = Path(self.checkpoint_root) if self.checkpoint_root is not None else None
        self.ckpt_dir = Path(self.ckpt_dir) if self.ckpt_dir else None

    def replace(self, **changes: Any) -> RunSpec:
        return dataclasses.replace(self, **changes)


@dataclass
class RunResult:
    """What a run leaves: its metrics, where its checkpoint and files are, the sample, where it resumed from, and
    what a study adds (`study`; the continual study's kept result file; the knowledge study's backbone run)."""

    metrics: dict[str, float]
    run_dir: str
    names: dict[str, Any]
    ckpt_dir: str | None = None
    sample: str | None = None
    resumed_from_step: int | None = None
    retested: bool | None = None  # True: the run had finished; it was tested again and nothing was trained
    threads: int | None = None
    study: dict | None = None
    result_file: str | None = None
    backbone_run: dict | None = None

    _OPTIONAL: ClassVar[tuple[str, ...]] = ("retested", "threads", "study", "result_file", "backbone_run")

    def as_dict(self) -> dict[str, Any]:
        """The JSON of `metrics.json` (optional parts only when present)."""
        out = dataclasses.asdict(self)
        return {k: v for k, v in out.items() if not (k in self._OPTIONAL and v is None)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RunResult:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})
