"""Running the WSGI app under gunicorn (``python -m recommender_system serve``)."""

from __future__ import annotations

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

        return create_app()


def gunicorn_options(
    settings: Settings, workers: int | None = None, threads: int | None = None
) -> dict[str, Any]:
    """Sensible defaults: a few workers with threads (each worker holds its own loaded models)."""
    return {
        "bind": f"{settings.server_host}:{settings.server_port}",
        "workers": workers or settings.web_workers,
        "threads": threads or settings.web_threads,
        "worker_class": "gthread",
        "timeout": 60,
        "graceful_timeout": 20,
        "keepalive": 5,
        "accesslog": None,
        "loglevel": settings.log_level.lower(),
        "preload_app": False,
    }


def serve(settings: Settings, workers: int | None = None, threads: int | None = None) -> None:
    options = gunicorn_options(settings, workers, threads)
    options.update(prepare_metrics(settings, options["workers"]))  # Prometheus multi-process mode
    _Gunicorn(options).run()
