"""Admission's estimate counts every phase of a job (models/admission.py)."""

from types import SimpleNamespace

import pytest

from core.catalog import resolve
from models.admission import (
    MAX_EVAL_CHUNK,
    CallTooBig,
    TooBig,
    call_bytes,
    check,
    check_call,
    estimate,
)
from models.registry import REGISTRY
from models.specs import SPECS, parse_job_spec
from tests.models.counts import CONFIGS

GIB = 1024**3
FASHION = {"name": "fashion_mnist"}


def wide_cnn(filters: int) -> dict:
    """One conv, no pooling: every filter's map at full size, per example."""
    return {
        "family": "cnn",
        "dataset": FASHION,
        "model": {"conv": [{"filters": filters, "pool": None}], "dense": []},
    }


@pytest.mark.parametrize("filters", [128, 2048])
def test_a_wide_cnn_is_estimated_with_its_evaluation(filters: int) -> None:
    """Evaluation ran 4,096 images at a time whatever they held: 0.13 GB estimated for 128
    filters, 3.4 GB measured; about 26 GB for 2,048. Now the chunk holds no more than a
    training step, and the estimate counts it."""
    spec = parse_job_spec(wide_cnn(filters))
    parts = estimate(spec, resolve(spec.dataset))
    conv_and_relu = 2 * filters * 28 * 28 * 4  # bytes per image of an inference pass
    assert parts["eval_chunk"] < MAX_EVAL_CHUNK
    assert parts["evaluation"] >= parts["eval_chunk"] * conv_and_relu
    assert parts["evaluation"] <= max(parts["training"], 64 * 2**20)
    assert parts["total"] >= parts["model"] + parts["dataset"] + parts["evaluation"]
    # What 4,096 images at once would have held is far more than what is admitted now.
    assert parts["total"] < MAX_EVAL_CHUNK * conv_and_relu


def test_a_vit_with_one_pixel_patches_is_refused_naming_the_batch() -> None:
    """784 tokens: attention of 784 x 784 per head and example."""
    document = {"family": "vit", "dataset": FASHION, "model": {"patch": 1}}
    spec = parse_job_spec(document)
    with pytest.raises(TooBig) as refused:
        check(spec, resolve(spec.dataset), 4 * GIB)
    assert refused.value.field == "train.batch_size"
    assert "GiB" in str(refused.value) and "ANNLAB_WORKER_MEMORY" in str(refused.value)
    tokens = 28 * 28 + 1
    attention = tokens * tokens * 4 * 4  # heads x tokens^2 float32, per example and block
    assert estimate(spec, resolve(spec.dataset))["training"] > 64 * attention


def test_a_generative_job_counts_sampling_and_scoring() -> None:
    spec = parse_job_spec({"family": "gan", "dataset": FASHION})
    parts = estimate(spec, resolve(spec.dataset))
    assert parts["sampling"] > 0 and parts["scoring"] > 0
    plain = parse_job_spec({"family": "mlp", "dataset": FASHION})
    assert estimate(plain, resolve(plain.dataset))["sampling"] == 0


def test_a_long_lstm_is_estimated_from_two_short_sequences() -> None:
    from models.admission import _memory_facts
    from models.summary import summarize

    document = {
        "family": "lstm",
        "dataset": {"name": "mackey_glass", "lag": 40},
        "model": {"hidden": 12, "layers": 2},
    }
    spec = parse_job_spec(document)
    info = resolve(spec.dataset, None)
    memory, per = _memory_facts(spec, info)
    measured = summarize(spec, info)
    assert memory == measured["training_memory_bytes"]
    exact = measured["bytes_per_example"]
    assert per["training"] == exact["training"]
    assert exact["inference"] <= per["inference"] <= 1.2 * exact["inference"]


def stub_body() -> SimpleNamespace:
    """Every field a verb's request may size a call by, at 3 (inputs, codes, samples, steps)."""
    return SimpleNamespace(
        inputs=[[0.0]] * 3,
        attention=False,
        codes=None,
        mean_of="train",
        latents=None,
        n=3,
        steps=3,
        patterns=None,
        trajectory=False,
        max_iterations=3,
        grid=2,
        n_random=0,
    )


@pytest.mark.parametrize("family", sorted(REGISTRY))
def test_every_verb_of_every_family_is_estimated_and_refused_over_the_budget(
    family: str,
) -> None:
    """A verb admission had no estimate for would answer a 500, not a 422 naming its field."""
    document = next(c for c in CONFIGS if c["family"] == family)
    spec = parse_job_spec(document)
    served = SimpleNamespace(
        info=resolve(spec.dataset),
        spec=spec,
        module=SimpleNamespace(),
        per_input=1_000,
        chunk_rows=1,
        weights_bytes=0,
    )
    verbs = [*REGISTRY[family].verbs, *(["images"] if SPECS[family].images else [])]
    assert verbs
    for verb in verbs:
        field, need = call_bytes(served, verb, stub_body())
        assert need > 0, verb
        with pytest.raises(CallTooBig) as refused:
            check_call(served, verb, stub_body(), need - 1)
        assert refused.value.field == field, verb
        assert "ANNLAB_API_MEMORY" in str(refused.value) and "GiB" in str(refused.value)
        assert check_call(served, verb, stub_body(), need) == need
