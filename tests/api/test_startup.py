"""The API imports torch and the families while it starts, before it answers: the first job
submitted then costs what the next ones do (on a loaded machine the imports took 24 s)."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent(
    """
    import json, sys
    from fastapi.testclient import TestClient
    from core.db import migrate
    from core.settings import get_settings

    migrate(get_settings().database_url)
    from api.main import app

    heavy = ("torch", "torchvision", "sklearn", "models.registry", "models.admission")
    before_start = {m for m in heavy if m in sys.modules}
    with TestClient(app) as client:
        started = set(sys.modules)
        answer = client.post("/jobs", json={"family": "mlp", "dataset": {"name": "digits"}})
        new = sorted(m for m in set(sys.modules) - started if m.split(".")[0] in
                     ("torch", "torchvision", "sklearn", "scipy", "models"))
    print(json.dumps({"status": answer.status_code, "before_start": sorted(before_start),
                      "after_start": [m for m in heavy if m in started], "new": new}))
    """
)


def test_the_first_job_imports_nothing_heavy_on_the_request_path(tmp_path: Path):
    run = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=ROOT,
        env={"ANNLAB_HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    seen = json.loads(run.stdout.strip().splitlines()[-1])
    assert seen["status"] == 202
    # Importing the app loads no torch; starting it does, and the request imports nothing more.
    assert seen["before_start"] == []
    assert seen["after_start"] == ["torch", "models.registry", "models.admission"]
    assert seen["new"] == []
