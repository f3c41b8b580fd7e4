"""Structured logs: one JSON object per line, and each line about a job names it."""

import io
import json
import logging
import re

import pytest

from core import logs
from core.settings import Settings
from tests.conftest import api_client
from tests.workers.test_runner import submit
from workers.runner import run_job


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


@pytest.fixture(autouse=True)
def _restore_root_logger():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:], root.level = handlers, level


def test_a_workers_lines_about_a_job_carry_its_id(settings: Settings, capsys) -> None:  # noqa: ANN001
    logs.configure("json")
    document = {"family": "mlp", "dataset": {"name": "digits"}, "train": {"epochs": 2}}
    job_id = submit(settings, document)
    logging.getLogger("elsewhere").info("before the job")
    assert run_job(job_id, settings=settings, worker="w1") == "succeeded"

    lines = json_lines(capsys.readouterr().err)
    assert all({"time", "level", "logger", "message", "job_id"} <= set(line) for line in lines)
    outside = [line for line in lines if line["message"] == "before the job"]
    assert outside and outside[0]["job_id"] is None
    epochs = [line for line in lines if line["job_id"] == job_id and "epoch" in line]
    said = [line["epoch"] for line in epochs]  # the first and last, at most one a second between
    assert said[0] == 0 and said[-1] == 2 and said == sorted(set(said))
    assert epochs[-1]["metrics"]["val_accuracy"] > 0.5 and epochs[-1]["level"] == "INFO"


def test_the_apis_request_lines_name_the_job_in_the_path(capsys) -> None:  # noqa: ANN001
    with api_client(log_format="json") as client:
        job = client.post("/jobs", json={"family": "mlp", "dataset": {"name": "digits"}}).json()
        assert client.get(f"/jobs/{job['id']}").status_code == 200
        assert client.get("/jobs").status_code == 200

    lines = [
        line for line in json_lines(capsys.readouterr().err) if line["logger"] == "annlab.http"
    ]
    about_job = [line for line in lines if line["job_id"] == job["id"]]
    assert [(line["route"], line["status"]) for line in about_job] == [("/jobs/{job_id}", 200)]
    listing = [
        line for line in lines if line["route"] == "/jobs" and line["message"].startswith("GET")
    ]
    assert listing and listing[0]["job_id"] is None and listing[0]["ms"] > 0


def test_text_format_for_people(capsys) -> None:  # noqa: ANN001
    logs.configure("text")
    with logs.job_context("abc123"):
        logging.getLogger("annlab.test").warning("hello")
    err = capsys.readouterr().err
    assert "WARNING annlab.test: hello  [job abc123]" in err and not err.startswith("{")


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_auto_is_text_on_a_terminal_and_json_elsewhere() -> None:
    terminal, pipe = Terminal(), io.StringIO()
    for stream in (terminal, pipe):
        logs.configure("auto", stream=stream)
        logging.getLogger("annlab.test").info("hello")
    assert re.fullmatch(r"\d\d:\d\d:\d\d INFO    annlab.test: hello\n", terminal.getvalue())
    assert json.loads(pipe.getvalue())["message"] == "hello"
    chosen = Terminal()
    logs.configure("json", stream=chosen)  # a setting wins over the terminal
    logging.getLogger("annlab.test").info("hello")
    assert json.loads(chosen.getvalue())["level"] == "INFO"
    assert Settings().log_format == "auto"
