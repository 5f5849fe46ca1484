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
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

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
)


@dataclass(frozen=True)
class RunPaths:
    """Conventional artifact paths inside one run folder ``root``.

    Nothing is created on construction; call :meth:`step` to get (and create) a step folder.
    """

    root: Path

    def __init__(self, root: str | Path) -> None:
        object.__setattr__(self, "root", Path(root).resolve())

    def step(self, name: str, create: bool = True) -> Path:
        """Folder of step ``name`` (e.g. ``"03_train"``), created when ``create``."""
        if name not in STEPS:
            raise ValueError(f"unknown step {name!r}; steps are {', '.join(STEPS)}")
        d = self.root / name
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
