"""amtlib.segmentation.model_card on hand-made inputs: the card built from a small manifest and split
(training split only, ranges, blanks), how it renders, the one-line identity ``amt predict`` prints,
the external-test headline, which file a run folder or a path names, and ``amt model-card`` on a
tiny saved model. (test_predict checks the card step 03 writes after a real training run.)"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import pandas as pd
import pytest
import torch

from amtlib.cli import main as amt
from amtlib.errors import AmtError
from amtlib.segmentation import model_card as mc
from amtlib.segmentation.infer import read_torch_file
from amtlib.segmentation.model import UNet3D
from amtlib.segmentation.preprocess import Normalisation
from amtlib.segmentation.train import TrainConfig, _model_blob, save_checkpoint

SHA = "0123456789abcdef" + "9" * 48
META = {"format": "amtlib-unet3d/1", "iteration": 350, "tuning_dice": 0.734567, "threshold": 0.45,
        "spacing_mm": [5.0, 1.5, 1.5], "patch": [32, 96, 96], "norm": {"hu_min": -1000.0, "hu_max": 500.0}}

# Six cases: four train, one tuning, one external test. Only the training rows count: their institutions
# (c04's is blank), manufacturers, spacing (c04's y/x spacing missing) and sizes. The tuning and test rows
# lie outside every training range, so letting them in would show.
MANIFEST = pd.DataFrame({
    "case_id": ["c01", "c02", "c03", "c04", "c05", "c06"],
    "institution": ["CENTRAL", "CENTRAL", "EAST", "", "TUNE", "EXT"],
    "manufacturer": ["GE", "SIEMENS", "GE", "TOSHIBA", "PHILIPS", "CANON"],
    "spacing_z": [5.0, 2.5, 5.0, 1.25, 0.5, 7.0],
    "spacing_y": [0.68359375, 0.9765625, 0.7, None, 0.3, 1.2],
    "spacing_x": [0.68359375, 0.9765625, 0.7, None, 0.3, 1.2],
    "shape_z": [60, 120, 80, 300, 999, 20],
    "shape_y": [512, 512, 512, 512, 256, 768],
    "shape_x": [512, 512, 512, 512, 256, 768],
})
SPLIT = pd.DataFrame({"case_id": MANIFEST["case_id"], "split": ["train"] * 4 + ["tuning", "external_test"]})
CONFIG = {"patch": (32, 96, 96), "lr": 0.001, "iterations": 400}


def _cohort(folder: Path, manifest: pd.DataFrame = MANIFEST, split_folder: Path | None = None) -> tuple[Path, Path]:
    m, s = folder / "manifest.csv", (split_folder or folder) / "split.csv"
    for f in (m, s):
        f.parent.mkdir(parents=True, exist_ok=True)
    manifest.to_csv(m, index=False)
    SPLIT.to_csv(s, index=False)
    return m, s


def _lines(text: str) -> list[str]:
    return text.splitlines()


# ------------------------------------------------------------------------------------------ identity_line


def test_identity_line_names_digest_prefix_format_iteration_and_dice():
    line = mc.identity_line(META, SHA)
    assert line == ("model sha256 0123456789abcdef... (amtlib-unet3d/1), selected iteration 350, "
                    "tuning Dice 0.735")
    assert SHA not in line  # only the first 16 hex digits
    for dice in (float("nan"), None):  # no tuning split (NaN) or an older file without the entry
        assert mc.identity_line({**META, "tuning_dice": dice}, SHA).endswith("tuning Dice unknown")
    assert mc.identity_line({k: v for k, v in META.items() if k != "tuning_dice"}, SHA).endswith("tuning Dice unknown")


# ------------------------------------------------------------------------------------------ build_card


def test_card_describes_the_training_split_only(tmp_path):
    manifest, split = _cohort(tmp_path)
    card = mc.build_card(META, manifest, split, CONFIG, seed=3)
    assert card["format"] == mc.CARD_FORMAT and card["model_format"] == "amtlib-unet3d/1"
    assert card["training_cohort"] == {
        "cases": 4, "institutions": ["CENTRAL", "EAST"], "manufacturers": ["GE", "SIEMENS", "TOSHIBA"],
        "manifest_sha256": hashlib.sha256(manifest.read_bytes()).hexdigest()}
    expected = card["expected_input"]
    # min and max over the training rows, rounded to 4 decimals; the missing spacing of c04 is left out
    assert expected["spacing_mm_zyx"] == [[1.25, 5.0], [0.6836, 0.9766], [0.6836, 0.9766]]
    assert expected["shape_zyx"] == [[60.0, 300.0], [512.0, 512.0], [512.0, 512.0]]
    assert (expected["modality"], expected["units"]) == ("CT", "HU")
    assert expected["training_grid_mm_zyx"] == [5.0, 1.5, 1.5] and expected["patch_zyx"] == [32, 96, 96]
    assert expected["hu_range_used"] == {"hu_min": -1000.0, "hu_max": 500.0}
    assert (card["seed"], card["selected_iteration"], card["tuning_dice"], card["threshold"]) == (3, 350, 0.734567, 0.45)
    assert card["config"] == {"patch": [32, 96, 96], "lr": 0.001, "iterations": 400}  # tuples become lists
    assert "Not a medical device" in card["intended_use"]


def test_card_without_split_counts_the_whole_manifest_and_without_manifest_knows_nothing(tmp_path):
    manifest, _ = _cohort(tmp_path)
    whole = mc.build_card(META, manifest, tmp_path / "absent_split.csv")
    assert whole["training_cohort"]["cases"] == 6
    assert whole["training_cohort"]["institutions"] == ["CENTRAL", "EAST", "EXT", "TUNE"]
    assert whole["expected_input"]["spacing_mm_zyx"][0] == [0.5, 7.0]
    nothing = mc.build_card({}, tmp_path / "absent.csv", None)
    assert nothing["training_cohort"] == {"cases": None, "institutions": None, "manufacturers": None, "manifest_sha256": None}
    assert nothing["expected_input"]["spacing_mm_zyx"] is None and nothing["expected_input"]["shape_zyx"] is None
    assert nothing["config"] == {} and nothing["seed"] is None and nothing["threshold"] is None
    # a manifest without the optional columns: those fields are None, the count is still given
    bare, split = _cohort(tmp_path / "bare", MANIFEST[["case_id", "spacing_z", "spacing_y"]])
    card = mc.build_card(META, bare, split)
    assert card["training_cohort"]["cases"] == 4
    assert card["training_cohort"]["institutions"] is None and card["training_cohort"]["manufacturers"] is None
    assert card["expected_input"]["spacing_mm_zyx"] is None  # z and y alone are not a spacing


# ------------------------------------------------------------------------------------------ render


def test_render_states_each_field_in_its_section(tmp_path):
    manifest, split = _cohort(tmp_path)
    card = mc.build_card(META, manifest, split, CONFIG, seed=3)
    digest = hashlib.sha256(manifest.read_bytes()).hexdigest()
    lines = _lines(mc.render(card, SHA, META))
    assert lines[:4] == ["# Model card: amtlib 3D U-Net", "", f"- file SHA-256: `{SHA}`", "- model format: amtlib-unet3d/1"]
    for expected in ["- training cases: 4",
                     "- institutions: 2 (CENTRAL, EAST)",
                     "- manufacturers: GE, SIEMENS, TOSHIBA",
                     f"- manifest SHA-256: `{digest}`",
                     "- seed: 3",
                     "- selected iteration: 350; tuning Dice 0.7346",  # 4 significant digits
                     "- threshold: 0.45",
                     "- config: iterations=400, lr=0.001, patch=[32, 96, 96]",  # sorted by name
                     "- CT in HU",
                     "- spacing seen in training (z, y, x) mm: [[1.25, 5], [0.6836, 0.9766], [0.6836, 0.9766]]",
                     "- size seen in training (z, y, x) voxels: [[60, 300], [512, 512], [512, 512]]",
                     "- training grid (z, y, x) mm: [5, 1.5, 1.5]; patch [32, 96, 96]"]:
        assert expected in lines, expected
    order = [lines.index(h) for h in ("## Training", "## Expected input", "## Intended use")]
    assert order == sorted(order)
    assert lines.index("- training cases: 4") > order[0] and lines.index("- CT in HU") > order[1]
    assert lines[order[2] + 2] == mc.INTENDED_USE
    assert "## External test (this run)" not in lines


def test_render_lists_at_most_eight_institutions_and_adds_the_evaluation():
    card = {"format": mc.CARD_FORMAT, "training_cohort": {"cases": 30, "institutions": [f"I{i:02d}" for i in range(10)]}}
    lines = _lines(mc.render(card, SHA, META, {"dice": "0.81 ± 0.10 (0.77–0.85)", "sensitivity_iou0.1": "0.95"}))
    assert "- institutions: 10 (I00, I01, I02, I03, I04, I05, I06, I07, ...)" in lines
    assert "- manufacturers: unknown" in lines and "- seed: unknown" in lines
    at = lines.index("## External test (this run)")
    assert lines[at + 2: at + 4] == ["- dice: 0.81 ± 0.10 (0.77–0.85)", "- sensitivity_iou0.1: 0.95"]
    assert at < lines.index("## Intended use")


def test_render_of_a_file_without_a_card_says_so_and_nothing_more():
    text = mc.render(None, SHA, META, {"dice": "0.8"})
    assert _lines(text) == ["# Model card: amtlib 3D U-Net", "", f"- file SHA-256: `{SHA}`", "- model format: amtlib-unet3d/1",
                            "- card: none in this file (trained before model cards existed; re-run step 03 to add one)"]


# ------------------------------------------------------------------------------------------ run folder


def _tables(run: Path) -> None:
    (run / "04_evaluate").mkdir(parents=True, exist_ok=True)
    (run / "05_froc").mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"subgroup": ["overall", "institution=A"], "dice": ["0.810 ± 0.10 (0.77–0.85)", "0.5"],
                  "precision": ["0.850", "0.4"], "recall": ["0.790", "0.3"], "n": ["20", "5"]}
                 ).to_csv(run / "04_evaluate" / "table3.csv", index=False)
    pd.DataFrame({"subgroup": ["size=small", "overall"], "sensitivity_iou0.1": ["0.5", "0.950"],
                  "fp_per_scan_iou0.1": ["9", "0.20"], "sensitivity_iou0.5": ["0.1", "0.900"]}
                 ).to_csv(run / "05_froc" / "table4.csv", index=False)


def test_evaluation_headline_takes_the_overall_rows_as_written(tmp_path):
    assert mc.evaluation_headline(tmp_path) == {}  # not evaluated yet
    _tables(tmp_path)
    # the overall row of each table (wherever it is), its text unchanged ("0.850" stays so);
    # a column the table lacks (fp_per_scan_iou0.5) is left out
    assert mc.evaluation_headline(tmp_path) == {
        "dice": "0.810 ± 0.10 (0.77–0.85)", "precision": "0.850", "recall": "0.790",
        "sensitivity_iou0.1": "0.950", "fp_per_scan_iou0.1": "0.20", "sensitivity_iou0.5": "0.900"}


def test_resolve_model_from_a_run_folder_or_a_file(tmp_path):
    run = tmp_path / "run"
    with pytest.raises(AmtError) as err:
        mc.resolve_model(run)
    assert err.value.file == str(run) and "model not found" in err.value.problem and "run folder" in err.value.remedy
    (run / "03_train").mkdir(parents=True)
    with pytest.raises(AmtError) as err:
        mc.resolve_model(run)
    assert err.value.file == str(run) and "without 03_train/model.pt" in err.value.problem
    model = run / "03_train" / "model.pt"
    model.write_bytes(b"x")
    assert mc.resolve_model(run) == (model, run)
    assert mc.resolve_model(model) == (model, run)  # a run's own model.pt: its run's figures apply
    loose = tmp_path / "copies" / "model.pt"
    loose.parent.mkdir()
    loose.write_bytes(b"x")
    assert mc.resolve_model(loose) == (loose, None)


# ------------------------------------------------------------------------------------------ a tiny saved model


@pytest.fixture()
def tiny_run(tmp_path):
    """A run folder with a manifest, a split and a tiny untrained model.pt (no card yet)."""
    run = tmp_path / "run"
    _cohort(run / "01_cohort", split_folder=run / "02_split")
    cfg = TrainConfig(spacing_mm=(5.0, 8.0, 8.0), patch=(8, 16, 16), base_width=2, blocks_per_level=1, threshold=0.35)
    torch.manual_seed(0)
    model = UNet3D(cfg.model_config)
    (run / "03_train").mkdir()
    save_checkpoint(run / "03_train" / "model.pt", _model_blob(model, cfg, Normalisation(-900, 400), 12, 0.625))
    return run, cfg


def test_write_card_attaches_the_card_and_leaves_every_other_entry(tiny_run, capsys):
    run, cfg = tiny_run
    model_path = run / "03_train" / "model.pt"
    before = read_torch_file(model_path, "model file", "")
    md = mc.write_card(run, vars(cfg), seed=11)
    after = read_torch_file(model_path, "model file", "")
    assert set(after) == set(before) | {"card"}
    for key in before:
        if key == "model":
            assert before[key].keys() == after[key].keys()
            assert all(torch.equal(before[key][k], after[key][k]) for k in before[key])
        else:
            assert after[key] == before[key], key
    card = after["card"]
    assert card["training_cohort"]["cases"] == 4 and card["seed"] == 11
    assert card["threshold"] == 0.35 and card["selected_iteration"] == 12 and card["tuning_dice"] == 0.625
    assert card["config"]["patch"] == [8, 16, 16] and card["expected_input"]["training_grid_mm_zyx"] == [5.0, 8.0, 8.0]
    assert card["expected_input"]["hu_range_used"] == {"hu_min": -900.0, "hu_max": 400.0}
    # model_card.md names the file as it is now, with the card in it
    text = md.read_text()
    assert md == run / "03_train" / "model_card.md"
    assert f"- file SHA-256: `{hashlib.sha256(model_path.read_bytes()).hexdigest()}`" in _lines(text)
    assert "- threshold: 0.35" in _lines(text) and "- seed: 11" in _lines(text)
    # amt model-card prints the same card (no external test yet)
    assert amt(["model-card", str(run)]) == 0
    assert capsys.readouterr().out == text


def test_amt_model_card_adds_the_run_figures_only_for_a_run(tiny_run, tmp_path, capsys):
    run, cfg = tiny_run
    mc.write_card(run, vars(cfg), seed=0)
    _tables(run)
    model_path = run / "03_train" / "model.pt"
    assert amt(["model-card", str(model_path)]) == 0
    lines = _lines(capsys.readouterr().out)
    at = lines.index("## External test (this run)")
    assert lines[at + 2] == "- dice: 0.810 ± 0.10 (0.77–0.85)" and "- sensitivity_iou0.5: 0.900" in lines
    # the same file copied out of its run: no run, so no figures of one
    loose = tmp_path / "elsewhere" / "model.pt"
    loose.parent.mkdir()
    loose.write_bytes(model_path.read_bytes())
    assert amt(["model-card", str(loose)]) == 0
    out = capsys.readouterr().out
    assert "## External test" not in out and "- training cases: 4" in out


def test_amt_model_card_on_a_model_without_a_card(tmp_path, capsys):
    cfg = TrainConfig(patch=(8, 16, 16), base_width=2, blocks_per_level=1)
    torch.manual_seed(0)
    path = save_checkpoint(tmp_path / "old.pt", _model_blob(UNet3D(cfg.model_config), cfg, Normalisation(-1000, 500), 4,
                                                            float("nan")))
    assert amt(["model-card", str(path)]) == 0
    lines = _lines(capsys.readouterr().out)
    assert lines[2] == f"- file SHA-256: `{hashlib.sha256(path.read_bytes()).hexdigest()}`"
    assert lines[-1].startswith("- card: none in this file") and "## Training" not in lines
    assert math.isnan(read_torch_file(path, "model file", "")["tuning_dice"])


def test_institution_codes_are_read_as_text(tmp_path):
    """Institution "001" stays "001" and an institution called "NA" is a name, as the cohort and split
    steps read them (found by this file's tests: the card read the manifest with numbers parsed)."""
    import pandas as pd

    from amtlib.segmentation.model_card import build_card

    pd.DataFrame({"case_id": ["1", "2", "3"], "institution": ["001", "NA", "010"], "manufacturer": ["GE", "GE", "SIEMENS"],
                  "spacing_z": ["2.5", "5", "2.5"]}).to_csv(tmp_path / "m.csv", index=False)
    pd.DataFrame({"case_id": ["1", "2", "3"], "split": ["train", "train", "tuning"]}).to_csv(tmp_path / "s.csv", index=False)
    card = build_card({}, tmp_path / "m.csv", tmp_path / "s.csv")
    assert card["training_cohort"]["institutions"] == ["001", "NA"] and card["training_cohort"]["cases"] == 2
    assert card["training_cohort"]["manufacturers"] == ["GE"]


def test_a_card_without_a_cohort_or_training_grid_says_unknown_and_native_spacing():
    from amtlib.segmentation.model_card import build_card, render

    lines = render(build_card({"format": "f"}, None, None), "0" * 64, {"format": "f"}).splitlines()
    assert "- institutions: unknown" in lines and "- manufacturers: unknown" in lines
    assert "- training grid (z, y, x) mm: native spacing; patch unknown" in lines
