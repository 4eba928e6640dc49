"""Shared fixtures: the ../shared reference data (skipped when absent) and a private data home."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def shared_path(*parts: str) -> Path:
    """A path under ../shared, or skip the test with the reason when it is not there."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"reference data {path} is absent (a fresh clone has no ../shared)")
    return path


@pytest.fixture(autouse=True)
def _private_home(tmp_path_factory, monkeypatch):
    """Never touch the user's ~/.stellarscope from tests."""
    home = tmp_path_factory.getbasetemp() / "stellarscope-home"
    home.mkdir(exist_ok=True)
    monkeypatch.setenv("STELLARSCOPE_HOME", str(home))
