"""A worker's "epoch done" log lines: a job's first, at most one a second, a fold's last."""

import logging

import pytest

from models.loop import EpochEnd
from workers import recorder
from workers.recorder import EpochLines


def test_a_jobs_epoch_lines_come_at_most_once_a_second(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    now = [100.0]
    monkeypatch.setattr(recorder.time, "monotonic", lambda: now[0])
    lines = EpochLines()
    with caplog.at_level(logging.INFO, logger="workers.recorder"):
        for epoch in range(30):  # 1/8 s an epoch: epochs 0, 8, 16 and 24 say so, and the last
            lines.ended("a", [(0, EpochEnd(epoch, {"loss": 1.0}, 0.125, False))])
            lines.ended("b", [(0, EpochEnd(epoch, {"loss": 1.0}, 0.125, False))], last=epoch == 29)
            now[0] += 0.125
        lines.fold_ended("a")
        lines.fold_ended("b")
    said = [r.getMessage().split(" done")[0] for r in caplog.records]
    for job in "ab":
        assert [s for s in said if s.startswith(f"job {job}:")] == [
            f"job {job}: epoch {epoch}" for epoch in (0, 8, 16, 24, 29)
        ]
