"""The source header our SEG, SR and summary copy: a character set highdicom refuses as written
(``\\ISO 2022 IR 87``, an empty first value) and dates that do not parse must not stop encoding."""
from __future__ import annotations

import io
import logging
import warnings

import pydicom
import pytest

from svdmark.domain import Series
from svdmark.encode import results
from svdmark.encode.charset import normalise_charset, source_header

from tests.unit.test_encode_support import ct_series, wml_mask, wml_result

JAPANESE = "Yamada^Tarou=山田^太郎=やまだ^たろう"


@pytest.mark.parametrize("source, ours", [
    # several values (ISO 2022 code extensions): dcmjs, OHIF's reader, refuses the file; UTF-8 carries the text
    (["", "ISO 2022 IR 87"], "ISO_IR 192"),
    (["ISO_IR 6", "ISO 2022 IR 87"], "ISO_IR 192"),
    (["ISO 2022 IR 6", "ISO 2022 IR 87", "ISO 2022 IR 159"], "ISO_IR 192"),
    (["ISO 2022 IR 13", "ISO 2022 IR 87"], "ISO_IR 192"),
    ("ISO_IR 203", "ISO_IR 192"),  # Latin-9: not in dcmjs's table
    ("ISO 2022 IR 13", "ISO 2022 IR 13"),
    ("ISO_IR 100", "ISO_IR 100"),
    (" ISO_IR100 ", "ISO_IR 100"),  # spelling repaired
    ("ISO_IR 192", "ISO_IR 192"),
    ("", None), ("ISO_IR 6", None), (None, None), ([""], None),  # the default repertoire: no attribute
    (["ISO 2022 IR 6", "ISO 2022 IR 149"], "ISO_IR 192"),  # highdicom cannot write it: UTF-8 carries the text
    ("LATIN1", "ISO_IR 192"),
])
def test_normalise_charset(source, ours):
    assert normalise_charset(source) == ours


def _from_bytes(series: Series, drop: tuple[str, ...] = (), **attrs) -> Series:
    """The series as the worker has it: read back from files, elements still raw; without ``drop``, with ``attrs``."""
    out = []
    for ds in series.datasets:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom warns about the invalid values we set on purpose
            for keyword in drop:
                delattr(ds, keyword)
            for k, v in attrs.items():
                setattr(ds, k, v)
            buf = io.BytesIO()
            ds.save_as(buf, enforce_file_format=True)
        buf.seek(0)
        out.append(pydicom.dcmread(buf))
    return Series(series.study_uid, series.series_uid, tuple(out))


def _back(ds: pydicom.Dataset) -> pydicom.Dataset:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    buf.seek(0)
    return pydicom.dcmread(buf)


def test_iso_2022_ir_87_with_empty_first_value_encodes_and_keeps_the_name():
    series, vol = ct_series()
    series = _from_bytes(series, SpecificCharacterSet=["", "ISO 2022 IR 87"], PatientName=JAPANESE)
    enc = results(wml_result(series, vol, wml_mask(vol)), uid_seed="ir87")
    assert {k for k, _ in enc.items()} == {"seg", "sr", "summary"}
    for _, ds in enc.items():
        back = _back(ds)
        assert back.SpecificCharacterSet == "ISO_IR 192"
        assert str(back.PatientName) == JAPANESE
    assert list(series.datasets[0].SpecificCharacterSet) == ["", "ISO 2022 IR 87"]  # the source is left as it was


def test_an_unparseable_birth_date_is_left_empty_and_never_logged(caplog):
    series, vol = ct_series()
    series = _from_bytes(series, PatientBirthDate="17.04.1923", PatientSex="m")
    caplog.clear()  # pydicom logged the value as we set it above
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.DEBUG):
        warnings.simplefilter("always")
        enc = results(wml_result(series, vol, wml_mask(vol)), uid_seed="bad-date")
    assert enc.seg is not None
    for _, ds in enc.items():
        back = _back(ds)
        assert back.PatientBirthDate in ("", None) and back.PatientSex == "M"
        assert back.StudyDate == "20250101" and str(back.PatientName) == "Müller^Jörg"
    seen = [str(w.message) for w in caught] + [r.getMessage() for r in caplog.records]
    assert not [m for m in seen if "17.04.1923" in m]
    assert series.datasets[0].get_item("PatientBirthDate").value == b"17.04.1923"  # the source is untouched


def test_a_legacy_dotted_date_is_rewritten():
    series, vol = ct_series()
    series = _from_bytes(series, PatientBirthDate="1923.04.17")
    enc = results(wml_result(series, vol, wml_mask(vol)), uid_seed="legacy-date")
    assert {_back(ds).PatientBirthDate for _, ds in enc.items()} == {"19230417"}


def test_a_clean_header_is_not_copied():
    series, _ = ct_series()
    assert source_header(series.datasets[0]) is series.datasets[0]
