"""The Celery app. Importing it loads no torch, so the API can send tasks cheaply.

Delivery is at-least-once (acks_late, prefetch 1); the runner's claim makes a second delivery of
the same job a no-op, and the reaper re-sends what a lost worker or a lost message left behind.
"""

import atexit
import functools
import logging
import os
import socket
import sys

import celery.apps.worker
from celery import Celery
from celery.concurrency import solo
from celery.signals import (
    setup_logging,
    worker_init,
    worker_process_init,
    worker_ready,
    worker_shutdown,
    worker_shutting_down,
)
from celery.worker import consumer
from kombu import Connection

from core import logs
from core.settings import get_settings
from workers.stopping import request_stop

log = logging.getLogger(__name__)
settings = get_settings()
DRAIN_SECONDS = 0.25  # the longest a polling worker's loop waits before it looks for a stop

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
    # A worker that lost its broker tries again every second, however long the outage: it
    # never gives up and exits (see Consumer below).
    broker_connection_max_retries=None,
    worker_consumer="workers.celery_app:Consumer",
    # A send to a broker that is down fails in about 0.2 s (three tries, the last 0.2 s after
    # the first): the API answers and leaves the job to the reaper, which tries at every round.
    task_publish_retry_policy={
        "max_retries": 2,
        "interval_start": 0,
        "interval_step": 0.2,
        "interval_max": 0.2,
    },
    worker_hijack_root_logger=False,
)
if settings.broker_url.startswith(("redis://", "rediss://")):
    # Without socket timeouts a send to a Redis that stopped answering (a failover, a dropped
    # connection) waits forever.
    app.conf.broker_transport_options = {"socket_connect_timeout": 2, "socket_timeout": 5}
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


class Consumer(consumer.Consumer):
    """Celery's consumer, reconnecting to a lost broker every second. Celery leaves kombu's
    waits between tries at their defaults (2 s, then 4, 6... up to 30 s), with no setting, so a
    worker could sit idle for half a minute after its broker came back. With a polling broker
    (the embedded one) Celery's loop waits up to 2 s for a message before it looks for a
    shutdown: an idle worker took about 3 s to stop; its waits here are a quarter second."""

    def ensure_connected(self, conn: Connection) -> Connection:
        conn.ensure_connection = functools.partial(
            conn.ensure_connection, interval_start=1, interval_step=0, interval_max=1
        )
        if not conn.transport.implements.asynchronous:  # polled: Celery's synloop drains it
            drain = conn.drain_events

            def drain_briefly(timeout: float | None = None, **kwargs: object) -> object:
                timeout = min(timeout, DRAIN_SECONDS) if timeout else timeout
                return drain(timeout=timeout, **kwargs)

            conn.drain_events = drain_briefly
        return super().ensure_connected(conn)


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@worker_init.connect
@worker_process_init.connect
def _prepare(**_: object) -> None:
    """The worker's (or a pool process's) torch threads, allocator thresholds and what its
    first job would import, before it takes a job; then what it holds from start is frozen
    out of the garbage collector's passes."""
    from workers.runner import warm_up
    from workers.threads import apply_worker_threads, freeze_startup_objects, tune_allocator

    apply_worker_threads(settings)
    tune_allocator()
    warm_up()
    log.info("objects kept out of the collector's passes: %d", freeze_startup_objects())


@worker_ready.connect
def _start_reaper(**_: object) -> None:
    from workers.reaper import Reaper

    Reaper.start_once(settings)


@worker_shutdown.connect
def _stop_reaper(sender: object = None, **_: object) -> None:
    from workers.reaper import Reaper

    Reaper.stop_running()
    if isinstance(sender, celery.apps.worker.Worker):  # `celery worker`, not an embedded one
        _exit_now(sender.exitcode or 0)


def _exit_now(code: int) -> None:
    """The worker has stopped (its job given back, its messages acknowledged or restored):
    exit without the interpreter's teardown, which took seconds on a busy machine."""
    atexit._run_exitfuncs()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(code)


@worker_shutting_down.connect
def _stop_the_job(**_: object) -> None:
    """Warm or cold shutdown (SIGTERM, SIGINT, SIGQUIT): the running job checkpoints, goes back
    to the queue and the task returns within a second or two. Runs inside a signal handler."""
    request_stop()


def _stop_instead_of_kill(self: solo.TaskPool, pid: int, signal: object = None) -> None:
    """A cold shutdown cancels the running task with the pool's terminate_job, which the solo
    pool lacks (it raised NotImplementedError inside the job, which then failed). Its job runs
    in this thread: ask it to stop, as a warm shutdown does."""
    request_stop()


solo.TaskPool.terminate_job = _stop_instead_of_kill
