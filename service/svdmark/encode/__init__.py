"""AnalysisResult → DICOM objects: TID 1500 SR, binary SEG, Secondary Capture summary.

Public API::

    encoded = results(result, uid_seed="...", profile={OutputKind.SR, OutputKind.SUMMARY})
    encoded.sr, encoded.seg, encoded.summary   # pydicom Datasets, or None if not in the profile
    encoded.items()                            # [(OutputKind, Dataset)] present ones, send order
    by_profile(result, profiles, uid_seed=...) # {profile: EncodedResults}, each object encoded once

Pure functions of their inputs: the same result and ``uid_seed`` give the same
SOP Instance UIDs (only the content date/time reflects when it ran). An SR that
could reference a SEG but whose profile omits it is another object, with a UID of
its own, so an SR never names a SEG its destination does not get. Codes,
units and labels come from ``svdmark/data/sr_templates/`` (:class:`Templates`). Only
this package imports highdicom.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from io import BytesIO
from typing import Collection, Iterable, Sequence

from pydicom import Dataset

from ..domain import FULL_PROFILE, AnalysisResult, OutputKind, check_reportable
from .charset import COPIED_FROM_SOURCE, fit_text, source_header
from . import status
from .seg import EncodeError, encode_seg
from .sr import encode_sr
from .summary import encode_summary, render, summary_text
from .templates import Templates

__all__ = ["COPIED_FROM_SOURCE", "EncodeError", "EncodedResults", "Profile", "Templates", "by_profile", "render", "results",
           "summary_text", "to_bytes"]

Profile = frozenset[OutputKind]  # the objects one destination receives


def _software_version() -> str:
    try:
        from importlib.metadata import version

        return f"svdmark {version('svdmark')}"
    except Exception:  # pragma: no cover - not installed
        return "svdmark"


@dataclass(frozen=True)
class EncodedResults:
    sr: Dataset | None
    seg: Dataset | None
    summary: Dataset | None

    def as_list(self) -> list[Dataset]:
        """Objects to send, SEG first so that the SR's reference resolves on arrival."""
        return [ds for _, ds in self.items()]

    def items(self) -> list[tuple[OutputKind, Dataset]]:
        """(kind, dataset) pairs of the objects present; SEG first."""
        pairs = ((OutputKind.SEG, self.seg), (OutputKind.SR, self.sr), (OutputKind.SUMMARY, self.summary))
        return [(kind, ds) for kind, ds in pairs if ds is not None]


def to_bytes(ds: Dataset) -> bytes:
    """A produced object as a DICOM file (preamble, File Meta), what the spool and ``analyze`` write."""
    buf = BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


_DEFAULT_TEMPLATES: Templates | None = None


def _templates(templates: Templates | str | None) -> Templates:
    global _DEFAULT_TEMPLATES
    if isinstance(templates, Templates):
        return templates
    if templates is not None:
        return Templates.load(templates)
    if _DEFAULT_TEMPLATES is None:
        _DEFAULT_TEMPLATES = Templates.load()
    return _DEFAULT_TEMPLATES


def _with_source_headers(result: AnalysisResult) -> AnalysisResult:
    """``result`` with source datasets whose header highdicom can copy (see :func:`charset.source_header`)."""
    datasets = tuple(source_header(ds) for ds in result.series.datasets)
    if all(a is b for a, b in zip(datasets, result.series.datasets)):
        return result
    return replace(result, series=replace(result.series, datasets=datasets))


def results(
    result: AnalysisResult,
    *,
    templates: Templates | str | None = None,
    supersedes: Dataset | Sequence[Dataset] | None = None,
    uid_seed: str,
    profile: Iterable[OutputKind | str] = FULL_PROFILE,
) -> EncodedResults:
    """Encode one analysis result for one output profile (see :func:`by_profile`)."""
    wanted = frozenset(OutputKind(k) for k in profile)
    return by_profile(result, [wanted], templates=templates, supersedes=supersedes, uid_seed=uid_seed)[wanted]


def by_profile(
    result: AnalysisResult,
    profiles: Collection[Profile],
    *,
    templates: Templates | str | None = None,
    supersedes: Dataset | Sequence[Dataset] | None = None,
    uid_seed: str,
) -> dict[Profile, EncodedResults]:
    """Encode one analysis result once per distinct output profile; each object is made once.

    ``supersedes``: the earlier SR(s) this re-analysis replaces (any dataset
    with Study/Series/SOP Instance UIDs and SOP Class UID); they become the
    SR's Predecessor Documents and are named in a text item.
    A profile without the SEG gets an SR that measures without a segment
    reference (its own object, UID kind ``sr-without-seg``), so it never
    points at an object the destination will not receive; profiles that
    both have or both lack the SEG share one SR.

    Withheld results (the quality gate's ``Quality.measurable`` is False) get no SEG,
    whatever the profile: the SR and the summary say "not reliably measurable" with the
    reasons. A radiologist opening a SEG expects it to show the lesions; the mask of a
    result the gate rejected would be shown as a normal segmentation (and tools that
    recompute volume from a SEG would bring the withheld number back), and an empty SEG
    would wrongly say "no lesions". No segmentation is better than a misleading one.
    """
    try:
        check_reportable(result.findings)
    except ValueError as exc:
        raise EncodeError(str(exc)) from None
    tpl = _templates(templates)
    if supersedes is None:
        previous: list[Dataset] = []
    elif isinstance(supersedes, Dataset):
        previous = [supersedes]
    else:
        previous = list(supersedes)
    software = _software_version()
    result = _with_source_headers(result)
    wanted = [frozenset(OutputKind(k) for k in p) for p in profiles]
    every = frozenset().union(*wanted)

    segmentable = status.withheld(result.findings) is None
    seg = encode_seg(result, tpl, uid_seed, software) if segmentable and OutputKind.SEG in every else None
    summary = encode_summary(result, tpl, uid_seed, software) if OutputKind.SUMMARY in every else None
    srs: dict[bool, Dataset] = {}  # by whether it references the SEG

    def sr_for(with_seg: bool) -> Dataset:
        if with_seg not in srs:  # the UID says which SR this is, whichever profiles were asked for together
            kind = "sr" if with_seg or not segmentable else "sr-without-seg"
            srs[with_seg] = encode_sr(result, tpl, uid_seed, seg if with_seg else None, previous, software,
                                      uid_kind=kind)
        return srs[with_seg]

    out: dict[Profile, EncodedResults] = {}
    for p in wanted:
        with_seg = seg is not None and OutputKind.SEG in p
        out[p] = EncodedResults(sr=sr_for(with_seg) if OutputKind.SR in p else None,
                                seg=seg if with_seg else None,
                                summary=summary if OutputKind.SUMMARY in p else None)
    for ds in [seg, summary, *srs.values()]:  # after the SRs took their references
        if ds is not None:
            fit_text(ds)
    return out
