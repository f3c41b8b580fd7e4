"""Request and answer examples the OpenAPI document shows (Swagger UI fills its forms with them)."""

from typing import Any

SWEEP_EXAMPLES: dict[str, dict[str, Any]] = {
    "learning_rates": {
        "summary": "an MLP on digits at three learning rates, three seeds each",
        "value": {
            "base": {"family": "mlp", "dataset": {"name": "digits"}, "train": {"epochs": 10}},
            "axes": {"train.optimizer.lr": [0.001, 0.01, 0.1]},
            "repeats": 3,
        },
    },
    "optimizer_with_its_lr": {
        "summary": "optimizers, each with its own learning rate (zipped), x hidden sizes",
        "value": {
            "base": {"family": "mlp", "dataset": {"name": "function1d", "noise": 0.15}},
            "axes": {"model.hidden.0": [10, 30, 50]},
            "zip": [{"train.optimizer.name": ["sgd", "adam"], "train.optimizer.lr": [0.1, 0.003]}],
            "repeats": 4,
        },
    },
}

SWEEP_TABLE_EXAMPLE: dict[str, Any] = {
    "columns": ["train.optimizer.lr", "n_params", "test_accuracy_mean", "test_accuracy_std"],
    "rows": [
        {
            "train.optimizer.lr": 0.01,
            "n_params": 4810,
            "test_accuracy_mean": 0.962,
            "test_accuracy_std": 0.004,
            "succeeded": 3,
            "repeats": 3,
        }
    ],
}

PREDICT_EXAMPLES: dict[str, dict[str, Any]] = {
    "digits": {
        "summary": "one 8x8 digit, raw pixel values 0..16, flat",
        "value": {"inputs": [[0, 0, 5, 13, 9, 1, 0, 0] + [0] * 56], "raw": True},
    },
    "function1d": {
        "summary": "three points of a 1-D regression",
        "value": {"inputs": [[0.1], [0.5], [0.9]]},
    },
}

PREDICT_ANSWER: dict[str, Any] = {
    "outputs": [0],
    "probabilities": [[0.91, 0.0, 0.01, 0.0, 0.02, 0.01, 0.03, 0.0, 0.02, 0.0]],
    "class_names": ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"],
}

SAMPLE_EXAMPLES: dict[str, dict[str, Any]] = {
    "seeded": {
        "summary": "four samples, the same ones for the same seed",
        "value": {"n": 4, "seed": 7},
    },
    "gibbs": {
        "summary": "RBM or DBM: 500 Gibbs steps from a random start",
        "value": {"n": 4, "steps": 500},
    },
}

SAMPLE_ANSWER: dict[str, Any] = {
    "samples": [[[0.0, 0.12, 0.87, 0.95, 0.31, 0.0, 0.0, 0.0]]],
    "latents": [[0.41, -1.2]],
}


def answer(example: dict[str, Any]) -> dict[int | str, dict[str, Any]]:
    """A route's `responses` entry showing `example` as its 200 answer."""
    return {200: {"content": {"application/json": {"example": example}}}}
