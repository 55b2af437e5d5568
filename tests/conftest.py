"""Shared fixtures: a migrated database on SQLite and (when ``RS_TEST_DATABASE_URL`` is set) on PostgreSQL,
a container bound to it, the app and its test client.

Every test that asks for ``database_url`` (directly or through ``database``, ``container``, ``app`` or ``client``)
runs once per backend. PostgreSQL tests skip with a reason when ``RS_TEST_DATABASE_URL`` is unset; CI sets it.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from recommender_system.storage import migrate
from recommender_system.storage.tables import Base

SHARED = Path(__file__).resolve().parents[2] / "shared"
PG_ENV = "RS_TEST_DATABASE_URL"


def shared_path(*parts: str) -> Path:
    """A file under ../shared, or skip the test with a clear reason when it is absent (as on a user's machine)."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is not available (shared test data lives next to the repository)")
    return path


def _worker() -> str:
    return os.environ.get("PYTEST_XDIST_WORKER", "main")


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated once per test session; each test gets a copy."""
    path = tmp_path_factory.mktemp("template") / "template.db"
    migrate.upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A PostgreSQL database of this xdist worker, migrated once, created next to RS_TEST_DATABASE_URL's."""
    base = os.environ.get(PG_ENV)
    if not base:
        pytest.skip(f"{PG_ENV} is not set: PostgreSQL tests skipped (CI sets it)")
    url = sa.make_url(base)
    name = f"{url.database}_{_worker()}"
    admin_url = url.set(database="postgres")  # the maintenance database; RS_TEST_DATABASE_URL's need not exist
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    worker_url = url.set(database=name).render_as_string(hide_password=False)
    migrate.upgrade(worker_url)
    yield worker_url
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


_truncate_engines: dict[str, sa.Engine] = {}


def truncate_all(url: str) -> None:
    """Empty the tables a previous test touched (non-empty, or whose id sequence was used) and restart their ids.

    Truncating only those keeps a PostgreSQL test's setup in milliseconds instead of truncating ~30 tables."""
    engine = _truncate_engines.get(url) or _truncate_engines.setdefault(url, sa.create_engine(url))
    tables = [t.name for t in Base.metadata.sorted_tables]
    probe = " UNION ALL ".join(f"SELECT '{name}' WHERE EXISTS (SELECT 1 FROM \"{name}\")" for name in tables)
    with engine.begin() as conn:
        dirty = {row[0] for row in conn.execute(sa.text(probe))}
        used = conn.execute(sa.text("SELECT sequencename FROM pg_sequences WHERE last_value IS NOT NULL"))
        dirty |= {name for (sequence,) in used for name in tables if sequence.startswith(f"{name}_")}
        if dirty:
            names = ", ".join(f'"{name}"' for name in sorted(dirty))
            conn.execute(sa.text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A freshly migrated, empty database of each backend."""
    if request.param == "sqlite":
        template = request.getfixturevalue("sqlite_template")
        path = tmp_path / "test.db"
        shutil.copy(template, path)
        return f"sqlite:///{path}"
    url = request.getfixturevalue("postgres_url")
    truncate_all(url)
    return url


@pytest.fixture
def settings_env(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RS_DATABASE_URL", database_url)
    monkeypatch.setenv("RS_ARTEFACT_DIR", str(tmp_path / "artefacts"))
    monkeypatch.delenv("RS_API_TOKEN", raising=False)


@pytest.fixture
def container(settings_env: None):  # type: ignore[no-untyped-def]
    from recommender_system.container import Container

    container = Container()
    yield container
    container.shutdown_resources()
    container.database().dispose()


@pytest.fixture
def database(container):  # type: ignore[no-untyped-def]
    return container.database()


@pytest.fixture
def app(container):  # type: ignore[no-untyped-def]
    from recommender_system.app import create_app

    app = create_app(container)
    app.config["TESTING"] = True
    yield app
    for hook in getattr(app, "shutdown_hooks", []):
        hook()


@pytest.fixture
def client(app):  # type: ignore[no-untyped-def]
    return app.test_client()
