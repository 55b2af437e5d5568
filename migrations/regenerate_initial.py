"""Regenerate the initial revision from ``storage/tables.py`` (pre-release only: while the schema has never shipped,
the first migration is kept as one revision that mirrors the tables exactly).

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
