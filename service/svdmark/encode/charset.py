"""Keep the source's Specific Character Set where the viewers can read it (else UTF-8): make our own text fit it,
and the header we copy encodable."""
from __future__ import annotations

import unicodedata

from pydicom import Dataset
from pydicom.charset import convert_encodings
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.tag import BaseTag, Tag
from pydicom.valuerep import DA, DT, TM

_TEXT_VRS = {"LO", "LT", "SH", "ST", "UT", "UC"}
_ASCII = {
    "\u2014": "-", "\u2013": "-", "\u00b7": "-", "\u2022": "*", "\u00d7": "x", "\u2265": ">=",
    "\u2264": "<=", "\u00b1": "+/-", "\u2026": "...", "\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"',
}


def _encodings(ds: Dataset) -> list[str]:
    cs = ds.get("SpecificCharacterSet", None)
    if cs is None or cs == "":
        return ["iso8859"]  # default repertoire; ASCII is its subset
    values = [cs] if isinstance(cs, str) else list(cs)
    return convert_encodings([v or "ISO_IR 6" for v in values])


def _fits(text: str, encodings: list[str]) -> bool:
    """Whether ``text`` can be written in our objects' character set (one value: :func:`normalise_charset`)."""
    if any(e.lower().replace("-", "").replace("_", "") in ("utf8",) for e in encodings):
        return True
    try:
        text.encode(encodings[0])
        return True
    except (UnicodeEncodeError, LookupError):
        return False


def transliterate(text: str) -> str:
    out = "".join(_ASCII.get(ch, ch) for ch in text)
    out = unicodedata.normalize("NFKD", out)
    return out.encode("ascii", "ignore").decode("ascii")


def fit_text(ds: Dataset) -> Dataset:
    """Replace svdmark-written text that the dataset's character set cannot carry (in place)."""
    encodings = _encodings(ds)
    for elem in ds.iterall():
        if elem.VR not in _TEXT_VRS or elem.value is None:
            continue
        if isinstance(elem.value, str):
            if not _fits(elem.value, encodings):
                elem.value = transliterate(elem.value)
        elif isinstance(elem.value, (list, tuple)) or hasattr(elem.value, "__iter__"):
            try:
                vals = list(elem.value)
            except TypeError:  # pragma: no cover
                continue
            if all(isinstance(v, str) for v in vals) and not all(_fits(v, encodings) for v in vals):
                elem.value = [v if _fits(v, encodings) else transliterate(v) for v in vals]
    return ds


# --------------------------------------------------------------------------- the header our objects copy
#
# highdicom copies Patient and Study attributes (and the Specific Character Set) from a source
# image into the SEG, SR and summary, and parses them while doing so. A source that a modality
# sent and we accepted must never make that copy fail, so the copy is taken from a cleaned header:
# the character set in the spelling highdicom and PS3.3 C.12.1.1.2 expect, and dates/times that
# do not parse left empty (type 2 in every module they are copied into), as are the type 2 patient
# and study attributes the source lacks (highdicom reads them unguarded). A person name of one
# component ("Bono") gets the trailing caret PS3.5 6.2.1.1 allows ("Bono^", the same name):
# highdicom otherwise warns with the name in the text, and warnings become log lines.

_DEFAULT = "ISO_IR 6"  # the default repertoire: written as no Specific Character Set at all
_UTF8 = "ISO_IR 192"
# Defined terms (PS3.3 C.12.1.1.2) that may stand alone...
_SINGLE = {
    "ISO_IR 100", "ISO_IR 101", "ISO_IR 109", "ISO_IR 110", "ISO_IR 144", "ISO_IR 127", "ISO_IR 126",
    "ISO_IR 138", "ISO_IR 148", "ISO_IR 203", "ISO_IR 13", "ISO_IR 166", _UTF8, "GB18030", "GBK",
}
# ...and the single-byte code-extension terms, which a source may also give alone (a set of several values, the
# multi-byte Japanese ones among them, is written as UTF-8: normalise_charset)
_EXT_SINGLE_BYTE = {
    "ISO 2022 IR 6", "ISO 2022 IR 100", "ISO 2022 IR 101", "ISO 2022 IR 109", "ISO 2022 IR 110",
    "ISO 2022 IR 144", "ISO 2022 IR 127", "ISO 2022 IR 126", "ISO 2022 IR 138", "ISO 2022 IR 148",
    "ISO 2022 IR 203", "ISO 2022 IR 13", "ISO 2022 IR 166",
}
_KNOWN = {_DEFAULT, *_SINGLE, *_EXT_SINGLE_BYTE}
_NOT_READ_BY_DCMJS = {"ISO_IR 203", "ISO 2022 IR 203"}  # dcmjs's encodingMapping lacks Latin-9
_BY_KEY = {term.replace(" ", "").replace("_", "").replace("-", "").upper(): term for term in _KNOWN}


def _term(value: object) -> str:
    """A source value in the spelling of its defined term (``ISO_IR100`` → ``ISO_IR 100``); "" for empty."""
    text = str(value or "").strip()
    return _BY_KEY.get(text.replace(" ", "").replace("_", "").replace("-", "").upper(), text)


def normalise_charset(value: object) -> str | None:
    """The Specific Character Set our objects carry for a source's ``value``.

    As :func:`_encodings` reads it: an empty value is the default repertoire, written as no attribute
    at all (``None``). A single defined term is kept. A set that OHIF's reader cannot decode becomes
    ``ISO_IR 192``: pydicom has already decoded the source's text, and UTF-8 carries all of it. That is
    every multi-valued set (ISO 2022 code extensions, e.g. Japanese ``\\ISO 2022 IR 87``: dcmjs refuses
    to read a file with more than one value, so OHIF could not open the SEG or SR at all), Latin-9
    (``ISO_IR 203``, not in dcmjs's table), and a value that is no defined term.
    """
    if value is None or isinstance(value, str):
        values = [value]
    else:
        values = list(value)  # type: ignore[call-overload]
    terms = [_term(v) for v in values]
    while len(terms) > 1 and terms[-1] == "":  # trailing empty values carry nothing
        terms.pop()
    if len(terms) == 1 and terms[0] in ("", _DEFAULT, "ISO 2022 IR 6"):
        return None
    if len(terms) == 1 and terms[0] in (_SINGLE | _EXT_SINGLE_BYTE) - _NOT_READ_BY_DCMJS:
        return terms[0]
    return _UTF8


_CHARSET_TAG = Tag(0x0008, 0x0005)
_SEX_TAG = Tag(0x0010, 0x0040)
_NAMES_CHECKED = (Tag(0x0010, 0x0010), Tag(0x0008, 0x0090))  # the PN values highdicom checks when copying
_DATES = {"DA": DA, "TM": TM, "DT": DT}
_DECODED_WITH_CHARSET = {"SH", "LO", "ST", "LT", "UT", "UC", "PN", "SQ"}
_SEXES = {"M", "F", "O"}
# What the SR, SEG and summary image copy of the patient and the study (highdicom's Patient and General Study
# modules, in the character set they are read in): a correction to any of them must give new objects
# (:func:`svdmark.pipeline.uid_seed`).
COPIED_FROM_SOURCE = tuple(Tag(keyword) for keyword in (
    "SpecificCharacterSet", "PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex",
    "PatientAge", "StudyDate", "StudyTime", "AccessionNumber", "StudyID", "ReferringPhysicianName",
    "StudyDescription"))
# Type 2 Patient / General Study attributes that highdicom's SR and SEG constructors read as attributes
# (an AttributeError when the source lacks one, e.g. an emergency CT without an AccessionNumber).
_TYPE2_READ = tuple(Tag(keyword) for keyword in (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "AccessionNumber", "StudyID", "StudyDate",
    "StudyTime", "ReferringPhysicianName"))


def _vr(elem: DataElement | RawDataElement) -> str | None:
    if elem.VR:
        return elem.VR
    try:
        return dictionary_VR(elem.tag)
    except KeyError:  # private or unknown: never parsed as a date
        return None


def _date_fix(elem: DataElement | RawDataElement, vr: str) -> str | None:
    """None if the date/time element is fine as it is, else the value to write instead ("" if unusable).

    Judged from the raw bytes where the element is still raw, so that pydicom never converts (and
    warns with) a bad value; a legacy ``YYYY.MM.DD`` date is rewritten ``YYYYMMDD``.
    """
    value = elem.value
    if value is None or isinstance(value, (DA, TM, DT)):
        return None
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    parts = value.split("\\") if isinstance(value, str) else [str(v) for v in value]
    texts = [p.strip(" \0") for p in parts]
    fixed = []
    for text in texts:
        if not text:
            fixed.append(text)
            continue
        try:
            parsed = _DATES[vr](text)
        except (ValueError, TypeError, OverflowError):
            return ""
        fixed.append(parsed.strftime("%Y%m%d") if vr == "DA" and "." in text else text)
    return None if fixed == texts else "\\".join(fixed)


def _single_component_name(ds: Dataset, tag: BaseTag) -> str | None:
    """The name at ``tag`` if it is one non-empty component without a caret, else None."""
    if tag not in ds:
        return None
    try:
        value = ds[tag].value
    except Exception:  # undecodable: highdicom will not get a usable name from it either
        return None
    text = str(value or "")
    if not text or "^" in text or "\\" in text:
        return None
    return text


def _values(value: object) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else [str(v) for v in value]  # type: ignore[attr-defined]


def source_header(ds: Dataset) -> Dataset:
    """``ds`` as highdicom may copy it into our objects (see the section comment).

    Returns ``ds`` itself when nothing needs changing; otherwise a new dataset that shares the
    unchanged elements (pixel data included) with ``ds``, which is left as it was.
    """
    current = ds.get("SpecificCharacterSet")
    charset = normalise_charset(current)
    charset_changes = _values(current) != _values(charset)
    fixes: dict[BaseTag, str] = {}
    for tag in ds.keys():
        if tag.is_private or tag.group < 0x0008:
            continue
        elem = ds.get_item(tag)
        vr = _vr(elem) if elem is not None else None
        if vr in _DATES:
            fix = _date_fix(elem, vr)
            if fix is not None:
                fixes[tag] = fix
    for tag in _NAMES_CHECKED:
        name = _single_component_name(ds, tag)
        if name is not None:
            fixes[tag] = name + "^"
    sex = ds.get("PatientSex", None)
    if sex is not None and str(sex) != "" and str(sex).strip().upper() not in _SEXES:
        fixes[_SEX_TAG] = ""
    elif sex is not None and str(sex) != str(sex).strip().upper():
        fixes[_SEX_TAG] = str(sex).strip().upper()
    missing = [tag for tag in _TYPE2_READ if tag not in ds]
    if not charset_changes and not fixes and not missing:
        return ds
    out = Dataset()
    for tag in ds.keys():
        elem = ds.get_item(tag)
        if charset_changes and _vr(elem) in _DECODED_WITH_CHARSET:
            elem = ds[tag]  # decode with the source's character set before ours replaces it
        out[tag] = elem
    for tag, value in fixes.items():
        vr = "CS" if tag == _SEX_TAG else "PN" if tag in _NAMES_CHECKED else _vr(ds.get_item(tag)) or "UN"
        out[tag] = DataElement(tag, vr, value)
    for tag in missing:  # absent from the source: empty, as type 2 allows (highdicom reads them unguarded)
        out[tag] = DataElement(tag, dictionary_VR(tag), "")
    if charset_changes:
        if charset is None:
            del out[_CHARSET_TAG]
        else:  # a new element: the source's own is shared, and must not change
            out[_CHARSET_TAG] = DataElement(_CHARSET_TAG, "CS", charset)
    if hasattr(ds, "file_meta"):
        out.file_meta = ds.file_meta
    return out
