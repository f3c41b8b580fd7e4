"""The image and compose file: the project installs as a wheel whose `annlab` command runs, and
docker-compose.yml restarts its services, keeps its secrets in .env and has CPU and GPU workers."""

import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT

COMPOSE = ROOT / "docker-compose.yml"


def test_the_wheel_holds_every_package_and_its_annlab_command_runs(tmp_path: Path) -> None:
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
        + ["-w", str(tmp_path / "dist"), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("annlab-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in (
        "annlab/cli.py",
        "annlab/client.py",
        "api/main.py",
        "api/templates/base.html",
        "api/static/dashboard.js",
        "api/static/vendor/swagger-ui/swagger-ui-bundle.js",
        "api/static/vendor/redoc/redoc.standalone.js",
        "workers/celery_app.py",
        "models/registry.py",
        "core/db.py",
    ):
        assert needed in names, needed
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "annlab = annlab.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()

    # Installed into a fresh environment (its dependencies seen from this one), the console
    # script runs.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    target = venv / "installed"
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target)]
        + [str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert installed.returncode == 0, installed.stderr[-3000:]
    site = sysconfig.get_paths()["purelib"]
    env = {"PYTHONPATH": f"{target}:{site}", "PATH": "/usr/bin:/bin"}
    helped = subprocess.run(
        [str(venv / "bin" / "python"), str(target / "bin" / "annlab"), "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env=env,
    )
    assert helped.returncode == 0, helped.stderr[-3000:]
    assert all(noun in helped.stdout for noun in ("job", "sweep", "key"))
    assert (
        str(ROOT)
        not in subprocess.run(
            [str(venv / "bin" / "python"), "-c", "import annlab; print(annlab.__file__)"],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env=env,
        ).stdout
    )


def test_the_image_installs_the_project_rather_than_a_list_of_folders() -> None:
    lines = [line.strip() for line in (ROOT / "Dockerfile").read_text().splitlines()]
    assert "COPY . ." in lines and "RUN pip install ." in lines
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", ".git", ".env"} <= set(ignored)
    assert not {"annlab", "api", "core", "models", "workers", "migrations"} & set(ignored)


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_keeps_secrets_in_env_and_restarts_its_services() -> None:
    text = COMPOSE.read_text()
    services = compose()["services"]
    assert "${POSTGRES_PASSWORD:?" in services["postgres"]["environment"]["POSTGRES_PASSWORD"]
    for name, service in services.items():
        environment = service.get("environment", {})
        for key, value in environment.items():
            if re.search(r"PASSWORD|KEY|SECRET", key):
                assert str(value).startswith("${"), (name, key)
        url = environment.get("DATABASE_URL", "")
        assert "annlab:annlab@" not in url and "${POSTGRES_PASSWORD" in url or not url, name
        if name != "migrate":  # a one-off step
            assert service.get("restart") == "unless-stopped", name
    for name in ("migrate", "api", "worker-cpu", "worker-gpu"):
        assert services[name]["env_file"] == ".env", name
    example = (ROOT / ".env.example").read_text()
    for variable in set(re.findall(r"\$\{(\w+):\?", text)):
        assert re.search(rf"^{variable}=$", example, re.M), variable


def test_compose_has_a_cpu_and_a_gpu_worker_running_the_real_modules() -> None:
    services = compose()["services"]
    cpu, gpu = services["worker-cpu"], services["worker-gpu"]
    assert "deploy" not in cpu and "profiles" not in cpu
    assert gpu["profiles"] == ["gpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"]
    for worker in (cpu, gpu):
        assert worker["command"][:3] == ["celery", "-A", "workers.celery_app"]
        assert worker["stop_grace_period"] == "30s"
    assert (ROOT / "workers" / "celery_app.py").exists()
    assert services["api"]["command"][:2] == ["uvicorn", "api.main:app"]
    assert services["migrate"]["command"] == ["alembic", "upgrade", "head"]


def test_docker_compose_accepts_the_file(tmp_path: Path) -> None:
    docker = shutil.which("docker")
    if (
        docker is None
        or subprocess.run([docker, "compose", "version"], capture_output=True).returncode
    ):
        pytest.skip("docker compose is not installed here")
    (tmp_path / ".env").write_text("POSTGRES_PASSWORD=x\nANNLAB_ADMIN_KEY=" + "k" * 32 + "\n")
    checked = subprocess.run(
        [docker, "compose", "-f", str(COMPOSE), "--env-file", str(tmp_path / ".env")]
        + ["--profile", "gpu", "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stderr
