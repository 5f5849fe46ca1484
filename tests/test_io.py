"""Atomic writes and NIfTI I/O conventions shared by every module."""

import numpy as np
import pytest

from amtlib import io


def test_nifti_roundtrip_keeps_zyx_order_spacing_and_affine(tmp_path):
    arr = np.arange(2 * 3 * 4, dtype=np.int16).reshape(2, 3, 4)  # (z, y, x)
    aff = io.affine_from_spacing((5.0, 0.8, 0.7), origin_xyz=(-10.0, 20.0, 30.0))
    p = io.save_nifti(arr, aff, tmp_path / "a.nii.gz")
    back, spacing, aff2 = io.load_nifti(p)
    assert back.shape == (2, 3, 4) and np.array_equal(back, arr)
    assert spacing == pytest.approx((5.0, 0.8, 0.7))
    assert np.allclose(aff, aff2)
    assert io.same_geometry(back.shape, aff2, arr.shape, aff)
    assert not io.same_geometry(back.shape, aff2 + np.diag([0, 0, 0.1, 0]), arr.shape, aff)


def test_load_nifti_errors_name_the_file(tmp_path):
    bad = tmp_path / "not.nii.gz"
    bad.write_text("hello")
    with pytest.raises(ValueError, match="not.nii.gz.*not a readable NIfTI"):
        io.load_nifti(bad)
    with pytest.raises(ValueError, match="missing.nii.gz: file not found"):
        io.load_nifti(tmp_path / "missing.nii.gz")


def test_atomic_write_leaves_target_untouched_on_failure(tmp_path):
    target = tmp_path / "out.csv"
    target.write_text("original")
    with pytest.raises(RuntimeError):
        with io.atomic_path(target) as tmp:
            tmp.write_text("partial")
            raise RuntimeError("interrupted")
    assert target.read_text() == "original"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.csv"]
    io.write_json(tmp_path / "x.json", {"a": np.int64(3), "b": np.arange(2)})
    assert (tmp_path / "x.json").read_text().replace(" ", "").replace("\n", "") == '{"a":3,"b":[0,1]}'


def test_prune_folder_removes_only_unlisted_cases(tmp_path):
    for name in ("A.nii.gz", "B.nii.gz", "C.nii.gz", "readme.txt"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub.nii.gz").mkdir()  # a folder with a case-like name is not touched
    gone = io.prune_folder(tmp_path, {"A", "C"})
    assert [p.name for p in gone] == ["B.nii.gz"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["A.nii.gz", "C.nii.gz", "readme.txt", "sub.nii.gz"]
    assert io.prune_folder(tmp_path / "missing", {"A"}) == []


def test_nifti_size_problem_reads_sizes_not_data(tmp_path):
    """The guard amt predict runs before allocating an image: sizes only, never a false alarm."""
    import gzip

    import nibabel as nib

    from amtlib.io import nifti_size_problem

    img = nib.Nifti1Image(np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6), np.eye(4))
    plain, packed = tmp_path / "a.nii", tmp_path / "a.nii.gz"
    nib.save(img, plain)
    nib.save(img, packed)
    assert nifti_size_problem(plain) is None and nifti_size_problem(packed) is None
    cut = tmp_path / "cut.nii"
    cut.write_bytes(plain.read_bytes()[:-10])
    assert "truncated: 582 bytes" in nifti_size_problem(cut)
    # two gzip members (valid, what `cat a.gz b.gz` makes): the trailer holds only the last member's size
    data = plain.read_bytes()
    two = tmp_path / "two.nii.gz"
    two.write_bytes(gzip.compress(data[:300]) + gzip.compress(data[300:]))
    assert nifti_size_problem(two) is None
    short = tmp_path / "short.nii.gz"
    short.write_bytes(gzip.compress(data[:-10]))
    assert "truncated" in nifti_size_problem(short)


def test_is_safe_id_accepts_uids_and_stems_and_nothing_that_can_leave_a_folder():
    from amtlib.paths import is_safe_id

    for ok in ("1.2.840.113619.2.55.3", "derived.0123abcd", "PT0005", "case_01-b", "x" * 128):
        assert is_safe_id(ok), ok
    for bad in ("", ".", "..", "../x", "a/b", "/abs", "a\\b", ".hidden", "a..b", "x" * 129, "name with space", "é", None, 5):
        assert not is_safe_id(bad), bad


def test_output_lock_refuses_a_second_holder_and_leaves_no_file(tmp_path):
    """Issue 23 item 10: two exports (or evaluations) into one folder at once both exited 0."""
    from amtlib.errors import AmtError
    from amtlib.io import output_lock

    out = tmp_path / "new" / "out"
    with output_lock(out, "amt export"):
        assert out.is_dir()
        with pytest.raises(AmtError, match=r"out: in use by another amt export writing into it"):
            with output_lock(out, "amt export"):
                pass
        (out / "export.csv").write_text("x")
    assert [p.name for p in out.iterdir()] == ["export.csv"]  # no lock file
    with output_lock(out, "amt export"):  # released: a later command may take it
        pass
    with output_lock(tmp_path / "a" / "b", "amt evaluate"):
        pass
    assert not (tmp_path / "a").exists()  # folders it made and left empty are removed


def test_amt_evaluate_into_a_folder_in_use_is_refused(tmp_path, capsys):
    from amtlib.cli import main
    from amtlib.io import output_lock

    (tmp_path / "pred").mkdir()
    (tmp_path / "ref").mkdir()
    with output_lock(tmp_path / "out", "amt evaluate"):
        rc = main(["evaluate", "--pred", str(tmp_path / "pred"), "--ref", str(tmp_path / "ref"), "--out", str(tmp_path / "out")])
    assert rc == 2 and "in use by another amt evaluate writing into it" in capsys.readouterr().err


def test_load_nifti_gives_a_reason_code_with_its_message(tmp_path):
    """amt predict tells not_3d from unreadable by this code (issue 24: codes, not message text)."""
    import nibabel as nib

    from amtlib.io import NiftiError, load_nifti

    nib.save(nib.Nifti1Image(np.zeros((4, 5), np.int16), np.eye(4)), str(tmp_path / "slice.nii.gz"))
    (tmp_path / "junk.nii.gz").write_bytes(b"not a nifti")
    for name, reason, words in (("slice.nii.gz", "not_3d", "expected a 3D volume"), ("junk.nii.gz", "unreadable", "not a readable"),
                                ("absent.nii.gz", "not_found", "file not found")):
        with pytest.raises(NiftiError, match=words) as err:
            load_nifti(tmp_path / name)
        assert err.value.reason == reason and str(err.value).startswith(str(tmp_path / name))
        assert isinstance(err.value, ValueError)
