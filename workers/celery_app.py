"""The Celery app. Importing it loads no torch, so the API can send tasks cheaply.

Delivery is at-least-once (acks_late, prefetch 1); the runner's claim makes a second delivery of
the same job a no-op, and the reaper re-sends what a lost worker or a lost message left behind.
"""

import logging
import os
import socket

from celery import Celery
from celery.signals import setup_logging, worker_ready, worker_shutdown

from core import logs
from core.settings import get_settings

log = logging.getLogger(__name__)
settings = get_settings()

app = Celery("annlab", broker=settings.broker_url, include=["workers.tasks"])
app.conf.update(
    task_default_queue=settings.queue,
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    task_ignore_result=True,
    task_serializer="json",
    accept_content=["json"],
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)
if settings.broker_url.startswith("sqla+"):
    # kombu's SQLAlchemy transport polls its table, once a second by default (a job waited
    # ~0.5 s to start). Its transport options all go to create_engine, which refuses
    # `polling_interval`, so the interval is set on the transport class instead.
    from kombu.transport import sqlalchemy as kombu_sqlalchemy

    kombu_sqlalchemy.Transport.polling_interval = settings.broker_poll_seconds
if settings.broker_url.startswith("sqla+sqlite"):
    # kombu hands these to create_engine for its own SQLite file.
    app.conf.broker_transport_options = {"connect_args": {"timeout": 30}}


@setup_logging.connect
def _configure_logging(**_: object) -> None:
    """Celery leaves logging to us when this signal has a receiver: JSON lines with job ids."""
    logs.configure(settings.log_format, settings.log_level)


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@worker_ready.connect
def _start_reaper(**_: object) -> None:
    from workers.reaper import Reaper

    Reaper.start_once(settings)


@worker_shutdown.connect
def _stop_reaper(**_: object) -> None:
    from workers.reaper import Reaper

    Reaper.stop_running()
