"""An optimizer's hyperparameters in a job document: defaults per optimizer and task, refusals,
and documents stored before some hyperparameters existed."""

from typing import Any

import pytest
from pydantic import ValidationError

from core.spec import DEFAULT_LR, REGRESSION_LR, OptimizerName
from models.specs import parse_job_spec

NAMES: tuple[str, ...] = OptimizerName.__args__


def job(dataset: str = "digits", **optimizer: Any) -> dict[str, Any]:
    return {"family": "mlp", "dataset": {"name": dataset}, "train": {"optimizer": optimizer}}


@pytest.mark.parametrize("name", NAMES)
def test_a_document_stored_with_the_old_fields_reads_back_the_same(name: str) -> None:
    """Stored jobs held every old field, with its default where the optimizer ignored it."""
    old = {
        "name": name,
        "lr": 0.02,
        "momentum": 0.9 if name in ("momentum", "nesterov") else 0.0,
        "betas": [0.9, 0.999],
        "rho": 0.9,
        "max_iter": 20,
        "history_size": 100,
    }
    spec = parse_job_spec(job(**old)).train.optimizer
    assert spec.model_dump(include=set(old)) == old
    assert parse_job_spec(parse_job_spec(job(**old)).model_dump(mode="json")) == parse_job_spec(
        job(**old)
    )
    if name == "lbfgs":  # what it always ran with
        assert (spec.line_search_fn, spec.max_eval, spec.tolerance_grad) == (
            "strong_wolfe",
            25,
            1e-7,
        )


@pytest.mark.parametrize("name", NAMES)
def test_the_learning_rate_left_out_depends_on_the_task(name: str) -> None:
    assert parse_job_spec(job(name=name)).train.optimizer.lr == DEFAULT_LR[name]
    assert parse_job_spec(job("function1d", name=name)).train.optimizer.lr == REGRESSION_LR[name]
    assert parse_job_spec(job("function1d", name=name, lr=0.5)).train.optimizer.lr == 0.5


@pytest.mark.parametrize(
    ("optimizer", "field"),
    [
        ({"name": "adam", "momentum": 0.9}, "momentum"),
        ({"name": "nesterov", "dampening": 0.1}, "dampening"),
        ({"name": "sgd", "eps": 1e-3}, "eps"),
        ({"name": "adadelta", "centered": True}, "centered"),
        ({"name": "adam", "line_search_fn": "strong_wolfe"}, "line_search_fn"),
        ({"name": "rmsprop", "max_iter": 5}, "max_iter"),
        ({"name": "lbfgs", "tolerance_grad": -1.0}, "tolerance_grad"),
        ({"name": "lbfgs", "line_search_fn": "armijo"}, "line_search_fn"),
    ],
)
def test_a_hyperparameter_the_optimizer_does_not_take_is_refused(
    optimizer: dict[str, Any], field: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_job_spec(job(**optimizer))
    (error,) = caught.value.errors()
    at = [*error["loc"], *([error["ctx"]["at"]] if "at" in error.get("ctx", {}) else [])]
    assert at[-1] == field, error


def test_lbfgs_may_step_without_a_line_search() -> None:
    spec = parse_job_spec(job(name="lbfgs", line_search_fn=None, max_eval=7)).train.optimizer
    assert spec.line_search_fn is None and spec.max_eval == 7
    again = parse_job_spec(parse_job_spec(job(name="lbfgs", line_search_fn=None)).model_dump())
    assert again.train.optimizer.line_search_fn is None


def test_a_stored_job_whose_optimizer_ignored_a_value_reads_back() -> None:
    """Accepted before inapplicable hyperparameters were refused: sgd ignored its momentum."""
    document = job(name="sgd", lr=0.05, momentum=0.9)
    with pytest.raises(ValidationError, match="momentum"):
        parse_job_spec(document)
    spec = parse_job_spec(document, stored=True)
    assert (spec.train.optimizer.name, spec.train.optimizer.momentum) == ("sgd", 0.9)
