"""The subgroup vocabulary (amtlib.subgroups): one definition of vendor, size and histology keys,
used by the demo cohort's design, the cohort tables and the evaluation alike."""

from __future__ import annotations

import numpy as np
import pytest

from amtlib import paper, subgroups
from amtlib.evaluation import lesions
from amtlib.phantom.render import size_bin as design_size_class


@pytest.mark.parametrize("d, key", [(10.0, "size_small"), (49.999, "size_small"), (50.0, "size_medium"),
                                    (80.0, "size_medium"), (80.001, "size_large"), (np.nan, None)])
def test_size_bin_boundaries(d, key):
    assert subgroups.size_bin(d) == key


def test_size_bin_from_a_mask_at_the_boundaries():
    def line(n):
        m = np.zeros((1, 3, 100), dtype=bool)
        m[0, 1, :n] = True
        return lesions.max_axial_diameter_mm(m, (5.0, 1.0, 1.0))

    assert [subgroups.size_bin(line(n)) for n in (49, 50, 80, 81)] == ["size_small", "size_medium", "size_medium", "size_large"]


@pytest.mark.parametrize("name, key", [
    ("TOSHIBA", "canon_medical_systems"), ("Canon Medical Systems", "canon_medical_systems"),
    ("GE MEDICAL SYSTEMS", "ge_healthcare"), ("SIEMENS", "siemens"), ("Siemens Healthineers", "siemens"),
    ("FUJIFILM Corporation", "fujifilm"), ("Hitachi Medical Corporation", "fujifilm"),
    ("Philips Medical Systems", "philips_healthcare"), ("Neusoft Medical", "neusoft_medical"), ("", None), (None, None),
])
def test_vendor_key(name, key):
    assert subgroups.vendor_key(name) == key


def test_histology_key_groups_the_rest_as_others():
    names = ("thymoma", "Thymic carcinoma", "thymic_cyst", "lymphoma", "teratoma", "carcinoid", None)
    assert [subgroups.histology_key(h) for h in names] == [
        "thymoma", "thymic_carcinoma", "thymic_cyst", "lymphoma", "others", "others", None]


@pytest.mark.parametrize("d", [0.5, 30.0, 49.99, 50.0, 65.0, 80.0, 80.01, 200.0])
def test_the_demo_cohort_draws_sizes_by_the_evaluations_bins(d):
    """The generator's size class and the evaluation's subgroup key are one vocabulary."""
    assert f"size_{design_size_class(d)}" == subgroups.size_bin(d) == f"size_{subgroups.size_class(d)}"


def test_labels_are_the_papers_rows_and_the_paper_module_uses_them():
    # every row of the paper's Table 3 has a label and no label names a row the paper lacks (order is ours)
    assert sorted(subgroups.SUBGROUP_LABELS) == sorted(paper.reported()["table3"])
    assert len(subgroups.SUBGROUP_LABELS) == len(set(subgroups.SUBGROUP_LABELS))
    assert [k for ks in subgroups.PAPER_ROWS.values() for k in ks] == [k for k in subgroups.SUBGROUP_LABELS if k != "overall"]
