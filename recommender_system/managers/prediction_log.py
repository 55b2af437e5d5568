"""The background writer of the prediction log: requests enqueue, a thread writes in batches.

A request never waits for the database: ``submit`` appends to an in-memory queue. A daemon thread wakes every
``flush_seconds`` (or as soon as ``batch_size`` records wait) and writes everything pending in one transaction:
one multi-row insert of the log rows, one of their items, one upsert of session -> user links. ``close`` stops the
thread and writes what is left; it runs on the app's shutdown hooks and at interpreter exit (``atexit``, which a
gunicorn worker reaches when it exits), so a clean shutdown loses nothing. When the database is unreachable the
records are kept and retried, up to ``max_pending`` (the oldest are then dropped, with a warning); a record the
database refuses (e.g. a value too long for its column) is dropped alone, never holding back the others.
"""

from __future__ import annotations

import atexit
import logging
import threading
from collections import deque

from recommender_system.storage.database import Database
from recommender_system.storage.prediction_log import PredictionLogStore, PredictionRecord
from recommender_system.storage.tables import utcnow

logger = logging.getLogger(__name__)


def refused(error: BaseException) -> bool:
    """Whether the database refused the data itself (a DB-API ``DataError`` or ``IntegrityError``, wrapped by
    SQLAlchemy or raw from a COPY), as opposed to being unreachable."""
    return any(cls.__name__ in ("DataError", "IntegrityError") for cls in type(error).__mro__)


class PredictionLogWriter:
    def __init__(
        self,
        database: Database,
        store: PredictionLogStore,
        flush_seconds: float = 0.5,
        batch_size: int = 500,
        max_pending: int = 200_000,
    ) -> None:
        self._database = database
        self._store = store
        self.flush_seconds = flush_seconds
        self.batch_size = batch_size
        self.max_pending = max_pending
        self._pending: deque[PredictionRecord] = deque()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._flush_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._failing = False
        self.written = 0
        self.dropped = 0

    @property
    def pending(self) -> int:
        return len(self._pending)

    @property
    def running(self) -> bool:
        """Whether the flushing thread is running."""
        return self._thread is not None and self._thread.is_alive()

    def submit(self, record: PredictionRecord) -> None:
        """Queue one record (no I/O)."""
        self._pending.append(record)
        if len(self._pending) >= self.batch_size:
            self._wake.set()

    def start(self) -> None:
        """Start the flushing thread (idempotent) and register the final flush at interpreter exit."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="prediction-log-writer", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    def close(self) -> None:
        """Stop the thread and write everything still queued (idempotent)."""
        self._stopping.set()
        self._wake.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=30)
        atexit.unregister(self.close)
        while self._pending:
            if not self.flush():
                logger.error("prediction log: %d records could not be written at shutdown", len(self._pending))
                break

    def flush(self) -> bool:
        """Write every queued record now; False when the write failed (the records stay queued)."""
        with self._flush_lock:
            batch: list[PredictionRecord] = []
            while self._pending:
                try:
                    batch.append(self._pending.popleft())
                except IndexError:
                    break
            if not batch:
                return True
            try:
                self._write(batch)
            except Exception as error:
                if not refused(error):
                    return self._failed(batch)
                # a record the database refuses must not hold back the others: write them one by one
                logger.warning("prediction log: a batch of %d was refused (%s); writing one by one", len(batch), error)
                for position, record in enumerate(batch):
                    try:
                        self._write([record])
                    except Exception as single:
                        if not refused(single):
                            return self._failed(batch[position:])
                        self.dropped += 1
                        logger.error("prediction log: dropped a record the database refuses (%s): %r", single, record)
            if self._failing:
                logger.info("prediction log: writing works again")
            self._failing = False
            self.written += len(batch)
            return True

    def _write(self, batch: list[PredictionRecord]) -> None:
        links = {r.session_id: r.user_id for r in batch if r.session_id and r.user_id}
        with self._database.write_session() as session:
            self._store.insert_many(session, batch)
            self._store.link_sessions(session, links, utcnow())

    def _failed(self, batch: list[PredictionRecord]) -> bool:
        """The database could not be reached: keep the records for the next attempt."""
        self._requeue(batch)
        if not self._failing:
            logger.exception("prediction log: writing %d records failed; will retry", len(batch))
        self._failing = True
        return False

    def _requeue(self, batch: list[PredictionRecord]) -> None:
        self._pending.extendleft(reversed(batch))
        excess = len(self._pending) - self.max_pending
        if excess > 0:
            for _ in range(excess):
                self._pending.popleft()
            self.dropped += excess
            logger.warning("prediction log: dropped the %d oldest unwritten records", excess)

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(self.flush_seconds)
            self._wake.clear()
            if self._pending and not self.flush():
                self._stopping.wait(self.flush_seconds)  # back off while the database is unreachable
