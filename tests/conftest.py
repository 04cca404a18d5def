"""Shared pytest fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The read-only real traces in ../shared/data (skips the test when absent)."""
    if not (SHARED_DATA / "README.md").is_file():
        pytest.skip(f"real traces not found at {SHARED_DATA}: place the shared data "
                    "folder next to the repository to run this test")
    return SHARED_DATA
