"""Logs as one JSON object per line (python-json-logger), each carrying the job it is about.

`job_context(job_id)` marks everything logged inside it, in this thread or task, with `job_id`;
a worker wraps each run in it and the API each request about a job, so
`jq 'select(.job_id == "...")'` over the API's and every worker's logs follows one job.
On a terminal (`ANNLAB_LOG_FORMAT=auto`, the default) the lines are plain text for a person
to read instead; `json` or `text` chooses one whatever stderr is.
"""

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TextIO

from pythonjsonlogger.json import JsonFormatter

_job_id: ContextVar[str | None] = ContextVar("annlab_job_id", default=None)
# uvicorn and Celery install their own handlers; theirs go through the root's instead.
_TAKEN_OVER = ("uvicorn", "uvicorn.error", "celery", "celery.task")
# uvicorn's access log is silenced: the API's annlab.http line (api/metrics.py) says the same
# of each request and more (route, milliseconds, job id). Handed to the root, it came back
# even under `uvicorn --no-access-log`, which only takes its handlers away.
_SILENCED = ("uvicorn.access",)


@contextmanager
def job_context(job_id: str | None) -> Iterator[None]:
    token = _job_id.set(job_id)
    try:
        yield
    finally:
        _job_id.reset(token)


class JobIdFilter(logging.Filter):
    """Adds `job_id` to every record made inside a job_context (None outside one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "job_id", None) is None:
            record.job_id = _job_id.get()
        return True


class TextFormatter(logging.Formatter):
    """`12:03:04 INFO    workers.runner: message  [job 5f0c...]`, for a terminal."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        job_id = getattr(record, "job_id", None)
        return f"{line}  [job {job_id}]" if job_id else line


def chosen(log_format: str, stream: TextIO) -> str:
    """`auto`: text on a terminal, JSON otherwise (a file, a pipe, a log collector)."""
    if log_format != "auto":
        return log_format
    isatty = getattr(stream, "isatty", None)
    return "text" if isatty is not None and isatty() else "json"


def configure(
    log_format: str = "auto", level: int | str = logging.INFO, stream: TextIO | None = None
) -> None:
    """One handler on the root logger, writing to `stream` (stderr); idempotent."""
    stream = sys.stderr if stream is None else stream
    handler = logging.StreamHandler(stream)
    if chosen(log_format, stream) == "json":
        handler.setFormatter(
            JsonFormatter(
                "{asctime}{levelname}{name}{message}{job_id}",
                style="{",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
                timestamp=False,
            )
        )
    else:
        handler.setFormatter(TextFormatter())
    handler.addFilter(JobIdFilter())
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "annlab", False)]:
        root.removeHandler(old)
    handler.annlab = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    for name in _TAKEN_OVER + _SILENCED:
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = name in _TAKEN_OVER
