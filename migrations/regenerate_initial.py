"""Regenerate the initial revision from ``storage/tables.py`` (pre-release only: while the schema had never shipped,
the first migration was kept as one revision that mirrors the tables exactly).

Retired once a second revision exists (0002 and later change databases that already hold data): it then refuses to
run. Write a new revision instead (``alembic revision --autogenerate -m ...``); ``tests/integration/
test_migrations.py`` checks that the migrated schema equals the tables.

Usage: ``.venv/bin/python migrations/regenerate_initial.py``. Deterministic: same tables, same file.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from alembic import command

from recommender_system.storage.migrate import alembic_config

VERSIONS = Path(__file__).resolve().parent / "versions"
REVISION = "0001"
MESSAGE = "create catalogue, event, training and prediction log tables"


def main() -> None:
    later = sorted(path.name for path in VERSIONS.glob("*.py") if not path.name.startswith("0001"))
    if later:
        raise SystemExit(f"refusing to rewrite 0001: later revisions build on it ({', '.join(later)})")
    for old in VERSIONS.glob("*0001*.py"):
        old.unlink()
    with tempfile.TemporaryDirectory() as tmp:
        config = alembic_config(f"sqlite:///{tmp}/gen.db")
        config.set_main_option("file_template", "%%(rev)s_%%(slug)s")
        command.revision(config, message=MESSAGE, autogenerate=True, rev_id=REVISION)
    for path in VERSIONS.glob("0001_*.py"):
        text = path.read_text()
        lines = [line for line in text.splitlines() if not line.startswith("Create Date:")]
        path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
