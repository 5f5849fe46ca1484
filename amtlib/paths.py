"""Where each step of a run reads and writes its artifacts (the run-folder contract).

Notebooks hand results to each other only through files; this module is the single place that names
them, so a notebook re-run alone (``amt run --only STEP``) finds the outputs of earlier steps.

    runs/<name>/
      run.json, config.yaml, run.log
      notebooks/NN_step.ipynb     executed copies
      00_data/raw/                raw cohort (DICOM tree, clinical.csv, masks/, anatomy/)
      01_cohort/                  manifest.csv, images/, masks/, anatomy/, cohort_flow.json, ...
      02_split/                   split.csv, splits.json, table1.csv, table2.csv, fig2_flow.png
      03_train/                   model.pt, checkpoints/, train_log.csv, predictions/, ...
      04_evaluate/                per_case.csv, table3.csv
      05_froc/                    froc.csv, table4.csv, fig4_froc.png
      06_failure/                 radiomics_features.csv, radiomics_tests.csv, fig5/fig6
      09_export/                  <case_id>/seg.dcm, rtstruct.dcm, export.csv (DICOM out, optional)

Any step may leave ``<step>/notices.txt``: lines ``amt run`` shows on the terminal after the step
(e.g. "resumed from checkpoints/last.pt at iteration 250"); the runner clears it before the step.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from amtlib.errors import AmtError

STEPS: tuple[str, ...] = (
    "00_data",
    "01_cohort",
    "02_split",
    "03_train",
    "04_evaluate",
    "05_froc",
    "06_failure",
    "07_histology",
    "08_fusion",
    "09_export",
)

#: Per-step file of lines for the terminal (see the module docstring).
#: What an id from data (case id, SeriesInstanceUID, file stem) must look like before it names a file or
#: folder: letters, digits, '.', '_', '-', starting with a letter or digit, at most 128 characters (a
#: DICOM UID is at most 64). No separator, no "..", nothing absolute: it cannot leave the output folder.
SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def is_safe_id(text: object) -> bool:
    """Whether ``text`` may name a file or folder inside an output folder (:data:`SAFE_ID`)."""
    return isinstance(text, str) and bool(SAFE_ID.match(text)) and ".." not in text


NOTICES = "notices.txt"
#: A step that finds nothing to do (07/08 without their optional columns) writes ``{"reason": ...}`` here.
SKIPPED = "skipped.json"


def add_notice(step_dir: str | Path, text: str) -> None:
    """Record a line for ``amt run`` to show on the terminal after this step (``<step>/notices.txt``)."""
    from amtlib.io import append_line

    append_line(Path(step_dir) / NOTICES, text)

#: The project checkout (the folder above the package, holding ``notebooks/`` and ``runs/``).
PROJECT_ROOT = Path(__file__).resolve().parent.parent
#: Inputs a step needs from earlier steps (checked by :meth:`RunPaths.step` before it creates anything).
STEP_INPUTS: dict[str, tuple[str, ...]] = {
    "02_split": ("manifest", "cohort_flow"),
    "03_train": ("manifest", "split_csv"),
    "04_evaluate": ("manifest", "split_csv", "predictions_dir"),
    "05_froc": ("manifest", "split_csv", "predictions_dir"),
    "06_failure": ("manifest", "split_csv", "predictions_dir", "per_case"),
}
#: Everything a step reads from earlier steps (a superset of :data:`STEP_INPUTS`): ``amt run`` puts the
#: size and modification time of each file there into the step's fingerprint, so a file replaced by
#: hand (another model's masks dropped into ``03_train/predictions/``) re-runs the steps that read it.
STEP_READS: dict[str, tuple[str, ...]] = {
    **STEP_INPUTS,
    "07_histology": ("manifest", "split_csv", "predictions_dir"),
    "08_fusion": ("manifest", "split_csv", "predictions_dir"),
    "09_export": ("manifest", "split_csv", "predictions_dir", "sources_json"),
}


def project_path(path: str | Path) -> Path:
    """Absolute path: a relative ``path`` (the run folder ``runs/demo``, the figures folder ``figures``)
    is taken from the project root when the package runs from a checkout, so a notebook opened in
    JupyterLab from ``notebooks/`` reads and writes where ``amt run`` (whose kernels start in the
    project root) does; else from the working directory."""
    p = Path(path).expanduser()
    if not p.is_absolute() and (PROJECT_ROOT / "notebooks").is_dir():
        p = PROJECT_ROOT / p
    return p.resolve()


@dataclass(frozen=True)
class RunPaths:
    """Conventional artifact paths inside one run folder ``root``.

    Nothing is created on construction; call :meth:`step` to get (and create) a step folder. A
    relative ``root`` is resolved by :func:`project_path`.
    """

    root: Path

    def __init__(self, root: str | Path) -> None:
        object.__setattr__(self, "root", project_path(root))

    def step(self, name: str, create: bool = True) -> Path:
        """Folder of step ``name`` (e.g. ``"03_train"``), created when ``create``.

        Before creating it, the inputs the step needs from earlier steps (:data:`STEP_INPUTS`) must
        exist; else :class:`~amtlib.errors.AmtError` names the missing file, the run folder and the steps to run first.
        """
        if name not in STEPS:
            raise ValueError(f"unknown step {name!r}; steps are {', '.join(STEPS)}")
        d = self.root / name
        missing = [getattr(self, key) for key in STEP_INPUTS.get(name, ()) if not getattr(self, key).exists()]
        if create and missing:
            earlier = sorted({p.relative_to(self.root).parts[0] for p in missing})
            raise AmtError(missing[0], f"not found, so step {name} cannot run on the run folder {self.root}",
                           f"run the earlier step(s) {', '.join(earlier)} on this run folder first (amt run --to "
                           f"{earlier[-1]}), or set run_dir to a run folder that has them")
        if create:
            d.mkdir(parents=True, exist_ok=True)
        return d

    # 00_data: the raw cohort, as a hospital archive would deliver it
    @property
    def raw_dir(self) -> Path:
        return self.root / "00_data" / "raw"

    # 01_cohort
    @property
    def manifest(self) -> Path:
        return self.root / "01_cohort" / "manifest.csv"

    @property
    def sources_json(self) -> Path:
        return self.root / "01_cohort" / "sources.json"

    @property
    def images_dir(self) -> Path:
        return self.root / "01_cohort" / "images"

    @property
    def masks_dir(self) -> Path:
        return self.root / "01_cohort" / "masks"

    @property
    def anatomy_dir(self) -> Path:
        return self.root / "01_cohort" / "anatomy"

    @property
    def cohort_flow(self) -> Path:
        return self.root / "01_cohort" / "cohort_flow.json"

    # 02_split
    @property
    def split_csv(self) -> Path:
        return self.root / "02_split" / "split.csv"

    @property
    def splits_json(self) -> Path:
        return self.root / "02_split" / "splits.json"

    # 03_train
    @property
    def model(self) -> Path:
        return self.root / "03_train" / "model.pt"

    @property
    def predictions_dir(self) -> Path:
        return self.root / "03_train" / "predictions"

    @property
    def probabilities_dir(self) -> Path:
        return self.root / "03_train" / "probabilities"

    @property
    def train_log(self) -> Path:
        return self.root / "03_train" / "train_log.csv"

    # 04_evaluate
    @property
    def per_case(self) -> Path:
        return self.root / "04_evaluate" / "per_case.csv"

    # 05_froc
    @property
    def froc(self) -> Path:
        return self.root / "05_froc" / "froc.csv"

    # 06_failure
    @property
    def radiomics_features(self) -> Path:
        return self.root / "06_failure" / "radiomics_features.csv"

    @property
    def radiomics_tests(self) -> Path:
        return self.root / "06_failure" / "radiomics_tests.csv"

    # 09_export
    @property
    def export_dir(self) -> Path:
        return self.root / "09_export"
