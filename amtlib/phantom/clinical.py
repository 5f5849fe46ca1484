"""Design of the synthetic screened cohort: one row per patient, with the paper's counts at scale 1.0.

Paper sections: Inclusion and exclusion criteria (858 screened, 147 excluded, 711 included from 136
institutions), Dataset splitting (164 external test cases from 121 institutions; 547 development cases
from 15 institutions, 485 training / 62 tuning), Table 1 (histology, age, sex) and Table 2 (vendors of
the external test set), Image acquisition protocol (central hospital Canon, 120 kV, 5/7/10 mm;
referral hospitals five vendors, 100-135 kV, 5-10 mm; external test all 5 mm).

Smaller scales keep the proportions by largest-remainder rounding, and every nonzero category keeps at
least one case when the total allows it. Choices the paper does not state (exclusion reasons'
shares, development institution sizes, per-vendor models, kernels and kVp, second-series rate) are
module constants below.
"""

from __future__ import annotations

from datetime import date, timedelta

from typing import Any

import numpy as np
import pandas as pd

from amtlib.errors import AmtError
from amtlib.reported import CTC_ROW, reported

#: Why a screened patient is built to be excluded, with its share of the 147 (our choice).
EXCLUSION_REASONS: dict[str, int] = {
    "poor_image_quality": 45,      # unreadable file: truncated pixel data or a non-DICOM file
    "incomplete_series": 40,       # missing slices or inconsistent slice spacing
    "age_under_18": 10,
    "missing_clinical_data": 27,   # age or sex empty
    "no_pathology": 25,            # pathology_confirmed False
}
#: Which file defects realise each image-level exclusion reason.
DEFECTS: dict[str, tuple[str, ...]] = {
    "poor_image_quality": ("truncated_file", "non_dicom_file"),
    "incomplete_series": ("missing_slices", "uneven_spacing"),
}
HISTOLOGIES: tuple[str, ...] = (
    "thymoma", "thymic_carcinoma", "lymphoma", "thymic_cyst", "teratoma", "carcinoid",
    "sarcomatous_transformation_of_teratoma",
)
SPLITS: tuple[str, ...] = ("train", "tuning", "external_test")
_TABLE1_SPLIT = {"train": "training", "tuning": "tuning", "external_test": "external_testing"}
SIZE_BINS: tuple[str, ...] = ("small", "medium", "large")
#: External test size bins in the paper (Tables 3-4: < 5, 5-8, > 8 cm max axial diameter).
SIZE_BIN_COUNTS: dict[str, int] = {"small": 39, "medium": 57, "large": 68}
#: Development referral institution sizes at scale 1 (the central hospital takes the rest of 547);
#: many small institutions make a random 62-case tuning set touch few of them, as in the paper.
DEV_REFERRAL_SIZES: tuple[int, ...] = (4, 3, 3, 2, 2, 2, 2, 2, 1, 1, 1, 1, 1, 1)
CENTRAL = "CENTRAL"

#: Per vendor: DICOM Manufacturer, models, soft-tissue kernels, kVp choices, added noise SD (HU),
#: in-plane blur sigma in mm (a soft-tissue kernel's point-spread function, MTF50 of about 3-4 lp/cm)
#: and HU calibration offset range (our choice, typical values).
VENDORS: dict[str, dict] = {
    "canon_medical_systems": {
        "manufacturer": "CANON_MEC", "models": ("Aquilion", "Aquilion Prime", "Aquilion ONE"),
        "kernels": ("FC13", "FC03", "FC08"), "kvp": (100, 120, 135), "noise": (7, 13), "blur_mm": (0.4, 0.6), "offset": (-4, 4),
    },
    "ge_healthcare": {
        "manufacturer": "GE MEDICAL SYSTEMS", "models": ("LightSpeed VCT", "Discovery CT750 HD", "Revolution CT", "Optima CT660"),
        "kernels": ("STANDARD", "SOFT"), "kvp": (100, 120), "noise": (9, 17), "blur_mm": (0.35, 0.65), "offset": (-8, 6),
    },
    "siemens": {
        "manufacturer": "SIEMENS", "models": ("SOMATOM Definition AS", "SOMATOM Definition Flash", "SOMATOM Force", "SOMATOM go.Top"),
        "kernels": ("B30f", "B31f", "Br40d", "I30f"), "kvp": (100, 110, 120, 130), "noise": (8, 15), "blur_mm": (0.35, 0.6), "offset": (-6, 6),
    },
    "fujifilm": {
        "manufacturer": "FUJIFILM Corporation", "models": ("SCENARIA View", "Supria", "ECLOS"),
        "kernels": ("STANDARD", "BODY"), "kvp": (120, 130), "noise": (10, 18), "blur_mm": (0.45, 0.7), "offset": (-5, 8),
    },
    "philips_healthcare": {
        "manufacturer": "Philips", "models": ("Ingenuity CT", "Brilliance iCT", "IQon Spectral CT"),
        "kernels": ("B", "C", "YA"), "kvp": (100, 120), "noise": (8, 14), "blur_mm": (0.35, 0.6), "offset": (-6, 4),
    },
}
#: DICOM Manufacturer string -> Table 2 vendor key (older central scanners report TOSHIBA).
MANUFACTURER_TO_VENDOR: dict[str, str] = {
    **{v["manufacturer"]: k for k, v in VENDORS.items()},
    "TOSHIBA": "canon_medical_systems",
}
#: Central hospital scanners by first year of use (paper: TCT-900S ... Aquilion Precision).
CENTRAL_MODELS: tuple[tuple[int, str, str], ...] = (
    (2000, "TOSHIBA", "TCT-900S"), (2002, "TOSHIBA", "Xvigor"), (2004, "TOSHIBA", "Aquilion"),
    (2012, "TOSHIBA", "Aquilion Prime"), (2015, "CANON_MEC", "Aquilion ONE"), (2019, "CANON_MEC", "Aquilion Precision"),
)
DEV_VENDOR_WEIGHTS: dict[str, float] = {
    "canon_medical_systems": 0.4, "ge_healthcare": 0.2, "siemens": 0.2, "fujifilm": 0.1, "philips_healthcare": 0.1,
}
CENTRAL_THICKNESS_MM: dict[float, float] = {5.0: 0.6, 7.0: 0.2, 10.0: 0.2}
REFERRAL_THICKNESS_MM: dict[float, float] = {5.0: 0.6, 7.0: 0.15, 8.0: 0.05, 10.0: 0.2}
#: Share of referral patients who also have a central-hospital scan (a second series).
SECOND_SERIES_RATE = 0.2
#: Shares of the failure-mode look-alikes.
EFFUSION_RATE = 0.2  # applied on backgrounds with a true heart label only
ABUT_AORTA_RATE = 0.2
LOW_CONTRAST_RATE_SMALL = 0.35
FOV_MM = (320.0, 450.0)

#: WHO thymoma subtypes by risk group of the simplified WHO scheme (LRT: A, AB, B1; HRT: B2, B3).
WHO_SUBTYPES: dict[str, tuple[str, ...]] = {"LRT": ("A", "AB", "B1"), "HRT": ("B2", "B3")}
#: Columns of the downstream classifiers (notebooks 07-08), drawn by :func:`draw_classification_columns`.
CLASSIFICATION_COLUMNS: tuple[str, ...] = (
    "who_subtype", "risk_group", "ctc_level", "margin_irregular", "heterogeneous_enhancement",
)
CLINICAL_COLUMNS: tuple[str, ...] = (
    "patient_id", "institution", "age", "sex", "histology", "pathology_confirmed", "scan_date",
    "intended_exclusion", "background", "role", "intended_split", *CLASSIFICATION_COLUMNS,
)


def allocate(total: int, weights: list[float] | tuple[float, ...], keep_nonzero: bool = True) -> list[int]:
    """Split ``total`` into integers proportional to ``weights`` (largest remainder, ties to the first).

    With ``keep_nonzero``, each nonzero weight gets at least 1 when ``total`` is at least the number
    of nonzero weights (taken from the largest shares). Zero weights always get 0.
    """
    w = np.asarray(weights, dtype=float)
    if total <= 0 or w.sum() <= 0:
        return [0] * len(w)
    exact = w / w.sum() * total
    out = np.floor(exact).astype(int)
    order = np.argsort(-(exact - out), kind="stable")
    out[order[: total - out.sum()]] += 1
    nonzero = np.flatnonzero(w > 0)
    if keep_nonzero and total >= len(nonzero):
        for i in nonzero:
            if out[i] == 0:
                donor = max(nonzero, key=lambda j: (out[j], -j))
                out[donor] -= 1
                out[i] = 1
    return out.tolist()


def ages_with_median_range(n: int, median: float, lo: int, hi: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` integer ages whose median is ``median`` and whose range is exactly [lo, hi] (n >= 3).

    Half-integer medians are met by the two middle values floor and ceil. Values are drawn from a
    normal around the median (SD 13 years) truncated to each half, then shuffled. Smaller ``n``
    returns values clipped to the range with the median as close as possible.
    """
    if n < 3:
        return np.clip(np.round(np.full(n, median)), lo, hi).astype(int)
    m_lo, m_hi = int(np.floor(median)), int(np.ceil(median))

    def draw(k: int, a: int, b: int) -> np.ndarray:
        x = np.round(rng.normal(median, 13.0, size=k * 4))
        x = x[(x >= a) & (x <= b)]
        while x.size < k:
            x = np.concatenate([x, rng.integers(a, b + 1, size=k)])
        return x[:k]

    if n % 2 == 1:
        half = (n - 1) // 2
        lower = np.concatenate([[lo], draw(half - 1, lo, m_lo)])
        upper = np.concatenate([[hi], draw(half - 1, m_lo, hi)])
        ages = np.concatenate([lower, [m_lo], upper])
    else:
        half = n // 2
        lower = np.concatenate([[lo, m_lo], draw(half - 2, lo, m_lo)])
        upper = np.concatenate([[hi, m_hi], draw(half - 2, m_hi, hi)])
        ages = np.concatenate([lower, upper])
    return rng.permutation(ages.astype(int))


def _weighted_choice(rng: np.random.Generator, table: dict, size: int | None = None):
    keys = list(table)
    p = np.asarray(list(table.values()), dtype=float)
    idx = rng.choice(len(keys), size=size, p=p / p.sum())
    return keys[idx] if size is None else [keys[i] for i in idx]


def _central_model(year: int) -> tuple[str, str]:
    manufacturer, model = CENTRAL_MODELS[0][1:]
    for first_year, manu, name in CENTRAL_MODELS:
        if year >= first_year:
            manufacturer, model = manu, name
    return manufacturer, model


def _assign_vendors_exact(sizes: list[int], counts: dict[str, int], rng: np.random.Generator) -> list[str]:
    """One vendor per institution so that the case counts per vendor equal ``counts`` exactly."""
    need = dict(counts)
    out = [""] * len(sizes)
    for i in sorted(range(len(sizes)), key=lambda j: (-sizes[j], rng.random())):
        fits = [v for v in need if need[v] >= sizes[i]]
        vendor = max(fits, key=lambda v: (need[v], rng.random())) if fits else max(need, key=need.get)
        out[i] = vendor
        need[vendor] -= sizes[i]
    return out


def _scan_date(rng: np.random.Generator) -> date:
    start, end = date.fromisoformat("2000-04-01"), date.fromisoformat("2024-03-31")
    # referrals grew over the enrolment window: later years are more frequent
    u = rng.random() ** 0.7
    return start + timedelta(days=int(u * (end - start).days))


def design_cohort(scale: float = 0.1, seed: int = 0, backgrounds: tuple[str, ...] = ("lidc", "lung1", "lung2")) -> pd.DataFrame:
    """The screened cohort as one row per patient: clinical columns, audit columns and image design.

    Paper sections: Inclusion/exclusion, Dataset splitting, Tables 1-2, Image acquisition protocol.
    Columns: :data:`CLINICAL_COLUMNS` (written to ``clinical.csv``), then per-patient image design
    (``vendor``, ``manufacturer``, ``model_name``, ``kvp``, ``kernel``, ``slice_thickness_mm``,
    ``fov_mm``, ``size_bin``, ``second_series``, ``defect``, ``effusion``, ``abut_aorta``,
    ``low_contrast``, ``study_date``) used by the image writer. ``scale`` in (0, 1]; at 1.0 the counts
    are the paper's. Deterministic in (scale, seed): the parts below draw from one generator in this
    order (institutions, included patients, excluded patients, image design).
    """
    if not 0 < scale <= 1.0:
        raise AmtError(f"--scale {scale}", "outside (0, 1]", "give a fraction of the paper's cohort, at most 1.0 (the paper's counts)")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 1]))
    flow = reported()["cohort_flow"]
    n_screened = max(3, round(flow["screened"] * scale))
    n_excluded = max(0, round(flow["excluded"] * scale))
    n_included = n_screened - n_excluded
    n_split = dict(zip(SPLITS, allocate(n_included, [flow["training"]["cases"], flow["tuning"]["cases"], flow["external_test"]["cases"]])))
    inst = _institutions(n_split, scale, rng)
    rows = _included_rows(n_split, inst, rng)
    rows += _excluded_rows(n_excluded, inst["ext_names"] + inst["dev_names"] + [CENTRAL], rng)
    out = _image_design(rows, inst, backgrounds, rng)
    df = pd.DataFrame(out)
    df["age"] = df["age"].astype("Int64")
    df = draw_classification_columns(df, seed)
    design_cols = [c for c in df.columns if c not in CLINICAL_COLUMNS]
    return df[list(CLINICAL_COLUMNS) + design_cols]


def _institutions(n_split: dict[str, int], scale: float, rng: np.random.Generator) -> dict[str, Any]:
    """External-test and development referral institutions (Fig. 2 counts at scale 1), their sizes and
    vendors (Table 2 exactly for the external ones), and each split's institution per patient."""
    flow = reported()["cohort_flow"]
    n_dev = n_split["train"] + n_split["tuning"]
    n_ext = n_split["external_test"]
    n_ext_inst = min(n_ext, max(1, round(flow["external_test"]["institutions"] * scale)))
    n_dev_ref = min(len(DEV_REFERRAL_SIZES), max(1, round(len(DEV_REFERRAL_SIZES) * scale)))
    dev_ref_total = min(max(n_dev_ref, round(sum(DEV_REFERRAL_SIZES) * scale)), max(n_dev - 1, 0))
    dev_ref_sizes = allocate(dev_ref_total, DEV_REFERRAL_SIZES[:n_dev_ref]) if dev_ref_total else []
    dev_ref_sizes = [s for s in dev_ref_sizes if s > 0]
    ext_sizes = np.ones(n_ext_inst, dtype=int)
    if n_ext > n_ext_inst:
        extra = rng.choice(n_ext_inst, size=n_ext - n_ext_inst, replace=True)
        np.add.at(ext_sizes, extra, 1)
    numbers = rng.permutation(np.arange(1, n_ext_inst + len(dev_ref_sizes) + 1))
    ext_names = [f"INST-{k:03d}" for k in numbers[:n_ext_inst]]
    dev_names = [f"INST-{k:03d}" for k in numbers[n_ext_inst:]]
    table2 = reported()["table2"]
    ext_vendor_counts = dict(zip(table2, allocate(n_ext, list(table2.values()))))
    vendor = dict(zip(ext_names, _assign_vendors_exact(ext_sizes.tolist(), ext_vendor_counts, rng)))
    for name in dev_names:
        vendor[name] = _weighted_choice(rng, DEV_VENDOR_WEIGHTS)
    ext_insts = [name for name, size in zip(ext_names, ext_sizes) for _ in range(size)]
    dev_insts = [name for name, size in zip(dev_names, dev_ref_sizes) for _ in range(size)]
    dev_insts += [CENTRAL] * (n_dev - len(dev_insts))
    dev_insts = list(rng.permutation(dev_insts))
    by_split = {"external_test": list(rng.permutation(ext_insts)), "train": dev_insts[: n_split["train"]],
                "tuning": dev_insts[n_split["train"]:]}
    return {"ext_names": ext_names, "dev_names": dev_names, "vendor": vendor, "by_split": by_split}


def _included_rows(n_split: dict[str, int], inst: dict[str, Any], rng: np.random.Generator) -> list[dict]:
    """Included patients by intended split: Table 1's histology counts and age median (range), the
    paper's size-bin mix and sex ratio."""
    flow, t1 = reported()["cohort_flow"], reported()["table1"]
    rows: list[dict] = []
    for split in SPLITS:
        n = n_split[split]
        key = _TABLE1_SPLIT[split]
        hist_counts = allocate(n, [t1["histology_counts"][h][key] for h in HISTOLOGIES])
        hist = rng.permutation([h for h, c in zip(HISTOLOGIES, hist_counts) for _ in range(c)])
        med, lo, hi = t1["age_median_range"][key]
        ages = ages_with_median_range(n, med, lo, hi, rng)
        bins_n = allocate(n, list(SIZE_BIN_COUNTS.values()))
        bins = rng.permutation([b for b, c in zip(SIZE_BINS, bins_n) for _ in range(c)])
        for i in range(n):
            rows.append({"institution": inst["by_split"][split][i], "age": int(ages[i]), "histology": str(hist[i]),
                         "pathology_confirmed": True, "intended_exclusion": "", "intended_split": split, "size_bin": str(bins[i])})
    sex_n = allocate(len(rows), [flow["sex"]["male"], flow["sex"]["female"]])
    sexes = rng.permutation(["M"] * sex_n[0] + ["F"] * sex_n[1])
    for row, sex in zip(rows, sexes):
        row["sex"] = str(sex)
    return rows


def _excluded_rows(n_excluded: int, all_insts: list[str], rng: np.random.Generator) -> list[dict]:
    """Excluded patients from the same institutions, each with one stated reason (Fig. 2's boxes)."""
    t1 = reported()["table1"]
    reasons_n = allocate(n_excluded, list(EXCLUSION_REASONS.values()))
    hist_all = [sum(t1["histology_counts"][h].values()) for h in HISTOLOGIES]
    rows = []
    for reason, count in zip(EXCLUSION_REASONS, reasons_n):
        for _ in range(count):
            inst = CENTRAL if rng.random() < 0.5 else str(rng.choice(all_insts))
            row = {"institution": inst, "age": int(rng.integers(20, 86)), "sex": str(rng.choice(["M", "F"])),
                   "histology": str(_weighted_choice(rng, dict(zip(HISTOLOGIES, hist_all)))), "pathology_confirmed": True,
                   "intended_exclusion": reason, "intended_split": "", "size_bin": str(rng.choice(SIZE_BINS))}
            if reason == "age_under_18":
                row["age"] = int(rng.integers(12, 18))
            elif reason == "missing_clinical_data":
                which = rng.integers(0, 3)
                if which in (0, 2):
                    row["age"] = None
                if which in (1, 2):
                    row["sex"] = ""
            elif reason == "no_pathology":
                row["pathology_confirmed"] = False
            rows.append(row)
    return rows


def _image_design(rows: list[dict], inst: dict[str, Any], backgrounds: tuple[str, ...], rng: np.random.Generator) -> list[dict]:
    """Patients in random order with ids, and each one's acquisition (central Canon protocol, or the
    referral institution's vendor), defects, effusion, aorta contact and low contrast."""
    ext_set = set(inst["ext_names"])
    order = rng.permutation(len(rows))
    out = []
    for pid, idx in enumerate(order, start=1):
        row = dict(rows[idx])
        site = row["institution"]
        row["patient_id"] = f"PT{pid:04d}"
        row["role"] = "external_candidate" if site in ext_set else "development"
        row["background"] = str(rng.choice(backgrounds))
        d = _scan_date(rng)
        if site == CENTRAL:
            vendor = "canon_medical_systems"
            manufacturer, model = _central_model(d.year)
            kvp, kernel = 120, str(rng.choice(["FC13", "FC03"]))
            thickness = float(_weighted_choice(rng, CENTRAL_THICKNESS_MM))
        else:
            vendor = inst["vendor"][site]
            spec = VENDORS[vendor]
            manufacturer, model = spec["manufacturer"], str(rng.choice(spec["models"]))
            kvp, kernel = int(rng.choice(spec["kvp"])), str(rng.choice(spec["kernels"]))
            thickness = 5.0 if row["role"] == "external_candidate" else float(_weighted_choice(rng, REFERRAL_THICKNESS_MM))
        reason = row["intended_exclusion"]
        row.update({
            "scan_date": d.isoformat(), "study_date": d.strftime("%Y%m%d"), "vendor": vendor, "manufacturer": manufacturer,
            "model_name": model, "kvp": kvp, "kernel": kernel, "slice_thickness_mm": thickness,
            "fov_mm": float(np.clip(rng.normal(370, 30), *FOV_MM)),
            "defect": str(rng.choice(DEFECTS[reason])) if reason in DEFECTS else "",
            "second_series": bool(site != CENTRAL and reason not in DEFECTS and rng.random() < SECOND_SERIES_RATE),
            "effusion": bool(rng.random() < EFFUSION_RATE),
            "abut_aorta": bool(rng.random() < ABUT_AORTA_RATE),
            "low_contrast": bool(row["size_bin"] == "small" and rng.random() < LOW_CONTRAST_RATE_SMALL),
        })
        out.append(row)
    return out


def _truncated_normal(rng: np.random.Generator, mean: float, sd: float, low: float = 0.0) -> float:
    """One normal draw redrawn until it is >= ``low`` (a level cannot be negative)."""
    for _ in range(100):
        x = rng.normal(mean, sd)
        if x >= low:
            return float(x)
    return float(low)


def draw_classification_columns(design: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """Add :data:`CLASSIFICATION_COLUMNS` to a cohort design, from a stream of their own.

    Related papers (notebooks 07-08). The generator is ``SeedSequence([seed, 4])``, separate from the
    design's, so every earlier column is unchanged by this step. Per patient, in row order:

    - ``who_subtype`` (thymomas only, else empty): LRT with the TET paper's share of low-risk
      thymomas (81 of 266, Fig. 1), then A/AB/B1 or B2/B3 in the proportions of the fusion paper's
      Table 2 counts (45/112/70 and 65/36). ``risk_group``: LRT, HRT, or TC for thymic carcinoma;
      empty for other histologies.
    - ``margin_irregular`` and ``heterogeneous_enhancement`` (0/1; TETs only, else empty): Bernoulli
      with the TET paper's Table 1 rates per group, training and test pooled (unclear margin 10/81 LRT,
      126/185 HRT; heterogeneous enhancement 43/81 LRT, 121/185 HRT); thymic carcinoma takes the HRT
      rates. Neither separates the groups on its own (about 12 % vs 68 % and 53 % vs 65 %).
    - ``ctc_level`` (every patient): normal with the mean and SD of the fusion paper's Table 2 row
      of its histology (thymomas by subtype; :data:`amtlib.reported.CTC_ROW`), truncated at 0, rounded to 0.01, in
      that table's unit.
    """
    rep = reported()
    tet, fus = rep["tet_risk_stratification"], rep["dmfn_fusion"]
    n_lrt = tet["cohort"]["training"]["lrt"] + tet["cohort"]["external_testing"]["lrt"]
    n_hrt = tet["cohort"]["training"]["hrt"] + tet["cohort"]["external_testing"]["hrt"]
    subtype_counts = fus["table2_counts"]
    ctc = fus["table2_ctc_level"]
    rates = tet["table1_pooled_rates"]
    rng = np.random.default_rng(np.random.SeedSequence([seed, 4]))
    cols: dict[str, list] = {c: [] for c in CLASSIFICATION_COLUMNS}
    for hist in design["histology"].astype(str):
        subtype, group, margin, hetero = "", "", None, None
        if hist == "thymoma":
            group = "LRT" if rng.random() < n_lrt / (n_lrt + n_hrt) else "HRT"
            names = WHO_SUBTYPES[group]
            w = np.array([sum(subtype_counts[f"thymoma_{s.lower()}"]) for s in names], float)
            subtype = str(names[rng.choice(len(names), p=w / w.sum())])
        elif hist == "thymic_carcinoma":
            group = "TC"
        if group:
            r = rates["LRT" if group == "LRT" else "HRT"]
            margin = int(rng.random() < r["margin_unclear"])
            hetero = int(rng.random() < r["heterogeneous_enhancement"])
        row = f"thymoma_{subtype.lower()}" if subtype else CTC_ROW.get(hist, "others")
        mean, sd = ctc[row]
        cols["who_subtype"].append(subtype)
        cols["risk_group"].append(group)
        cols["ctc_level"].append(round(_truncated_normal(rng, mean, sd), 2))
        cols["margin_irregular"].append(margin)
        cols["heterogeneous_enhancement"].append(hetero)
    out = design.copy()
    for c, values in cols.items():
        out[c] = pd.array(values, dtype="Int64") if c in ("margin_irregular", "heterogeneous_enhancement") else values
    return out
