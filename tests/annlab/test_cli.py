"""The `annlab` command: its options and errors in process, and the README's CNN flow as a
subprocess against the real service (job submit --follow, job show, job list, job metrics,
model predict, job cancel)."""

import json
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from annlab.cli import main, parser, progress_cell
from annlab.client import Client
from tests.conftest import ROOT, migrate
from tests.service import Service, free_port

PNG = b"\x89PNG\r\n\x1a\n"


def annlab(*args: str, url: str | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """The command as a user runs it: a process of its own."""
    command = [sys.executable, "-m", "annlab.cli", *(["--url", url] if url else []), *args]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def test_global_options_go_before_or_after_the_command() -> None:
    args = parser().parse_args(["--json", "--url", "http://a:1", "job", "list", "--limit", "3"])
    assert (args.json, args.url, args.api_key, args.limit) == (True, "http://a:1", None, 3)
    args = parser().parse_args(["job", "show", "j1", "--json", "--api-key", "k"])
    assert (args.json, args.url, args.api_key, args.job) == (True, None, "k", "j1")
    args = parser().parse_args(["job", "--json", "cancel", "j1"])
    assert (args.json, args.action, args.job) == (True, "cancel", "j1")
    args = parser().parse_args(["--url", "http://a:1", "sweep", "table", "s1", "--csv"])
    assert (args.json, args.url, args.action, args.csv) == (False, "http://a:1", "table", True)


def test_a_document_that_is_not_json_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    document = tmp_path / "job.json"
    document.write_text('{"family": "cnn",')
    assert main(["--url", "http://127.0.0.1:9", "job", "submit", str(document)]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"annlab: {document} is not JSON: ") and error.count("\n") == 1
    assert main(["job", "submit", str(tmp_path / "missing.json")]) == 2
    assert "no file" in capsys.readouterr().err


def test_each_resource_is_one_noun_and_the_old_spellings_name_the_new(
    capsys: pytest.CaptureFixture[str],
) -> None:
    nouns = parser()._subparsers._group_actions[0].choices
    assert set(nouns) == {"job", "model", "dataset", "sweep", "key", "health"}
    assert main(["--url", "http://a:1", "sweeps", "--family", "mlp"]) == 2
    assert capsys.readouterr().err == "annlab: `annlab sweeps` is spelled `annlab sweep list`\n"
    assert main(["submit", "job.json"]) == 2
    assert "`annlab job submit`" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse's usage error, naming the verbs
        main(["sweep"])
    assert "list,submit,show,table,cancel" in capsys.readouterr().err


def test_no_service_is_one_line_and_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    assert main(["--url", url, "job", "list"]) == 1
    error = capsys.readouterr().err
    assert error.startswith(f"annlab: no answer from {url}") and error.count("\n") == 1


@pytest.mark.service
def test_the_readme_cnn_flow_on_the_command_line(service: Service, tmp_path: Path) -> None:
    datasets = json.loads(annlab("dataset", "list", "--json", url=service.url).stdout)["items"]
    fashion = next(d for d in datasets if d["name"] == "fashion_mnist")
    if not fashion["available"]:
        pytest.skip("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
    document = tmp_path / "job.json"
    document.write_text(
        json.dumps(
            {
                "family": "cnn",
                "dataset": {"name": "fashion_mnist", "max_train": 1000},
                "train": {"epochs": 2},
            }
        )
    )

    followed = annlab("job", "submit", str(document), "--follow", "--poll", "0.2", url=service.url)
    assert followed.returncode == 0, followed.stderr
    job_id = re.search(r"queued ([0-9a-f]{32})", followed.stderr).group(1)
    updates = re.split(r"[\r\n]+", followed.stderr)
    # The epoch in whatever phase a poll caught (a 1,000-image epoch's steps can pass between
    # two polls); how a step is shown is tested in tests/annlab/test_client.py.
    running = [u for u in updates if re.search(r"\d+%\|.*epoch [12]/2", u)]
    assert running, followed.stderr[-2000:]
    assert any("100%" in u and "succeeded" in u for u in updates)
    table = followed.stdout  # the result as a table
    assert re.search(r"status\s+│\s+succeeded", table) and job_id in table
    accuracy = float(re.search(r"result\.test_accuracy\s+│\s+([0-9.]+)", table).group(1))
    assert accuracy > 0.5

    shown = json.loads(annlab("job", "show", job_id, "--json", url=service.url).stdout)
    assert shown["id"] == job_id and shown["status"] == "succeeded"
    assert shown["result"]["test_accuracy"] == pytest.approx(accuracy, abs=1e-4)
    listed = json.loads(annlab("--json", "job", "list", "--family", "cnn", url=service.url).stdout)
    assert job_id in {j["id"] for j in listed["items"]}
    assert (
        job_id
        in annlab("job", "list", "--status", "succeeded", "--limit", "200", url=service.url).stdout
    )

    plot = tmp_path / "curves.png"
    metrics = annlab("job", "metrics", job_id, "--plot", str(plot), url=service.url)
    assert metrics.returncode == 0 and plot.read_bytes().startswith(PNG)
    assert re.findall(r"^│\s+(\d)\s+│", metrics.stdout, re.M) == ["0", "1", "2"]
    assert "2 epochs of" in metrics.stdout  # epoch 0 trained none
    history = json.loads(annlab("job", "metrics", job_id, "--json", url=service.url).stdout)[
        "history"
    ]
    assert [row["epoch"] for row in history] == [0, 1, 2]

    inputs = tmp_path / "inputs.json"
    inputs.write_text(json.dumps({"inputs": [[[[0.0] * 28] * 28]] * 3}))
    predicted = annlab(
        "model", "predict", job_id, "--inputs", str(inputs), "--json", url=service.url
    )
    answer = json.loads(predicted.stdout)
    assert len(answer["outputs"]) == 3 and set(answer["class_names"]) <= set(fashion["classes"])
    as_table = annlab("model", "predict", job_id, "--inputs", str(inputs), url=service.url).stdout
    assert answer["class_names"][0] in as_table

    refused = annlab("job", "cancel", job_id, url=service.url)
    assert refused.returncode == 1
    assert refused.stderr == f"annlab: 409: job {job_id} already ended succeeded\n"


@pytest.mark.service
def test_a_bad_document_exits_1_naming_the_field(service: Service, tmp_path: Path) -> None:
    document = tmp_path / "bad.json"
    document.write_text(
        json.dumps({"family": "cnn", "dataset": {"name": "digits"}, "train": {"epochs": 0}})
    )
    refused = annlab("job", "submit", str(document), "--follow", url=service.url)
    assert refused.returncode == 1 and refused.stdout == ""
    assert refused.stderr.startswith("annlab: 422: train.epochs: ")
    assert refused.stderr.count("\n") == 1
    as_json = annlab("--json", "job", "submit", '{"family": "mlp"}', url=service.url)
    assert as_json.returncode == 1 and "annlab: 422: dataset: " in as_json.stderr


@pytest.mark.service
def test_a_sweep_on_the_command_line(service: Service) -> None:
    base = {"family": "mlp", "dataset": {"name": "digits"}, "train": {"epochs": 1}}
    document = json.dumps({"base": base, "axes": {"model.hidden.0": [8, 16]}})
    followed = annlab("sweep", "submit", document, "--follow", "--poll", "0.3", url=service.url)
    assert followed.returncode == 0, followed.stderr
    sweep_id = re.search(r"queued sweep ([0-9a-f]{32}): 2 jobs", followed.stderr).group(1)
    assert "2/2" in followed.stderr  # the bar counted both jobs ended
    cell_row = r"^│\s+(\d)\s+│\s+(\d+)\s+│\s+(\d+)\s+│.*│\s+1/1\s+│$"
    cells = re.findall(cell_row, followed.stdout, re.M)
    params = {h: 64 * h + h + h * 64 + 64 + 64 * 10 + 10 for h in (8, 16)}  # 64-h-64-10
    assert cells == [("0", "8", str(params[8])), ("1", "16", str(params[16]))]
    listed = json.loads(annlab("sweep", "list", "--json", url=service.url).stdout)
    assert sweep_id in {s["id"] for s in listed["items"]}
    csv = annlab("sweep", "table", sweep_id, "--csv", url=service.url).stdout.splitlines()
    assert csv[0].startswith("cell,model.hidden.0,n_params,") and len(csv) == 3


def test_key_list_as_json(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'keys.db'}"
    migrate(url)
    env = {"ANNLAB_HOME": str(tmp_path), "DATABASE_URL": url, "PATH": "/usr/bin:/bin"}

    def keys(*args: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "annlab.cli", "key", *args]
        return subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True)

    assert keys("create", "erin").returncode == 0
    assert keys("create", "ops", "--admin").returncode == 0
    listed = json.loads(keys("list", "--json").stdout)
    assert [(k["name"], k["admin"]) for k in listed] == [("erin", False), ("ops", True)]
    assert keys("revoke", "erin").returncode == 0 and keys("revoke", "erin").returncode == 1
    assert [k["name"] for k in json.loads(keys("list", "--json").stdout)] == ["ops"]


def test_the_bar_and_the_jobs_table_show_the_phase_after_training(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Training done, scoring samples at 45%: the bar shows the phase's percent and step, not
    training's 100%."""
    training = {"epoch": 3, "epochs": 3, "step": 10, "steps": 20, "percent": 83.3}
    done = {"epoch": 3, "epochs": 3, "step": 20, "steps": 20, "percent": 100.0}
    scoring = done | {
        "phase": "scoring samples",
        "phase_percent": 45.0,
        "phase_step": 360,
        "phase_steps": 800,
        "eta_seconds": 180.0,
    }
    states = iter(
        [
            ("running", {"phase": "loading", "phase_percent": 0.0}),
            ("running", training | {"phase": "training", "phase_percent": 50.0}),
            ("running", scoring),
            ("succeeded", done | {"phase": "saving", "phase_percent": 100.0}),
        ]
    )

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/metrics"):
            return httpx.Response(200, json={"history": []})
        status, progress = next(states)
        return httpx.Response(200, json={"family": "gan", "status": status, "progress": progress})

    http = httpx.Client(base_url="http://api.test", transport=httpx.MockTransport(answer))
    Client("http://api.test", http=http).wait("j1", poll=0)
    updates = re.split(r"[\r\n]+", capsys.readouterr().err)
    assert any(re.search(r"0%\|.*loading data", u) for u in updates), updates
    assert any(
        re.search(r"45%\|.*scoring samples 45% \(step 360/800\), eta 3m00s", u) for u in updates
    )
    assert any(re.search(r"100%\|.*succeeded", u) for u in updates)

    assert progress_cell({"status": "running", "progress": scoring}) == (
        "3/3 (100%), scoring samples 45%"
    )
    assert progress_cell({"status": "running", "progress": done | {"phase": "evaluating"}}) == (
        "3/3 (100%), evaluating"
    )
