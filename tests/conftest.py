"""Shared fixtures: the ../shared reference data (skipped when absent) and a private data home."""

from __future__ import annotations

import pytest
from reference import REPO, SHARED, shared_path  # noqa: F401  (re-exported)


@pytest.fixture(autouse=True)
def _private_home(tmp_path_factory, monkeypatch):
    """Never touch the user's ~/.stellarscope from tests."""
    home = tmp_path_factory.getbasetemp() / "stellarscope-home"
    home.mkdir(exist_ok=True)
    monkeypatch.setenv("STELLARSCOPE_HOME", str(home))
