"""End to end over HTTP: a real API process and real Celery workers, on both backends."""

import json
import time

import numpy as np
import pytest
from safetensors.numpy import load as load_safetensors
from sklearn.datasets import load_digits

from tests.service import Service

pytestmark = pytest.mark.service


def test_health_and_datasets(service: Service) -> None:
    health = service.client.get("/healthz").json()
    assert health == {"status": "ok", "database": "ok", "broker": "ok"}
    datasets = {d["name"]: d for d in service.client.get("/datasets").json()["items"]}
    assert datasets["digits"]["available"] and datasets["digits"]["input_shape"] == [1, 8, 8]


def test_mlp_on_digits_trains_records_and_serves(service: Service) -> None:
    job = service.submit({"family": "mlp", "dataset": {"name": "digits"}})
    assert job["status"] == "queued"
    assert job["spec"]["train"]["epochs"] == 20 and job["spec"]["model"]["hidden"] == [128, 64]

    done = service.wait_status(job["id"], {"succeeded", "failed"})
    assert done["status"] == "succeeded", done["error"]
    assert done["result"]["test_accuracy"] >= 0.9
    assert done["n_params"] == 64 * 128 + 128 + 128 * 64 + 64 + 64 * 10 + 10
    assert done["progress"]["percent"] == 100.0

    history = service.metrics(job["id"])
    assert [row["epoch"] for row in history] == list(range(21))  # 0: the initial weights
    assert all(row["seconds"] > 0 and "val_accuracy" in row for row in history[1:])
    assert history[0]["seconds"] == 0.0 and "val_accuracy" in history[0]

    models = service.client.get("/models").json()["items"]
    assert job["id"] in {m["id"] for m in models}

    digits = load_digits()
    answer = service.client.post(
        f"/models/{job['id']}/predict", json={"inputs": digits.data[:200].tolist(), "raw": True}
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert np.mean(np.array(body["outputs"]) == digits.target[:200]) >= 0.9
    assert np.allclose(np.sum(body["probabilities"], axis=1), 1.0, atol=1e-4)

    blob = service.client.get(f"/models/{job['id']}/checkpoint")
    assert blob.status_code == 200
    weights = load_safetensors(blob.content)
    assert weights["to_outputs.weight"].shape == (10, 64)

    # Both processes log JSON lines, and the lines about this job carry its id.
    def about_job(log_name: str) -> list[dict]:
        text = (service.home / log_name).read_text()
        # The process may be writing a line as it is read: only whole lines count.
        lines = text.splitlines()[: text.count("\n")]
        parsed = [json.loads(line) for line in lines if line.startswith("{")]
        return [line for line in parsed if line.get("job_id") == job["id"]]

    # Its epochs' lines: the first and the last, and between them at most one a second.
    logged = [line["epoch"] for line in about_job("worker1.log") if "epoch" in line]
    assert logged[0] == 0 and logged[-1] == 20 and logged == sorted(set(logged))
    assert {line.get("route") for line in about_job("api.log")} >= {
        "/jobs/{job_id}",
        "/models/{job_id}/predict",
    }


def test_worker_killed_mid_run_resumes_from_checkpoint(service: Service) -> None:
    done = service.kill_mid_run_and_resume(
        {
            "family": "mlp",
            "dataset": {"name": "digits"},
            "train": {"epochs": 40, "batch_size": 4},
        },
        timeout=240,
    )
    assert done["result"]["test_accuracy"] >= 0.9


def test_cancel_running_job(service: Service) -> None:
    job = service.submit(
        {"family": "mlp", "dataset": {"name": "digits"}, "train": {"epochs": 5000, "batch_size": 8}}
    )
    service.wait_status(job["id"], {"running"}, timeout=60)
    asked = time.monotonic()
    response = service.client.post(f"/jobs/{job['id']}/cancel")
    assert response.status_code == 202
    done = service.wait_status(job["id"], {"cancelled", "failed", "succeeded"}, timeout=30)
    assert done["status"] == "cancelled"
    assert time.monotonic() - asked < 15
    assert service.client.post(f"/jobs/{job['id']}/cancel").status_code == 409


def test_diverging_job_fails_with_reason_and_worker_goes_on(service: Service) -> None:
    bad = service.submit(
        {
            "family": "mlp",
            "dataset": {"name": "function1d"},
            "train": {"optimizer": {"name": "sgd", "lr": 50.0}, "epochs": 5},
        }
    )
    good = service.submit(
        {
            "family": "mlp",
            "dataset": {"name": "function1d", "noise": 0.1},
            "model": {"hidden": [30], "activation": "tanh"},
            "train": {"optimizer": {"name": "lbfgs"}, "epochs": 5},
        }
    )
    failed = service.wait_status(bad["id"], {"succeeded", "failed"})
    assert failed["status"] == "failed" and "diverged" in failed["error"]
    done = service.wait_status(good["id"], {"succeeded", "failed"})
    assert done["status"] == "succeeded", done["error"]
    assert done["result"]["test_mse"] < 0.05


def test_cnn_on_fashion_mnist(service: Service) -> None:
    datasets = {d["name"]: d for d in service.client.get("/datasets").json()["items"]}
    if not datasets["fashion_mnist"]["available"]:
        pytest.skip("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
    job = service.submit(
        {
            "family": "cnn",
            "dataset": {"name": "fashion_mnist", "max_train": 3000},
            "train": {"epochs": 2},
        }
    )
    done = service.wait_status(job["id"], {"succeeded", "failed"}, timeout=240)
    assert done["status"] == "succeeded", done["error"]
    assert done["result"]["test_accuracy"] > 0.7
    image = np.zeros((1, 28, 28)).tolist()
    answer = service.client.post(f"/models/{job['id']}/predict", json={"inputs": [image]}).json()
    assert answer["class_names"][0] in datasets["fashion_mnist"]["classes"]


def test_api_restart_loses_nothing(service: Service) -> None:
    before = service.client.get("/jobs", params={"limit": 200}).json()
    service.kill(service.api)
    service.start_api()
    after = service.client.get("/jobs", params={"limit": 200}).json()
    assert after["total"] == before["total"] > 0
    assert {j["id"]: j["status"] for j in after["items"]} == {
        j["id"]: j["status"] for j in before["items"]
    }


PNG = b"\x89PNG\r\n\x1a\n"


def test_time_series_forecasters_and_their_pictures(service: Service) -> None:
    jobs = {
        family: service.submit({"family": family, "dataset": {"name": "mackey_glass", "lag": 30}})
        for family in ("mlp", "lstm")
    }
    for family, job in jobs.items():
        done = service.wait_status(job["id"], {"succeeded", "failed"}, timeout=300)
        assert done["status"] == "succeeded", done["error"]
        assert done["result"]["test_nmse"] < 0.05, (family, done["result"])
        answer = service.client.post(f"/models/{job['id']}/forecast", json={"steps": 50}).json()
        assert len(answer["forecast"]) == 50 and len(answer["truth"]) == 50
        # The first steps of a recursive forecast stay on the series.
        assert np.abs(np.array(answer["forecast"][:5]) - answer["truth"][:5]).max() < 0.1
        picture = service.client.get(f"/models/{job['id']}/images/forecast.png?steps=100")
        assert picture.status_code == 200 and picture.content.startswith(PNG)
    curves = service.client.get(f"/jobs/{jobs['mlp']['id']}/plots/learning_curves.png")
    assert curves.status_code == 200 and curves.content.startswith(PNG)


def test_kfold_job_on_an_uploaded_series(service: Service) -> None:
    t = np.arange(800)
    csv = "\n".join(f"{v:.6f}" for v in np.sin(t / 10.0) + 0.5 * np.sin(t / 23.0))
    name = f"wave{service.port}"
    uploaded = service.client.post(
        "/datasets", data={"name": name}, files={"file": ("wave.csv", csv.encode())}
    )
    assert uploaded.status_code == 201, uploaded.text
    job = service.submit(
        {
            "family": "mlp",
            "dataset": {"name": f"upload:{name}", "lag": 20, "kfold": 3},
            "train": {"epochs": 10},
        }
    )
    done = service.wait_status(job["id"], {"succeeded", "failed"}, timeout=180)
    assert done["status"] == "succeeded", done["error"]
    result = done["result"]
    assert len(result["folds"]) == 3 and result["test_nmse_mean"] < 0.05
    history = service.metrics(job["id"])
    assert sorted({(row["fold"], row["epoch"]) for row in history}) == [
        (f, e) for f in range(3) for e in range(11)
    ]


def test_autoencoder_serves_reconstructions_codes_and_the_mean_image(service: Service) -> None:
    job = service.submit(
        {
            "family": "ae",
            "dataset": {"name": "digits"},
            "model": {"hidden": [32], "latent": 8},
            "train": {"epochs": 10},
        }
    )
    done = service.wait_status(job["id"], {"succeeded", "failed"}, timeout=180)
    assert done["status"] == "succeeded", done["error"]
    assert done["result"]["test_loss"] < done["result"].get("train_loss", 1) * 2
    images = load_digits().data[:4] / 16.0
    base = f"/models/{job['id']}"
    rebuilt = service.client.post(f"{base}/reconstruct", json={"inputs": images.tolist()}).json()
    assert np.asarray(rebuilt["outputs"]).shape == (4, 64) and len(rebuilt["loss"]) == 4
    codes = service.client.post(f"{base}/encode", json={"inputs": images.tolist()}).json()
    assert np.asarray(codes["codes"]).shape == (4, 8)
    mean = service.client.post(f"{base}/decode", json={"mean_of": "train"}).json()
    picture = np.asarray(mean["outputs"])
    assert picture.size == 64 and 0.0 <= picture.min() and picture.max() <= 1.0
    wrong = service.client.post(f"{base}/decode", json={"codes": [[0.0] * 3]})
    assert wrong.status_code == 422 and wrong.json()["detail"][0]["field"] == "codes"
    grid = service.client.get(f"{base}/images/reconstructions.png?n=6")
    assert grid.status_code == 200 and grid.content.startswith(PNG)
    assert (
        service.client.post(f"{base}/predict", json={"inputs": images.tolist()}).status_code == 404
    )


def test_stacked_autoencoder_improves_with_fine_tuning(service: Service) -> None:
    job = service.submit(
        {
            "family": "sae",
            "dataset": {"name": "digits"},
            "model": {"layers": [64], "pretrain_epochs": 5, "head_epochs": 5},
        }
    )
    done = service.wait_status(job["id"], {"succeeded", "failed"}, timeout=180)
    assert done["status"] == "succeeded", done["error"]
    result = done["result"]
    assert result["test_accuracy"] > result["test_accuracy_before_finetune"]
    stages = [row["stage"] for row in service.metrics(job["id"])]
    assert stages == sorted(stages) and stages[0] == 0 and stages[-1] == 2


def test_vit_predicts_with_attention_maps(service: Service) -> None:
    job = service.submit(
        {
            "family": "vit",
            "dataset": {"name": "digits"},
            "model": {"patch": 2, "depth": 2},
            "train": {"epochs": 8},
        }
    )
    done = service.wait_status(job["id"], {"succeeded", "failed"}, timeout=180)
    assert done["status"] == "succeeded", done["error"]
    assert done["result"]["test_accuracy"] > 0.8
    images = (load_digits().data[:3] / 16.0).tolist()
    answer = service.client.post(
        f"/models/{job['id']}/predict", json={"inputs": images, "attention": True}
    ).json()
    maps = np.asarray(answer["attention"])
    assert maps.shape == (3, 2, 4, 4)  # examples, layers, 8/2 x 8/2 patches
    plain = service.client.post(f"/models/{job['id']}/predict", json={"inputs": images}).json()
    assert "attention" not in plain and plain["outputs"] == answer["outputs"]
