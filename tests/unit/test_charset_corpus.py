"""Every character set in the pydicom corpus goes through encode (SEG, SR, summary), keeping the patient's text.

The source header of a small CT series is given, byte for byte, the Specific Character Set and the
patient/study text of each corpus file that carries one (``chr*.dcm`` and the rest of the corpus, grouped by
the value as written, e.g. ``\\ISO 2022 IR 87`` with its empty first value), then read back from bytes as the
worker reads it from the spool. Encoding must give all three objects, writable and readable, with the
patient's name and the study description unchanged as text, or end in an svdmark error with a reason; no
other exception may escape.
"""
from __future__ import annotations

import io
import logging
import re
import warnings

import pydicom
import pytest
from pydicom.datadict import keyword_for_tag

from svdmark.domain import Series
from svdmark.encode import results
from svdmark.errors import SvdmarkError

from tests import corpus
from tests.unit.test_encode_support import ct_series, wml_mask, wml_result

# what highdicom copies from the source into our objects, and the character set that decodes it
COPIED = {"SpecificCharacterSet", "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "PatientAge",
          "OtherPatientNames", "OtherPatientIDs", "StudyDescription", "AccessionNumber", "ReferringPhysicianName",
          "StudyID", "InstitutionName"}
CHARSETS = corpus.with_charset()


def _read(buf: bytes) -> pydicom.Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(io.BytesIO(buf))


def _bytes(ds: pydicom.Dataset) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _with_text_of(series: Series, source: pydicom.Dataset) -> Series:
    """``series`` carrying ``source``'s raw (undecoded) character set and patient/study text."""
    out = []
    for ds in series.datasets:
        for tag in source.keys():
            if keyword_for_tag(tag) in COPIED:
                ds[tag] = source.get_item(tag)  # raw bytes travel as they are
        out.append(_read(_bytes(ds)))
    return Series(series.study_uid, series.series_uid, tuple(out))


def _text(ds: pydicom.Dataset, keyword: str) -> str:
    """The value as text; a person name without its trailing empty components (``Bono^`` is ``Bono``)."""
    text = str(ds.get(keyword, "") or "")
    if keyword.endswith("Name"):
        text = "=".join(group.rstrip("^") for group in text.split("="))
    return text


def test_the_corpus_has_the_character_sets_of_the_issue():
    assert {"\\ISO 2022 IR 87", "ISO 2022 IR 13\\ISO 2022 IR 87", "\\ISO 2022 IR 149", "ISO_IR 192", "GB18030",
            "ISO_IR 100", "ISO_IR 144", "ISO_IR 127", "ISO_IR 126", "ISO_IR 138", ""} <= set(CHARSETS)


CASES = [(value, path) for value, paths in CHARSETS.items()
         for path in ([p for p in paths if p.name.startswith("chr")] or paths[:1])]


@pytest.mark.parametrize(("value", "path"), CASES, ids=[f"{v or 'empty'}:{p.name}" for v, p in CASES])
def test_each_corpus_character_set_encodes_sr_seg_and_summary(value, path, caplog):
    source = corpus.dataset(path)
    series, vol = ct_series()
    series = _with_text_of(series, source)
    header = series.datasets[0]
    if "PatientName" in source:  # the corpus's own bytes arrived, and decode as the corpus's name
        assert _text(header, "PatientName") == _text(source, "PatientName")
    caplog.clear()
    try:
        with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.DEBUG):
            warnings.simplefilter("always")
            encoded = results(wml_result(series, vol, wml_mask(vol)), uid_seed=f"charset-{path.name}")
    except SvdmarkError as exc:  # a clean failure is allowed, with a reason
        assert str(exc), f"{path.name}: an svdmark error without a reason"
        return
    said = [str(w.message) for w in caught] + [r.getMessage() for r in caplog.records]
    name = _text(header, "PatientName")
    for part in filter(None, re.split(r"[\^=]", name)):
        assert not any(part in line for line in said), f"{path.name}: the patient's name reached a warning/log line"
    kinds = [k for k, _ in encoded.items()]
    assert kinds == ["seg", "sr", "summary"], kinds
    for kind, ds in encoded.items():
        back = _read(_bytes(ds))
        for keyword in ("PatientName", "PatientID", "StudyDescription", "AccessionNumber"):
            assert _text(back, keyword) == _text(header, keyword), (path.name, kind, keyword)
    assert header.get_item(0x00080005).value == source.get_item(0x00080005).value  # the source is untouched
