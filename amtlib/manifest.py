"""The cohort manifest: its schema, reading, and validation with row-level messages.

Implements the file contract of ``01_cohort/manifest.csv`` (docs/architecture.md; documented for users
in ``data_manifest/``): one row per included case, one CT series per patient (paper, *Inclusion and
exclusion criteria*). Paths are relative to the manifest's folder. ``validate_manifest`` checks the
schema (columns, types, allowed values, unique ids, no value padded with spaces), that every file
exists, that the SHA-256 columns match the files and that each file's voxel data reads to its end (a
truncated file whose checksum was taken after the truncation still fails), and that each mask has
exactly its image's geometry (shape and affine), holds only 0/1 and is not empty. It reports every
problem as ``line N (case X): column: message`` instead of stopping at the first.

``amt manifest validate FILE`` is :func:`cli_main`.

.. note:: ``stage="input"`` validates a user's own manifest (``data_manifest/template.csv``), in which
   the derived columns (spacing, shape, checksums, split, UIDs) may be absent or empty; they are filled
   in by :func:`amtlib.cohort.import_manifest`.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from amtlib.errors import DomainError, one_line
from amtlib.io import nifti_data_problem, sha256_file

HISTOLOGIES: tuple[str, ...] = (
    "thymoma",
    "thymic_carcinoma",
    "lymphoma",
    "thymic_cyst",
    "teratoma",
    "carcinoid",
    "sarcomatous_transformation_of_teratoma",
)
SEXES: tuple[str, ...] = ("M", "F")
WHO_SUBTYPES: tuple[str, ...] = ("A", "AB", "B1", "B2", "B3")
RISK_GROUPS: tuple[str, ...] = ("LRT", "HRT", "TC")
SPLITS: tuple[str, ...] = ("train", "tuning", "external_test")
#: Case ids become file names (``images/<case_id>.nii.gz``), so they are restricted to safe characters.
CASE_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
SHA256_PATTERN = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Column:
    """One manifest column: ``kind`` in str/int/float/path/sha256/enum/id; ``required`` = never empty."""

    name: str
    kind: str
    required: bool
    derived: bool
    description: str
    allowed: tuple[str, ...] = ()


#: The manifest's columns in file order (the single source of truth; data_manifest/schema.yaml mirrors it).
COLUMNS: tuple[Column, ...] = (
    Column("case_id", "id", True, False, "case identifier, file-name safe; the pipeline uses the patient id"),
    Column("patient_id", "str", True, False, "pseudonymous patient identifier; one case per patient"),
    Column("institution", "str", True, False, "pseudonymous institution that acquired the image; CENTRAL = central hospital"),
    Column("study_uid", "str", False, True, "DICOM StudyInstanceUID of the selected series (empty for NIfTI input)"),
    Column("series_uid", "str", False, True, "DICOM SeriesInstanceUID of the selected series (empty for NIfTI input)"),
    Column("image_path", "path", True, False, "CT image, NIfTI in HU, relative to the manifest's folder"),
    Column("mask_path", "path", True, False, "reference tumour mask, NIfTI uint8 0/1, image geometry"),
    Column("anatomy_path", "path", False, False, "optional organ label map in image geometry (synthetic cohort)"),
    Column("histology", "enum", True, False, "pathological diagnosis", HISTOLOGIES),
    Column("age", "int", True, False, "age at the scan, years"),
    Column("sex", "enum", True, False, "sex, M or F", SEXES),
    Column("manufacturer", "str", False, False, "scanner manufacturer (DICOM Manufacturer)"),
    Column("model_name", "str", False, False, "scanner model (DICOM ManufacturerModelName)"),
    Column("kvp", "float", False, False, "tube voltage, kV"),
    Column("slice_thickness_mm", "float", False, False, "reconstructed slice thickness, mm"),
    Column("spacing_z", "float", True, True, "voxel spacing along z (slices), mm"),
    Column("spacing_y", "float", True, True, "voxel spacing along y (rows), mm"),
    Column("spacing_x", "float", True, True, "voxel spacing along x (columns), mm"),
    Column("shape_z", "int", True, True, "number of slices"),
    Column("shape_y", "int", True, True, "number of rows"),
    Column("shape_x", "int", True, True, "number of columns"),
    Column("image_sha256", "sha256", True, True, "SHA-256 of the image file's bytes"),
    Column("mask_sha256", "sha256", True, True, "SHA-256 of the mask file's bytes"),
    Column("split", "enum", False, True, "train, tuning or external_test; empty until step 02", SPLITS),
    # optional columns of the downstream classifiers (notebooks 07-08; issue 17); a cohort without
    # them skips those analyses with a message
    Column("who_subtype", "enum", False, False, "WHO thymoma subtype (thymomas only; empty otherwise)", WHO_SUBTYPES),
    Column("risk_group", "enum", False, False, "simplified WHO risk group: LRT (A/AB/B1), HRT (B2/B3), TC (thymic carcinoma); empty for other histologies", RISK_GROUPS),
    Column("ctc_level", "float", False, False, "circulating tumour cell level of the blood test (the fusion paper's unit)"),
    Column("margin_irregular", "int", False, False, "1 = irregular/ill-defined tumour margin on CT, 0 = clear; may be empty"),
    Column("heterogeneous_enhancement", "int", False, False, "1 = heterogeneous enhancement on CT, 0 = homogeneous; may be empty"),
)
COLUMN_NAMES: tuple[str, ...] = tuple(c.name for c in COLUMNS)
#: Optional columns of the downstream classifiers (issue 17), carried from clinical.csv by the cohort build.
CLASSIFIER_COLUMNS: tuple[str, ...] = ("who_subtype", "risk_group", "ctc_level", "margin_irregular", "heterogeneous_enhancement")
#: The columns a user fills in ``data_manifest/template.csv``.
INPUT_COLUMNS: tuple[str, ...] = tuple(c.name for c in COLUMNS if not c.derived or c.name in ("study_uid", "series_uid"))


class ManifestError(DomainError):
    """A manifest that is missing, not CSV, or failed validation (the problem lists every issue, one per
    line; the ``amt`` guard prints them joined on one line)."""


@dataclass(frozen=True)
class Issue:
    """One validation problem; ``line`` is the CSV line number (header = 1), 0 for file-level problems."""

    line: int
    case_id: str
    column: str
    message: str

    def __str__(self) -> str:
        where = f"line {self.line}" + (f" (case {self.case_id})" if self.case_id else "") if self.line else "file"
        return f"{where}: {self.column}: {self.message}" if self.column else f"{where}: {self.message}"


def read_manifest(path: str | Path) -> pd.DataFrame:
    """Read a manifest CSV with every column as text (empty cells = ``""``), so ids keep leading zeros.

    Raises ``ManifestError`` naming the file when it is missing or not CSV.
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestError(path, "manifest not found", "give the manifest CSV (template: data_manifest/template.csv)")
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[])
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ManifestError(path, f"not a readable CSV ({one_line(exc)})", "save it as a UTF-8 CSV with a header row") from None


def typed(df: pd.DataFrame) -> pd.DataFrame:
    """Return a copy with numeric manifest columns converted (int columns as nullable ``Int64``)."""
    out = df.copy()
    for col in COLUMNS:
        if col.name in out and col.kind in ("int", "float"):
            num = pd.to_numeric(out[col.name].replace("", np.nan), errors="coerce")
            out[col.name] = num.round().astype("Int64") if col.kind == "int" else num.astype(float)
    return out


def _schema_issues(df: pd.DataFrame, stage: str) -> list[Issue]:
    issues: list[Issue] = []
    known = set(COLUMN_NAMES)
    for name in df.columns:
        if name not in known:
            issues.append(Issue(0, "", name, f"unknown column; allowed columns are {', '.join(COLUMN_NAMES)}"))
    # the classifier columns (notebooks 07-08) are optional: a manifest may leave them out entirely
    needed = [c for c in COLUMNS if (stage == "full" or not c.derived) and c.name not in CLASSIFIER_COLUMNS]
    for col in needed:
        if col.name not in df.columns:
            issues.append(Issue(0, "", col.name, "missing column"))
    return issues


def _cell_issue(col: Column, value: str, stage: str) -> str | None:
    if value == "":
        if col.required and (stage == "full" or not col.derived):
            return "empty, but required"
        return None
    if col.kind == "id" and not CASE_ID_PATTERN.match(value):
        return f"{value!r} is not file-name safe (letters, digits, '.', '_', '-'; starting with a letter or digit)"
    if col.kind == "enum" and value not in col.allowed:
        return f"{value!r} not one of {', '.join(col.allowed)}"
    if col.kind == "sha256" and not SHA256_PATTERN.match(value):
        return f"{value!r} is not a 64-digit lower-case hex SHA-256"
    if col.kind in ("int", "float"):
        try:
            x = float(value)
        except ValueError:
            return f"{value!r} is not a number"
        if not np.isfinite(x):
            return f"{value!r} is not finite"
        if col.kind == "int" and x != int(x):
            return f"{value!r} is not an integer"
        if col.name.startswith(("spacing_", "shape_")) and x <= 0:
            return f"{value!r} must be > 0"
        if col.name == "age" and not 0 <= x <= 130:
            return f"{value!r} is outside 0-130 years"
    if col.kind == "path" and Path(value).is_absolute():
        return f"{value!r} must be relative to the manifest's folder"
    return None


def _duplicate_issues(df: pd.DataFrame, column: str) -> list[Issue]:
    if column not in df:
        return []
    values = df[column].astype(str).str.strip()  # " PT0001" duplicates "PT0001"
    dup = values[(values != "") & values.duplicated(keep=False)]
    issues = []
    for value, idx in dup.groupby(dup).groups.items():
        lines = [int(i) + 2 for i in idx]
        for i in idx:
            others = ", ".join(str(x) for x in lines if x != int(i) + 2)
            issues.append(Issue(int(i) + 2, _case(df, i), column, f"duplicate value {value!r} (also on line {others})"))
    return issues


def _case(df: pd.DataFrame, i: object) -> str:
    return str(df.at[i, "case_id"]) if "case_id" in df else ""


def _nifti_header(path: Path) -> tuple[tuple[int, ...], np.ndarray, tuple[float, ...]]:
    import nibabel as nib

    img = nib.load(str(path))
    shape = tuple(int(s) for s in img.shape)
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
    return shape, np.asarray(img.affine, dtype=float), zooms


_FILE_COLUMNS = ("image_path", "mask_path", "anatomy_path")


def _file_issues(
    df: pd.DataFrame, base: Path, checksums: bool, geometry: bool, mask_values: bool, atol_mm: float
) -> list[Issue]:
    """Row by row: each listed file is there and whole, the mask lies on its image's grid, the header
    columns match the image header, and the mask holds 0/1 with a tumour (:func:`validate_manifest`)."""
    issues: list[Issue] = []
    for i, row in df.iterrows():
        line, case = int(i) + 2, _case(df, i)
        headers: dict[str, tuple] = {}
        for col in _FILE_COLUMNS:
            rel = row.get(col, "")
            if rel and not Path(rel).is_absolute():
                problems, header = _one_file_issues(base / rel, col, row, checksums, geometry)
                issues += [Issue(line, case, col, p) for p in problems]
                if header is not None:
                    headers[col] = header
        if "image_path" not in headers:
            continue
        shape, affine, zooms = headers["image_path"]
        if len(shape) != 3:
            issues.append(Issue(line, case, "image_path", f"expected a 3D image, got shape {shape}"))
            continue
        issues += [Issue(line, case, col, p) for col, p in _grid_issues(headers, atol_mm)]
        issues += [Issue(line, case, col, p) for col, p in _header_column_issues(row, shape, zooms)]
        if mask_values and "mask_path" in headers and headers["mask_path"][0] == shape:
            issues += [Issue(line, case, "mask_path", p) for p in _mask_value_issues(base / row["mask_path"])]
    return issues


def _one_file_issues(f: Path, col: str, row: pd.Series, checksums: bool, geometry: bool) -> tuple[list[str], tuple | None]:
    """Problems of one listed file (missing, changed since the manifest, truncated, not NIfTI) and its
    header ``(shape, affine, zooms)`` when ``geometry`` asks for it and it could be read."""
    if not f.is_file():
        return [f"file not found: {f}"], None
    problems = []
    if checksums and col != "anatomy_path":
        expected = row.get(col.replace("_path", "_sha256"), "")
        if expected and SHA256_PATTERN.match(expected):
            actual = sha256_file(f)
            if actual != expected:
                problems.append(f"{f}: SHA-256 {actual[:12]}... != manifest {expected[:12]}...; "
                                "the file changed since the manifest was written (re-run step 01)")
    if checksums:  # every byte is read for the checksum anyway: check the data is all there
        problem = nifti_data_problem(f)
        if problem:
            return problems + [f"{f}: {problem}; copy or export the file again"], None
    if not geometry:
        return problems, None
    try:
        return problems, _nifti_header(f)
    except Exception as exc:  # nibabel raises several types for non-NIfTI input
        return problems + [f"{f}: not a readable NIfTI file ({type(exc).__name__})"], None


def _grid_issues(headers: dict[str, tuple], atol_mm: float) -> list[tuple[str, str]]:
    """``(column, problem)`` for a mask or anatomy file whose shape or affine differs from the image's."""
    shape, affine, _ = headers["image_path"]
    issues = []
    for col in ("mask_path", "anatomy_path"):
        if col not in headers:
            continue
        s, a, _ = headers[col]
        if s != shape or not np.allclose(a, affine, atol=atol_mm):
            diff = f"shape (z, y, x) {s[::-1]} vs {shape[::-1]}" if s != shape else f"affine differs by up to {np.abs(a - affine).max():.3g} mm"
            issues.append((col, f"geometry differs from the image ({diff}); "
                                "a mask must be drawn on exactly its image's voxel grid"))
    return issues


def _header_column_issues(row: pd.Series, shape: tuple[int, ...], zooms: tuple[float, ...]) -> list[tuple[str, str]]:
    """``(column, problem)`` for each filled shape_*/spacing_* cell that differs from the image header
    (NIfTI x, y, z; the manifest names z, y, x) by more than 1e-3; non-numbers are reported elsewhere."""
    expected_zyx = {"shape_z": shape[2], "shape_y": shape[1], "shape_x": shape[0],
                    "spacing_z": zooms[2], "spacing_y": zooms[1], "spacing_x": zooms[0]}
    issues = []
    for name, actual in expected_zyx.items():
        value = row.get(name, "")
        try:
            ok = value == "" or abs(float(value) - float(actual)) <= 1e-3
        except ValueError:
            continue  # already reported as not a number
        if not ok:
            issues.append((name, f"{value} != {actual:g} read from the image header"))
    return issues


def _mask_value_issues(f: Path) -> list[str]:
    """A mask's voxel data is readable, holds only 0 and 1, and is not all zero."""
    import nibabel as nib

    try:
        data = np.asanyarray(nib.load(str(f)).dataobj)
    except Exception as exc:  # a truncated .gz raises EOFError, others raise other types
        return [f"{f}: voxel data unreadable, truncated or corrupt ({type(exc).__name__}: {exc}); "
                "copy or export the file again"]
    values = np.unique(data)
    extra = np.setdiff1d(values, [0, 1])
    if extra.size:
        return [f"mask holds values other than 0/1: {extra[:5].tolist()}"]
    if not values.any():
        return [f"{f}: mask is empty (all zero); every included case needs its tumour outlined: "
                "check the file or exclude the case"]
    return []


def validate_manifest(
    manifest: str | Path | pd.DataFrame,
    base_dir: str | Path | None = None,
    stage: str = "full",
    files: bool = True,
    checksums: bool = True,
    geometry: bool = True,
    mask_values: bool = True,
    atol_mm: float = 1e-3,
) -> list[Issue]:
    """All problems of a manifest (empty list = valid); implements the contract of docs/architecture.md.

    ``manifest`` is a CSV path (then ``base_dir`` defaults to its folder) or a text frame from
    :func:`read_manifest`. ``stage="full"`` (the pipeline's manifest) requires every column;
    ``stage="input"`` (a user's template) only the non-derived ones. Checks, each switchable: schema and
    cell values; unique case, patient and series ids; ``files`` exist; ``checksums`` match;
    ``geometry`` (mask/anatomy shape and affine equal the image's within ``atol_mm``; shape/spacing
    columns equal the image header); ``mask_values`` in {0, 1} (reads the mask voxels).
    """
    if stage not in ("full", "input"):
        raise ValueError(f"stage must be 'full' or 'input', got {stage!r}")
    if isinstance(manifest, pd.DataFrame):
        df = manifest.astype(str).replace({"nan": "", "<NA>": "", "None": ""})
        base = Path(base_dir) if base_dir is not None else Path.cwd()
    else:
        df = read_manifest(manifest)
        base = Path(base_dir) if base_dir is not None else Path(manifest).parent
    df = df.reset_index(drop=True)
    issues = _schema_issues(df, stage)
    if len(df) == 0:
        issues.append(Issue(0, "", "", "manifest has no rows"))
    for col in COLUMNS:
        if col.name not in df:
            continue
        for i, value in df[col.name].items():
            msg = _cell_issue(col, str(value).strip(), stage)
            if msg is None and str(value) != str(value).strip():
                msg = f"{value!r} has leading or trailing spaces; remove them (ids and values are compared exactly)"
            if msg:
                issues.append(Issue(int(i) + 2, _case(df, i), col.name, msg))
    for column in ("case_id", "patient_id", "series_uid"):
        issues += _duplicate_issues(df, column)
    if files:
        issues += _file_issues(df, base, checksums, geometry, mask_values, atol_mm)
    return sorted(issues, key=lambda x: (x.line, x.column))


def assert_valid(manifest: str | Path | pd.DataFrame, **kwargs: object) -> None:
    """Raise :class:`ManifestError` listing every problem found by :func:`validate_manifest`."""
    issues = validate_manifest(manifest, **kwargs)  # type: ignore[arg-type]
    if issues:
        name = manifest if not isinstance(manifest, pd.DataFrame) else "manifest"
        lines = "\n".join(f"  {x}" for x in issues[:50])
        more = f"\n  ... and {len(issues) - 50} more" if len(issues) > 50 else ""
        raise ManifestError(name, f"{len(issues)} problem(s)\n{lines}{more}",
                            "correct each row named (columns: data_manifest/schema.yaml), then run again")


def empty_manifest() -> pd.DataFrame:
    """A zero-row manifest with all columns, in order."""
    return pd.DataFrame({c: pd.Series(dtype=object) for c in COLUMN_NAMES})


def schema_records() -> list[dict[str, object]]:
    """The schema as plain records (name, type, required, derived, allowed, description) for docs/tests."""
    return [
        {"name": c.name, "type": c.kind, "required": c.required, "derived": c.derived,
         "allowed": list(c.allowed), "description": c.description}
        for c in COLUMNS
    ]


def cli_main(argv: Sequence[str] | None = None) -> int:
    """``amt manifest validate FILE``: print every problem; exit 0 when valid, 1 when not, 2 on usage."""
    from amtlib.clihelp import HelpFormatter, examples

    parser = argparse.ArgumentParser(prog="amt manifest", description="Check a cohort manifest (schema in data_manifest/).",
                                     formatter_class=HelpFormatter,
                                     epilog=examples("amt manifest validate data_manifest/template.csv --input --no-files"))
    sub = parser.add_subparsers(dest="command", required=True)
    v = sub.add_parser("validate", help="check schema, files, checksums and mask geometry", formatter_class=HelpFormatter,
                       epilog=examples("amt manifest validate runs/demo/01_cohort/manifest.csv",
                                       "amt manifest validate mycohort/manifest.csv --input   # a template you filled in"),
                       description="Check a manifest: columns and values, unique ids, files exist, SHA-256 "
                                   "match, mask geometry = image geometry, masks 0/1.")
    v.add_argument("file", help="manifest CSV (paths inside are relative to its folder)")
    v.add_argument("--input", action="store_true", help="a user's template (derived columns may be empty)")
    v.add_argument("--no-checksums", action="store_true", help="skip SHA-256 checks (faster)")
    v.add_argument("--no-files", action="store_true", help="check the table only, not the files")
    args = parser.parse_args(list(argv) if argv is not None else None)
    # a missing or unreadable file is an error of the command (one line, exit 2); problems found in a
    # readable manifest are its report (one line each, exit 1)
    issues = validate_manifest(args.file, stage="input" if args.input else "full", files=not args.no_files,
                               checksums=not args.no_checksums)
    if issues:
        for x in issues:
            print(f"{args.file}: {x}", file=sys.stderr)
        print(f"{args.file}: INVALID ({len(issues)} problem(s))", file=sys.stderr)
        return 1
    n = len(read_manifest(args.file))
    print(f"{args.file}: OK ({n} cases)")
    return 0
