"""The plain functions of core/sweeps.py: cells across families expanded and checked, the best
value of each metric over epochs read from metric rows, and the table built from them."""

import statistics
from typing import Any

import pytest
from sqlalchemy import select

from core.db import Job, Metric, Sweep, session_scope
from core.settings import Settings
from core.sweeps import (
    SweepProblem,
    SweepSpec,
    best_over_epochs,
    expand,
    families_of,
    of_family,
    table,
)
from models.specs import parse_job_spec


def normalize(document: dict[str, Any]) -> dict[str, Any]:
    return parse_job_spec(document).model_dump(mode="json")


BASE = {"family": "mlp", "dataset": {"name": "mackey_glass", "lag": 8}, "model": {"hidden": [8]}}


def test_a_zipped_family_and_model_make_documents_of_each_family() -> None:
    spec = SweepSpec(
        base=BASE,
        zip=[{"family": ["mlp", "lstm"], "model": [{"hidden": [4]}, {"hidden": 4, "layers": 2}]}],
        axes={"dataset.lag": [4, 6], "model.activation": ["tanh"]},
    )
    cells, documents = expand(spec, normalize, 100)
    assert len(cells) == 4
    by_family = {(d[0]["family"], d[0]["dataset"]["lag"]): d[0] for d in documents}
    assert set(by_family) == {("mlp", 4), ("mlp", 6), ("lstm", 4), ("lstm", 6)}
    lstm = by_family["lstm", 4]
    # The section the cell set, its family's defaults filled in, then the path set into it.
    assert lstm["model"]["hidden"] == 4 and lstm["model"]["layers"] == 2
    assert lstm["model"]["activation"] == "tanh" and lstm["model"]["bidirectional"] is False
    assert by_family["mlp", 6]["model"]["hidden"] == [4]
    assert by_family["mlp", 6]["model"]["activation"] == "tanh"


def test_paths_into_a_section_an_axis_set_are_checked_against_that_section() -> None:
    # The base has one hidden layer; the cells' sections have two, so model.hidden.1 exists.
    spec = SweepSpec(
        base=BASE,
        axes={"model": [{"hidden": [8, 8]}, {"hidden": [16, 16]}], "model.hidden.1": [2, 3]},
    )
    _, documents = expand(spec, normalize, 100)
    assert [d[0]["model"]["hidden"] for d in documents] == [[8, 2], [8, 3], [16, 2], [16, 3]]


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"axes": {"family": ["mlp", "lstm"]}}, "axes.family", 'zip "family" with "model"'),
        (
            {"zip": [{"family": ["mlp", "lstm"], "model": [{"hidden": [4]}, {"hidden": [4]}]}]},
            "zip.0.model",
            "cell 1 (family='lstm'",
        ),
        (
            {
                "zip": [{"family": ["mlp", "lstm"], "model": [{"hidden": [4]}, {"hidden": 4}]}],
                "axes": {"model.layers": [1, 2]},
            },
            "axes.model.layers",
            "cell 0 (model.layers=1, family='mlp'",
        ),
        (
            {"axes": {"dataset.lag": [4, 6]}, "zip": [{"family": ["mlp", "nope"]}]},
            "zip.0.family",
            "cell 1",
        ),
    ],
)
def test_a_cell_that_does_not_fit_its_family_names_the_axis(
    body: dict[str, Any], field: str, message: str
) -> None:
    with pytest.raises(SweepProblem) as caught:
        expand(SweepSpec(base=BASE, **body), normalize, 100)
    assert caught.value.field == field and message in str(caught.value), str(caught.value)


def job(name: str, cell: int, result: dict[str, float], status: str = "succeeded") -> Job:
    return Job(
        id=name,
        family="mlp",
        status=status,
        spec={},
        sweep_cell=cell,
        result=result,
        n_params=10 + cell,
    )


def test_the_table_has_the_best_of_each_metric_and_its_epoch() -> None:
    a, b = job("a", 0, {"test_loss": 1.0}), job("b", 0, {"test_loss": 3.0})
    c = job("c", 1, {"test_loss": 2.0})
    failed = job("failed", 1, {}, status="failed")
    best = {
        a.id: {"val_accuracy": (0.9, 3.0), "val_loss": (0.2, 4.0)},
        b.id: {"val_accuracy": (0.7, 1.0), "val_loss": (0.4, 2.0)},
        c.id: {"val_accuracy": (0.5, 2.0)},
        failed.id: {"val_accuracy": (1.0, 1.0)},  # a failed job's figures are left out
    }
    cells = [{"family": "mlp"}, {"family": "lstm"}]
    columns, rows = table(cells, [a, b, c, failed], {a.id: 5.0, b.id: 7.0}, best)
    assert columns == [
        "cell",
        "family",
        "n_params",
        "test_loss_mean",
        "test_loss_std",
        "best_val_accuracy_mean",
        "best_val_accuracy_std",
        "best_val_accuracy_epoch_mean",
        "best_val_accuracy_epoch_std",
        "best_val_loss_mean",
        "best_val_loss_std",
        "best_val_loss_epoch_mean",
        "best_val_loss_epoch_std",
        "seconds_mean",
        "seconds_std",
        "succeeded",
        "repeats",
    ]
    first, second = rows
    assert first["best_val_accuracy_mean"] == pytest.approx(0.8)
    assert first["best_val_accuracy_std"] == pytest.approx(statistics.stdev([0.9, 0.7]))
    assert first["best_val_accuracy_epoch_mean"] == pytest.approx(2.0)
    assert first["best_val_loss_mean"] == pytest.approx(0.3)
    assert first["best_val_loss_epoch_mean"] == pytest.approx(3.0)
    assert first["seconds_mean"] == pytest.approx(6.0)
    assert (second["best_val_accuracy_mean"], second["best_val_accuracy_std"]) == (0.5, None)
    assert second["best_val_accuracy_epoch_mean"] == 2.0
    assert second["best_val_loss_mean"] is None and second["seconds_mean"] is None
    assert (second["family"], second["n_params"], second["succeeded"]) == ("lstm", 11, 1)


def test_best_over_epochs_reads_the_metric_rows(db_settings: Settings) -> None:
    """On SQLite and PostgreSQL: min for a loss, max for an accuracy, the first epoch that
    reached it, epoch 0 (the initial weights) never counted, folds averaged."""
    curves = {
        # job -> fold -> epoch -> metrics
        "plain": {
            0: {
                0: {"val_loss": 0.01, "val_accuracy": 0.99},
                1: {"val_loss": 0.9, "val_accuracy": 0.5},
                2: {"val_loss": 0.4, "val_accuracy": 0.8},
                3: {"val_loss": 0.6, "val_accuracy": 0.8},
                4: {"val_loss": 0.5},
            }
        },
        "folds": {
            0: {1: {"val_loss": 0.3}, 2: {"val_loss": 0.2}},
            1: {1: {"val_loss": 0.1}, 2: {"val_loss": 0.7}},
        },
        "other": {0: {1: {"val_loss": 0.0, "val_accuracy": 0.0}}},
    }
    # The sweep's families joined are longer than the column was before sweeps had several.
    families = ["mlp", "lstm", "cnn", "ae", "vit", "sae", "rbm", "dbm", "gan"]
    with session_scope(db_settings.database_url) as session:
        session.add(Sweep(id="mixed", spec={}, cells=[], family=",".join(families)))
        session.add(Sweep(id="mlps", spec={}, cells=[], family="mlp"))
        for job_id, folds in curves.items():
            session.add(Job(id=job_id, family="mlp", spec={}, status="succeeded"))
            session.flush()
            for fold, epochs in folds.items():
                for epoch, values in epochs.items():
                    session.add(
                        Metric(
                            job_id=job_id,
                            fold=fold,
                            epoch=epoch,
                            seconds=1.0,
                            attempt=1,
                            values=values,
                        )
                    )
    directions = {"val_loss": "min", "val_accuracy": "max"}
    with session_scope(db_settings.database_url) as session:
        best = best_over_epochs(
            session, {"plain": directions, "folds": {"val_loss": "min"}, "absent": directions}
        )
        assert best == {
            "plain": {"val_loss": (0.4, 2.0), "val_accuracy": (0.8, 2.0)},
            "folds": {"val_loss": (pytest.approx(0.15), 1.5)},
        }
        assert best_over_epochs(session, {}) == {}
        mixed = session.get(Sweep, "mixed")
        assert families_of(mixed) == families
        for family, found in (("mlp", {"mixed", "mlps"}), ("gan", {"mixed"}), ("ml", set())):
            assert set(session.scalars(select(Sweep.id).where(of_family(family)))) == found
        assert set(session.scalars(select(Sweep.id).where(of_family("%")))) == set()
