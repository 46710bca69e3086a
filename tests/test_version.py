"""One version, pyproject.toml's, wherever it is shown: --version, /__admin/health, the admin OpenAPI document."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import server
from server import Settings
from server.version import NOT_INSTALLED, VERSION, installed_version

from .conftest import ROOT
from .test_app import call

# Read as text: tomllib only comes with Python 3.11.
PYPROJECT_VERSION = re.search(r'^version = "([^"]+)"$', (ROOT / "pyproject.toml").read_text(), re.MULTILINE)[1]


def test_the_version_is_pyprojects() -> None:
    # Fails after a version bump until the package is installed again (`pip install -e .`).
    assert VERSION == server.__version__ == PYPROJECT_VERSION != NOT_INSTALLED


def test_a_distribution_that_is_not_installed_has_the_placeholder_version() -> None:
    assert installed_version("cassette-server-not-installed") == NOT_INSTALLED == "0+unknown"


@pytest.mark.parametrize("command", [[str(Path(sys.executable).with_name("cassette-server"))],
                                     [sys.executable, "-m", "server"]], ids=["script", "module"])
def test_version_flag_on_both_entry_points(command: list[str]) -> None:
    result = subprocess.run([*command, "--version"], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert (result.returncode, result.stdout, result.stderr) == (0, f"cassette-server {PYPROJECT_VERSION}\n", "")


def test_health_and_the_admin_api_document_carry_the_version(tmp_path: Path) -> None:
    health, openapi = call(Settings(paths=(tmp_path,)), ("GET", "/__admin/health", {}), ("GET", "/__admin/openapi.json", {}))
    assert health.status_code == 200 and health.json()["version"] == PYPROJECT_VERSION
    assert openapi.json()["info"]["version"] == PYPROJECT_VERSION
