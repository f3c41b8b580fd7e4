"""Draws the pictures the README shows. Each generative family is trained on digits with its
defaults, and the README's sweep is run, in this process as a worker would run them; every
picture is fetched from the real API. Run from the repository root:
`.venv/bin/python docs/pictures.py` (about a minute on CPU). It writes docs/images/*.png and
prints each job's sample quality."""

import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "images"
JOBS = {
    "rbm": {"family": "rbm", "dataset": {"name": "digits"}},
    "dbm": {"family": "dbm", "dataset": {"name": "digits"}},
    "gan": {"family": "gan", "dataset": {"name": "digits"}, "train": {"epochs": 30}},
    "vae": {"family": "vae", "dataset": {"name": "digits"}, "model": {"latent": 2}},
    "hopfield": {
        "family": "hopfield",
        "dataset": {"name": "digits"},
        "model": {"n_patterns": 4, "rule": "pseudo_inverse", "noise": 0.2},
    },
}
QUERY = {"n": 16, "steps": 1000, "seed": 1}
SWEEP = {
    "base": {"family": "mlp", "dataset": {"name": "digits"}},
    "axes": {"model.hidden.0": [25, 50, 100], "train.optimizer.name": ["sgd", "adam"]},
    "repeats": 3,
}


def main() -> None:
    os.environ["ANNLAB_HOME"] = tempfile.mkdtemp(prefix="annlab-pictures-")
    sys.path.insert(0, str(ROOT))
    from alembic import command
    from alembic.config import Config
    from fastapi.testclient import TestClient

    from api.main import create_app
    from core.settings import get_settings
    from workers.runner import run_job

    settings = get_settings()
    settings.ensure_dirs()
    config = Config(str(ROOT / "alembic.ini"))
    config.attributes["database_url"] = settings.database_url
    command.upgrade(config, "head")
    OUT.mkdir(parents=True, exist_ok=True)
    with TestClient(create_app()) as client:
        for name, document in JOBS.items():
            job = client.post("/jobs", json=document).json()
            assert run_job(job["id"], settings=settings, worker="pictures") == "succeeded"
            model = client.get(f"/models/{job['id']}").json()
            result = client.get(f"/jobs/{job['id']}").json()["result"]
            quality = {
                k: result[k] for k in ("frechet_distance", "frechet_distance_noise") if k in result
            }
            print(name, quality or {k: v for k, v in result.items() if k.startswith("test_")})
            pictures = {
                f"{name}-{p}": f"/models/{job['id']}/images/{p}.png" for p in model["images"]
            }
            if name in ("gan", "vae"):
                pictures[f"{name}-samples-over-epochs"] = f"/jobs/{job['id']}/plots/samples.png"
            for file, url in pictures.items():
                query = {**QUERY, "n": 4} if file.endswith(("energy", "recall")) else QUERY
                query = {**query, "n": 8} if file.endswith("latent_grid") else query
                response = client.get(url, params=query if "/images/" in url else None)
                assert response.status_code == 200, (url, response.text)
                (OUT / f"{file}.png").write_bytes(response.content)
        # The README's sweep: its jobs run here one by one, then its two pictures.
        sweep = client.post("/sweeps", json=SWEEP).json()
        alone = settings.model_copy(update={"stack_max": 1})  # each job's own run_job trains it
        for cell in client.get(f"/sweeps/{sweep['id']}").json()["cells"]:
            for job in cell["jobs"]:
                assert run_job(job["id"], settings=alone, worker="pictures") == "succeeded"
        plots = {
            "curves": {"metric": "val_accuracy"},
            "metric": {"metric": "test_accuracy", "axis": "model.hidden.0"},
        }
        for name, params in plots.items():
            response = client.get(f"/sweeps/{sweep['id']}/plots/{name}.png", params=params)
            assert response.status_code == 200, response.text
            (OUT / f"sweep-{name}.png").write_bytes(response.content)


if __name__ == "__main__":
    main()
