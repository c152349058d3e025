"""The strict structure walk of a received body (svdmark.receive.structure), on hand-built element streams."""
import io
import struct

import pytest

from svdmark.receive import structure
from tests import corpus
from svdmark.receive.structure import StructureError


def el(group: int, elem: int, vr: str, value: bytes) -> bytes:
    """One explicit VR little endian element."""
    if vr in ("OB", "OW", "SQ", "UN", "UT"):
        return struct.pack("<HH2sHI", group, elem, vr.encode(), 0, len(value)) + value
    return struct.pack("<HH2sH", group, elem, vr.encode(), len(value)) + value


def item(body: bytes, undefined: bool = False) -> bytes:
    if undefined:
        return struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF) + body + struct.pack("<HHI", 0xFFFE, 0xE00D, 0)
    return struct.pack("<HHI", 0xFFFE, 0xE000, len(body)) + body


def seq_undefined(group: int, elem: int, items: bytes) -> bytes:
    return struct.pack("<HH2sHI", group, elem, b"SQ", 0, 0xFFFFFFFF) + items + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)


MODALITY = el(0x0008, 0x0060, "CS", b"CT")
CODE = el(0x0008, 0x0100, "SH", b"T-A0100 ")


def test_nested_sequences_of_both_length_kinds_pass():
    body = MODALITY + seq_undefined(0x0008, 0x1140, item(CODE, undefined=True) + item(CODE)) + \
        el(0x0040, 0xA730, "SQ", item(seq_undefined(0x0040, 0xA730, item(CODE, undefined=True))))
    structure.check(body, implicit=False, little=True)


def test_item_longer_than_its_sequence_is_a_length_error():
    inner = item(CODE)
    bad = inner[:4] + struct.pack("<I", 400) + inner[8:]
    with pytest.raises(StructureError) as exc:
        structure.check(MODALITY + el(0x0008, 0x1140, "SQ", bad), implicit=False, little=True)
    assert exc.value.kind == structure.LENGTH and "400" in str(exc.value)


def test_sequence_without_its_delimiter_is_a_length_error():
    body = MODALITY + seq_undefined(0x0008, 0x1140, item(CODE, undefined=True))[:-8]
    with pytest.raises(StructureError) as exc:
        structure.check(body, implicit=False, little=True)
    assert exc.value.kind == structure.LENGTH


def test_explicit_body_under_an_implicit_syntax_is_an_encoding_error():
    with pytest.raises(StructureError) as exc:
        structure.check(MODALITY + CODE, implicit=True, little=True)
    assert exc.value.kind == structure.ENCODING


def test_messages_never_carry_values():
    secret = b"SECRET^NAME"
    body = MODALITY + struct.pack("<HH2sH", 0x0010, 0x0010, b"PN", 0x7000) + secret
    with pytest.raises(StructureError) as exc:
        structure.check(body, implicit=False, little=True)
    assert "SECRET" not in str(exc.value) and "(0010,0010)" in str(exc.value)


def test_deep_nesting_is_refused_not_a_recursion_error():
    inner = CODE
    for _ in range(40):
        inner = seq_undefined(0x0040, 0xA730, item(inner, undefined=True))
    with pytest.raises(StructureError) as exc:
        structure.check(MODALITY + inner, implicit=False, little=True)
    assert exc.value.kind == structure.ENCODING and "nested" in str(exc.value)


def test_inflate_refuses_a_bomb():
    import zlib

    c = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    bomb = c.compress(b"\0" * 10_000_000) + c.flush()
    with pytest.raises(StructureError) as exc:
        structure.inflate(bomb, 1_000_000)
    assert exc.value.kind == structure.TOO_LARGE


def test_a_deflated_dataset_may_not_inflate_past_the_size_cap():
    """A few kB of deflate that would inflate to 5 MB, under a 1 MB cap: refused as too large (0xA701) while inflating,
    never held in memory past the cap that a plain dataset has (it was allowed 8 times that)."""
    import zlib

    from pydicom import Dataset
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    from svdmark.receive.inspect import STATUS_DATASET_TOO_LARGE, inspect
    from svdmark.errors import Rejected

    meta = Dataset()
    meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    meta.MediaStorageSOPInstanceUID = "1.2.3"
    ds = Dataset()
    ds.file_meta = meta
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    c = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    head = buf.getvalue()[:structure.body_offset(buf.getvalue())]  # preamble and file meta, no body
    data = head + c.compress(b"\0" * 5_000_000) + c.flush()
    assert len(data) < 30_000
    with pytest.raises(Rejected) as exc:
        inspect(data, max_bytes=1_000_000)
    assert exc.value.status == STATUS_DATASET_TOO_LARGE and "inflates to more than 1000000 bytes" in str(exc.value)


def test_a_dataset_is_checked_where_it_lies_in_a_larger_buffer():
    body = MODALITY + seq_undefined(0x0008, 0x1140, item(CODE)) + el(0x0008, 0x0100, "SH", b"X ")
    collect = frozenset({0x00080060, 0x00081140, 0x00080100})
    alone = structure.check(body, implicit=False, little=True, collect=collect)
    prefix = b"\xff" * 132  # e.g. a preamble: never read
    within = structure.check(prefix + body, implicit=False, little=True, collect=collect, start=len(prefix))
    assert {t: s._replace(offset=s.offset - len(prefix)) for t, s in within.items()} == alone
    with pytest.raises(StructureError):  # nothing after start
        structure.check(prefix, implicit=False, little=True, start=len(prefix))
    with pytest.raises(StructureError):  # a broken element after start is found as before
        structure.check(prefix + body[:-1], implicit=False, little=True, start=len(prefix))


def _outcome(data: bytes):
    """check()'s spans of every top-level element, or the error it raises, for a whole Part 10 file."""
    try:
        start = structure.body_offset(data)
        meta = data[132:start]
        little = b"1.2.840.10008.1.2.2\x00" not in meta  # Explicit VR Big Endian
        implicit = b"1.2.840.10008.1.2\x00" in meta  # Implicit VR Little Endian
        return structure.check(data, implicit=implicit, little=little,
                               collect=frozenset(range(0, 0x7FE00011, 0x10001)), start=start)
    except StructureError as exc:
        return (exc.kind, str(exc))


def test_the_explicit_little_endian_shortcut_reads_what_the_general_walk_reads(monkeypatch):
    """Every Part 10 file of the pydicom corpus, and some cut short: the same spans or the same error with the
    shortcut for explicit VR little endian headers as without it."""
    files = [data for data in (p.read_bytes() for p in corpus.files()) if data[128:132] == b"DICM"]
    cases = files + [f[:len(f) * k // 7] for f in files[:40] for k in (2, 3, 5)]
    with_shortcut = [_outcome(data) for data in cases]
    monkeypatch.setattr(structure, "_SHORT_VR_LE", {})
    monkeypatch.setattr(structure, "_LONG_VR_LE", {})
    assert [_outcome(data) for data in cases] == with_shortcut
    assert len(files) > 100 and sum(isinstance(o, dict) for o in with_shortcut) > len(files) // 2  # most walk cleanly
