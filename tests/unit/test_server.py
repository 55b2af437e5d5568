"""How ``python -m recommender_system serve`` configures gunicorn."""

from __future__ import annotations

import pytest

from recommender_system.server import gunicorn_options
from recommender_system.settings import Settings, default_web_workers


def test_default_is_sync_workers_two_per_cpu() -> None:
    assert [default_web_workers(cpus) for cpus in (None, 1, 2, 3, 4, 16)] == [2, 2, 4, 6, 8, 8]
    options = gunicorn_options(Settings(web_workers=3))
    assert options["worker_class"] == "sync" and options["workers"] == 3
    assert "threads" not in options and "keepalive" not in options  # sync workers close after each response


def test_the_default_counts_the_cpus_this_process_may_use(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
    monkeypatch.setattr("os.cpu_count", lambda: 64)
    monkeypatch.delenv("RS_WEB_WORKERS", raising=False)
    assert Settings().web_workers == 6


def test_threaded_workers_get_threads_and_keepalive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RS_WEB_WORKER_CLASS", "gthread")
    monkeypatch.setenv("RS_WEB_THREADS", "6")
    options = gunicorn_options(Settings(), workers=2)
    assert (options["worker_class"], options["workers"], options["threads"], options["keepalive"]) == (
        "gthread",
        2,
        6,
        5,
    )
    assert gunicorn_options(Settings(), threads=3)["threads"] == 3


def test_an_unknown_worker_class_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RS_WEB_WORKER_CLASS", "eventlet")
    with pytest.raises(ValueError, match="web_worker_class"):
        Settings()
