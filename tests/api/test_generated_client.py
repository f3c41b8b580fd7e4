"""The OpenAPI document makes a working client: openapi-python-client generates one, which
submits a job to the real app with an API key and reads it back."""

import importlib
import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import api_client

# The generator has no reader for image/png; pictures come back as bytes (a File).
CONFIG = "content_type_overrides:\n  image/png: application/octet-stream\n"


def test_a_generated_client_submits_a_job_and_reads_it(tmp_path: Path) -> None:
    from core import keys
    from core.db import migrate, session_scope

    url = f"sqlite:///{tmp_path / 'annlab.db'}"
    migrate(url)
    with session_scope(url) as session:
        key = keys.create(session, "generated-client")
    with api_client(database_url=url) as app:
        (tmp_path / "openapi.json").write_text(json.dumps(app.get("/openapi.json").json()))
        (tmp_path / "config.yaml").write_text(CONFIG)
        generated = subprocess.run(
            [sys.executable, "-m", "openapi_python_client", "generate"]
            + ["--path", "openapi.json", "--config", "config.yaml", "--meta", "none"]
            + ["--output-path", "annlab_generated"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert generated.returncode == 0, generated.stdout[-3000:] + generated.stderr[-3000:]
        assert "Warning" not in generated.stdout, generated.stdout[-3000:]

        sys.path.insert(0, str(tmp_path))
        try:
            package = importlib.import_module("annlab_generated")
            create_job = importlib.import_module("annlab_generated.api.jobs.create_job")
            read_job = importlib.import_module("annlab_generated.api.jobs.read_job")
            models = importlib.import_module("annlab_generated.models")
        finally:
            sys.path.remove(str(tmp_path))

        def client_with(token: str):
            # The generated client's own httpx client, with its auth header, over the app's
            # in-process transport.
            return package.AuthenticatedClient(
                base_url=str(app.base_url), token=token, httpx_args={"transport": app._transport}
            )

        client = client_with(key)
        document = {"family": "mlp", "dataset": {"name": "digits"}, "train": {"epochs": 3}}
        job = create_job.sync(client=client, body=models.MLPJob.from_dict(document))
        assert isinstance(job, models.JobPublic), job
        assert job.status == "queued" and job.family == "mlp"
        again = read_job.sync(job.id, client=client)
        assert isinstance(again, models.JobPublic) and again.id == job.id
        assert again.spec.to_dict()["train"]["epochs"] == 3
        assert read_job.sync_detailed(job.id, client=client_with("not-a-key")).status_code == 401
