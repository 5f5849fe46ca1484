"""Methods map: each methods statement of the paper -> the function, test(s) and notebook cell implementing it.

Paraphrases are in our own words (never the paper's sentences). The registry is code so that a test
can check that every entry still resolves (the function imports, the test exists, a code cell of the
notebook contains the snippet) and that every ``amtlib`` function whose docstring cites the paper
(a docstring line starting ``Paper:`` or ``Paper section:``) has an entry.
``python -m amtlib.methods_map`` prints the Markdown of ``docs/methods_map.md``.
"""

from __future__ import annotations

import ast
import importlib
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

REPO_ROOT = Path(__file__).resolve().parent.parent
#: A docstring line that cites a paper section (the tag the coverage test looks for).
PAPER_TAG = re.compile(r"^\s*Paper(?: section)?:", re.MULTILINE)
#: Columns of ``methods_map.csv``.
COLUMNS: tuple[str, ...] = ("section", "statement", "function", "tests", "notebook", "cell")


@dataclass(frozen=True)
class Entry:
    """One methods statement and where it lives: ``function`` is ``module:qualname``, ``tests`` are
    ``tests/file.py::test_name``, ``cell`` a snippet that appears in one code cell of ``notebook``."""

    section: str
    statement: str
    function: str
    tests: tuple[str, ...]
    notebook: str = ""
    cell: str = ""


E = Entry
ENTRIES: tuple[Entry, ...] = (
    # Data collection
    E("Inclusion and exclusion criteria", "Adults (18 or older) with a pathology-confirmed diagnosis and usable clinical data are included; others are excluded with a reason",
      "amtlib.cohort:clinical_reason", ("tests/test_cohort.py::test_clinical_reason_edge_cases",), "01_cohort", "cohort.build_cohort("),
    E("Inclusion and exclusion criteria", "Patients whose chest CT is incomplete or of poor quality are excluded; the defect is named",
      "amtlib.dicom.dicomio:check_series", ("tests/test_dicomio.py::test_missing_slice_is_reported",
                                      "tests/test_dicomio.py::test_truncated_and_non_dicom_files_are_reported"), "01_cohort", "cohort.build_cohort("),
    E("Inclusion and exclusion criteria", "One series per patient: the referring hospital's original if present, else the central hospital's",
      "amtlib.cohort:rank_series", ("tests/test_cohort.py::test_series_rule_prefers_referral_original_and_falls_back",), "01_cohort", "cohort.build_cohort("),
    E("Inclusion and exclusion criteria", "The screened patients pass the criteria to give the included cohort and the flow counts of Fig. 2",
      "amtlib.cohort:build_cohort", ("tests/test_cohort.py::test_each_patient_gets_the_expected_inclusion_or_reason",
                                     "tests/test_cohort.py::test_cohort_flow_counts"), "01_cohort", "cohort.build_cohort("),
    E("Data collection", "CT series are read from DICOM into HU volumes with their geometry",
      "amtlib.dicom.dicomio:read_series", ("tests/test_dicomio.py::test_roundtrip_identical_hu_and_geometry",
                                     "tests/test_dicomio.py::test_geometry_matches_simpleitk"), "01_cohort", "cohort.build_cohort("),
    E("Data collection", "A DICOM tree is scanned into one row per series with the tags the criteria need",
      "amtlib.dicom.dicomio:scan_tree", ("tests/test_dicomio.py::test_header_tags_and_scan_tree",), "01_cohort", "cohort.build_cohort("),
    E("Data collection", "Reference tumour masks drawn in clinical tools come in as DICOM SEG, placed on the series by referenced slice or position",
      "amtlib.dicom.annotations:read_seg", ("tests/test_annotations.py::test_highdicom_seg_segments_by_label_and_number",
                                      "tests/test_cohort_realworld.py::test_included_cases_have_the_right_voxels_and_patient"), "01_cohort", "cohort.build_cohort("),
    E("Data collection", "Reference contours kept as RT structure sets are filled on the series grid in world coordinates (holes even-odd)",
      "amtlib.dicom.annotations:read_rtstruct", ("tests/test_annotations.py::test_hand_made_rtstruct_with_hole_and_island",
                                           "tests/test_annotations.py::test_boundary_convention_centres_on_edges"), "01_cohort", "cohort.build_cohort("),
    E("Data collection", "NIfTI/NRRD reference masks on the image grid in any axis order or flip are reoriented by world coordinates; other grids are refused",
      "amtlib.masks:mask_on_image_grid", ("tests/test_dicom_real.py::test_masks_in_every_common_convention_land_on_the_same_voxels",
                                          "tests/test_dicom_real.py::test_mask_off_the_grid_is_refused_with_the_distance"), "01_cohort", "cohort.build_cohort("),
    # Dataset splitting
    E("Dataset splitting", "Cases from referral institutions outside the development cohort form the external test set",
      "amtlib.split:external_institutions", ("tests/test_split.py::test_external_rules",), "02_split", "split.make_split("),
    E("Dataset splitting", "The development cohort is split at random into training and tuning sets (485 / 62)",
      "amtlib.split:assign_splits", ("tests/test_split.py::test_assign_splits_sizes_and_determinism",
                                     "tests/test_split.py::test_paper_fraction_gives_paper_sizes"), "02_split", "split.make_split("),
    E("Dataset splitting", "No institution is shared by the external test set and the development sets; no patient straddles sets",
      "amtlib.split:leakage_audit", ("tests/test_split.py::test_audit_catches_institution_in_external_and_development",
                                     "tests/test_split.py::test_patients_with_two_cases_never_straddle_splits"), "02_split", "split.make_split("),
    E("Dataset splitting", "The split is written with its leakage audit and flow counts",
      "amtlib.split:make_split", ("tests/test_split.py::test_make_split_writes_files_and_unseen_background",), "02_split", "split.make_split("),
    E("Results: patient characteristics", "Table 1: age median (range) and histology counts per set",
      "amtlib.cohort:table1", ("tests/test_cohort.py::test_table1_counts_percentages_and_paper_columns",), "02_split", "cohort.table1("),
    E("Results: patient characteristics", "Table 2: scanner manufacturers of the external test set",
      "amtlib.cohort:table2", ("tests/test_cohort.py::test_table2_maps_vendor_names",), "02_split", "cohort.table2("),
    E("Data collection (demo cohort)", "The synthetic demo cohort follows the paper's cohort structure (criteria, institutions, histology, vendors)",
      "amtlib.phantom.clinical:design_cohort", ("tests/test_phantom.py::test_scale_one_clinical_table_matches_paper",), "00_data", "phantom.synthesize_cohort("),
    # Pre-processing and model
    E("Data pre-processing", "Intensities are min-max rescaled to [0, 1] with the minimum and maximum of the (training) data",
      "amtlib.segmentation.preprocess:training_normalisation", ("tests/test_train.py::test_normalisation_uses_training_split_only",
                                                   "tests/test_infer.py::test_normalisation_maps_range_and_clips"), "03_train", "T.prepare_data("),
    E("Deep neural network architecture", "3D U-Net with four levels; encoder conv-BN-ReLU blocks and max pooling, decoder deconv-BN-ReLU blocks, skip connections",
      "amtlib.segmentation.model:UNet3D", ("tests/test_model.py::test_layer_structure_four_levels_conv_bn_relu_pool_deconv",
                              "tests/test_model.py::test_parameter_count_matches_hand_count"), "03_train", "T.build_model("),
    E("Training settings", "Weights drawn from a uniform Glorot distribution, biases set to zero",
      "amtlib.segmentation.model:glorot_init_", ("tests/test_model.py::test_glorot_uniform_bounds_and_zero_biases",), "03_train", "T.build_model("),
    E("Training settings", "Augmentation: axial-plane rotation within 10 degrees and independent axial scaling by 0.8-1.2",
      "amtlib.segmentation.augment:make_affine", ("tests/test_augment.py::test_affine_is_axial_only_and_bounded",
                                     "tests/test_augment.py::test_axial_scales_are_independent_and_z_profile_untouched"), "03_train", "BatchSampler("),
    E("Training settings", "Random crops, each batch holding foreground and background; batch size 3",
      "amtlib.segmentation.augment:BatchSampler", ("tests/test_augment.py::test_every_batch_holds_foreground_and_background_even_with_empty_case",), "03_train", "BatchSampler("),
    E("Training settings", "Adam (lr 0.001 constant, betas 0.9 / 0.999), Dice loss, no early stopping",
      "amtlib.segmentation.train:train", ("tests/test_train.py::test_optimiser_keeps_the_papers_constant_learning_rate_and_betas",
                             "tests/test_train.py::test_train_lowers_the_dice_loss_of_the_training_cases"), "03_train", "T.train("),
    E("Training settings", "The checkpoint with the highest tuning-set Dice is kept for evaluation",
      "amtlib.segmentation.train:tuning_dice", ("tests/test_infer.py::test_one_dice_with_an_explicit_empty_rule",
                                   "tests/test_train.py::test_selection_keeps_the_best_of_several_evaluations_when_a_later_one_is_worse"), "03_train", "T.train("),
    # Evaluation
    E("Voxel-wise segmentation performance metrics", "Dice, IoU, precision and recall per CT series from voxel TP, FP, FN",
      "amtlib.evaluation.metrics:voxel_metrics", ("tests/test_metrics.py::test_exact_fractions_on_a_phantom",
                                       "tests/test_metrics.py::test_matches_monai_on_random_masks"), "04_evaluate", "evaluate.evaluate_cases("),
    E("Evaluation", "Each external-test case is scored once: voxel metrics, tumour size and lesion counts",
      "amtlib.evaluation.evaluate:score_case", ("tests/test_evaluate.py::test_score_case_equals_full_volume_computation_on_random_masks",), "04_evaluate", "evaluate.evaluate_cases("),
    E("Evaluation", "All external-test cases are scored; a missing prediction counts as empty",
      "amtlib.evaluation.evaluate:evaluate_cases", ("tests/test_evaluate.py::test_cli_end_to_end_with_missing_and_orphan_predictions",), "04_evaluate", "evaluate.evaluate_cases("),
    E("Results: Table 3", "Metrics are reported as mean and SD over cases with a 95% CI of the mean",
      "amtlib.evaluation.stats:mean_sd_ci", ("tests/test_stats.py::test_percentile_ci_agrees_with_scipy_bootstrap",
                                  "tests/test_stats.py::test_ci_covers_the_true_mean_at_about_the_nominal_rate"), "04_evaluate", "stats.table3("),
    E("Results: Table 3", "Subgroups by scanner manufacturer, tumour size and histology",
      "amtlib.evaluation.stats:table3", ("tests/test_stats.py::test_table3_rows_counts_and_paper_cells",), "04_evaluate", "stats.table3("),
    E("Results: Tables 3-4", "Tumour size is the largest diameter in the axial plane (< 5, 5-8, > 8 cm)",
      "amtlib.geometry:max_axial_diameter_mm", ("tests/test_lesions.py::test_diameter_matches_pyradiomics_maximum_2d_diameter_slice",
                                               "tests/test_subgroups.py::test_size_bin_boundaries"), "04_evaluate", "evaluate.evaluate_cases("),
    E("Post-processing for separating lesion-wise components", "3D connected components; predicted components under 10 voxels removed; reference decomposed the same way",
      "amtlib.evaluation.lesions:lesion_iou", ("tests/test_lesions.py::test_phantom_iou_and_counts",), "05_froc", "evaluate.evaluate_cases("),
    E("Lesion-wise detection performance metrics", "One-to-one matching of predicted and reference lesions; a match needs IoU above the threshold",
      "amtlib.evaluation.lesions:match_lesions", ("tests/test_lesions.py::test_matching_equals_brute_force_on_random_matrices",
                                       "tests/test_lesions.py::test_threshold_is_strict"), "05_froc", "evaluate.evaluate_cases("),
    E("Lesion-wise detection performance metrics", "Unmatched predictions are FPs and unmatched reference lesions FNs",
      "amtlib.evaluation.lesions:detection_counts", ("tests/test_lesions.py::test_phantom_iou_and_counts",), "05_froc", "evaluate.evaluate_cases("),
    E("Lesion-wise detection performance metrics", "The second FP wording: a predicted component overlapping no reference (parameter fp_definition)",
      "amtlib.figures.evaluation:plot_froc_definitions", ("tests/test_lesions.py::test_fp_definitions_on_phantoms",
                                                          "tests/test_audit.py::test_fp_definition_evidence"), "05_froc", "plot_froc_definitions("),
    E("Lesion-wise detection performance metrics", "IoU threshold swept 0.05-0.95 by 0.05; sensitivity and FP per scan give the FROC (Fig. 4)",
      "amtlib.evaluation.stats:froc_curve", ("tests/test_lesions.py::test_froc_pools_lesions_and_scans",), "05_froc", "stats.froc_curve("),
    E("Results: Fig. 4, Table 4", "Lesion sensitivity and FP/scan with SD and 95% CI",
      "amtlib.evaluation.stats:detection_rates", ("tests/test_stats.py::test_detection_rates_ci_coverage_of_a_known_sensitivity",), "05_froc", "stats.froc_curve("),
    E("Results: Table 4", "Lesion metrics at IoU 0.1 and 0.5 per subgroup",
      "amtlib.evaluation.stats:table4", ("tests/test_stats.py::test_table4_overall_equals_froc_and_subgroups_resum_counts",), "05_froc", "stats.table4("),
    # Failure analysis
    E("Results: quantitative analysis of failure modes", "Bottom and top 10% of external-test cases by Dice",
      "amtlib.evaluation.failure:select_groups", ("tests/test_failure.py::test_select_groups_exact_members_and_ties_broken_by_case_id",), "06_failure", "failure.select_groups("),
    E("Results: quantitative analysis of failure modes", "Shape and first-order radiomics features of the reference masks",
      "amtlib.evaluation.radiomics:extract_features", ("tests/test_radiomics.py::test_sphere_volume_and_diameter_match_analytic",), "06_failure", "rad.extract_features("),
    E("Results: quantitative analysis of failure modes", "The two groups compared feature by feature with p-values",
      "amtlib.evaluation.radiomics:compare_groups", ("tests/test_radiomics.py::test_tests_agree_with_scipy_and_statsmodels",), "06_failure", "rad.compare_groups("),
    E("Results: per-case analysis", "Failures sorted into over- and under-segmentation and complete misses",
      "amtlib.evaluation.failure:categorise", ("tests/test_failure.py::test_categorise_hand_cases",), "06_failure", "failure.categorise("),
    E("Results: per-case analysis", "Over-segmentation attributed to the normal structure it enters (aorta, pericardial effusion)",
      "amtlib.evaluation.failure:attribute_false_positives", ("tests/test_failure.py::test_attribute_false_positives_tiny_label_map",), "06_failure", "failure.analyse_cases("),
    E("Results: Fig. 5", "Successful cases (Dice above 0.70) shown in axial, sagittal and coronal views",
      "amtlib.figures.failure:figure5", ("tests/test_failure.py::test_figures_build_from_fixture",), "06_failure", "ffig.figure5("),
    E("Results: Fig. 6", "Failure cases shown by mode with the failing region marked",
      "amtlib.figures.failure:figure6", ("tests/test_failure.py::test_figures_build_from_fixture",), "06_failure", "ffig.figure6("),
)


def resolve_function(ref: str) -> object:
    """Import ``module:qualname`` and return the object; raises ValueError naming what is missing."""
    module, _, qual = ref.partition(":")
    try:
        obj: object = importlib.import_module(module)
    except ImportError as exc:
        raise ValueError(f"{ref}: module {module} does not import ({exc})") from None
    for part in qual.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"{ref}: {module} has no {qual}")
        obj = getattr(obj, part)
    return obj


def has_test(ref: str, root: Path = REPO_ROOT) -> bool:
    """Whether ``tests/file.py::test_name`` names a test function defined in that file."""
    path, _, name = ref.partition("::")
    p = root / path
    if not p.is_file():
        return False
    tree = ast.parse(p.read_text())
    return any(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == name for n in tree.body)


def notebook_cell(notebook: str, snippet: str, root: Path = REPO_ROOT) -> int | None:
    """Index of the first code cell of ``notebooks/<notebook>.ipynb`` containing ``snippet`` (None if none)."""
    p = root / "notebooks" / f"{notebook}.ipynb"
    if not p.is_file():
        return None
    for i, c in enumerate(json.loads(p.read_text())["cells"]):
        if c.get("cell_type") == "code" and snippet in "".join(c.get("source", [])):
            return i
    return None


def unresolved(entries: tuple[Entry, ...] = ENTRIES, root: Path = REPO_ROOT) -> list[str]:
    """One message per entry part that no longer resolves (function, test, notebook cell)."""
    problems = []
    for e in entries:
        try:
            resolve_function(e.function)
        except ValueError as exc:
            problems.append(str(exc))
        problems += [f"{e.function}: test {t} not found" for t in e.tests if not has_test(t, root)]
        if e.notebook and notebook_cell(e.notebook, e.cell, root) is None:
            problems.append(f"{e.function}: no code cell of notebooks/{e.notebook}.ipynb contains {e.cell!r}")
    return problems


def cited_functions(package_dir: Path = REPO_ROOT / "amtlib") -> list[str]:
    """``module:qualname`` of every public function or class whose docstring has a ``Paper:`` line."""
    out = []
    for p in sorted(package_dir.rglob("*.py")):
        module = ".".join(p.relative_to(package_dir.parent).with_suffix("").parts)
        for node in ast.parse(p.read_text()).body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and not node.name.startswith("_"):
                if PAPER_TAG.search(ast.get_docstring(node) or ""):
                    out.append(f"{module}:{node.name}")
    return out


def uncovered(entries: tuple[Entry, ...] = ENTRIES) -> list[str]:
    """Functions citing the paper in their docstring that no entry names."""
    mapped = {e.function for e in entries}
    return [f for f in cited_functions() if f not in mapped]


def table(entries: tuple[Entry, ...] = ENTRIES, root: Path = REPO_ROOT) -> pd.DataFrame:
    """The map as a frame (``methods_map.csv``); ``cell`` is ``cell N: <snippet>`` of the notebook."""
    rows = []
    for e in entries:
        i = notebook_cell(e.notebook, e.cell, root) if e.notebook else None
        rows.append({"section": e.section, "statement": e.statement, "function": e.function,
                     "tests": "; ".join(e.tests), "notebook": e.notebook,
                     "cell": "" if i is None else f"cell {i}: {e.cell}"})
    return pd.DataFrame(rows, columns=list(COLUMNS))


def markdown(entries: tuple[Entry, ...] = ENTRIES) -> str:
    """``docs/methods_map.md``: the map as a Markdown table, grouped in the paper's order."""
    lines = ["# Methods map", "",
             "Each methods statement of the paper (paraphrased) with the function that implements it, the tests",
             "that check it and the notebook cell that runs it. Generated from `amtlib/methods_map.py`",
             "(`python -m amtlib.methods_map > docs/methods_map.md`); `tests/test_methods_map.py` fails when an",
             "entry no longer resolves or a function citing the paper has no entry.", "",
             "| section | statement | function | tests | notebook, cell |", "|---|---|---|---|---|"]
    for r in table(entries).to_dict("records"):
        tests = "<br>".join(f"`{t}`" for t in r["tests"].split("; "))
        lines.append(f"| {r['section']} | {r['statement']} | `{r['function']}` | {tests} | {r['notebook']}, {r['cell']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(markdown())
