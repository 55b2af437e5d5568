"""``python -m trainer`` as a process: ``--once`` with the real models, SIGTERM when idle and during a fit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest

from recommender_system.prediction.config import PipelineConfig
from tests.trainer.shop import add_shoppers, add_variants

ROOT = Path(__file__).resolve().parents[2]


def _current(container) -> dict[str, str]:  # type: ignore[no-untyped-def]
    with container.database().session() as session:
        return {k: v.version for k, v in container.training_store().current_versions(session).items()}


def test_once_trains_scheduled_and_requested_jobs_then_exits_0(container) -> None:  # type: ignore[no-untyped-def]
    database = container.database()
    skus = add_variants(database, 12)
    add_shoppers(database, 15, skus, per_session=4)  # 60 views: enough for ease and co-occurrence
    with database.write_session() as session:
        disabled = {"als": True, "similarity": True, "gru4rec": True}
        container.config_store().save(session, PipelineConfig.model_validate({"models_disabled": disabled}))
        container.training_store().request_job(session, "als", "dashboard")  # explicit: trained even if disabled

    done = subprocess.run(
        [sys.executable, "-m", "trainer", "--once"],
        cwd=ROOT,
        env=os.environ.copy(),  # RS_DATABASE_URL / RS_ARTEFACT_DIR of the fixture
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert done.returncode == 0, done.stderr[-3000:]
    current = _current(container)
    assert sorted(current) == ["als", "cooccurrence", "ease"], done.stderr[-3000:]
    for name, version in current.items():
        manifest = container.artefact_store().verify(name, version)
        assert manifest["data_snapshot"]["n_events"] == 60
        assert f"{name} version {version} published" in done.stderr
    with database.session() as session:
        jobs = container.training_store().jobs(session)
        runs = container.training_store().runs(session)
    assert sorted((j.model_name, j.status) for j in jobs) == [
        ("als", "done"),
        ("cooccurrence", "done"),
        ("ease", "done"),
    ]
    assert {r.model_name: r.status for r in runs} == {
        "als": "completed",
        "cooccurrence": "completed",
        "ease": "completed",
    }
    assert all(r.peak_memory_mb and r.peak_memory_mb > 0 and r.duration and r.duration > 0 for r in runs)
    assert "processed 3 job(s): 3 succeeded, 0 failed" in done.stderr


def _start(script: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script)],
        cwd=ROOT,
        env=os.environ.copy(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(process: subprocess.Popen[str], text: str, timeout: float = 60) -> list[str]:
    """Read the process's log lines until one contains ``text``."""
    assert process.stderr is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line:
            break
        lines.append(line)
        if text in line:
            return lines
    process.kill()
    raise AssertionError(f"{text!r} never logged:\n{''.join(lines)}")


@pytest.fixture
def sqlite_only(database_url: str) -> None:
    if not database_url.startswith("sqlite"):
        pytest.skip("signal handling does not depend on the backend (the queue is tested on both)")


def test_sigterm_stops_an_idle_trainer_with_status_0(container, sqlite_only) -> None:  # type: ignore[no-untyped-def]
    process = _start("import sys; from trainer.__main__ import main; sys.exit(main(['--poll-seconds', '0.2']))")
    try:
        _wait_for(process, "started")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        assert "stopped" in (process.stderr.read() if process.stderr else "")
    finally:
        if process.poll() is None:
            process.kill()


def test_a_running_trainer_folds_the_prediction_log_into_the_dashboard_rollups(container) -> None:  # type: ignore[no-untyped-def]
    """The aggregation behind the dashboard runs in the trainer process (never in web workers)."""
    from recommender_system.storage.monitoring import ROLLED_PREDICTION, MonitoringStore
    from recommender_system.storage.tables import utcnow
    from tests.api.test_dashboard import log_predictions

    an_hour_ago = utcnow() - timedelta(hours=1)
    log_predictions(container.database(), [(an_hour_ago, "HOMEPAGE", "popularity", ["1", "2"], "s1")] * 3)

    def watermark() -> int:
        with container.database().session() as session:
            return MonitoringStore().watermark(session, ROLLED_PREDICTION)

    assert watermark() == 0
    process = _start("import sys; from trainer.__main__ import main; sys.exit(main(['--poll-seconds', '0.2']))")
    try:
        _wait_for(process, "started")
        deadline = time.monotonic() + 60  # the first round runs after one interval (5 s here)
        while watermark() == 0 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert watermark() >= 3
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0


def test_sigterm_during_a_fit_gives_the_job_back(container, sqlite_only) -> None:  # type: ignore[no-untyped-def]
    with container.database().write_session() as session:
        job_id = container.training_store().request_job(session, "ease")
    script = """
        import sys
        from recommender_system.container import Container
        from recommender_system.logs import configure_logging
        from tests.trainer.toy_models import factory, slow_model
        from trainer.__main__ import run
        from trainer.loop import TrainerOptions

        configure_logging("INFO")
        options = TrainerOptions(auto_schedule=False, poll_seconds=0.2)
        sys.exit(run(Container(), options=options, model_factory=factory({"ease": slow_model(120)})))
    """
    process = _start(script)
    try:
        _wait_for(process, f"job {job_id}: training ease")
        time.sleep(0.5)  # inside the fit
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        assert time.monotonic() - started < 20, "the fit was interrupted, not waited for"
    finally:
        if process.poll() is None:
            process.kill()
    with container.database().session() as session:
        job = container.training_store().job(session, job_id)
        (run,) = container.training_store().runs(session)
    assert job.status == "pending" and job.attempts == 0 and job.claimed_by is None
    assert run.status == "failed" and "abandoned" in run.error
    assert _current(container) == {}


def test_evaluate_dispatches_user_item_models_to_protocol_a(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from trainer.__main__ import main

    missing = tmp_path / "missing.parquet"
    assert main(["evaluate", "--dataset", "online-retail", "--model", "ease", "--path", str(missing)]) == 1
    assert "missing.parquet" in capsys.readouterr().err


def test_the_trainer_waits_until_the_database_is_migrated(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from recommender_system.storage import migrate
    from recommender_system.storage.database import Database
    from trainer.__main__ import wait_until_migrated

    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    database = Database(url)
    stop = threading.Event()
    outcome: list[bool] = []
    waiter = threading.Thread(target=lambda: outcome.append(wait_until_migrated(database, stop, poll_seconds=0.05)))
    caplog.set_level("INFO", logger="trainer")
    waiter.start()
    time.sleep(0.3)
    assert waiter.is_alive() and "not migrated yet" in caplog.text
    migrate.upgrade(url)
    waiter.join(timeout=30)
    assert outcome == [True] and "is migrated; starting" in caplog.text
    stop.set()
    assert wait_until_migrated(Database(f"sqlite:///{tmp_path / 'other.db'}"), stop) is False
    database.dispose()


def test_evaluate_dispatches_gru4rec_to_the_session_protocol(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from trainer.__main__ import main

    missing = tmp_path / "missing.parquet"
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", "--dataset", "online-retail", "--model", "gru4rec", "--path", str(missing)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "missing.parquet does not exist" in err and "--params" in err, "protocol B's parser answered"
