"""Tests for amtlib.phantom: paper counts at scale 1, tumour placement, defects, determinism, layout."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from amtlib.dicom import dicomio
from amtlib.io import load_nifti
from amtlib.paper import reported
from amtlib.phantom import (
    FORBIDDEN_CODES, LABELS, _apply_defect, load_background, max_axial_diameter_mm, procedural_background, render_case,
    size_bin, synthesize_cohort, tumour_bounding_region,
)
from amtlib.phantom.backgrounds import HEART, TUMOUR_ALLOWED
from amtlib.phantom.clinical import HISTOLOGIES, allocate, ages_with_median_range, design_cohort

SPLIT_KEY = {"train": "training", "tuning": "tuning", "external_test": "external_testing"}


def test_allocate_largest_remainder_hand_cases() -> None:
    assert allocate(10, [1, 1, 1]) == [4, 3, 3]
    assert allocate(7, [5, 3, 2]) == [4, 2, 1]  # 3.5, 2.1, 1.4 -> floors 3,2,1, remainder to the 0.5
    assert allocate(5, [100, 1, 0]) == [4, 1, 0]  # the tiny category keeps one, zero stays zero
    assert allocate(1, [5, 1]) == [1, 0]  # too few to keep every category


def test_ages_have_exact_median_and_range() -> None:
    rng = np.random.default_rng(0)
    for n, med, lo, hi in [(62, 60.5, 23, 87), (485, 58.0, 20, 87), (7, 40.0, 30, 50)]:
        ages = ages_with_median_range(n, med, lo, hi, rng)
        assert len(ages) == n and np.median(ages) == med and ages.min() == lo and ages.max() == hi


def test_scale_one_clinical_table_matches_paper() -> None:
    d = design_cohort(1.0, seed=0)
    t1, t2 = reported()["table1"], reported()["table2"]
    inc = d[d["intended_exclusion"] == ""]
    assert (len(d), len(d) - len(inc), len(inc)) == (858, 147, 711)
    assert inc["institution"].nunique() == 136
    ext = inc[inc["intended_split"] == "external_test"]
    dev = inc[inc["intended_split"] != "external_test"]
    assert (len(ext), ext["institution"].nunique()) == (164, 121)
    assert (len(dev), dev["institution"].nunique()) == (547, 15)
    assert set(ext["institution"]).isdisjoint(dev["institution"])
    assert set(ext["role"]) == {"external_candidate"} and set(dev["role"]) == {"development"}
    assert ((inc["sex"] == "M").sum(), (inc["sex"] == "F").sum()) == (339, 372)
    for split, key in SPLIT_KEY.items():
        part = inc[inc["intended_split"] == split]
        assert len(part) == {"train": 485, "tuning": 62, "external_test": 164}[split]
        for h in HISTOLOGIES:
            assert (part["histology"] == h).sum() == t1["histology_counts"][h][key], (split, h)
        med, lo, hi = t1["age_median_range"][key]
        assert (part["age"].median(), part["age"].min(), part["age"].max()) == (med, lo, hi)
    assert ext["vendor"].value_counts().to_dict() == t2
    assert set(ext["slice_thickness_mm"]) == {5.0}
    assert ext["size_bin"].value_counts().to_dict() == {"small": 39, "medium": 57, "large": 68}
    central = d[d["institution"] == "CENTRAL"]
    assert set(central["vendor"]) == {"canon_medical_systems"} and set(central["kvp"]) == {120}
    assert set(central["slice_thickness_mm"]) <= {5.0, 7.0, 10.0}
    assert d["kvp"].between(100, 135).all() and d["slice_thickness_mm"].between(5, 10).all()
    excl = d[d["intended_exclusion"] != ""]
    assert (excl.loc[excl["intended_exclusion"] == "age_under_18", "age"] < 18).all()
    assert not excl.loc[excl["intended_exclusion"] == "no_pathology", "pathology_confirmed"].any()
    missing = excl[excl["intended_exclusion"] == "missing_clinical_data"]
    assert (missing["age"].isna() | (missing["sex"] == "")).all()
    assert (excl["intended_exclusion"].isin(["poor_image_quality", "incomplete_series"]) == (excl["defect"] != "")).all()


def test_small_scale_keeps_rare_categories_and_is_deterministic() -> None:
    d = design_cohort(0.25, seed=3)
    ext = d[(d["intended_exclusion"] == "") & (d["intended_split"] == "external_test")]
    assert len(ext) == 41
    assert {"carcinoid", "teratoma", "sarcomatous_transformation_of_teratoma"} <= set(ext["histology"])
    assert set(ext["vendor"]) == set(reported()["table2"])
    pd.testing.assert_frame_equal(d, design_cohort(0.25, seed=3))


def test_max_axial_diameter_exact() -> None:
    sq = np.zeros((3, 8, 8), bool)
    sq[1, 1:6, 1:6] = True  # 5x5 pixels: the pixel outline (edge midpoints, as pyradiomics) spans sqrt(5^2 + 4^2)
    assert max_axial_diameter_mm(sq, (5.0, 1.0, 1.0)) == pytest.approx(np.sqrt(41))
    line = np.zeros((2, 3, 12), bool)
    line[0, 1, 1:11] = True
    assert max_axial_diameter_mm(line, (5.0, 0.5, 2.0)) == pytest.approx(20.0)
    assert max_axial_diameter_mm(np.zeros((2, 2, 2), bool), (1, 1, 1)) == 0.0
    assert [size_bin(d) for d in (49.9, 50.0, 80.0, 80.1)] == ["small", "medium", "medium", "large"]


def _check_placement(bg, design: dict, seed: int) -> None:
    case = render_case(bg, design, np.random.default_rng(seed), crop_yx=(120, 144))
    mask = case.mask > 0
    assert mask.any()
    assert not np.isin(case.organs[mask], FORBIDDEN_CODES).any(), "tumour overlaps bone/vessel/heart/airway"
    assert np.isin(case.organs[mask], TUMOUR_ALLOWED).all()
    assert tumour_bounding_region(case.organs)[mask].all()
    heart_z = np.flatnonzero((case.organs == HEART).any(axis=(1, 2)))
    cz, cy, _ = (np.array(np.nonzero(mask)).mean(axis=1))
    assert heart_z.max() - 8 * 10 / case.spacing[0] <= cz <= heart_z.max() + 90 / case.spacing[0]
    assert cy < np.nonzero(case.organs == HEART)[1].mean(), "tumour centre not anterior to the heart"
    assert case.facts["size_bin_measured"] == design["size_bin"]
    assert np.array_equal(case.anatomy == LABELS["tumour"], mask)


DESIGNS = [
    dict(histology="thymoma", size_bin="medium", slice_thickness_mm=5.0, fov_mm=370, vendor="siemens",
         effusion=True, abut_aorta=False, low_contrast=False),
    dict(histology="thymic_cyst", size_bin="small", slice_thickness_mm=7.0, fov_mm=340, vendor="canon_medical_systems",
         effusion=False, abut_aorta=True, low_contrast=True),
    dict(histology="teratoma", size_bin="large", slice_thickness_mm=5.0, fov_mm=420, vendor="ge_healthcare",
         effusion=False, abut_aorta=False, low_contrast=False),
]


@pytest.mark.parametrize("design", DESIGNS, ids=lambda d: d["histology"])
def test_tumour_in_prevascular_region_procedural(design: dict) -> None:
    _check_placement(procedural_background(), design, seed=1)


def test_tumour_in_prevascular_region_real_lidc() -> None:
    from amtlib.fetch import cached_backgrounds

    if cached_backgrounds() is None:
        pytest.skip("real backgrounds not cached (run `amt fetch`)")
    bg = load_background("lidc")
    for seed, design in enumerate(DESIGNS):
        _check_placement(bg, design, seed)


def test_effusion_is_next_to_heart_and_near_water() -> None:
    case = render_case(procedural_background(), DESIGNS[0], np.random.default_rng(4), crop_yx=(120, 144))
    eff = case.anatomy == LABELS["pericardial_effusion"]
    assert eff.any() and case.facts["effusion_ml"] > 0
    assert -15 < float(np.median(case.hu[eff])) < 40
    from scipy import ndimage as ndi

    assert (ndi.binary_dilation(case.organs == HEART, iterations=12) & eff).sum() == eff.sum()


@pytest.mark.parametrize("kind, problem", [
    ("missing_slices", "missing slice"), ("uneven_spacing", "uneven slice spacing"),
    ("truncated_file", "truncated: PixelData holds"), ("non_dicom_file", "not parseable as DICOM"),
])
def test_defects_are_really_malformed(tmp_path: Path, kind: str, problem: str) -> None:
    vol = np.zeros((8, 6, 6), np.float32)
    files = dicomio.write_ct_series(vol, (5.0, 1.0, 1.0), tmp_path / "s", {"PatientID": "X"}, 0)
    assert dicomio.check_series(tmp_path / "s") == []
    _apply_defect(files, kind, np.random.default_rng(0))
    assert any(problem in p for p in dicomio.check_series(tmp_path / "s"))


def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def test_cohort_is_deterministic_and_follows_the_contract(tmp_path: Path) -> None:
    kw = dict(scale=0.01, seed=5, backgrounds="procedural", crop_yx=(64, 80))
    summary = synthesize_cohort(tmp_path / "a", workers=1, **kw)
    synthesize_cohort(tmp_path / "b", workers=2, **kw)
    assert _hashes(tmp_path / "a") == _hashes(tmp_path / "b")
    raw = tmp_path / "a"
    clinical = pd.read_csv(raw / "clinical.csv", dtype={"patient_id": str})
    assert list(clinical.columns[:7]) == ["patient_id", "institution", "age", "sex", "histology", "pathology_confirmed", "scan_date"]
    assert {"intended_exclusion", "background", "role", "intended_split"} <= set(clinical.columns)
    assert len(clinical) == summary["screened"] == 9
    series = dicomio.scan_tree(raw / "dicom").series
    syn = pd.read_csv(raw / "synthesis.csv")
    assert set(series["series_uid"]) == set(syn["series_uid"])
    for _, r in syn.iterrows():
        folder = raw / r["series_folder"]
        problems = dicomio.check_series(folder)
        assert bool(problems) == isinstance(r["defect"], str), (r["series_folder"], problems)
        if not problems:
            vol, geom = dicomio.read_series(folder)
            mask, _, affine = load_nifti(raw / "masks" / f"{r['series_uid']}.nii.gz")
            assert mask.shape == vol.shape and np.allclose(affine, geom["affine"], atol=1e-4)
            assert set(np.unique(mask)) == {0, 1}


def test_no_images_writes_tiny_valid_series(tmp_path: Path) -> None:
    summary = synthesize_cohort(tmp_path, scale=0.02, seed=0, backgrounds="procedural", images=False)
    series = dicomio.scan_tree(tmp_path / "dicom").series
    assert len(series) == summary["series"] and summary["screened"] == 17
    syn = pd.read_csv(tmp_path / "synthesis.csv")
    ok = syn[syn["defect"].isna()].iloc[0]
    vol, _ = dicomio.read_series(tmp_path / ok["series_folder"])
    assert vol.shape == (4, 16, 16)


def _mask_hu_gap(design: dict, seed: int) -> tuple[float, float]:
    """Mean HU of the reference minus the designed tumour mean, and the max axial diameter."""
    case = render_case(procedural_background(), design, np.random.default_rng(seed), crop_yx=(120, 144))
    m = case.mask > 0
    return float(case.hu[m].mean()) - case.facts["tumour_mean_hu_design"], case.facts["max_axial_diameter_mm"]


def test_reference_mean_hu_does_not_depend_on_tumour_size() -> None:
    """Partial volume at the edge must not lower small tumours' mean HU (the paper: mean HU does not
    separate good from bad cases); scanner blur is a PSF in mm, so it does not grow on coarse grids."""
    base = dict(histology="lymphoma", slice_thickness_mm=5.0, fov_mm=400, vendor="fujifilm", effusion=False,
                abut_aorta=False, low_contrast=False)
    gaps = {"small": [], "large": []}
    for seed in range(4):
        for size in gaps:
            gap, diameter = _mask_hu_gap({**base, "size_bin": size}, seed)
            assert (diameter < 50) if size == "small" else (diameter > 80)
            gaps[size].append(gap)
    # texture and noise move one case by about 7 HU; a 1-1.6 mm blur (the old pixel-based one) gave
    # small-tumour gaps of -36 to -92 HU on this design
    small, large = np.mean(gaps["small"]), np.mean(gaps["large"])
    assert abs(small) < 10 and abs(large) < 10 and abs(small - large) < 10, gaps


def test_low_contrast_tumour_keeps_its_attenuation_in_a_thymic_bed() -> None:
    from amtlib.evaluation.failure import tumour_contrast_hu

    design = dict(histology="thymoma", size_bin="small", slice_thickness_mm=5.0, fov_mm=360, vendor="siemens",
                  effusion=False, abut_aorta=False, low_contrast=True)
    contrasts = {}
    for low in (True, False):
        case = render_case(procedural_background(), {**design, "low_contrast": low}, np.random.default_rng(3), crop_yx=(120, 144))
        m = case.mask > 0
        bed = case.anatomy == LABELS["thymic_bed"]
        contrasts[low] = tumour_contrast_hu(case.hu, case.mask, case.spacing)
        # unenhanced thymoma 25-65 HU (+10-50 on contrast CT): a low-contrast tumour is not a low-HU one
        assert 20 < float(np.median(case.hu[m])) < 120
        if low:
            from scipy import ndimage as ndi

            assert bed.any() and not (bed & m).any() and case.facts["thymic_bed_ml"] > 0
            assert (ndi.binary_dilation(m, iterations=3) & bed).sum() > 0.3 * bed.sum() ** (2 / 3)
            assert np.isin(case.organs[bed], (0, 250)).all()  # unlabelled mediastinal tissue only
            assert 0 < float(np.median(case.hu[m]) - np.median(case.hu[bed])) < 30
        else:
            assert not bed.any()
    assert contrasts[True] < 40 < 100 < contrasts[False], contrasts


def test_regenerating_replaces_the_whole_cohort(tmp_path: Path) -> None:
    """A cohort of another scale or seed must leave nothing behind (the cohort build walks the tree)."""
    kw = dict(backgrounds="procedural", images=False)
    synthesize_cohort(tmp_path / "raw", scale=0.03, seed=1, **kw)
    synthesize_cohort(tmp_path / "raw", scale=0.02, seed=0, **kw)
    synthesize_cohort(tmp_path / "fresh", scale=0.02, seed=0, **kw)
    assert _hashes(tmp_path / "raw") == _hashes(tmp_path / "fresh")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fresh", "raw"]  # no partial or old folders left


def test_refuses_to_replace_a_folder_that_is_not_a_generated_cohort(tmp_path: Path) -> None:
    mine = tmp_path / "my_data"
    mine.mkdir()
    (mine / "patient.dcm").write_bytes(b"precious")
    with pytest.raises(ValueError, match="my_data: exists and is not a generated cohort"):
        synthesize_cohort(mine, scale=0.02, seed=0, backgrounds="procedural", images=False)
    assert [p.name for p in mine.iterdir()] == ["patient.dcm"] and (mine / "patient.dcm").read_bytes() == b"precious"


# --- classifier columns and imaging correlates (issue 17) --------------------------------------------

def test_classification_columns_follow_the_papers_and_leave_the_design_unchanged() -> None:
    from amtlib.phantom.clinical import CLASSIFICATION_COLUMNS, draw_classification_columns

    full = design_cohort(1.0, 0)
    base = full.drop(columns=list(CLASSIFICATION_COLUMNS))
    again = draw_classification_columns(base, 0)
    # the new columns come from their own stream: recomputing them from the old columns gives the same
    for c in CLASSIFICATION_COLUMNS:
        assert again[c].astype(str).tolist() == full[c].astype(str).tolist()
    assert again.drop(columns=list(CLASSIFICATION_COLUMNS)).equals(base)
    thy = full[full["histology"] == "thymoma"]
    assert set(thy["who_subtype"]) == {"A", "AB", "B1", "B2", "B3"}
    assert (full.loc[full["histology"] != "thymoma", "who_subtype"] == "").all()
    lrt = thy["who_subtype"].isin(["A", "AB", "B1"])
    assert (thy.loc[lrt, "risk_group"] == "LRT").all() and (thy.loc[~lrt, "risk_group"] == "HRT").all()
    assert lrt.mean() == pytest.approx(81 / 266, abs=0.05)  # TET paper's LRT share
    assert (full.loc[full["histology"] == "thymic_carcinoma", "risk_group"] == "TC").all()
    margin = full.groupby("risk_group")["margin_irregular"].mean()
    assert margin["LRT"] == pytest.approx(10 / 81, abs=0.07) and margin["HRT"] == pytest.approx(126 / 185, abs=0.07)
    assert full.loc[full["risk_group"] == "", "margin_irregular"].isna().all()
    cyst = full.loc[full["histology"] == "thymic_cyst", "ctc_level"]
    assert cyst.mean() == pytest.approx(10.38, abs=1.5) and (full["ctc_level"] >= 0).all()


def test_imaging_correlates_change_only_flagged_tumours() -> None:
    design = dict(DESIGNS[0], effusion=False)
    plain = render_case(procedural_background(), design, np.random.default_rng(5), crop_yx=(120, 144))
    # without the flags the correlates' stream is never read: same image whatever it is
    other = render_case(procedural_background(), {**design, "margin_irregular": 0, "heterogeneous_enhancement": None},
                        np.random.default_rng(5), crop_yx=(120, 144), correlates_rng=np.random.default_rng(99))
    assert np.array_equal(plain.hu, other.hu) and np.array_equal(plain.mask, other.mask)
    het = render_case(procedural_background(), {**design, "heterogeneous_enhancement": 1}, np.random.default_rng(5),
                      crop_yx=(120, 144), correlates_rng=np.random.default_rng(1))
    m = plain.mask > 0
    assert np.array_equal(het.mask, plain.mask)  # enhancement changes HU inside, not the outline
    assert float(np.std(het.hu[m])) > float(np.std(plain.hu[m])) and float(np.mean(het.hu[m])) < float(np.mean(plain.hu[m]))
    irr = render_case(procedural_background(), {**design, "margin_irregular": 1}, np.random.default_rng(5),
                      crop_yx=(120, 144), correlates_rng=np.random.default_rng(1))
    from scipy import ndimage as ndi

    def surface_ratio(mask: np.ndarray) -> float:
        edge = mask & ~ndi.binary_erosion(mask, structure=np.ones((1, 3, 3), bool))
        return float(edge.sum()) / float(mask.sum()) ** (2 / 3)

    assert surface_ratio(irr.mask > 0) > surface_ratio(m)
