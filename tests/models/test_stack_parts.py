"""The parts of a stack that stand in for each member's own (models/stack.py): its batches
taken for all members at once (_Feed) are each member's own, and an MLP's stacked forward
pass, loss and sums are each member's own within float32 summation order."""

from collections.abc import Iterator
from typing import Any

import pytest
import torch

from core.datasets import fold_splits, load_dataset
from core.settings import Settings
from models.base import Batch, Trainer
from models.registry import get_family
from models.stack import Stack, _Feed


def trainers(settings: Settings, documents: list[dict[str, Any]]) -> list[Trainer]:
    """Each fold of each job a trainer; jobs with one dataset section share its splits, as a
    worker's stack does."""
    made, loaded = [], {}
    for document in documents:
        family = get_family(document["family"])
        spec = family.spec.model_validate(document)
        section = spec.dataset.model_dump_json()
        data = loaded.setdefault(section, load_dataset(spec.dataset, settings))
        folds = spec.dataset.kfold or 1
        for fold in range(folds):
            splits = fold_splits(data, folds, fold) if folds > 1 else data
            model = family.build(spec, splits.info)
            made.append(family.trainer(spec, model, splits, torch.device("cpu")))
    return made


def series(seed: int, hidden: int, kfold: int | None = 3) -> dict[str, Any]:
    return {
        "family": "mlp",
        "dataset": {"name": "mackey_glass", "n_points": 403, "kfold": kfold, "lag": 10},
        "model": {"hidden": [hidden]},
        "train": {"seed": seed, "batch_size": 32},
    }


def test_fed_batches_are_each_members_own(tmp_path: Any) -> None:
    """Folds of different sizes, two seeds (two orders), splits shared and not: every batch
    where the members' sizes agree is theirs to the bit; where they differ (an epoch's last
    batch) the feed gives none and each member takes its own."""
    documents = [series(1, 8), series(2, 16), series(3, 8, kfold=None), series(4, 8, kfold=None)]
    members = trainers(Settings(home=tmp_path), documents)
    sizes = {len(t.splits.train) for t in members}
    assert len(sizes) > 1  # the folds' training splits differ in size
    feed = _Feed.of(members)
    assert feed is not None
    # Each fold's own training split, and one the two jobs without folds share.
    assert len({id(t.splits.train.x) for t in members}) == 7
    fed = skipped = 0
    for epoch in (1, 2):
        for index in range(members[0].n_batches(epoch)):
            batch = feed.batch(epoch, index)
            own = [t.batch(epoch, index) for t in members]
            if batch is None:
                skipped += 1
                assert len({len(b.y) for b in own}) > 1
                continue
            fed += 1
            for k, b in enumerate(own):
                assert torch.equal(batch.x[k], b.x)
                assert torch.equal(batch.y[k], b.y)
                assert torch.equal(batch.index[k], b.index)
    assert fed > 0 and skipped == 2  # one last batch an epoch


@pytest.mark.parametrize("change", ["input_noise", "widths"])
def test_a_stack_is_fed_unless_a_member_draws_noise(tmp_path: Any, change: str) -> None:
    """Input noise is drawn from each member's own stream: no feed. Members of different
    widths (a padded stack) are fed."""
    documents = [series(1, 8), series(2, 16 if change == "widths" else 8)]
    if change == "input_noise":
        documents[1]["train"]["input_noise"] = 0.1
    stack = Stack(trainers(Settings(home=tmp_path), documents))
    assert (stack.feed is None) == (change == "input_noise")


def digits(seed: int, hidden: list[int], **model: Any) -> dict[str, Any]:
    return {
        "family": "mlp",
        "dataset": {"name": "digits"},
        "model": {"hidden": hidden, "activation": "tanh", **model},
        "train": {"seed": seed, "batch_size": 16, "label_smoothing": 0.1},
    }


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_an_mlp_stack_is_each_members_own_model(tmp_path: Any, task: str) -> None:
    """Three MLPs of one shape with their own weights and batches: the stacked outputs, loss
    (label smoothing included) and sums are each model's own, within float32 summation
    order; so are the gradients."""
    if task == "classification":
        documents = [digits(seed, [12, 9]) for seed in (1, 2, 3)]
    else:
        documents = [series(seed, 12, kfold=None) for seed in (1, 2, 3)]
    members = trainers(Settings(home=tmp_path), documents)
    for k, t in enumerate(members):
        torch.manual_seed(k)
        for p in t.model.parameters():
            torch.nn.init.normal_(p, std=0.3)
    stack = Stack(members)
    own = [t.batch(1, k) for k, t in enumerate(members)]
    batch = Batch(**{f: torch.stack([getattr(b, f) for b in own]) for f in Batch.__annotations__})
    template = members[0]
    found = template.stacked_batch_loss(dict(stack.params), batch)
    assert found is not None
    losses, sums = found
    losses.sum().backward()
    for k, t in enumerate(members):  # its own model, whose weights are views of the stack
        t.model.zero_grad(set_to_none=True)
        loss, own_sums = t.batch_loss(own[k])
        assert losses[k].item() == pytest.approx(loss.item(), rel=1e-6)
        for name, value in own_sums.items():
            assert sums[name][k].item() == pytest.approx(float(value), rel=1e-6)
        loss.backward()
        for name, p in t.model.named_parameters():
            torch.testing.assert_close(stack.params[name].grad[k], p.grad, rtol=1e-5, atol=1e-7)


@pytest.fixture
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def stacked(settings: Settings, documents: list[dict[str, Any]]) -> tuple:
    """The documents' trainers, their stack and each one's first batch of epoch 1."""
    members = trainers(settings, documents)
    return members, Stack(members), [t.batch(1, 0) for t in members]


@pytest.mark.parametrize("hidden", [10, 50])
def test_an_lbfgs_members_loss_in_a_stacked_pass_is_its_own_to_the_bit(
    tmp_path: Any, hidden: int, one_thread: None
) -> None:
    """An LBFGS MLP whose layers each have one input or one output trains on the stacked form
    of its loss for a stack of one (SupervisedTrainer.member_loss); on one thread, a pass over
    the whole stack or over any of its members, wherever they stand in it, gives each member
    these very bits: its loss, sums and gradients (models/stack.py's LBFGS steps rely on it)."""
    documents = [
        {
            "family": "mlp",
            "dataset": {"name": "function1d", "noise": noise},
            "model": {"hidden": [hidden], "activation": "tanh"},
            "train": {"seed": seed, "optimizer": {"name": "lbfgs"}},
        }
        for seed, noise in ((1, 0.0), (2, 0.15), (3, 0.5), (4, 0.0), (5, 0.15), (6, 0.5))
    ]
    members, stack, own = stacked(Settings(home=tmp_path), documents)
    fed = stack._one_batch(own)
    assert fed is not None
    for which in ([0, 1, 2, 3, 4, 5], [3], [5, 0], [1, 2, 4], [0, 2, 3, 5], [1, 2, 3, 4, 5]):
        index, params = stack._of(which, fed.x.device)
        batch = fed
        if index is not None:
            batch = Batch(*(getattr(fed, f).index_select(0, index) for f in Batch.__annotations__))
        for p in stack.params.values():
            p.grad = None
        found = members[0].stacked_batch_loss(params, batch)
        assert found is not None
        losses, sums = found
        losses.sum().backward()
        grads = {name: p.grad.clone() for name, p in stack.params.items()}
        for j, k in enumerate(which):
            t = members[k]
            t.model.zero_grad(set_to_none=True)
            loss, own_sums = t.batch_loss(own[k])
            assert torch.equal(losses[j], loss)
            for name, value in own_sums.items():
                assert torch.equal(sums[name][j], value)
            loss.backward()
            for name, p in t.model.named_parameters():
                assert torch.equal(grads[name][k], p.grad)


def test_an_lbfgs_mlp_with_a_layer_of_many_inputs_and_outputs_evaluates_on_its_own(
    tmp_path: Any, one_thread: None
) -> None:
    """A batched matrix product may sum a member's products in another order by the stack's
    size and the member's place in it (seen with MKL on an AMD EPYC), so an MLP with a layer
    of several inputs and outputs has no loss of a stack of one, and an LBFGS stack of such
    members evaluates each on its own trainer."""
    documents = [digits(seed, [12, 9]) for seed in (1, 2, 3)]
    for document in documents:
        document["train"] |= {"optimizer": {"name": "lbfgs"}}
    members, stack, own = stacked(Settings(home=tmp_path), documents)
    assert members[0].member_loss(own[0]) is None
    assert stack._one_batch(own) is None


def test_an_mlp_with_dropout_has_no_stacked_forward(tmp_path: Any) -> None:
    (trainer,) = trainers(Settings(home=tmp_path), [digits(1, [12], dropout=0.2)])
    params = {n: p.detach()[None] for n, p in trainer.model.named_parameters()}
    assert trainer.model.stacked(params, torch.zeros(1, 4, 64)) is None
