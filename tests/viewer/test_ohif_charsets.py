"""svdmark's SEG, SR and summary image from sources in character sets a hospital sends, read with dcmjs as OHIF
reads them: every object opens, and the patient's name reads as the source's. dcmjs refuses a file whose Specific
Character Set has several values (Japanese ``\\ISO 2022 IR 87``) and does not know Latin-9 (``ISO_IR 203``), so
those sources' objects are written in UTF-8 (:func:`svdmark.encode.charset.normalise_charset`)."""
from __future__ import annotations

import json
import subprocess

import pytest

from svdmark.encode import results
from tests.unit.test_encode_header import _from_bytes
from tests.unit.test_encode_support import ct_series, wml_mask, wml_result
from tests.viewer.test_ohif_sr import HERE, _node

pytestmark = pytest.mark.interop

CASES = {
    "jis": (["", "ISO 2022 IR 87"], "Yamada^Tarou=山田^太郎=やまだ^たろう"),
    "jis-katakana": (["ISO 2022 IR 13", "ISO 2022 IR 87"], "ﾔﾏﾀﾞ^ﾀﾛｳ=山田^太郎=やまだ^たろう"),
    "latin9": ("ISO_IR 203", "Müller^Jürgen"),  # letters Latin-1 shares (pydicom reads Latin-9 as the default)
    "latin1": ("ISO_IR 100", "Ñúñez^José"),
    "utf8": ("ISO_IR 192", "山田^太郎"),
}


def _components(name: str) -> dict[str, str]:
    parts = name.split("=")
    return {k: v for k, v in zip(("Alphabetic", "Ideographic", "Phonetic"), parts) if v}


@pytest.mark.parametrize("case", sorted(CASES))
def test_ohif_reads_every_object_and_the_patients_name(case, tmp_path):
    node = _node()
    charset, name = CASES[case]
    series, vol = ct_series()
    series = _from_bytes(series, SpecificCharacterSet=charset, PatientName=name)
    enc = results(wml_result(series, vol, wml_mask(vol)), uid_seed=f"charset-{case}")
    paths = []
    for kind, ds in enc.items():
        path = tmp_path / f"{kind}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(str(path))
    assert len(paths) == 3
    proc = subprocess.run([node, str(HERE / "read_charsets.mjs"), *paths], capture_output=True, text=True,
                          timeout=120, cwd=HERE)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for path, got in json.loads(proc.stdout).items():
        assert "error" not in got, f"{path}: dcmjs cannot read it: {got['error']}"
        assert got["name"] == [_components(name)], (path, got)
