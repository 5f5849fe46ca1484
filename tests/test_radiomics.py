"""Tests of amtlib.evaluation.radiomics: pyradiomics on analytic phantoms, failure records, group statistics."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats
from statsmodels.stats.multitest import multipletests

from amtlib import paper
from amtlib.evaluation import radiomics as rad
from conftest import write_nifti_case

REPORTED = Path(__file__).resolve().parents[1] / "amtlib" / "data" / "reported_values.yaml"


def _sphere(shape, centre_mm, radius_mm, spacing):
    grids = np.ogrid[tuple(slice(0, n) for n in shape)]
    d2 = sum(((g * s) - c) ** 2 for g, s, c in zip(grids, spacing, centre_mm))
    return d2 <= radius_mm**2


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (2.0, 0.8, 0.8)])
def test_sphere_volume_and_diameter_match_analytic(spacing):
    radius = 10.0
    shape = tuple(int(math.ceil(30 / s)) for s in spacing)
    mask = _sphere(shape, (15.0, 15.0, 15.0), radius, spacing)
    image = np.where(mask, 40.0, -100.0)
    res = rad.extract_arrays(image, mask, spacing, rad.radiomics_params())
    voxel_mm3 = float(np.prod(spacing))
    assert res["original_shape_VoxelVolume"] == pytest.approx(mask.sum() * voxel_mm3)
    assert res["original_shape_VoxelVolume"] == pytest.approx(4 / 3 * math.pi * radius**3, rel=0.03)
    # mesh vertices sit half a voxel outside the extreme voxel centres on each side
    assert abs(res["original_shape_Maximum3DDiameter"] - 2 * radius) <= max(spacing) + 1e-6
    assert res["original_firstorder_Mean"] == pytest.approx(40.0)
    assert res["original_firstorder_Median"] == pytest.approx(40.0)
    assert res["original_firstorder_TotalEnergy"] == pytest.approx(voxel_mm3 * mask.sum() * 40.0**2)


def test_voxel_array_shift_and_bin_width_are_applied():
    mask = np.zeros((6, 6, 6), bool)
    mask[1:5, 1:5, 1:5] = True
    image = np.where(mask, np.arange(216).reshape(6, 6, 6) % 2 * 30.0 + 10.0, 0.0)  # values 10 and 40
    base = rad.extract_arrays(image, mask, (1.0, 1.0, 1.0), rad.radiomics_params(bin_width=25))
    shifted = rad.extract_arrays(image, mask, (1.0, 1.0, 1.0), rad.radiomics_params(bin_width=100, voxel_array_shift=1000))
    assert base["original_firstorder_Energy"] == pytest.approx(32 * 10**2 + 32 * 40**2)
    assert shifted["original_firstorder_Energy"] == pytest.approx(32 * 1010**2 + 32 * 1040**2)
    assert base["original_firstorder_Entropy"] == pytest.approx(1.0)  # bins [0, 25) and [25, 50)
    assert shifted["original_firstorder_Entropy"] == pytest.approx(0.0, abs=1e-9)  # one bin [0, 100)


def test_features_without_diagnostics_and_with_a_reused_extractor_are_the_same():
    """Issue 13 speed-ups: one extractor per process and settings (built once, reused), and the TET
    settings without pyradiomics' diagnostics. Neither may change a feature: the same values as a
    fresh extractor with diagnostics on, and the diagnostics entries present only when asked for."""
    from radiomics import featureextractor

    from amtlib.classify import arms as clf

    rng = np.random.default_rng(4)
    mask = _sphere((20, 24, 24), (20.0, 24.0, 24.0), 9.0, (2.0, 2.0, 2.0))
    image = np.where(mask, rng.normal(40, 15, mask.shape), rng.normal(-60, 20, mask.shape))
    tet = clf.tet_radiomics_params(3.0, 32, True)
    assert tet["setting"]["additionalInfo"] is False
    on = {**tet, "setting": {**tet["setting"], "additionalInfo": True}}
    quick = rad.extract_arrays(image, mask, (2.0, 2.0, 2.0), tet)
    again = rad.extract_arrays(image, mask, (2.0, 2.0, 2.0), tet)
    full = rad.extract_arrays(image, mask, (2.0, 2.0, 2.0), on)
    features = [k for k in full if k.startswith("original_")]
    assert len(features) > 90 and not any(k.startswith("diagnostics_") for k in quick)
    assert any(k.startswith("diagnostics_") for k in full)
    assert {k: quick[k] for k in features} == {k: full[k] for k in features} == {k: again[k] for k in features}
    assert rad._extractor(tet) is rad._extractor(dict(tet)) and rad._extractor(tet) is not rad._extractor(on)
    # a fresh pyradiomics extractor, outside the cache, agrees too
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(image.astype(np.float32))
    msk = sitk.GetImageFromArray(mask.astype(np.uint8))
    for i in (img, msk):
        i.SetSpacing((2.0, 2.0, 2.0))
    fresh = featureextractor.RadiomicsFeatureExtractor(on).execute(img, msk)
    for k in features:
        assert float(fresh[k]) == pytest.approx(quick[k], rel=1e-12, abs=1e-12), k


def test_params_file_round_trips_and_configures_pyradiomics(tmp_path):
    from radiomics import featureextractor

    params = rad.radiomics_params(bin_width=10, resampled_spacing_mm=(1.0, 1.0, 2.0), minimum_roi_size=5)
    path = rad.write_params(params, tmp_path / "params.yaml")
    assert yaml.safe_load(path.read_text()) == params
    ext = featureextractor.RadiomicsFeatureExtractor(str(path))
    assert ext.settings["binWidth"] == 10 and ext.settings["resampledPixelSpacing"] == [1.0, 1.0, 2.0]
    assert set(ext.enabledFeatures) == {"shape", "firstorder"}


def _write_case(folder, case_id, mask, image=None, mask_shape=None, spacing=(2.0, 1.0, 1.0)):
    image = np.where(mask, 50, -100).astype(np.int16) if image is None else image
    m = mask if mask_shape is None else np.zeros(mask_shape, np.uint8)
    if mask_shape is not None:
        m[2:5, 2:5, 2:5] = 1
    c = write_nifti_case(folder, case_id, image, m, spacing=spacing, origin=(0.0, 0.0, 0.0),
                         image_name="{case_id}_img.nii.gz", mask_name="{case_id}_mask.nii.gz")
    return {"case_id": case_id, "image_path": str(c.image_path), "mask_path": str(c.mask_path)}


def test_failed_cases_are_kept_with_reasons(tmp_path):
    good = np.zeros((8, 12, 12), bool)
    good[2:6, 3:9, 3:9] = True
    single = np.zeros((8, 12, 12), bool)
    single[4, 6, 6] = True
    cases = pd.DataFrame(
        [
            {**_write_case(tmp_path, "good", good), "group": "top"},
            {**_write_case(tmp_path, "tiny", single), "group": "bottom"},
            {**_write_case(tmp_path, "offgrid", good, mask_shape=(8, 12, 11)), "group": "bottom"},
            {"case_id": "absent", "image_path": str(tmp_path / "no.nii.gz"), "mask_path": str(tmp_path / "no.nii.gz"), "group": "top"},
        ]
    )
    features, diagnostics = rad.extract_features(cases, rad.radiomics_params(), progress=False)
    assert features["case_id"].tolist() == ["good", "tiny", "offgrid", "absent"]
    assert features["status"].tolist() == ["ok", "failed", "failed", "failed"]
    errors = dict(zip(features["case_id"], features["error"]))
    assert errors["offgrid"].startswith("ValueError: geometry mismatch: mask size (11, 12, 8)")
    assert "no.nii.gz: file not found" in errors["absent"]
    assert errors["tiny"]  # pyradiomics refuses a 1-voxel ROI (fewer than 2 dimensions)
    assert features.loc[0, "original_shape_VoxelVolume"] == pytest.approx(good.sum() * 2.0)
    assert features.loc[1:, "original_shape_VoxelVolume"].isna().all()
    assert diagnostics.loc[0, "diagnostics_Mask-original_VoxelNum"] == float(good.sum())
    assert rad.failed_cases(features)["case_id"].tolist() == ["tiny", "offgrid", "absent"]
    tests = rad.compare_groups(features, columns=["original_shape_VoxelVolume"])
    assert tests.loc[0, ["n_top", "n_bottom", "n_missing"]].tolist() == [1, 0, 3]
    assert math.isnan(tests.loc[0, "p_value"])


def test_parallel_extraction_matches_serial(tmp_path):
    rows = []
    for i, size in enumerate((3, 4, 5)):
        mask = np.zeros((8, 12, 12), bool)
        mask[1 : 1 + size, 2 : 2 + size, 2 : 2 + size] = True
        rows.append(_write_case(tmp_path, f"c{i}", mask))
    cases = pd.DataFrame(rows)
    serial, _ = rad.extract_features(cases, rad.radiomics_params(), workers=1, progress=False)
    parallel, _ = rad.extract_features(cases, rad.radiomics_params(), workers=2, progress=False)
    pd.testing.assert_frame_equal(serial, parallel)
    assert serial["original_shape_VoxelVolume"].tolist() == [27 * 2.0, 64 * 2.0, 125 * 2.0]


# ---------------------------------------------------------------------------------------------------
# Statistics
# ---------------------------------------------------------------------------------------------------
def _groups_frame(top, bottom, column="original_shape_VoxelVolume"):
    return pd.DataFrame({"group": ["top"] * len(top) + ["bottom"] * len(bottom), column: list(top) + list(bottom)})


def test_perfect_separation_four_vs_four_exact_p():
    tests = rad.compare_groups(_groups_frame([5, 6, 7, 8], [1, 2, 3, 4]))
    row = tests.iloc[0]
    assert row["p_value"] == pytest.approx(2 / 70, abs=1e-12)  # 2 of C(8,4) = 70 orderings this extreme
    assert row["statistic"] == 16.0
    assert row["rank_biserial"] == 1.0
    assert row["median_top"] == 6.5 and row["q1_bottom"] == 1.75 and row["q3_bottom"] == 3.25
    assert row["feature_class"] == "shape" and row["name"] == "VoxelVolume"
    assert bool(row["significant"]) and row["q_value"] == pytest.approx(2 / 70)
    reverse = rad.compare_groups(_groups_frame([1, 2, 3, 4], [5, 6, 7, 8]))
    assert reverse.loc[0, "rank_biserial"] == -1.0


def test_tests_agree_with_scipy_and_statsmodels():
    rng = np.random.default_rng(7)
    frame = pd.DataFrame({"group": ["top"] * 17 + ["bottom"] * 17})
    columns = []
    for k, shift in enumerate((0.0, 0.5, 1.5)):
        col = f"original_firstorder_F{k}"
        frame[col] = np.round(np.r_[rng.normal(shift, 1, 17), rng.normal(0, 1, 17)], 1)  # rounding makes ties
        columns.append(col)
    frame.loc[3, columns[0]] = np.nan
    for test in ("mannwhitney", "welch"):
        out = rad.compare_groups(frame, test=test)
        expected_p = []
        for col in columns:
            a = frame.loc[frame["group"] == "top", col].dropna()
            b = frame.loc[frame["group"] == "bottom", col].dropna()
            if test == "mannwhitney":
                ref = stats.mannwhitneyu(a, b, alternative="two-sided")
                u = stats.mannwhitneyu(a, b).statistic
                assert out.set_index("feature").loc[col, "rank_biserial"] == pytest.approx(2 * u / (len(a) * len(b)) - 1)
            else:
                ref = stats.ttest_ind(a, b, equal_var=False)
            expected_p.append(ref.pvalue)
            assert out.set_index("feature").loc[col, "statistic"] == pytest.approx(ref.statistic)
        assert out["p_value"].to_numpy() == pytest.approx(expected_p)
        assert out["q_value"].to_numpy() == pytest.approx(multipletests(expected_p, method="fdr_bh")[1])
    assert out.loc[0, "n_top"] == 16 and out.loc[0, "n_missing"] == 1


def test_bh_q_values_by_hand():
    frame = pd.DataFrame({"group": ["top"] * 4 + ["bottom"] * 4})
    frame["original_shape_A"] = [5, 6, 7, 8, 1, 2, 3, 4]
    frame["original_shape_B"] = [1, 2, 3, 4, 5, 6, 7, 8]
    frame["original_shape_C"] = [1, 3, 5, 7, 2, 4, 6, 8]
    out = rad.compare_groups(frame)
    p_c = out.loc[2, "p_value"]
    assert out["p_value"].tolist()[:2] == pytest.approx([2 / 70, 2 / 70])
    assert p_c > 3 / 70
    # BH: q_(i) = min over k >= i of p_(k) m / k, so the two smallest share 2/70 * 3/2
    assert out["q_value"].tolist() == pytest.approx([3 / 70, 3 / 70, p_c])
    assert out["significant"].tolist() == [True, True, False]
    assert out["significant_bh"].tolist() == [True, True, False]
    assert rad.compare_groups(frame, columns=[]).empty


def test_unknown_test_is_refused():
    with pytest.raises(ValueError, match="radiomics_test"):
        rad.compare_groups(_groups_frame([1], [2]), test="ks")


def test_focused_table_places_reported_p_values():
    tests = pd.DataFrame(
        {
            "feature": list(paper.NAMED_FEATURES.values())[:4],
            "n_top": 17,
            "n_bottom": 17,
            "n_missing": 0,
            "median_top": 1.0,
            "median_bottom": 0.5,
            "p_value": [0.001, 0.2, 0.01, 0.5],
            "q_value": [0.004, 0.25, 0.02, 0.5],
            "rank_biserial": [0.5, -0.25, 0.5, 0.0],
        }
    )
    table = paper.focused_table(tests, yaml.safe_load(REPORTED.read_text())["radiomics_failure_modes"])
    assert table["name"].tolist() == ["VoxelVolume", "Maximum3DDiameter", "TotalEnergy", "Mean", "Median"]
    assert table["p_reported"].tolist() == [0.003, 0.025, 0.009, 0.42, 0.33]
    assert table["agrees"].tolist()[:4] == [True, False, True, True]
    assert table["larger_in"].tolist() == ["top", "bottom", "top", "", ""]
    assert pd.isna(table.loc[4, "agrees"]) and pd.isna(table.loc[4, "p_value"])


def test_format_p():
    assert rad.format_p(0.0004) == "< 0.001" and rad.format_p(0.0254) == "0.025" and rad.format_p(float("nan")) == "–"
