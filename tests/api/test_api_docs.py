"""/docs and /redoc are served from the vendored Swagger UI and ReDoc: no CDN, no network."""

import hashlib
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.conftest import ROOT, api_client

VENDOR = ROOT / "api" / "static" / "vendor"


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    with api_client() as client:
        yield client


def assets(html: str) -> list[str]:
    return re.findall(r"""(?:src|href)=["']([^"']+)["']""", html) + re.findall(
        r"""url: ?['"]([^'"]+)['"]""", html
    )


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_the_docs_pages_load_only_files_this_server_serves(client: TestClient, page: str) -> None:
    answer = client.get(page)
    assert answer.status_code == 200
    found = assets(answer.text)
    assert any(url.endswith(".js") for url in found), found
    for url in found:
        assert url.startswith("/"), f"{page} loads {url} from elsewhere"
        assert client.get(url).status_code == 200, url
    assert "googleapis" not in answer.text and "jsdelivr" not in answer.text


def test_the_swagger_oauth2_redirect_page_is_served(client: TestClient) -> None:
    answer = client.get("/docs/oauth2-redirect")
    assert answer.status_code == 200 and "oauth2" in answer.text.lower()


@pytest.mark.parametrize("package", ["swagger-ui", "redoc"])
def test_vendored_files_are_the_ones_their_source_names(package: str) -> None:
    """Each vendored file's sha256 is written in its SOURCE, with the npm version it came from."""
    folder = VENDOR / package
    listed = dict(
        reversed(line.split(maxsplit=1))
        for line in (folder / "SOURCE").read_text().splitlines()
        if re.fullmatch(r"[0-9a-f]{64}  \S+", line)
    )
    present = {p.name for p in folder.iterdir() if p.name != "SOURCE"}
    assert set(listed) == present
    for name, digest in listed.items():
        assert hashlib.sha256(Path(folder / name).read_bytes()).hexdigest() == digest, name
    assert (folder / "LICENSE").stat().st_size > 500


@pytest.fixture(scope="module")
def own_database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, str]]:
    """An app over a database of its own: the examples' jobs stay out of other tests' way."""
    from core.db import migrate

    url = f"sqlite:///{tmp_path_factory.mktemp('examples') / 'annlab.db'}"
    migrate(url)
    with api_client(database_url=url) as client:
        yield client, url


def examples(document: dict, path: str) -> dict:
    operation = document["paths"][path]["post"]
    return operation["requestBody"]["content"]["application/json"]["examples"]


def test_the_documented_examples_are_answered_as_documented(
    own_database: tuple[TestClient, str],
) -> None:
    """Every sweep example is accepted; the predict example is answered by a trained model in
    the shape of the documented answer."""
    from api.examples import PREDICT_ANSWER, SAMPLE_ANSWER
    from core.settings import get_settings
    from workers.runner import run_job

    client, url = own_database
    document = client.get("/openapi.json").json()
    for name, example in examples(document, "/sweeps").items():
        answer = client.post("/sweeps", json=example["value"])
        assert answer.status_code == 202, (name, answer.text)
    predict = examples(document, "/models/{job_id}/predict")
    sample = examples(document, "/models/{job_id}/sample")
    assert {"digits", "function1d"} <= set(predict) and sample
    shown = document["paths"]["/models/{job_id}/sample"]["post"]["responses"]["200"]
    assert shown["content"]["application/json"]["example"] == SAMPLE_ANSWER

    job = {"family": "mlp", "dataset": {"name": "digits"}, "train": {"epochs": 1}}
    job_id = client.post("/jobs", json=job).json()["id"]
    settings = get_settings().model_copy(update={"database_url": url})
    assert run_job(job_id, settings=settings, worker="examples") == "succeeded"
    answer = client.post(f"/models/{job_id}/predict", json=predict["digits"]["value"])
    assert answer.status_code == 200, answer.text
    assert set(answer.json()) == set(PREDICT_ANSWER)
    assert len(answer.json()["probabilities"][0]) == len(PREDICT_ANSWER["probabilities"][0])
