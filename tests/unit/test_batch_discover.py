"""svdmark.batch.discover: what `svdmark analyze` finds in an archive, and what it lists instead of dying on."""
from __future__ import annotations

import json
import os
import shutil
import warnings
import zipfile
from pathlib import Path

import pydicom
import pytest

from svdmark.batch.discover import FileError, discover, iter_sources

KEY = b"k" * 32


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    """One 64 px NCCT series (no distractors), its files in one folder."""
    from svdmark_phantom import write_study

    root = tmp_path_factory.mktemp("study")
    write_study(root / "s", seed=5, kind="ncct", vendor="ge", matrix=64, distractors=False, slice_thickness=5.0)
    (series,) = [p for p in (root / "s").iterdir() if p.is_dir()]
    return series


def _copy(study: Path, to: Path) -> list[Path]:
    shutil.copytree(study, to)
    return sorted(to.glob("*.dcm"))


def test_a_corrupt_zip_member_is_listed_and_the_rest_read(tmp_path, study):
    archive = tmp_path / "in" / "series.zip"
    archive.parent.mkdir()
    files = sorted(study.glob("*.dcm"))
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in files:
            zf.write(f, f.name)
    with zipfile.ZipFile(archive) as zf:
        info = zf.getinfo(files[2].name)
    data = bytearray(archive.read_bytes())
    start = info.header_offset + 30 + len(info.filename) + len(info.extra) + 20
    data[start:start + 64] = bytes(64)  # inside the third member's compressed bytes
    archive.write_bytes(bytes(data))
    groups, errors, _ = discover([tmp_path / "in"], KEY)
    (bad,) = [e for e in errors if files[2].name in e.file]
    assert bad.reason.startswith("cannot read:")
    assert len(groups) == 1 and len(groups[0].instances) == len(files) - 1


def test_linked_folders_are_read_once_and_a_loop_is_listed(tmp_path, study):
    files = _copy(study, tmp_path / "archive" / "site_a" / "series")
    (tmp_path / "elsewhere").mkdir()
    shutil.copytree(study, tmp_path / "elsewhere" / "series")
    os.symlink(tmp_path / "elsewhere", tmp_path / "archive" / "site_b")  # a site's folder linked in: read
    os.symlink(tmp_path / "archive", tmp_path / "archive" / "site_a" / "up")  # a loop: listed, not followed
    found = list(iter_sources([tmp_path / "archive"]))
    names = [s.path for s in found if not isinstance(s, FileError)]
    assert len(names) == 2 * len(files)
    assert any("site_b" in n for n in names)
    (loop,) = [e for e in found if isinstance(e, FileError)]
    assert loop.file.endswith("up") and "already read" in loop.reason


def test_a_real_folder_is_read_as_itself_before_a_link_to_it_and_an_input_inside_another_is_listed(tmp_path,
                                                                                                      study):
    files = _copy(study, tmp_path / "archive" / "z_site")
    os.symlink(tmp_path / "archive" / "z_site", tmp_path / "archive" / "a_link")  # sorts first, claims nothing
    found = list(iter_sources([tmp_path / "archive", tmp_path / "archive" / "z_site"]))
    read = [s.path for s in found if not isinstance(s, FileError)]
    assert len(read) == len(files) and all("z_site" in p for p in read)
    errors = [(Path(e.file).name, e.reason) for e in found if isinstance(e, FileError)]
    assert [n for n, _ in errors] == ["a_link", "z_site"]
    assert "link to a folder already read" in errors[0][1] and "already read in this run" in errors[1][1]


def test_a_scan_cache_of_an_earlier_version_is_not_used(tmp_path):
    from svdmark.batch.state import RunState

    state = RunState(tmp_path)
    state.save_scan_cache("k", {"f": {"error": {"file": "f", "reason": "raw 1.2.840.MRN0012345.DOE"}}})
    assert state.load_scan_cache("k")
    raw = json.loads((tmp_path / "state" / "scan.json").read_text())
    raw.pop("version")  # as an earlier svdmark wrote it: its error rows may hold unhashed invalid UIDs
    (tmp_path / "state" / "scan.json").write_text(json.dumps(raw))
    assert state.load_scan_cache("k") == {}


def test_an_unreadable_folder_is_listed(tmp_path, study, monkeypatch):
    _copy(study, tmp_path / "archive" / "readable")
    (tmp_path / "archive" / "locked").mkdir()
    real = os.scandir

    def scandir(path="."):
        if str(path).endswith("locked"):
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    errors = [e for e in iter_sources([tmp_path / "archive"]) if isinstance(e, FileError)]
    assert [(Path(e.file).name, e.reason) for e in errors] == [("locked", "cannot read folder: Permission denied")]
    (only,) = iter_sources([tmp_path / "archive" / "locked"])  # the PATH itself
    assert only.reason == "cannot read folder: Permission denied"


def test_the_fingerprint_follows_the_bytes_and_a_resumed_scan_reuses_unchanged_files(tmp_path, study):
    files = _copy(study, tmp_path / "archive")
    (before,), _, cache = discover([tmp_path / "archive"], KEY)
    ds = pydicom.dcmread(files[3])
    ds.PixelData = bytes(len(ds.PixelData))  # blanked, same UIDs
    ds.save_as(files[3])
    (after,), _, _ = discover([tmp_path / "archive"], KEY, cache=cache)
    assert [i.sop_uid for i in after.instances] == [i.sop_uid for i in before.instances]
    assert after.fingerprint != before.fingerprint
    from svdmark.batch.state import RunState

    state = RunState(tmp_path / "out")  # a cache written before the digest (version 1): every file read again
    (tmp_path / "out" / "state" / "scan.json").write_text(json.dumps({"key_id": "k", "files": {
        k: {"instance": {x: y for x, y in v["instance"].items() if x != "digest"}, "bare": False}
        for k, v in cache.items()}}))
    (fresh,), _, _ = discover([tmp_path / "archive"], KEY, cache=state.load_scan_cache("k"))
    assert fresh.fingerprint == after.fingerprint


def test_a_series_missing_images_carries_the_services_incomplete_warning(tmp_path, study):
    files = _copy(study, tmp_path / "archive")
    (whole,), _, _ = discover([tmp_path / "archive"], KEY)
    assert whole.completion_warning is None
    declared = pydicom.dcmread(files[0]).ImagesInAcquisition
    for f in files[-3:]:
        f.unlink()
    (part,), _, _ = discover([tmp_path / "archive"], KEY)
    assert part.completion_warning == (f"incomplete series: {len(files) - 3} of {declared} images "
                                       f"(Images in Acquisition declares {declared})")
    for f in files[:-3]:  # the count declared as what is there: complete, as the service takes it, gap or not
        ds = pydicom.dcmread(f)
        ds.ImagesInAcquisition = len(files) - 3
        ds.save_as(f)
    files[2].unlink()
    (declared_whole,), _, _ = discover([tmp_path / "archive"], KEY)
    assert declared_whole.completion_warning is not None  # 1 short of its count again
    for f in files[:-3]:
        if f.exists():
            ds = pydicom.dcmread(f)
            ds.ImagesInAcquisition = len(files) - 4
            ds.save_as(f)
    (gap,), _, _ = discover([tmp_path / "archive"], KEY)
    assert gap.completion_warning is None


def test_an_invalid_uid_in_an_error_row_is_hashed(tmp_path, study):
    files = _copy(study, tmp_path / "archive")
    ds = pydicom.dcmread(files[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom's own warning quotes the value: the point of the test
        ds.StudyInstanceUID = "1.2.840.MRN0012345.DOE"
    ds.save_as(files[0])
    _, errors, _ = discover([tmp_path / "archive"], KEY)
    (bad,) = [e for e in errors if e.file == str(files[0])]
    assert bad.study_uid.startswith("uid#") and "MRN" not in bad.study_uid + bad.reason
    assert bad.study_uid in bad.reason  # the same hash in the column and the reason


def test_a_copy_with_other_bytes_is_listed_as_conflicting_not_as_a_duplicate(tmp_path, study):
    files = _copy(study, tmp_path / "archive" / "a")
    _copy(study, tmp_path / "archive" / "b")  # the same bytes
    other = tmp_path / "archive" / "c"
    other.mkdir()
    ds = pydicom.dcmread(files[0])
    ds.PixelData = bytes(len(ds.PixelData))
    ds.save_as(other / files[0].name)
    (series,), errors, _ = discover([tmp_path / "archive"], KEY)
    assert len(series.instances) == len(files) and series.instances[0].source.path.startswith(str(files[0].parent))
    (dup,) = [e for e in errors if "/b" in e.file]
    (conflict,) = [e for e in errors if "/c" in e.file]
    assert "duplicate" in dup.reason and "conflicting" in conflict.reason and "other bytes" in conflict.reason


def test_one_patient_id_issued_by_two_sites_is_two_pseudonyms(tmp_path, study):
    """A multi-site trial: each site's PACS issues its own Patient IDs, so the same ID from two issuers is two patients.
    The pseudonym hashes the issuer with the ID; a header without an issuer keeps the ID's own hash."""
    from svdmark.logs import patient_pseudonym, pseudonym

    sites = {}
    for site in ("SITE_A", "SITE_B", ""):
        files = _copy(study, tmp_path / "in" / (site or "none"))
        for f in files:
            ds = pydicom.dcmread(f)
            ds.PatientID = "0001"
            ds.IssuerOfPatientID = site
            ds.save_as(f)
        groups, errors, _ = discover([tmp_path / "in" / (site or "none")], KEY)
        assert not errors and len(groups) == 1
        sites[site] = {i.patient_pseudonym for i in groups[0].instances}
    assert all(len(p) == 1 for p in sites.values())
    assert len(set.union(*sites.values())) == 3
    assert sites[""] == {pseudonym("0001", KEY)}
    assert patient_pseudonym({"PatientID": "0001", "IssuerOfPatientID": "SITE_A"}, KEY) == next(iter(sites["SITE_A"]))
    assert patient_pseudonym({"PatientID": "  "}, KEY) == ""


def test_a_file_replaced_with_its_size_and_time_stamp_kept_is_scanned_again(tmp_path, study):
    """``rsync -t`` or ``touch -r`` keep a corrected file's modification time; its change time moves on."""
    files = _copy(study, tmp_path / "archive")
    (before,), _, cache = discover([tmp_path / "archive"], KEY)
    st = files[3].stat()
    ds = pydicom.dcmread(files[3])
    ds.PixelData = bytes(len(ds.PixelData))  # the same size
    ds.save_as(files[3])
    os.utime(files[3], ns=(st.st_atime_ns, st.st_mtime_ns))
    assert files[3].stat().st_size == st.st_size and files[3].stat().st_mtime_ns == st.st_mtime_ns
    (after,), _, _ = discover([tmp_path / "archive"], KEY, cache=cache)
    assert after.fingerprint != before.fingerprint
    (again,), _, _ = discover([tmp_path / "archive"], KEY, cache=discover([tmp_path / "archive"], KEY)[2])
    assert again.fingerprint == after.fingerprint


def test_a_dicomdir_is_listed_as_what_it_is_and_its_images_read_once(tmp_path, study):
    from pydicom.fileset import FileSet

    fs = FileSet()
    for f in sorted(study.glob("*.dcm")):
        fs.add(f)
    fs.write(tmp_path / "media")
    groups, errors, _ = discover([tmp_path / "media"], KEY)
    assert len(groups) == 1 and len(groups[0].instances) == len(list(study.glob("*.dcm")))
    (dicomdir,) = errors
    assert Path(dicomdir.file).name == "DICOMDIR"
    assert dicomdir.reason.startswith("a data set that names no SOP class (a DICOMDIR")
    assert "uid#" not in dicomdir.reason
