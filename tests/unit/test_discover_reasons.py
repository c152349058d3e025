"""The reasons ``svdmark analyze`` gives for files it cannot read carry no patient data: zipfile quotes the
member's name (hospital exports name folders after the patient), so the reason goes through ``reason_of``. The
``file`` column names the researcher's own file, as it must for them to find it."""
from __future__ import annotations

import zipfile

from svdmark.batch.discover import FileError, Source, _file_sources, scan

MEMBER = "DOE^JOHN_PID-98765/IM0001.dcm"


def _zip(path, flag_encrypted=False, corrupt=False):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr(MEMBER, b"\0" * 128 + b"DICM" + b"x" * 400)
    raw = bytearray(path.read_bytes())
    if flag_encrypted:  # as some PACS exports: the member is password-protected
        raw[6] |= 1
        raw[raw.rfind(b"PK\x01\x02") + 8] |= 1
    if corrupt:  # one byte of the member's data flipped: a bad CRC
        raw[30 + len(MEMBER) + 200] ^= 0xFF
    path.write_bytes(bytes(raw))


def _reason(path) -> str:
    (found,) = list(_file_sources(path))
    assert isinstance(found, Source)
    error = scan(found, b"key")
    assert isinstance(error, FileError)
    return error.reason


def test_an_encrypted_member_is_named_in_the_file_column_only(tmp_path):
    _zip(tmp_path / "export.zip", flag_encrypted=True)
    reason = _reason(tmp_path / "export.zip")
    assert reason.startswith("cannot read: RuntimeError") and "DOE" not in reason and "98765" not in reason


def test_a_member_with_a_bad_crc_is_named_in_the_file_column_only(tmp_path):
    _zip(tmp_path / "export.zip", corrupt=True)
    reason = _reason(tmp_path / "export.zip")
    assert reason.startswith("cannot read: BadZipFile") and "DOE" not in reason and "98765" not in reason
