"""The model card: what a trained ``model.pt`` is, what it was trained on and what it is for.

Step 03 writes the card into ``model.pt`` (key ``card``) and beside it as ``model_card.md``;
``amt model-card RUN_OR_MODEL`` prints it, adding the external test's Table 3 / Table 4 headline
figures when the run folder has them, and ``amt predict`` prints the model's identity first. The
card states facts about the training run (cohort, config, seeds, selection), never a clinical claim:
the intended use is research, not a medical device.

Fields (``CARD_FORMAT``): ``paper``, ``training_cohort`` (cases, institutions, manufacturers,
``manifest_sha256``), ``config`` (the train_* settings), ``seed``, ``selected_iteration``,
``tuning_dice``, ``expected_input`` (CT in HU; the spacing (z, y, x) mm and size (z, y, x) voxel
ranges of the training images; the model's training grid), ``intended_use``. A value the run cannot
give is None (shown as "unknown"), never guessed.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from amtlib.errors import AmtError
from amtlib.io import sha256_file, write_text

CARD_FORMAT = "amtlib-model-card/1"
PAPER = "Takemura et al., Sci Rep 2026: 3D U-Net for anterior mediastinal tumour segmentation and detection in chest CT"
INTENDED_USE = ("Research use only: reproducing and auditing the paper's analysis, and research on anterior "
                "mediastinal tumour segmentation. Not a medical device; not for diagnosis or treatment decisions.")


def _range(values: pd.Series) -> list[float] | None:
    v = pd.to_numeric(values, errors="coerce").dropna()
    return None if v.empty else [round(float(v.min()), 4), round(float(v.max()), 4)]


def _names(values: pd.Series) -> list[str]:
    return sorted({str(v) for v in values.dropna() if str(v).strip()})


def build_card(meta: Mapping[str, Any], manifest_csv: str | Path | None, split_csv: str | Path | None,
               config: Mapping[str, Any] | None = None, seed: int | None = None) -> dict[str, Any]:
    """The card of a model (``meta``: its ``model.pt`` entries) trained on the run's training split.

    ``manifest_csv`` / ``split_csv``: the run's cohort and split (None or missing: the cohort fields
    are None). ``config``: the training settings (``TrainConfig`` fields).
    """
    cohort: dict[str, Any] = {"cases": None, "institutions": None, "manufacturers": None, "manifest_sha256": None}
    expected: dict[str, Any] = {"modality": "CT", "units": "HU", "spacing_mm_zyx": None, "shape_zyx": None,
                                "training_grid_mm_zyx": meta.get("spacing_mm"), "patch_zyx": meta.get("patch"),
                                "hu_range_used": meta.get("norm")}
    if manifest_csv and Path(manifest_csv).is_file():
        # every column as text, as the cohort and split steps read it: institution "001" stays "001", "NA" a name
        manifest = pd.read_csv(manifest_csv, dtype=str, keep_default_na=False, na_values=[])
        cohort["manifest_sha256"] = sha256_file(manifest_csv)
        train = manifest
        if split_csv and Path(split_csv).is_file():
            split = pd.read_csv(split_csv, dtype=str, keep_default_na=False, na_values=[])
            train = manifest[manifest["case_id"].isin(split.loc[split["split"] == "train", "case_id"])]
        cohort["cases"] = int(len(train))
        cohort["institutions"] = _names(train["institution"]) if "institution" in train else None
        cohort["manufacturers"] = _names(train["manufacturer"]) if "manufacturer" in train else None
        if {"spacing_z", "spacing_y", "spacing_x"} <= set(train.columns):
            expected["spacing_mm_zyx"] = [_range(train[f"spacing_{a}"]) for a in "zyx"]
        if {"shape_z", "shape_y", "shape_x"} <= set(train.columns):
            expected["shape_zyx"] = [_range(train[f"shape_{a}"]) for a in "zyx"]
    return {
        "format": CARD_FORMAT, "paper": PAPER, "model_format": meta.get("format"),
        "training_cohort": cohort,
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in (config or {}).items()},
        "seed": seed, "selected_iteration": meta.get("iteration"), "tuning_dice": meta.get("tuning_dice"),
        "threshold": meta.get("threshold"), "expected_input": expected, "intended_use": INTENDED_USE,
    }


def attach_card(model_path: str | Path, blob: Mapping[str, Any], card: Mapping[str, Any]) -> Path:
    """Write ``blob`` (``model.pt`` as read) back with ``card`` in it (atomic; every other entry unchanged)."""
    from amtlib.segmentation.infer import write_torch_file

    return write_torch_file(model_path, {**blob, "card": dict(card)})


def evaluation_headline(run_dir: str | Path) -> dict[str, str]:
    """The external test's overall Table 3 and Table 4 cells of a run (``{}`` when not yet evaluated)."""
    from amtlib.paths import RunPaths

    P = RunPaths(run_dir)
    out: dict[str, str] = {}
    for csv, cols in ((P.step("04_evaluate", create=False) / "table3.csv", ("dice", "precision", "recall")),
                      (P.step("05_froc", create=False) / "table4.csv", ("sensitivity_iou0.1", "fp_per_scan_iou0.1",
                                                              "sensitivity_iou0.5", "fp_per_scan_iou0.5"))):
        if not csv.is_file():
            continue
        table = pd.read_csv(csv, dtype=str)
        overall = table[table["subgroup"] == "overall"]
        if len(overall):
            out.update({c: str(overall.iloc[0][c]) for c in cols if c in overall})
    return out


def _fmt(value: Any) -> str:
    if value is None:
        return "unknown"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    return str(value)


def identity_line(meta: Mapping[str, Any], sha256: str) -> str:
    """One line naming a model: file digest, format, selected iteration and tuning Dice."""
    dice = meta.get("tuning_dice")
    dice_s = f"{dice:.3f}" if isinstance(dice, float) and dice == dice else "unknown"
    return (f"model sha256 {sha256[:16]}... ({meta.get('format')}), selected iteration {meta.get('iteration')}, "
            f"tuning Dice {dice_s}")


def render(card: Mapping[str, Any] | None, sha256: str, meta: Mapping[str, Any],
           evaluation: Mapping[str, str] | None = None) -> str:
    """The card as Markdown (what ``model_card.md`` holds and ``amt model-card`` prints)."""
    lines = ["# Model card: amtlib 3D U-Net", "", f"- file SHA-256: `{sha256}`", f"- model format: {meta.get('format')}"]
    if not card:
        lines += ["- card: none in this file (trained before model cards existed; re-run step 03 to add one)"]
        return "\n".join(lines) + "\n"
    cohort, expected = card.get("training_cohort", {}), card.get("expected_input", {})
    names = cohort.get("institutions")
    institutions = "unknown" if names is None else f"{len(names)} ({', '.join(names[:8])}{', ...' if len(names) > 8 else ''})"
    grid = expected.get("training_grid_mm_zyx")
    lines += [f"- card format: {card.get('format')}", f"- paper: {card.get('paper')}", "",
              "## Training", "",
              f"- training cases: {_fmt(cohort.get('cases'))}",
              f"- institutions: {institutions}",
              f"- manufacturers: {', '.join(cohort.get('manufacturers') or []) or 'unknown'}",
              f"- manifest SHA-256: `{_fmt(cohort.get('manifest_sha256'))}`",
              f"- seed: {_fmt(card.get('seed'))}",
              f"- selected iteration: {_fmt(card.get('selected_iteration'))}; tuning Dice {_fmt(card.get('tuning_dice'))}",
              f"- threshold: {_fmt(card.get('threshold'))}",
              "- config: " + ", ".join(f"{k}={_fmt(v)}" for k, v in sorted((card.get("config") or {}).items())), "",
              "## Expected input", "",
              f"- {expected.get('modality', 'CT')} in {expected.get('units', 'HU')}",
              f"- spacing seen in training (z, y, x) mm: {_fmt(expected.get('spacing_mm_zyx'))}",
              f"- size seen in training (z, y, x) voxels: {_fmt(expected.get('shape_zyx'))}",
              f"- training grid (z, y, x) mm: {'native spacing' if grid is None else _fmt(grid)}; "
              f"patch {_fmt(expected.get('patch_zyx'))}", ""]
    if evaluation:
        lines += ["## External test (this run)", ""] + [f"- {k}: {v}" for k, v in evaluation.items()] + [""]
    lines += ["## Intended use", "", str(card.get("intended_use", INTENDED_USE)), ""]
    return "\n".join(lines)


def resolve_model(path: str | Path) -> tuple[Path, Path | None]:
    """``(model.pt, run folder or None)`` from a run folder or a model file; an error naming it otherwise."""
    p = Path(path)
    if p.is_dir():
        model = p / "03_train" / "model.pt"
        if not model.is_file():
            raise AmtError(p, "is a folder without 03_train/model.pt", "give a run folder whose step 03 has run, or a model.pt")
        return model, p
    if not p.is_file():
        raise AmtError(p, "model not found", "give a run folder or its 03_train/model.pt")
    run = p.parent.parent if p.parent.name == "03_train" else None
    return p, run


def write_card(run_dir: str | Path, config: Mapping[str, Any] | None = None, seed: int | None = None) -> Path:
    """Step 03: build the card of the run's ``model.pt``, attach it and write ``model_card.md``."""
    from amtlib.paths import RunPaths
    from amtlib.segmentation.infer import read_torch_file

    P = RunPaths(run_dir)
    model_path = P.step("03_train", create=False) / "model.pt"
    blob = read_torch_file(model_path, "model file", "re-run notebook 03_train")
    meta = {k: v for k, v in blob.items() if k != "model"}
    card = build_card(meta, P.manifest, P.split_csv, config, seed)
    attach_card(model_path, blob, card)
    return write_text(model_path.parent / "model_card.md", render(card, sha256_file(model_path), meta))


def cli_main(argv: Sequence[str] | None = None) -> int:
    """``amt model-card RUN_OR_MODEL``: print the card (with the run's external-test figures)."""
    import argparse

    from amtlib.segmentation.infer import load_model

    from amtlib.clihelp import HelpFormatter, examples

    p = argparse.ArgumentParser(prog="amt model-card", description="Print the model card of a run folder or a model.pt.",
                                formatter_class=HelpFormatter, epilog=examples("amt model-card runs/demo"))
    p.add_argument("model", help="a run folder or its 03_train/model.pt")
    args = p.parse_args(argv)
    model_path, run = resolve_model(args.model)
    _, meta = load_model(model_path)
    evaluation = evaluation_headline(run) if run is not None else {}
    sys.stdout.write(render(meta.get("card"), sha256_file(model_path), meta, evaluation))
    return 0
