"""A thread in each worker that takes back jobs whose worker vanished, sends jobs that were never
sent (their sender died, or the broker was down) and re-sends lost messages."""

import logging
import threading

from core.db import session_scope
from core.jobs import reap
from core.settings import Settings
from workers.dispatch import release_sweeps, send_jobs

log = logging.getLogger(__name__)


class Reaper:
    _running: "Reaper | None" = None

    def __init__(self, settings: Settings):
        self.settings = settings
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="annlab-reaper", daemon=True)

    @classmethod
    def start_once(cls, settings: Settings) -> None:
        if cls._running is None:
            cls._running = cls(settings)
            cls._running._thread.start()

    @classmethod
    def stop_running(cls) -> None:
        if cls._running is not None:
            cls._running._stop.set()
            cls._running = None

    def sweep(self) -> list[str]:
        with session_scope(self.settings.database_url) as session:
            ids = reap(
                session,
                max_attempts=self.settings.max_attempts,
                redispatch_seconds=self.settings.redispatch_seconds,
                unsent_seconds=self.settings.unsent_seconds,
                memory_limit=self.settings.worker_memory_bytes,
            )
        sent = send_jobs(self.settings, ids)
        if ids:
            log.warning(
                "sent %d of %d jobs whose worker or message was lost, or never sent: %s",
                len(sent),
                len(ids),
                ", ".join(ids[:10]),
            )
        release_sweeps(self.settings)  # a sweep whose releasing worker died goes on
        return sent

    def _loop(self) -> None:
        while not self._stop.wait(self.settings.reaper_seconds):
            try:
                self.sweep()
            except Exception:  # noqa: BLE001 - a database blip must not end the thread
                log.exception("reaper sweep failed")
