"""Keep the source's Specific Character Set: make our own text fit it."""
from __future__ import annotations

import unicodedata

from pydicom import Dataset
from pydicom.charset import convert_encodings

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
    if any(e.lower().replace("-", "").replace("_", "") in ("utf8",) for e in encodings):
        return True
    if len(encodings) == 1:
        try:
            text.encode(encodings[0])
            return True
        except (UnicodeEncodeError, LookupError):
            return False
    # ISO 2022 code extensions: be conservative and only trust ASCII.
    return text.isascii()


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
