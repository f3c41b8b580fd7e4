"""Figures and tables for reports: small multiples with distinct lines, log scale for a loss,
bands clipped at zero, failed runs left out and counted, a zipped group as one axis, values in
the order given, no std for one run, every metric a family records; Markdown, LaTeX and a zip."""

import io
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Iterator
from typing import Any

import matplotlib.pyplot as plt
import pytest
from fastapi.testclient import TestClient

from api import plots
from core.sweeps import direction_of, report_table
from tests.api.test_sweeps import TINY, create
from tests.conftest import api_client
from workers.runner import run_job


@pytest.fixture
def figures(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The matplotlib figures the plotting functions draw, before they are saved and closed."""
    drawn: list[Any] = []

    def keep(figure: Any, fmt: str = "png") -> bytes:
        drawn.append(figure)
        return b""

    monkeypatch.setattr(plots, "_png", keep)
    yield drawn
    plt.close("all")


def test_fifteen_cells_in_panels_each_keep_a_distinct_line(figures: list[Any]) -> None:
    xs = [0, 1, 2, 3]
    panels = {
        f"lr = {lr}": {
            f"hidden={h}": (xs, [4.0, 2.0, 1.0, 0.5], [3.0, 1.0, 0.9, 0.2])
            for h in (10, 20, 30, 40, 50)
        }
        for lr in (0.001, 0.01, 0.1)
    }
    panels["lr = 0.1"]["hidden=60"] = (xs, [16.0, 16.0, 16.0, 16.0], [None] * 4)  # one run
    plots.bands(panels, "t", "epoch", "loss", log=True)
    (figure,) = figures
    axes = [ax for ax in figure.axes if ax.get_visible() and ax.lines]
    assert [ax.get_title() for ax in axes] == list(panels)
    assert all(ax.get_yscale() == "log" for ax in axes)
    styles = {}
    for ax in axes:
        for line in ax.lines:
            styles.setdefault(line.get_label(), set()).add((line.get_color(), line.get_linestyle()))
    assert all(len(kept) == 1 for kept in styles.values())  # a label looks alike in every panel
    assert len({next(iter(kept)) for kept in styles.values()}) == len(styles) == 6
    for ax in axes:
        for band in ax.collections:  # fill_between: never below zero for a loss
            assert band.get_paths()[0].vertices[:, 1].min() >= 0
    last = axes[-1]
    assert len(last.collections) == 5  # the one-run cell has no band


def test_a_gans_learning_curves_draw_every_metric_it_records(figures: list[Any]) -> None:
    history = [
        {"epoch": e, "train_d_loss": 1.0, "train_g_loss": 2.0, "train_d_real": 0.6}
        | {"train_d_fake": 0.4, "val_d_loss": 1.1, "val_d_real": 0.5, "val_d_fake": 0.45}
        for e in range(3)
    ]
    plots.learning_curves(history, "gan")
    (figure,) = figures
    drawn = [ax.get_ylabel() for ax in figure.axes if ax.get_visible()]
    assert drawn == ["d_loss", "g_loss", "d_real", "d_fake"]


def test_category_values_keep_the_order_they_are_given(figures: list[Any]) -> None:
    lines = {"adam": (["[64,16]", "[128,32]", "[8]"], [0.9, 0.95, 0.7], [0.01, 0.0, 0.02])}
    plots.errorbars(lines, "t", "model.hidden", "test_accuracy")
    (figure,) = figures
    assert [t.get_text() for t in figure.axes[0].get_xticklabels()] == [
        "[64,16]",
        "[128,32]",
        "[8]",
    ]


def test_directions_of_table_figures() -> None:
    metrics = {"train_loss": "min", "val_loss": "min", "val_accuracy": "max"}
    assert direction_of("test_accuracy", metrics) == "max"
    assert direction_of("test_loss", metrics) == "min"
    assert direction_of("best_val_accuracy", metrics) == "max"
    assert direction_of("best_val_accuracy_epoch", metrics) is None
    assert direction_of("seconds", metrics) == "min"
    assert direction_of("n_params", metrics) is None


ROWS = [
    {"cell": 0, "train.optimizer.lr": 0.01, "n_params": 10, "test_accuracy_mean": 0.9}
    | {"test_accuracy_std": 0.01, "test_loss_mean": 0.3, "test_loss_std": None}
    | {"succeeded": 3, "repeats": 3},
    {"cell": 1, "train.optimizer.lr": 0.1, "n_params": 10, "test_accuracy_mean": 0.95}
    | {"test_accuracy_std": 0.02, "test_loss_mean": 0.2, "test_loss_std": 0.05}
    | {"succeeded": 1, "repeats": 3},
]
COLUMNS = list(ROWS[0])
METRICS = {"val_loss": "min", "val_accuracy": "max"}


def test_markdown_marks_the_best_of_each_column() -> None:
    text = report_table(COLUMNS, ROWS, METRICS, "markdown", precision=2)
    header, rule, first, second = text.splitlines()
    assert header == "| cell | train.optimizer.lr | n_params | test_accuracy | test_loss | n |"
    assert rule == "| --- | --- | --- | ---: | ---: | ---: |"
    assert first == "| 0 | 0.01 | 10 | 0.9 ± 0.01 | 0.3 | 3/3 |"  # one loss: no std
    assert second == "| 1 | 0.1 | 10 | **0.95 ± 0.02** | **0.2 ± 0.05** | 1/3 |"


def test_latex_is_a_booktabs_table_with_escaped_names() -> None:
    text = report_table(COLUMNS, ROWS, METRICS, "latex", precision=3)
    assert text.startswith("\\begin{tabular}{lllrrr}\n\\toprule\n")
    assert "cell & train.optimizer.lr & n\\_params & test\\_accuracy & test\\_loss & n \\\\" in text
    assert "\\textbf{0.95 $\\pm$ 0.02}" in text and text.rstrip().endswith("\\end{tabular}")


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    with api_client() as client:
        yield client


def test_a_sweep_report_end_to_end(
    client: TestClient, figures: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A zipped optimizer-with-lr group x two widths, two repeats, one job cancelled."""
    from core.settings import get_settings

    sweep = create(
        client,
        {
            "base": TINY,
            "axes": {"model.hidden.0": [8, 4]},
            "zip": [{"train.optimizer.name": ["sgd", "adam"], "train.optimizer.lr": [0.1, 0.01]}],
            "repeats": 2,
        },
    )
    detail = client.get(f"/sweeps/{sweep['id']}").json()
    alone = get_settings().model_copy(update={"stack_max": 1})
    jobs = [job["id"] for cell in detail["cells"] for job in cell["jobs"]]
    assert client.post(f"/jobs/{jobs[0]}/cancel").status_code == 202
    for job_id in jobs[1:]:
        assert run_job(job_id, settings=alone, worker="here") == "succeeded"
    url = f"/sweeps/{sweep['id']}"

    table = client.get(f"{url}/table").json()["rows"]
    assert table[0]["succeeded"] == 1 and table[0]["test_accuracy_std"] is None

    figures.clear()
    assert client.get(f"{url}/plots/metric.png", params={"axis": "train.optimizer.lr"}).is_success
    (figure,) = figures
    ticks = [t.get_text() for t in figure.axes[0].get_xticklabels()]
    assert ticks == ["name=sgd, lr=0.1", "name=adam, lr=0.01"]  # the group, in its order
    assert figure.axes[0].get_xlabel() == "train.optimizer.name / train.optimizer.lr"
    legend = [t.get_text() for t in figure.axes[0].get_legend().get_texts()]
    assert legend == ["model.hidden.0=8", "model.hidden.0=4"]

    figures.clear()
    assert client.get(f"{url}/plots/curves.png", params={"metric": "val_loss"}).is_success
    (figure,) = figures
    assert "1 failed or cancelled run left out" in figure.get_suptitle()
    panels = [ax for ax in figure.axes if ax.get_visible() and ax.lines]
    assert [ax.get_title() for ax in panels] == ["model.hidden.0 = 8", "model.hidden.0 = 4"]
    assert all(ax.get_yscale() == "log" for ax in panels)  # a loss, always positive
    linear = client.get(f"{url}/plots/curves.png", params={"scale": "linear"})
    assert linear.is_success and figures[-1].axes[0].get_yscale() == "linear"
    assert client.get(f"{url}/plots/curves.png", params={"panel": "nope"}).status_code == 422

    markdown = client.get(f"{url}/table", params={"format": "markdown", "precision": 2})
    assert markdown.headers["content-type"].startswith("text/markdown")
    assert markdown.text.count("**") >= 2 and "| n |" in markdown.text.splitlines()[0]
    latex = client.get(f"{url}/table", params={"format": "latex"}).text
    assert "\\textbf{" in latex and "\\toprule" in latex
    assert client.get(f"{url}/table", params={"precision": 0}).status_code == 422

    monkeypatch.undo()  # the zip's pictures are real files
    answer = client.get(f"{url}/report.zip")
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(answer.content))
    names = set(archive.namelist())
    expected = {"table.csv", "table.md", "table.tex", "sweep.json"}
    expected |= {f"{n}.{f}" for n in ("curves", "metric") for f in ("png", "svg")}
    expected |= {f"jobs/{job_id}.json" for job_id in jobs}
    assert names == expected
    assert archive.read("curves.png").startswith(b"\x89PNG")
    ET.fromstring(archive.read("metric.svg"))  # well-formed SVG
    assert '"provenance"' in archive.read(f"jobs/{jobs[1]}.json").decode()
    assert (
        archive.read("table.md").decode()
        == client.get(f"{url}/table", params={"format": "markdown"}).text
    )
