"""Which jobs may train as one stack: the same key, or None for a job that trains alone."""

from typing import Any

from models.specs import parse_job_spec


def key(**changes: Any) -> str | None:
    document: dict[str, Any] = {
        "family": "mlp",
        "dataset": {"name": "function1d"},
        "model": {"hidden": [16, 16]},
        "train": {"epochs": 5},
    }
    for path, value in changes.items():
        *parents, leaf = path.split("__")
        node = document
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return parse_job_spec(document).stack_key()


def test_members_may_differ_in_what_is_their_own() -> None:
    same = {
        key(),
        key(train__seed=7),
        key(train__optimizer={"name": "adam", "lr": 0.1}),
        key(train__weight_decay=0.01, train__l1=0.001, train__input_noise=0.1),
        key(train__early_stopping={"monitor": "val_loss", "patience": 2}),
        key(dataset__noise=0.5, dataset__split_seed=3),
        key(model__hidden=[4, 64]),  # padded to the widest
    }
    assert len(same) == 1 and None not in same


def test_shapes_optimizer_batches_and_epochs_part_stacks() -> None:
    keys = {
        key(),
        key(model__hidden=[16]),
        key(model__activation="tanh"),
        key(train__optimizer={"name": "sgd"}),
        key(train__optimizer={"name": "lbfgs"}),
        key(train__batch_size=128),
        key(train__epochs=6),
        key(dataset__name="surface2d"),
        key(dataset__max_train=100),
    }
    assert len(keys) == 9


def test_lbfgs_members_share_their_widths() -> None:
    lbfgs = {"name": "lbfgs"}
    assert key(train__optimizer=lbfgs) != key(train__optimizer=lbfgs, model__hidden=[4, 64])
    assert key(train__optimizer=lbfgs) == key(train__optimizer=lbfgs, train__seed=3)


def test_what_a_stack_cannot_give_each_member_trains_alone() -> None:
    assert key(model__dropout=0.2) is None
    assert key(model__batchnorm=True) is None
    assert key(train__clip_grad_norm=1.0) is None
    assert key(train__schedule={"name": "one_cycle"}) is None
    cnn = parse_job_spec({"family": "cnn", "dataset": {"name": "digits"}})
    assert cnn.stack_key() is None  # a CNN did not train faster stacked on a CPU
    lstm = parse_job_spec({"family": "lstm", "dataset": {"name": "mackey_glass"}})
    assert lstm.stack_key() is not None


def test_members_share_every_hyperparameter_but_the_learning_rate() -> None:
    adam, rmsprop = {"name": "adam"}, {"name": "rmsprop"}
    keys = {
        key(train__optimizer=adam),
        key(train__optimizer=adam | {"eps": 0.0}),
        key(train__optimizer=adam | {"amsgrad": True}),
        key(train__optimizer=adam | {"betas": [0.5, 0.9]}),
        key(train__optimizer=rmsprop),
        key(train__optimizer=rmsprop | {"centered": True}),
        key(train__optimizer={"name": "momentum"}),
        key(train__optimizer={"name": "momentum", "dampening": 0.5}),
        key(train__optimizer={"name": "lbfgs", "line_search_fn": None}),
    }
    assert len(keys) == 9 and None not in keys
    assert key(train__optimizer=adam | {"amsgrad": True, "lr": 0.1}) == key(
        train__optimizer=adam | {"amsgrad": True, "lr": 0.01}
    )
