"""Prometheus multi-process mode under gunicorn (``recommender_system/metrics.py`` holds the metrics).

prometheus-client chooses where a metric keeps its value when it is first imported, from the
``PROMETHEUS_MULTIPROC_DIR`` environment variable. So the gunicorn master sets that variable before any worker
starts (and imports ``prometheus_client`` only later, inside the ``child_exit`` hook): every worker then writes its
counters to files in that directory and a scrape of any worker sums them all.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from recommender_system.settings import Settings

logger = logging.getLogger(__name__)

ENV = "PROMETHEUS_MULTIPROC_DIR"


def prepare(settings: Settings, workers: int) -> dict[str, Any]:
    """Choose and empty the metrics directory (``PROMETHEUS_MULTIPROC_DIR``, else ``RS_PROMETHEUS_MULTIPROC_DIR``,
    else a fresh temporary directory when there are several workers); returns the gunicorn hooks to add."""
    directory = os.environ.get(ENV) or os.environ.get(ENV.lower())
    if not directory and settings.prometheus_multiproc_dir is not None:
        directory = str(settings.prometheus_multiproc_dir)
    if not directory:
        if workers <= 1:
            return {}
        directory = tempfile.mkdtemp(prefix="rs-prometheus-")
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):  # values of a previous run must not be summed into this one
        stale.unlink()
    os.environ[ENV] = str(path)
    logger.info("prometheus metrics of the %d workers are kept in %s", workers, path)
    return {"child_exit": child_exit}


def child_exit(server: Any, worker: Any) -> None:
    """gunicorn hook: a worker exited; drop its live gauges."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
