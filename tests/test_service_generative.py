"""The generative and energy-based families end to end over HTTP on real worker processes:
train on digits, call every verb, fetch every picture; bounds give 422s naming the field; a
GAN's worker killed mid-run resumes with both optimizers and no duplicated epoch."""

from typing import Any

import numpy as np
import pytest
from sklearn.datasets import load_digits

from tests.service import Service

pytestmark = pytest.mark.service

PNG = b"\x89PNG\r\n\x1a\n"
DIGITS = {"name": "digits"}
IMAGES = (load_digits().data[:6] / 16.0).reshape(6, 1, 8, 8)


def trained(service: Service, document: dict[str, Any], timeout: float = 300) -> dict[str, Any]:
    job = service.submit(document)
    done = service.wait_status(job["id"], {"succeeded", "failed"}, timeout=timeout)
    assert done["status"] == "succeeded", done["error"]
    return done


def call(service: Service, job: dict[str, Any], verb: str, body: dict[str, Any]) -> Any:
    response = service.client.post(f"/models/{job['id']}/{verb}", json=body)
    assert response.status_code == 200, (verb, response.text)
    return response.json()


def refused(service: Service, job: dict[str, Any], verb: str, body: dict, field: str) -> None:
    response = service.client.post(f"/models/{job['id']}/{verb}", json=body)
    assert response.status_code == 422, (verb, body, response.text)
    assert field in [e["field"] for e in response.json()["detail"]], response.json()


def pictures(service: Service, job: dict[str, Any], **query: int) -> None:
    model = service.client.get(f"/models/{job['id']}").json()
    for name in model["images"]:
        picture = service.client.get(f"/models/{job['id']}/images/{name}.png", params=query)
        assert picture.status_code == 200, (name, picture.text)
        assert picture.content.startswith(PNG)
    curves = service.client.get(f"/jobs/{job['id']}/plots/learning_curves.png")
    assert curves.status_code == 200 and curves.content.startswith(PNG)


def good_samples(job: dict[str, Any]) -> None:
    """Sample quality is in the result, and well below that of uniform noise."""
    result = job["result"]
    assert result["frechet_distance"] < 0.5 * result["frechet_distance_noise"], result
    assert len(result["sample_class_histogram"]) == 10
    assert 0.0 <= result["sample_class_entropy"] <= 1.0


def test_rbm_samples_inpaints_scores_and_draws(service: Service) -> None:
    job = trained(service, {"family": "rbm", "dataset": DIGITS, "train": {"epochs": 10}})
    assert set(job["spec"]["model"]) >= {"hidden", "cd_k", "persistent"}
    history = service.metrics(job["id"])
    assert history[-1]["train_pseudo_likelihood"] > history[0]["train_pseudo_likelihood"]
    good_samples(job)

    one = call(service, job, "sample", {"n": 5, "seed": 3, "steps": 50})
    assert np.asarray(one["samples"]).shape == (5, 1, 8, 8) and one["steps"] == 50
    assert call(service, job, "sample", {"n": 5, "seed": 3, "steps": 50}) == one
    other = call(service, job, "sample", {"n": 5, "seed": 4, "steps": 50})
    assert other["samples"] != one["samples"]

    mask = np.ones((1, 8, 8))
    mask[:, :3] = 0  # the top rows are missing
    inpainted = call(
        service,
        job,
        "reconstruct",
        {"inputs": IMAGES.tolist(), "mask": mask.tolist(), "steps": 50},
    )
    outputs = np.asarray(inpainted["outputs"])
    assert np.allclose(outputs[:, :, 3:], IMAGES[:, :, 3:])  # known pixels stay as they were
    scores = call(service, job, "score", {"inputs": IMAGES.tolist()})
    assert len(scores["pseudo_likelihood"]) == 6 and len(scores["free_energy"]) == 6

    refused(service, job, "sample", {"n": 0}, "n")
    refused(service, job, "sample", {"n": 5000}, "n")
    refused(service, job, "sample", {"steps": 0}, "steps")
    refused(service, job, "sample", {"steps": 10**6}, "steps")
    refused(service, job, "sample", {"latents": [[0.0]]}, "latents")
    refused(service, job, "reconstruct", {"inputs": IMAGES.tolist(), "mask": [[1, 0]]}, "mask")
    pictures(service, job, n=8, steps=20)


def test_dbm_samples_and_draws_filters_of_each_layer(service: Service) -> None:
    job = trained(
        service,
        {
            "family": "dbm",
            "dataset": DIGITS,
            "model": {"pretrain_epochs": 10},
            "train": {"epochs": 10},
        },
    )
    stages = [row["stage"] for row in service.metrics(job["id"])]
    assert stages == sorted(stages) and len(set(stages)) == len(job["spec"]["model"]["layers"]) + 1
    good_samples(job)
    samples = call(service, job, "sample", {"n": 4, "seed": 1, "steps": 20})
    array = np.asarray(samples["samples"])
    assert array.shape == (4, 1, 8, 8) and array.min() >= 0 and array.max() <= 1
    mask = np.ones((6, 1, 8, 8))
    mask[:, :, 3:5] = 0  # middle rows
    call(service, job, "reconstruct", {"inputs": IMAGES.tolist(), "mask": mask.tolist()})
    for layer in (1, 2):
        url = f"/models/{job['id']}/images/filters.png?layer={layer}"
        assert service.client.get(url).status_code == 200
    too_deep = service.client.get(f"/models/{job['id']}/images/filters.png?layer=5")
    assert too_deep.status_code == 422 and too_deep.json()["detail"][0]["field"] == "layer"
    refused(service, job, "sample", {"n": 2000}, "n")
    pictures(service, job, n=6, steps=20)


def test_gan_samples_interpolates_and_keeps_samples_over_epochs(service: Service) -> None:
    job = trained(
        service,
        {
            "family": "gan",
            "dataset": DIGITS,
            "model": {"latent": 10, "sample_epochs": [1, 10, 20]},
            "train": {"epochs": 20},
        },
    )
    assert set(job["spec"]["train"]["optimizers"]) == {"generator", "discriminator"}
    history = service.metrics(job["id"])
    assert {"train_d_loss", "train_g_loss", "train_d_real", "train_d_fake"} <= set(history[-1])
    good_samples(job)

    drawn = call(service, job, "sample", {"n": 3, "seed": 7})
    assert np.asarray(drawn["samples"]).shape == (3, 1, 8, 8)
    assert np.asarray(drawn["latents"]).shape == (3, 10)
    again = call(service, job, "sample", {"latents": drawn["latents"]})
    assert np.allclose(again["samples"], drawn["samples"], atol=1e-5)
    path = call(service, job, "interpolate", {"steps": 5, "seed": 2})
    assert np.asarray(path["outputs"]).shape == (5, 1, 8, 8)
    latents = np.asarray(path["latents"])
    assert np.allclose(latents[2], (latents[0] + latents[4]) / 2, atol=1e-5)

    refused(service, job, "sample", {"latents": [[0.0] * 9]}, "latents")
    refused(service, job, "sample", {"steps": 10}, "steps")
    refused(service, job, "interpolate", {"start": [0.0] * 3}, "start")
    refused(service, job, "interpolate", {"steps": 1}, "steps")
    over_epochs = service.client.get(f"/jobs/{job['id']}/plots/samples.png")
    assert over_epochs.status_code == 200 and over_epochs.content.startswith(PNG)
    pictures(service, job, n=8)


def test_vae_samples_reconstructs_encodes_and_draws_its_latent_grid(service: Service) -> None:
    job = trained(
        service,
        {"family": "vae", "dataset": DIGITS, "model": {"latent": 2}, "train": {"epochs": 15}},
    )
    result = job["result"]
    assert result["test_elbo"] < 0 and result["test_kl"] > 0
    history = service.metrics(job["id"])
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert {"train_reconstruction", "train_kl", "val_loss"} <= set(history[-1])
    good_samples(job)

    drawn = call(service, job, "sample", {"n": 4, "seed": 1})
    assert np.asarray(drawn["samples"]).shape == (4, 1, 8, 8)
    rebuilt = call(service, job, "reconstruct", {"inputs": IMAGES.tolist()})
    assert np.asarray(rebuilt["outputs"]).shape == (6, 1, 8, 8) and len(rebuilt["loss"]) == 6
    codes = call(service, job, "encode", {"inputs": IMAGES.tolist()})
    assert np.asarray(codes["codes"]).shape == (6, 2) and np.all(np.asarray(codes["std"]) > 0)
    mean = call(service, job, "decode", {"mean_of": "train"})
    assert np.asarray(mean["outputs"]).size == 64
    path = call(service, job, "interpolate", {"inputs": IMAGES[:2].tolist(), "steps": 4})
    assert np.allclose(path["latents"][0], codes["codes"][0], atol=1e-4)

    refused(service, job, "sample", {"latents": [[0.0] * 3]}, "latents")
    refused(service, job, "reconstruct", {"inputs": IMAGES.tolist(), "mask": [[1]]}, "mask")
    refused(service, job, "decode", {"codes": [[0.0] * 5]}, "codes")
    over_epochs = service.client.get(f"/jobs/{job['id']}/plots/samples.png")
    assert over_epochs.status_code == 200
    pictures(service, job, n=8)


def test_hopfield_attractors_and_recall(service: Service) -> None:
    patterns = [[1, 1], [-1, -1], [1, -1]]
    tiny = trained(
        service,
        {"family": "hopfield", "dataset": {"name": "patterns", "patterns": patterns}},
    )
    found = call(service, tiny, "attractors", {})
    assert found["n_neurons"] == 2 and found["starts"] == 4
    fixed = {tuple(a["state"]) for a in found["attractors"] if a["kind"] == "fixed_point"}
    assert fixed == {(1, 1), (-1, -1)}  # Hebbian: [1, -1] is not stable next to the other two
    assert sum(a["basin"] for a in found["attractors"]) == 4

    digits = trained(
        service,
        {
            "family": "hopfield",
            "dataset": DIGITS,
            "model": {"n_patterns": 3, "rule": "pseudo_inverse"},
        },
    )
    assert digits["result"]["test_recall"] > 0.5
    answer = call(service, digits, "recall", {"patterns": [0, 1, 2], "noise": 0.1, "seed": 5})
    for recall in answer["results"]:
        energy = np.asarray(recall["energy"])
        assert np.all(np.diff(energy) <= 1e-6) and recall["converged"]
        assert len(recall["states"]) == len(energy)
    refused(service, digits, "recall", {"patterns": [7]}, "patterns")
    refused(service, digits, "recall", {"inputs": [[1, -1, 1]]}, "inputs")
    refused(service, digits, "recall", {"patterns": [0], "max_iterations": 0}, "max_iterations")
    refused(service, digits, "attractors", {}, "model")  # 64 neurons: 2^64 starts
    pictures(service, digits, n=3)

    # Continuous states: two neurons with given weights, each copying the other.
    model = {"state": "continuous", "gain": 5, "weights": [[0, 1], [1, 0]], "mode": "flow"}
    document = {"family": "hopfield", "dataset": {"name": "patterns"}, "model": model}
    square = service.client.post("/jobs", json={**document, "model": {**model, "weights": [[0]]}})
    assert square.status_code == 422, square.text
    assert "model.weights" in [e["field"] for e in square.json()["detail"]]
    smooth = trained(service, document)
    assert smooth["spec"]["dataset"]["dim"] == 2 and smooth["spec"]["model"]["step_size"] == 0.1
    found = call(service, smooth, "attractors", {"mode": "flow"})
    assert sorted(a["stability"] for a in found["attractors"]) == ["saddle", "stable", "stable"]
    body = {"inputs": [[0.3, -0.7]], "mode": "flow", "max_iterations": 500}
    (path,) = call(service, smooth, "recall", body)["results"]
    assert path["states"][0] == [0.3, -0.7] and path["converged"]
    assert path["final"][0] == pytest.approx(path["final"][1]) and abs(path["final"][0]) > 0.99
    assert np.all(np.diff(path["energy"]) <= 1e-9)
    refused(service, smooth, "recall", {"inputs": [[0.3, -1.7]]}, "inputs")
    refused(service, smooth, "recall", {"inputs": [[0.3, -0.7, 0.0]]}, "inputs")
    refused(service, smooth, "attractors", {"grid": 101}, "grid")
    refused(service, smooth, "attractors", {"n_random": 10**6}, "n_random")
    pictures(service, smooth, n=4)


def test_gan_worker_killed_mid_run_resumes_with_both_optimizers(service: Service) -> None:
    """No epoch lost or run twice over HTTP; that both optimizers' moments come back is
    tests/workers/test_runner.py's (the resumed numbers equal an unbroken run's)."""
    done = service.kill_mid_run_and_resume(
        {
            "family": "gan",
            "dataset": DIGITS,
            "model": {"latent": 8, "sample_epochs": [1, 15, 30]},
            "train": {"epochs": 30, "batch_size": 8},
        },
        timeout=300,
    )
    history = service.metrics(done["id"])
    assert all(np.isfinite(row["train_d_loss"]) for row in history)
    kept = service.client.get(f"/jobs/{done['id']}/plots/samples.png")
    assert kept.status_code == 200 and kept.content.startswith(PNG)
