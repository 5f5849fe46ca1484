"""``amt predict``: the trained model on new CTs, from NIfTI, a DICOM folder or a PACS, results back to it.

Paper: the model is meant to be clinically applicable; this applies the selected ``model.pt`` of a
run (step 03) to series it has never seen, exactly as step 03 predicts the external test: the same
readers (:func:`amtlib.dicom.dicomio.read_series`, :func:`amtlib.io.load_nifti`), the same training-grid
resampling (:func:`~amtlib.segmentation.preprocess.case_from_array`), the same sliding window and
the same threshold rule (:func:`~amtlib.segmentation.infer.binarize`). So on the demo's external-test
images it writes the masks step 03 wrote, voxel for voxel.

Outputs, in ``--out DIR``:

- ``DIR/<id>/mask.nii.gz``: uint8 0/1 on the input's own grid (a NIfTI input's shape and affine; a
  DICOM series as the cohort step reads it, a tilted gantry resampled); ``<id>`` is the NIfTI file's
  stem or the SeriesInstanceUID (an id that is not a safe file name, :func:`amtlib.paths.is_safe_id`, is
  refused, status ``unsafe_id``).
  ``probability.nii.gz`` with ``--probabilities``; for DICOM input ``seg.dcm`` / ``rtstruct.dcm``
  (``--format``) through :func:`amtlib.dicom.export.export_series`, referencing the source series and
  carrying the model's SHA-256; ``prediction.json``, the row below plus what makes it resumable.
- ``DIR/predictions.csv``: one row per series found (:data:`COLUMNS`); ``status`` is ``predicted`` or
  a code of :data:`STATUSES`, ``detail`` the message. Lesion columns follow the evaluation's rule
  (components of at least :data:`amtlib.evaluation.lesions.MIN_PRED_VOXELS` voxels, 26-connected);
  ``max_axial_diameter_mm`` is that of the whole mask (NaN when empty), as the size subgroups measure it.
- ``DIR/predict.json``: the model's identity and card, the options, the package versions.

A series folder appears whole or not at all (written under a hidden name, then renamed); a restart
skips series already finished with the same model and options, and clears what a killed run left.
``--part K/N`` takes every N-th series of the sorted list, so N processes (a job array, several GPUs)
share one ``--out`` with no coordination; each rewrites ``predictions.csv`` under a lock.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import pandas as pd

from amtlib.errors import AmtError
from amtlib.io import NiftiError, load_nifti, refuse_link, save_nifti, sha256_file, write_csv, write_json
from amtlib.paths import is_safe_id

PREDICT_FORMAT = "amtlib-predict/1"
#: ``--format`` values and the DICOM objects each writes (NIfTI masks are always written).
FORMATS: dict[str, tuple[str, ...]] = {"both": ("seg", "rtstruct"), "seg": ("seg",), "rtstruct": ("rtstruct",), "nifti": ()}
#: Row status codes (``predicted`` or why a series was not predicted); messages go to ``detail``.
STATUSES: dict[str, str] = {
    "predicted": "mask written",
    "not_ct": "not a CT image series (another modality or SOP class)",
    "localizer": "localizer, scout or topogram images",
    "derived": "DERIVED or SECONDARY images",
    "single_slice": "one slice: no volume to segment",
    "unusable_series": "a CT series that cannot be read as one volume (geometry, codec, missing slices)",
    "unreadable": "a file that claims to be DICOM or NIfTI and does not parse",
    "not_3d": "a NIfTI image that is not one 3D volume",
    "unsafe_id": "an id that cannot name a folder safely",
    "duplicate_id": "a second input with the same id",
    "failed": "reading or writing failed",
    "not_in_part": "left to another --part",
}
COLUMNS = ["id", "series_uid", "source", "status", "detail", "volume_ml", "n_components", "max_axial_diameter_mm",
           "seconds", "mask_path", "probability_path", "seg_path", "rtstruct_path", "pushed"]
_NIFTI_SUFFIXES = (".nii.gz", ".nii")
_TMP_PREFIX = ".tmp-"
_INCOMING = ".incoming-"


@dataclass
class Item:
    """One series found in the input: what to predict, or why not (``status`` set)."""

    id: str
    series_uid: str
    source: str
    kind: str  # "nifti", "dicom" or "pacs"
    files: tuple[str, ...] = ()
    status: str = ""
    detail: str = ""
    study_uid: str = ""

    def row(self, **values: Any) -> dict[str, Any]:
        row = {c: "" for c in COLUMNS}
        row.update({"id": self.id, "series_uid": self.series_uid, "source": self.source, "status": self.status,
                    "detail": self.detail})
        row.update(values)
        return row


@dataclass(frozen=True)
class Options:
    """What makes two predictions of a series the same (a restart reuses a series only when equal)."""

    model_sha256: str
    threshold: float
    overlap: float
    tta: bool
    min_component_voxels: int
    probabilities: bool
    formats: tuple[str, ...]


# ------------------------------------------------------------------------------------------ inputs


def _stem(path: Path) -> str:
    name = path.name
    for suffix in _NIFTI_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _is_nifti(path: Path) -> bool:
    return path.name.lower().endswith(_NIFTI_SUFFIXES)


def _checked_ids(items: list[Item]) -> list[Item]:
    """Mark ids that cannot name a folder (``unsafe_id``) and repeats (``duplicate_id``)."""
    seen: set[str] = set()
    for it in items:
        if it.status:
            continue
        if not is_safe_id(it.id):
            it.status, it.detail = "unsafe_id", (f"id {it.id[:80]!r} is not a safe folder name (letters, digits, '.', "
                                                 "'_', '-', at most 128); rename the file or fix the UID")
        elif it.id in seen:
            it.status, it.detail = "duplicate_id", f"another input already has the id {it.id}; give unique file names"
        else:
            seen.add(it.id)
    return items


def nifti_items(root: Path) -> list[Item]:
    """A NIfTI file, or every ``.nii``/``.nii.gz`` under a folder (sorted), as items."""
    paths = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file() and _is_nifti(p)
                                                 and not any(part.startswith(".") for part in p.relative_to(root).parts))
    return [Item(_stem(p), "", str(p), "nifti") for p in paths]


def dicom_items(root: Path) -> list[Item]:
    """Every CT series under a DICOM folder (any depth, any names) plus one row per object kind not predicted."""
    from amtlib.dicom.dicomio import scan_tree

    scan = scan_tree(root, patient_level=False)
    items = [Item(str(r["series_uid"]), str(r["series_uid"]), str(r["folder"]), "dicom", tuple(r["files"]))
             for _, r in scan.series.iterrows()]
    if len(scan.objects):
        for (uid, code), g in scan.objects.groupby(["series_uid", "code"], sort=True, dropna=False):
            first = g.iloc[0]
            items.append(Item(str(uid), str(uid), str(Path(first["path"]).parent), "dicom", status=str(code),
                              detail=f"{len(g)} file(s): {first['reason']}"))
    for _, r in scan.unreadable.iterrows():
        items.append(Item("", "", str(r["path"]), "dicom", status="unreadable", detail=str(r["reason"])))
    return items


def pacs_items(pacs: Any) -> list[Item]:
    """The CT series of the address's study (or its one series) as items; other modalities listed, not read."""
    a = pacs.address
    items = []
    found = pacs.find_series(a.study_uid, a.series_uid)
    if not found:
        raise AmtError(pacs.name, f"no series found for StudyInstanceUID {a.study_uid}"
                       + (f" and SeriesInstanceUID {a.series_uid}" if a.series_uid else ""), "check the UIDs in the PACS")
    for s in found:
        it = Item(s.series_uid, s.series_uid, f"{pacs.name} series {s.series_uid}", "pacs", study_uid=s.study_uid)
        if s.modality.upper() != "CT":
            it.status, it.detail = "not_ct", f"modality {s.modality or 'unknown'} ({s.description or 'no description'})"
        items.append(it)
    if not any(not it.status for it in items):
        modalities = ", ".join(sorted({s.modality or "?" for s in found}))
        raise AmtError(pacs.name, f"study {a.study_uid} holds no CT series (modalities: {modalities})",
                       "give a study with a CT series")
    return items


def find_items(source: str, pacs: Any = None) -> list[Item]:
    """Items of ``--input``: a NIfTI file or folder, a DICOM folder, or a PACS study (``pacs`` given)."""
    if pacs is not None:
        return _checked_ids(pacs_items(pacs))
    root = Path(source)
    if not root.exists():
        raise AmtError(root, "input not found", "give a NIfTI file, a folder of NIfTI or DICOM files, or a PACS address")
    if root.is_file():
        if not _is_nifti(root):
            raise AmtError(root, "a single file that is not NIfTI (.nii/.nii.gz)", "give a DICOM series as its folder")
        return _checked_ids(nifti_items(root))
    items = nifti_items(root)
    items = items if items else dicom_items(root)
    if not items:
        raise AmtError(root, "no NIfTI file and no DICOM object in this folder", "give the folder that holds the CT")
    if all(it.status for it in items):
        found = "; ".join(f"{it.status}: {it.detail}" for it in items[:3]) + ("; ..." if len(items) > 3 else "")
        raise AmtError(root, f"no CT series to predict (found {found})",
                       "give a folder with a CT image series (MR, localizers, SEG and other objects are not predicted)")
    return _checked_ids(items)


# ------------------------------------------------------------------------------------------ one series


def _volume(item: Item) -> tuple[np.ndarray, tuple[float, float, float], np.ndarray, dict[str, Any] | None]:
    """(HU (z, y, x), spacing (z, y, x) mm, affine, DICOM geometry or None) of an item; AmtError when unusable."""
    from amtlib.dicom.dicomio import DicomSeriesError, read_series

    if item.kind == "nifti":
        try:  # load_nifti checks the file's size against its header before allocating
            image, spacing, affine = load_nifti(item.source, dtype=np.float32)
        except NiftiError as exc:
            problem = exc.problem  # the file is named by the row; the remedy is the one below
            if exc.reason == "not_3d":
                raise _Skip("not_3d", f"{problem}; give one 3D CT volume per file") from None
            raise _Skip("unreadable", f"{problem}; re-export the file") from None
        return image, spacing, affine, None
    try:
        image, geometry = read_series(list(item.files), tilt_policy="resample")
    except DicomSeriesError as exc:
        raise _Skip("unusable_series", str(exc)) from None
    # the NIfTI header the cohort step writes stores the spacing as float32: the same numbers here
    spacing = tuple(float(np.float32(s)) for s in geometry["spacing"])
    return image, spacing, geometry["affine"], geometry  # type: ignore[return-value]


class _Skip(Exception):
    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code, self.detail = code, detail


def _components(mask: np.ndarray) -> tuple[tuple[slice, ...] | None, np.ndarray, np.ndarray]:
    """(bounding box, 26-connected labels inside it, voxels per label with 0 the background) of a mask."""
    from amtlib.evaluation import lesions

    box = lesions.bounding_box(mask)
    if box is None:
        return None, np.zeros(0, np.int64), np.zeros(1, np.int64)
    labels, k = lesions.label_components(mask[box])
    return box, labels, np.bincount(labels.ravel(), minlength=k + 1)


def lesion_summary(mask: np.ndarray, spacing: Sequence[float]) -> dict[str, Any]:
    """``volume_ml``, ``n_components`` (the evaluation's lesion rule) and ``max_axial_diameter_mm`` of a mask."""
    from amtlib.evaluation import lesions

    n = int((_components(mask)[2][1:] >= lesions.MIN_PRED_VOXELS).sum())
    voxel_ml = float(np.prod(spacing)) / 1000.0
    return {"volume_ml": round(float(mask.sum()) * voxel_ml, 4), "n_components": n,
            "max_axial_diameter_mm": round(lesions.max_axial_diameter_mm(mask, tuple(spacing)), 3)}  # type: ignore[arg-type]


def remove_small_components(mask: np.ndarray, min_voxels: int) -> np.ndarray:
    """The mask without 26-connected components under ``min_voxels`` voxels (0: unchanged)."""
    if min_voxels <= 0:
        return mask
    box, labels, sizes = _components(mask)
    if box is None:
        return mask
    keep = sizes >= min_voxels
    keep[0] = False
    out = np.zeros_like(mask, dtype=np.uint8)
    out[box] = keep[labels]
    return out


@dataclass
class Predictor:
    """A loaded model plus the options of one ``amt predict``."""

    model: Any
    meta: dict[str, Any]
    options: Options
    device: Any
    sw_batch_size: int = 4
    amp: bool = True

    def mask(self, case: Any) -> tuple[np.ndarray, np.ndarray | None]:
        """(uint8 mask, float32 probability or None) of a case on its own grid, as step 03 predicts.

        ``case``: :func:`~amtlib.segmentation.preprocess.case_from_array` of the image. The probability
        map is kept only with ``--probabilities`` (on a 512x512x600 CT it is 0.6 GB).
        """
        from amtlib.segmentation.infer import binarize, predict_case_probability

        prob = predict_case_probability(self.model, self.meta, case, self.device, self.options.overlap,
                                        self.sw_batch_size, self.amp, self.options.tta)
        mask = remove_small_components(binarize(prob, self.options.threshold), self.options.min_component_voxels)
        return mask, (prob if self.options.probabilities else None)


def predict_item(item: Item, predictor: Predictor, out: Path) -> dict[str, Any]:
    """Predict one series into ``out/<id>/`` (whole or not at all); returns its row."""
    from amtlib.dicom.export import Algorithm, export_series, mask_digest

    t0 = time.perf_counter()
    image, spacing, affine, geometry = _volume(item)
    if image.shape[0] < 2:
        raise _Skip("single_slice", f"{image.shape[0]} slice of {image.shape[2]}x{image.shape[1]}: no volume to segment")
    from amtlib.segmentation.preprocess import case_from_array

    case = case_from_array(item.id, image, spacing, affine, predictor.meta.get("spacing_mm"))
    del image  # only the training-grid copy is needed from here on
    mask, prob = predictor.mask(case)
    del case
    final = refuse_link(out / item.id, f"series {item.id}'s folder")
    tmp = out / f"{_TMP_PREFIX}{item.id}.{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        row = item.row(status="predicted", detail="", **lesion_summary(mask, spacing))
        save_nifti(mask, affine, tmp / "mask.nii.gz")
        row["mask_path"] = f"{item.id}/mask.nii.gz"
        if prob is not None:
            save_nifti(prob.astype(np.float32), affine, tmp / "probability.nii.gz")
            row["probability_path"] = f"{item.id}/probability.nii.gz"
        if geometry is not None and predictor.options.formats:
            sha = predictor.options.model_sha256
            seed = f"predict|{item.series_uid}|{mask_digest(mask, affine)}|{sha}"
            written = export_series(mask, geometry, tmp, seed, predictor.options.formats, algorithm=Algorithm(model_sha256=sha))
            row.update({f"{k}_path": f"{item.id}/{p.name}" for k, p in written.items()})
        row["seconds"] = round(time.perf_counter() - t0, 3)
        write_json(tmp / "prediction.json", {"row": row, "options": options_record(predictor.options), "study_uid": item.study_uid})
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return row


def options_record(options: Options) -> dict[str, Any]:
    """The options as ``predict.json`` and each ``prediction.json`` store them (lists, not tuples)."""
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(options).items()}


def finished_row(out: Path, item: Item, options: Options) -> dict[str, Any] | None:
    """The row of a series already predicted in ``out`` with the same options, else None."""
    record = out / item.id / "prediction.json"
    if not is_safe_id(item.id) or not record.is_file():
        return None
    try:
        saved = json.loads(record.read_text())
    except (OSError, ValueError):
        return None
    if saved.get("options") != options_record(options):
        return None
    row = dict(saved.get("row", {}))
    return row if row.get("status") == "predicted" else None


# ------------------------------------------------------------------------------------------ the folder


def clear_leftovers(out: Path) -> list[Path]:
    """Remove the hidden temporary folders a killed run left in ``out`` (not those of a live process)."""
    removed = []
    for p in out.glob(".*"):
        if not p.is_dir() or not (p.name.startswith(_TMP_PREFIX) or p.name.startswith(_INCOMING)):
            continue
        pid = p.name.rsplit(".", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and _alive(int(pid)):
            continue
        shutil.rmtree(p, ignore_errors=True)
        removed.append(p)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def check_out(out: Path, record: dict[str, Any]) -> None:
    """Refuse an ``--out`` that holds something else, or another model's or options' predictions."""
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise AmtError(out, "is not a folder (or is a symbolic link)", "give a new or empty folder as --out")
    if not out.exists():
        return
    existing = out / "predict.json"
    if existing.is_file():
        try:
            old = json.loads(existing.read_text())
        except (OSError, ValueError):
            raise AmtError(existing, "unreadable (not JSON)", "give a new --out, or delete this folder") from None
        if old.get("options") != record["options"]:
            diff = sorted(k for k in record["options"] if old.get("options", {}).get(k) != record["options"][k])
            raise AmtError(out, f"holds predictions made with other settings ({', '.join(diff)})",
                           "give a new --out, or the same model and options to resume")
        return
    others = [p.name for p in out.iterdir() if not p.name.startswith(".")]
    if others:
        raise AmtError(out, f"holds other files ({', '.join(sorted(others)[:3])}{', ...' if len(others) > 3 else ''}), "
                       "not an amt predict folder", "give a new or empty folder as --out")


@contextlib.contextmanager
def _csv_lock(out: Path) -> Iterator[None]:
    """A blocking lock around the rewrite of ``predictions.csv`` (parts of one job may finish together)."""
    import fcntl

    fd = os.open(out / ".predict.lock", os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def write_table(out: Path, items: list[Item], rows: dict[str, dict[str, Any]], options: Options) -> pd.DataFrame:
    """``predictions.csv``: every item, with this run's rows, another part's finished ones, or ``not_in_part``."""
    with _csv_lock(out):
        table = []
        for it in items:
            if it.status:
                table.append(it.row())
            elif it.id in rows:
                table.append(rows[it.id])
            else:
                done = finished_row(out, it, options)
                table.append(done if done else it.row(status="not_in_part", detail="left to another --part, not finished yet"))
        frame = pd.DataFrame(table, columns=COLUMNS)
        write_csv(out / "predictions.csv", frame, index=False)
    return frame


def parse_part(text: str | None) -> tuple[int, int]:
    """``K/N`` (1 <= K <= N) of ``--part``; (1, 1) when absent."""
    if not text:
        return 1, 1
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not m or not 1 <= int(m.group(1)) <= int(m.group(2)):
        raise AmtError("--part", f"{text!r} is not K/N with 1 <= K <= N", "give e.g. --part 2/4")
    return int(m.group(1)), int(m.group(2))


# ------------------------------------------------------------------------------------------ the command


@dataclass
class Run:
    """One ``amt predict``: what it found, what it wrote, what failed."""

    out: Path
    items: list[Item]
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    failed: list[str] = field(default_factory=list)
    table: pd.DataFrame | None = None


def _versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": sys.version.split()[0]}
    for name in ("amtlib", "torch", "monai", "numpy", "pydicom", "highdicom", "nibabel", "pynetdicom", "dicomweb-client"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = ""
    return out


def _pending(items: list[Item], part: tuple[int, int]) -> list[Item]:
    todo = sorted((it for it in items if not it.status), key=lambda it: it.id)
    k, n = part
    return [it for i, it in enumerate(todo) if i % n == k - 1]


def _incoming(out: Path, item: Item) -> Path:
    """The hidden folder of ``out`` a PACS series is retrieved into (by this process; see :func:`clear_leftovers`)."""
    return out / f"{_INCOMING}{item.id[:40]}.{os.getpid()}"


def _retrieve(pacs: Any, item: Item, out: Path) -> Item:
    """A PACS series fetched into a hidden folder of ``out`` and read as a DICOM folder (its CT series)."""
    folder = _incoming(out, item)
    shutil.rmtree(folder, ignore_errors=True)
    pacs.retrieve_series(item.study_uid, item.series_uid, folder)
    series = [it for it in dicom_items(folder) if not it.status and it.series_uid == item.series_uid]
    if not series:
        raise _Skip("unusable_series", f"the retrieved files of series {item.series_uid} hold no CT image series")
    return Item(item.id, item.series_uid, item.source, "dicom", series[0].files, study_uid=item.study_uid)


def run_predict(source: str, model_path: Path, out: Path, options_kw: dict[str, Any], device: str = "auto",
                part: tuple[int, int] = (1, 1), calling_aet: str = "AMT", say: Any = print, warn: Any = None,
                push: bool = False) -> Run:
    """Find the series of ``source``, predict the pending ones of ``part`` into ``out``, write the table.

    ``say`` prints progress; ``warn`` (default: standard error) gets one line per series not predicted.
    ``push``: results go to a PACS afterwards, so input without a DICOM series is refused before any work.
    """
    warn = warn or (lambda line: print(line, file=sys.stderr))
    from amtlib.dicom.pacs import Pacs, is_pacs_address, parse_address
    from amtlib.segmentation.infer import load_model
    from amtlib.segmentation.model_card import identity_line
    from amtlib.segmentation.train import resolve_device

    torch_device = resolve_device(device)
    model, meta = load_model(model_path, torch_device)
    sha = sha256_file(model_path)
    say(f"amt predict: {identity_line(meta, sha)}; device {torch_device}")
    options = _options(meta, sha, options_kw)
    pacs = Pacs(parse_address(source, need_study=True), calling_aet) if is_pacs_address(source) else None
    shown = pacs.name if pacs is not None else str(source)
    record = {"format": PREDICT_FORMAT, "model": {"path": str(model_path), "sha256": sha, "format": meta.get("format"),
                                                  "iteration": meta.get("iteration"), "tuning_dice": meta.get("tuning_dice"),
                                                  "card": meta.get("card")},
              "options": options_record(options),
              "input": shown, "versions": _versions()}
    check_out(out, record)
    items = find_items(source, pacs)
    if push and all(it.kind == "nifti" for it in items):
        raise _nothing_to_push()
    out.mkdir(parents=True, exist_ok=True)
    clear_leftovers(out)
    if not (out / "predict.json").is_file():
        write_json(out / "predict.json", record)
    run = Run(out, items)
    todo = _pending(items, part)
    fresh = []
    for it in todo:
        done = finished_row(out, it, options)
        if done is None:
            fresh.append(it)
        else:
            run.rows[it.id] = done
    skipped = sum(1 for it in items if it.status)
    say(f"amt predict: {len(items) - skipped} series to predict in {shown}"
        + (f" ({skipped} listed, not predicted)" if skipped else "")
        + (f"; part {part[0]}/{part[1]}: {len(todo)}" if part != (1, 1) else "")
        + (f"; {len(todo) - len(fresh)} already done" if len(todo) != len(fresh) else ""))
    if options.tta:
        say("amt predict: --tta: 8 sliding-window passes per series (the three axes mirrored), about 8x the time")
    _predict_each(fresh, Predictor(model, meta, options, torch_device), pacs, run, warn)
    run.table = write_table(out, items, run.rows, options)
    return run


def _options(meta: dict[str, Any], sha: str, options_kw: dict[str, Any]) -> Options:
    """The run's :class:`Options`: threshold and overlap from the command line, else the model's own
    (0.5 and 0.25 when it has none); a threshold outside (0, 1) or an overlap outside [0, 1) is refused."""
    threshold = float(meta.get("threshold", 0.5) if options_kw.get("threshold") is None else options_kw["threshold"])
    overlap = float(meta.get("sw_overlap", 0.25) if options_kw.get("overlap") is None else options_kw["overlap"])
    if not 0.0 < threshold < 1.0:
        raise AmtError("--threshold", f"{threshold} must lie strictly between 0 and 1", "give e.g. --threshold 0.5")
    if not 0.0 <= overlap < 1.0:
        raise AmtError("--overlap", f"{overlap} must lie in [0, 1)", "give e.g. --overlap 0.25")
    return Options(sha, threshold, overlap, bool(options_kw.get("tta")), int(options_kw.get("min_component_voxels") or 0),
                   bool(options_kw.get("probabilities")), FORMATS[options_kw.get("format") or "both"])


def _predict_each(items: list[Item], predictor: Predictor, pacs: Any, run: Run, warn: Any) -> None:
    """Predict each series into ``run`` (a PACS series retrieved first, its copy removed after); a series
    that cannot be predicted is its row's status and one ``warn`` line, and the others go on."""
    from amtlib.errors import describe
    from amtlib.progress import track

    for it in track(items, desc="predict", unit="series"):
        try:
            target = _retrieve(pacs, it, run.out) if it.kind == "pacs" else it
            run.rows[it.id] = predict_item(target, predictor, run.out)
        except _Skip as skip:
            run.rows[it.id] = it.row(status=skip.code, detail=skip.detail)
            if skip.code not in ("single_slice",):
                run.failed.append(it.id)
            warn(f"amt predict: {it.source}: {skip.detail}")
        except (AmtError, ValueError, OSError) as exc:
            run.rows[it.id] = it.row(status="failed", detail=describe(exc))
            run.failed.append(it.id)
            warn(f"amt predict: {it.source}: {describe(exc)}")
        finally:
            if it.kind == "pacs":
                shutil.rmtree(_incoming(run.out, it), ignore_errors=True)


def push_results(run: Run, address: str, calling_aet: str, say: Any = print) -> int:
    """Send every SEG/RTSTRUCT of the run's predicted rows to the PACS at ``address``; confirm each."""
    from amtlib.dicom.pacs import Pacs, parse_address

    pacs = Pacs(parse_address(address), calling_aet)
    assert run.table is not None
    sent = 0
    for i, row in run.table.iterrows():
        if row["status"] != "predicted":
            continue
        paths = [run.out / str(row[c]) for c in ("seg_path", "rtstruct_path") if isinstance(row[c], str) and row[c]]
        if not paths:
            continue
        results = pacs.store(paths)
        run.table.loc[i, "pushed"] = f"{pacs.name} ({len(results)} confirmed)"
        sent += len(results)
    write_csv(run.out / "predictions.csv", run.table, index=False)
    say(f"amt predict: {sent} object(s) stored in {pacs.name} and confirmed by query")
    return sent


def _nothing_to_push() -> AmtError:
    return AmtError("--push", "nothing to send: only DICOM input gives SEG/RTSTRUCT (they reference its series)",
                    "give a DICOM folder or a PACS study, with --format seg, rtstruct or both")


def _parser() -> argparse.ArgumentParser:
    from amtlib.clihelp import HelpFormatter, examples

    p = argparse.ArgumentParser(
        prog="amt predict", formatter_class=HelpFormatter,
        epilog=examples("amt predict --model runs/demo --input new_patient.nii.gz --out pred/",
                        "amt predict --model runs/demo --input /media/cdrom --out pred/ --format seg"),
        description="Segment new CTs with a trained model: a NIfTI file or folder, a DICOM folder (every CT "
                    "series at any depth), or a PACS study (dicomweb://HOST:PORT/PATH?StudyInstanceUID=..., "
                    "https://..., dimse://AET@HOST:PORT?StudyInstanceUID=...). Writes OUT/<id>/mask.nii.gz "
                    "(+ seg.dcm, rtstruct.dcm for DICOM input), OUT/predictions.csv and OUT/predict.json. "
                    "PACS credentials: $AMT_PACS_TOKEN, or $AMT_PACS_USER and $AMT_PACS_PASSWORD, or ~/.netrc.")
    p.add_argument("--model", required=True, help="a run folder or its 03_train/model.pt")
    p.add_argument("--input", required=True, help="NIfTI file or folder, DICOM folder, or PACS address")
    p.add_argument("--out", required=True, help="output folder (new, empty, or an earlier amt predict's to resume)")
    p.add_argument("--format", choices=sorted(FORMATS), default="both", help="DICOM outputs for DICOM input (default both)")
    p.add_argument("--probabilities", action="store_true", help="also write probability.nii.gz (float32)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="default auto: CUDA when present")
    p.add_argument("--tta", action="store_true", help="test-time mirroring over the three axes (8x the time; off by default)")
    p.add_argument("--threshold", type=float, default=None, help="probability threshold (default: the model's)")
    p.add_argument("--overlap", type=float, default=None, help="sliding-window overlap in [0, 1) (default: the model's)")
    p.add_argument("--min-component-voxels", type=int, default=0,
                   help="drop mask components under this many voxels (default 0: the mask as the paper scores it)")
    p.add_argument("--part", default=None, metavar="K/N", help="predict every N-th series, starting at the K-th")
    p.add_argument("--push", default=None, metavar="PACS", help="store the SEG/RTSTRUCT in this PACS (dicomweb://... or dimse://AET@HOST:PORT)")
    p.add_argument("--calling-aet", default="AMT", help="our AE title for DIMSE (default AMT)")
    return p


def cli_main(argv: Sequence[str] | None = None) -> int:
    """``amt predict``; exit 1 when any series failed (each named on its own line), 2 for bad input."""
    from amtlib.segmentation.model_card import resolve_model

    args = _parser().parse_args(argv)
    if args.min_component_voxels < 0:
        raise AmtError("--min-component-voxels", f"{args.min_component_voxels} is negative", "give 0 or more")
    model_path, _ = resolve_model(args.model)
    if args.push:
        from amtlib.dicom.pacs import parse_address

        parse_address(args.push)  # a bad push address fails before any work
        if args.format == "nifti":
            raise _nothing_to_push()
    run = run_predict(args.input, model_path, Path(args.out), {
        "threshold": args.threshold, "overlap": args.overlap, "tta": args.tta, "probabilities": args.probabilities,
        "format": args.format, "min_component_voxels": args.min_component_voxels}, args.device, parse_part(args.part),
        args.calling_aet, push=bool(args.push))
    assert run.table is not None
    counts = run.table["status"].value_counts().to_dict()
    print("amt predict: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())) + f"; table {run.out / 'predictions.csv'}")
    if args.push:
        push_results(run, args.push, args.calling_aet)
    if run.failed:
        print(f"amt predict: {len(run.failed)} of {len(run.items)} series failed (see the lines above and predictions.csv)",
              file=sys.stderr)
        return 1
    return 0
