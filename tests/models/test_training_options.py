"""Training options: augmentation, label smoothing, cosine and one-cycle schedules, bfloat16
autocast, torch.compile; and the 422s that refuse them where they do not apply."""

import pytest
import torch
from torch import nn

from core.datasets import load_dataset
from core.settings import Settings
from core.spec import AugmentSpec
from models.base import augment
from models.registry import get_family
from tests.conftest import api_client
from tests.workers.test_runner import load, submit
from workers.runner import run_job


def test_augment_crops_each_image_at_its_own_offset_and_mirrors_some() -> None:
    x = torch.rand(64, 3, 8, 8)
    same = augment(x, AugmentSpec(crop=2, flip=True), seed=1, epoch=2, index=3)
    assert same.shape == x.shape
    assert torch.equal(same, augment(x, AugmentSpec(crop=2, flip=True), 1, 2, 3))  # resumable
    assert not torch.equal(same, augment(x, AugmentSpec(crop=2, flip=True), 1, 2, 4))
    assert torch.equal(augment(x, AugmentSpec(), 1, 2, 3), x)

    flipped = augment(x, AugmentSpec(flip=True), 0, 1, 0)
    mirrored = [torch.equal(flipped[i], x[i].flip(-1)) for i in range(64)]
    kept = [torch.equal(flipped[i], x[i]) for i in range(64)]
    assert all(m or k for m, k in zip(mirrored, kept, strict=True))
    assert 16 < sum(mirrored) < 48  # about half

    cropped = augment(x, AugmentSpec(crop=2), 0, 1, 0)
    offsets = set()
    for i in range(64):  # each is x shifted by some (dy, dx) in -2..2, zeros coming in
        padded = nn.functional.pad(x[i], (2, 2, 2, 2))
        found = [
            (dy, dx)
            for dy in range(5)
            for dx in range(5)
            if torch.equal(cropped[i], padded[:, dy : dy + 8, dx : dx + 8])
        ]
        assert len(found) == 1
        offsets.add(found[0])
    assert len(offsets) > 10


def lrs(settings: Settings, schedule: dict, epochs: int = 4) -> list[float]:
    document = {
        "family": "mlp",
        "dataset": {"name": "digits", "max_train": 256},
        "train": {"epochs": epochs, "optimizer": {"name": "sgd", "lr": 0.1}, "schedule": schedule},
    }
    job_id = submit(settings, document)
    assert run_job(job_id, settings=settings, worker="w") == "succeeded"
    return [row.values["lr"] for row in load(settings, job_id)[1]]


def test_cosine_anneals_to_min_lr_over_the_epochs(settings: Settings) -> None:
    # The lr an epoch ends with: 0.1 * (1 + cos(pi * e / 4)) / 2 above min_lr 0 (epoch 0: the
    # lr epoch 1 starts with).
    got = lrs(settings, {"name": "cosine"})
    assert got == pytest.approx([0.1, 0.0854, 0.05, 0.0146, 0.0], abs=1e-4)


def test_one_cycle_warms_up_then_anneals_per_batch(settings: Settings) -> None:
    # 256 training examples at batch 64 (after the validation split) is 4 steps an epoch.
    got = lrs(settings, {"name": "one_cycle", "max_lr": 0.5, "pct_start": 0.25}, epochs=4)
    assert got[0] == pytest.approx(0.5 / 25)  # the start: max_lr / torch's div_factor
    assert got[1] == pytest.approx(0.5, rel=0.05)  # the peak, a quarter of the way through
    assert got[1] > got[2] > got[3] > got[4] and got[4] < 1e-3


def test_label_smoothing_trains_and_evaluates_plain_cross_entropy(settings: Settings) -> None:
    document = {"family": "mlp", "dataset": {"name": "digits"}, "train": {"epochs": 5}}
    plain = submit(settings, document)
    smooth = submit(settings, {**document, "train": {"epochs": 5, "label_smoothing": 0.2}})
    for job_id in (plain, smooth):
        assert run_job(job_id, settings=settings, worker="w") == "succeeded"
    (plain_job, plain_rows), (smooth_job, smooth_rows) = (
        load(settings, plain),
        load(settings, smooth),
    )
    # Smoothed targets keep the training loss far above the plain one's; accuracy stays.
    assert smooth_rows[-1].values["train_loss"] > plain_rows[-1].values["train_loss"] + 0.2
    assert smooth_job.result["test_accuracy"] > 0.9 and plain_job.result["test_accuracy"] > 0.9


def test_bfloat16_autocast_runs_the_forward_pass_in_bfloat16(settings: Settings) -> None:
    family = get_family("cnn")
    spec = family.spec.model_validate(
        {
            "family": "cnn",
            "dataset": {"name": "digits", "max_train": 64},
            "model": {"conv": [{"filters": 4, "pool": "max"}], "dense": [16]},
            "train": {"precision": "bfloat16"},
        }
    )
    splits = load_dataset(spec.dataset, settings)
    trainer = family.trainer(spec, family.build(spec, splits.info), splits, torch.device("cpu"))
    seen: list[torch.dtype] = []
    first_conv = next(m for m in trainer.model.modules() if isinstance(m, nn.Conv2d))
    first_conv.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    trainer.begin_epoch(1)
    sums = trainer.train_batch(1, 0)
    assert seen == [torch.bfloat16] and first_conv.weight.dtype == torch.float32
    assert torch.isfinite(torch.as_tensor(sums["loss"])) and sums["count"] == 64
    assert trainer.evaluate(splits.test)["accuracy"] >= 0.0 and seen[-1] == torch.bfloat16
    # auto stays float32 on a CPU.
    auto = family.spec.model_validate({**spec.model_dump(), "train": {"precision": "auto"}})
    assert not family.trainer(
        auto, family.build(auto, splits.info), splits, torch.device("cpu")
    ).bf16


def test_compile_trains_through_the_compiled_module(settings: Settings) -> None:
    document = {
        "family": "mlp",
        "dataset": {"name": "digits"},
        "model": {"hidden": [32]},
        "train": {"epochs": 3, "compile": True},
    }
    compiled = submit(settings, document)
    plain = submit(settings, {**document, "train": {"epochs": 3}})
    for job_id in (compiled, plain):
        assert run_job(job_id, settings=settings, worker="w") == "succeeded"
    (job, rows), (plain_job, _) = load(settings, compiled), load(settings, plain)
    # The same model and batches: the compiled run learns what the plain one learns.
    assert [r.epoch for r in rows] == [0, 1, 2, 3] and job.result["test_accuracy"] > 0.7
    assert job.result["test_accuracy"] == pytest.approx(plain_job.result["test_accuracy"], abs=0.03)
    family = get_family("mlp")
    spec = family.spec.model_validate(document)
    splits = load_dataset(spec.dataset, settings)
    trainer = family.trainer(spec, family.build(spec, splits.info), splits, torch.device("cpu"))
    assert isinstance(trainer.forward, torch._dynamo.eval_frame.OptimizedModule)


@pytest.mark.parametrize(
    ("document", "field"),
    [
        (
            {
                "family": "mlp",
                "dataset": {"name": "surface2d"},
                "train": {"augment": {"flip": True}},
            },
            "train.augment",
        ),
        (
            {"family": "mlp", "dataset": {"name": "function1d"}, "train": {"label_smoothing": 0.1}},
            "train.label_smoothing",
        ),
        (
            {"family": "rbm", "dataset": {"name": "digits"}, "train": {"precision": "bfloat16"}},
            "train.precision",
        ),
        (
            {"family": "gan", "dataset": {"name": "digits"}, "train": {"compile": True}},
            "train.compile",
        ),
        (
            {"family": "cnn", "dataset": {"name": "digits"}, "train": {"augment": {"crop": 17}}},
            "train.augment.crop",
        ),
        (
            {
                "family": "cnn",
                "dataset": {"name": "digits"},
                "train": {"schedule": {"name": "one_cycle", "pct_start": 1}},
            },
            "train.schedule.pct_start",
        ),
    ],
)
def test_options_that_do_not_apply_are_refused_naming_the_field(document: dict, field: str) -> None:
    with api_client() as client:
        answer = client.post("/jobs", json=document)
    assert answer.status_code == 422, answer.text
    assert field in [e["field"] for e in answer.json()["detail"]], answer.text
