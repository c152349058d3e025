"""Encoder review: source headers a hospital sends that the SR, SEG and summary must survive and copy.

* Type 2 Patient / General Study attributes may be absent from a source (an emergency CT without an
  AccessionNumber, an outside study without StudyID or PatientBirthDate): highdicom's SR and SEG
  constructors read them as attributes, so the header we hand them must carry them (empty).
* With an ISO 2022 character set (Japanese ``\\ISO 2022 IR 87``) the source's kanji in LO/SH text (Study
  Description, a procedure code's meaning) must be copied as text; the objects are written in UTF-8, as OHIF's
  reader takes a single character set only.
"""
from __future__ import annotations

import io
import shutil
import subprocess
import warnings

import highdicom as hd
import pydicom
import pytest
from pydicom import Dataset

from svdmark.domain import Series
from svdmark.encode import results, to_bytes

from tests.unit.test_encode_header import _from_bytes
from tests.unit.test_encode_support import ct_series, wml_mask, wml_result

TYPE2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "AccessionNumber", "StudyID", "StudyDate",
         "StudyTime", "ReferringPhysicianName")


def _back(ds: Dataset) -> Dataset:
    return pydicom.dcmread(io.BytesIO(to_bytes(ds)))


def _dciodvfy_errors(ds: Dataset, tmp_path, name: str) -> list[str]:
    path = tmp_path / f"{name}.dcm"
    path.write_bytes(to_bytes(ds))
    run = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, errors="replace", check=False)
    return [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("Error")]


@pytest.mark.parametrize("missing", [TYPE2[:1], TYPE2[1:2], ("AccessionNumber",), ("StudyID",), ("PatientSex",),
                                     ("PatientBirthDate",), ("StudyDate", "StudyTime"), TYPE2])
def test_missing_type2_patient_and_study_attributes_encode_all_objects(missing, tmp_path):
    series, vol = ct_series()
    series = _from_bytes(series, drop=missing)
    enc = results(wml_result(series, vol, wml_mask(vol)), uid_seed="missing-" + "-".join(missing))
    assert [k for k, _ in enc.items()] == ["seg", "sr", "summary"]
    for kind, ds in enc.items():
        back = _back(ds)
        for keyword in missing:  # type 2 in every module they belong to: present, empty
            assert keyword in back and not back[keyword].value, (kind, keyword)
        assert str(back.PatientName) == ("" if "PatientName" in missing else "Müller^Jörg")
        if shutil.which("dciodvfy"):
            assert _dciodvfy_errors(ds, tmp_path, f"{kind}-{len(missing)}") == [], kind
    assert hd.sr.srread(io.BytesIO(to_bytes(enc.sr))) is not None
    assert hd.seg.segread(io.BytesIO(to_bytes(enc.seg))) is not None
    assert all(keyword not in series.datasets[0] for keyword in missing)  # the source is left as it was


def test_a_source_without_accession_number_gets_an_sr_for_a_profile_without_seg():
    series, vol = ct_series()
    series = _from_bytes(series, drop=("AccessionNumber",))
    enc = results(wml_result(series, vol, wml_mask(vol)), uid_seed="no-accession-sr", profile={"sr"})
    assert enc.sr is not None and _back(enc.sr).AccessionNumber in ("", None)


KANJI_STUDY = "頭部CT 単純"
KANJI_PROCEDURE = "頭部単純CT"


def _japanese_source(charset) -> tuple[Series, object]:
    series, vol = ct_series()
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "HEADCT", "99LOCAL", KANJI_PROCEDURE
    series = _from_bytes(series, SpecificCharacterSet=charset, PatientName="Yamada^Tarou=山田^太郎=やまだ^たろう",
                         StudyDescription=KANJI_STUDY, ProcedureCodeSequence=[code])
    assert series.datasets[0].StudyDescription == KANJI_STUDY  # the source carries the kanji
    return series, vol


@pytest.mark.parametrize("charset", [["", "ISO 2022 IR 87"], ["ISO 2022 IR 6", "ISO 2022 IR 87"]])
def test_iso_2022_ir_87_source_text_is_copied_not_transliterated(charset, tmp_path):
    series, vol = _japanese_source(charset)
    enc = results(wml_result(series, vol, wml_mask(vol)), uid_seed="kanji-study")
    for kind, ds in enc.items():
        back = _back(ds)
        assert back.SpecificCharacterSet == "ISO_IR 192"  # OHIF's reader refuses several values
        assert back.StudyDescription == KANJI_STUDY, kind
        assert back.ProcedureCodeSequence[0].CodeMeaning == KANJI_PROCEDURE, kind
        assert back.SeriesDescription.isascii()  # our own text stays in the default repertoire
        if shutil.which("dciodvfy"):
            assert _dciodvfy_errors(ds, tmp_path, f"kanji-{kind}") == [], kind


def test_our_own_non_ascii_text_is_kept_under_the_utf8_written_for_iso_2022():
    series, vol = _japanese_source(["", "ISO 2022 IR 87"])
    warning = "Noise 14 HU \u2265 limit \u00b1 2 HU"  # characters none of the code elements carry
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # pydicom would warn and write "?" for a character it cannot encode
        enc = results(wml_result(series, vol, wml_mask(vol), warnings=(warning,)), uid_seed="kanji-own-text")
        back = _back(enc.sr)
    texts = [str(item.get("TextValue", "")) for item in back.ContentSequence[-1].ContentSequence]
    assert warning in texts  # UTF-8 carries it as written
