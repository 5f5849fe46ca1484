"""Shared fixtures: real scanner files fetched by package name (cached, never committed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from amtlib import fetch


@pytest.fixture(scope="session")
def scanner() -> dict[str, Path]:
    """pydicom-data's real scanner files (:data:`amtlib.fetch.SCANNER_FILES`), fetched once by package
    name and cached in $AMT_CACHE or ~/.cache/amtlib (`make test` fetches them first)."""
    try:
        return fetch.fetch_scanner_files()
    except fetch.FetchError as exc:  # offline with an empty cache: say so rather than fail obscurely
        pytest.skip(f"real scanner files not available: {exc}")
