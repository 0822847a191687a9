"""The report plots are labelled for what they hold: one axis per metric and dataset, labels that do not overlap,
legends beside the bars."""

from __future__ import annotations

import pytest

from memexp.evals import plots


@pytest.fixture
def figures(monkeypatch):
    """The figures the plot functions save, kept open for inspection."""
    kept = []
    save = plots.save_figure

    def keep(fig, path):
        kept.append(fig)
        return save(fig, path)  # laid out and written as a report writes it

    monkeypatch.setattr(plots, "save_figure", keep)
    monkeypatch.setattr(plots.plt, "close", lambda fig: None)  # open until the test has read it
    return kept


def _overlap(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def test_compare_metrics_keeps_datasets_apart_and_labels_readable(figures, tmp_path):
    models = ["transformer", "hope", "hyperlstm", "lstm_with_a_long_name"]
    summary = {
        f"{m} ({d})": {"val/loss": {"mean": 1.0 + i, "std": 0.1}, "val/acc": {"mean": 0.5, "std": 0.0}}
        for i, m in enumerate(models)
        for d in ("shakespeare", "recall")
    }
    plots.plot_compare_metrics(summary, tmp_path / "c.png")
    (fig,) = figures
    assert "HOPE" not in fig._suptitle.get_text()
    used = [ax for ax in fig.axes if ax.axison]
    titles = sorted(ax.get_title() for ax in used)
    assert titles == sorted(f"{k} ({d})" for k in ("val/loss", "val/acc") for d in ("shakespeare", "recall"))
    renderer = fig.canvas.get_renderer()
    for ax in used:
        data = ax.get_title().split(" (")[1]
        bars = [p for p in ax.patches]
        assert len(bars) == len(models)  # one bar per model of this dataset: text and recall never share an axis
        labels = [t for t in ax.get_yticklabels() if t.get_text()]
        boxes = [t.get_window_extent(renderer) for t in labels]
        assert not any(_overlap(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1 :]), data
        if labels:
            assert sorted(t.get_text() for t in labels) == sorted(models)


def test_binned_ppl_legend_is_beside_the_bars(figures, tmp_path):
    rows = [{"model": m, "length": n, "ppl": 3.0 + i} for i, m in enumerate(["hope", "transformer"]) for n in (64, 128, 256)]
    plots.plot_binned_ppl(rows, tmp_path / "b.png")
    (fig,) = figures
    (ax,) = fig.axes
    renderer = fig.canvas.get_renderer()
    legend = ax.get_legend().get_window_extent(renderer)
    assert not any(_overlap(legend, bar.get_window_extent(renderer)) for bar in ax.patches)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["<64", "<128", "<256"]
