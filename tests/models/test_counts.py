"""Parameter counts come from the model built on the meta device (models/summary.py), and
admission caps them (models/admission.py); the configs hold no count of their own."""

import pytest

from core.catalog import resolve
from models.admission import MAX_PARAMS, TooBig, check, check_params
from models.base import n_params
from models.registry import REGISTRY
from models.specs import parse_job_spec
from models.summary import count_parameters
from tests.models.counts import BY_FAMILY, CONFIGS, job

IMAGES = [{"name": name} for name in ("digits", "fashion_mnist", "cifar10")]
# The same models over other input shapes (their datasets' data is not needed).
SHAPES = [
    *(job("vit", {"pool": pool}, d) for d in IMAGES for pool in ("cls", "mean")),
    *(
        job("lstm", {"hidden": 12, "layers": 2, "bidirectional": True, "head": [8]}, d)
        for d in [*IMAGES, {"name": "surface2d"}, {"name": "mackey_glass"}]
    ),
    *(
        job("gan", {"kind": kind, "latent": 5, "hidden": [16, 32], "filters": [8, 4]}, d)
        for d in IMAGES
        for kind in ("mlp", "conv")
    ),
    *(
        job(family, {"kind": "conv", "filters": filters, "kernel": kernel, "stride": stride}, d)
        for d in IMAGES
        for family in ("ae", "vae")
        for kernel, stride, filters in [(3, 2, [4, 8]), (4, 2, [4, 8]), (5, 3, [4, 8]), (3, 1, [4])]
    ),
    *(job("dbm", {"layers": [30, 20, 10]}, d) for d in IMAGES),
]


def test_every_family_has_configs_and_an_oracle() -> None:
    assert {c["family"] for c in CONFIGS} == set(REGISTRY) == set(BY_FAMILY)


@pytest.mark.parametrize("document", CONFIGS + SHAPES, ids=lambda d: d["family"])
def test_the_count_is_pytorchs_count_of_the_built_model(document: dict) -> None:
    spec = parse_job_spec(document)
    info = resolve(spec.dataset)
    built = n_params(REGISTRY[spec.family].build(spec, info))
    assert count_parameters(spec, info) == built
    assert BY_FAMILY[spec.family](spec.model, info.input_shape, info.n_classes or 1) == built


def test_the_count_is_cached_by_architecture_and_dataset() -> None:
    """The same model section on another dataset shape, or another model section on the same
    dataset, is another count."""

    def count(model: dict, dataset: dict) -> int:
        spec = parse_job_spec(job("mlp", model, dataset))
        return count_parameters(spec, resolve(spec.dataset))

    series = [{"name": "mackey_glass", "lag": lag} for lag in (4, 8, 4)]
    assert [count({"hidden": [5]}, d) for d in series] == [5 * 5 + 6, 9 * 5 + 6, 5 * 5 + 6]
    assert count({"hidden": [5, 5]}, series[0]) == 5 * 5 + 6 * 5 + 6


@pytest.mark.parametrize(
    "document",
    [
        job("mlp", {"hidden": [16_384] * 4}),
        job("lstm", {"hidden": 4096, "layers": 8}),
        job("vit", {"patch": 1, "dim": 4096, "depth": 32}, {"name": "cifar10"}),
        job("ae", {"hidden": [16_384] * 3}),
    ],
    ids=lambda d: d["family"],
)
def test_a_model_over_the_cap_is_refused_naming_the_model(document: dict) -> None:
    """The job document is valid; admission refuses it before building anything real."""
    spec = parse_job_spec(document)
    info = resolve(spec.dataset)
    count = count_parameters(spec, info)
    assert count > MAX_PARAMS
    for refuse in (lambda: check_params(spec, info), lambda: check(spec, info, 2**62)):
        with pytest.raises(TooBig, match=f"{count:,} parameters; the limit is 50,000,000") as no:
            refuse()
        assert no.value.field == "model"
