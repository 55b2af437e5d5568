"""Running the WSGI app under gunicorn (``python -m recommender_system serve``)."""

from __future__ import annotations

import os
from typing import Any

from gunicorn.app.base import BaseApplication

from recommender_system.metrics_multiprocess import prepare as prepare_metrics
from recommender_system.settings import Settings


class _Gunicorn(BaseApplication):  # type: ignore[misc]
    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self):  # type: ignore[no-untyped-def]
        from recommender_system.app import create_app

        limit_native_threads()
        return create_app()


def limit_native_threads() -> None:
    """One BLAS/OpenMP thread per web process: its request threads (and the other workers) are the parallelism.
    A request's matrix products are small; letting each spread over every core made the workers' native threads
    spin against each other and roughly doubled the CPU time of a prediction. Libraries already loaded are limited
    now, and the environment makes those loaded later (torch, when GRU4Rec is served) start with one thread."""
    from threadpoolctl import threadpool_limits

    for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[variable] = "1"
    threadpool_limits(1)


def gunicorn_options(settings: Settings, workers: int | None = None, threads: int | None = None) -> dict[str, Any]:
    """The service's gunicorn setup (each worker holds its own loaded models).

    By default ``sync`` workers: each process serves one request at a time and takes the next connection from the
    kernel's accept queue only when free, so the load spreads evenly over the processes and a request never waits
    for the interpreter lock behind other requests. (With threaded workers a keep-alive client's connections stay
    with the process that accepted them: all of them landing on one process halved the throughput and quadrupled
    the latency in ``bench/predict.py``.) ``gthread`` is there for clients that hold many idle keep-alive
    connections."""
    options: dict[str, Any] = {
        "bind": f"{settings.server_host}:{settings.server_port}",
        "workers": workers or settings.web_workers,
        "worker_class": settings.web_worker_class,
        "timeout": 60,
        "graceful_timeout": 20,
        "accesslog": None,
        "loglevel": settings.log_level.lower(),
        "preload_app": False,
        "backlog": 2048,
    }
    if settings.web_worker_class == "gthread":
        options.update(threads=threads or settings.web_threads, keepalive=5)
    return options


def serve(settings: Settings, workers: int | None = None, threads: int | None = None) -> None:
    options = gunicorn_options(settings, workers, threads)
    options.update(prepare_metrics(settings, options["workers"]))  # Prometheus multi-process mode
    _Gunicorn(options).run()
