"""AnalysisResult → DICOM objects: TID 1500 SR, binary SEG, Secondary Capture summary.

Public API::

    encoded = results(result, uid_seed="...", profile=OutputProfile.full(),
                      templates=None, supersedes=None)
    encoded.sr, encoded.seg, encoded.summary   # pydicom Datasets, or None if not in profile
    encoded.as_list()                          # [seg, sr, summary] present ones, send order

Pure functions of their inputs: the same result and ``uid_seed`` give the same
SOP Instance UIDs (only the content date/time reflects when it ran). Codes,
units and labels come from ``svdmark/data/sr_templates/`` (:class:`Templates`). Only
this package imports highdicom.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

from pydicom import Dataset

from ..domain import AnalysisResult
from .charset import fit_text, source_header
from . import status
from .profile import OutputProfile
from .seg import EncodeError, encode_seg
from .sr import encode_sr
from .summary import encode_summary, render, summary_text
from .templates import Templates

__all__ = ["EncodeError", "EncodedResults", "OutputProfile", "Templates", "render", "results", "summary_text"]


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

    def items(self) -> list[tuple[str, Dataset]]:
        """(kind, dataset) pairs, kinds as named in destination output profiles; SEG first."""
        pairs = (("seg", self.seg), ("sr", self.sr), ("summary", self.summary))
        return [(kind, ds) for kind, ds in pairs if ds is not None]


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
    profile: OutputProfile | str = OutputProfile.full(),
) -> EncodedResults:
    """Encode one analysis result.

    ``supersedes``: the earlier SR(s) this re-analysis replaces (any dataset
    with Study/Series/SOP Instance UIDs and SOP Class UID); they become the
    SR's Predecessor Documents and are named in a text item.
    ``profile``: which objects to produce (see :class:`OutputProfile`). When
    the SEG is not produced, the SR measures without a segment reference so it
    never points at an object the destination will not receive.

    Withheld results (the quality gate's ``Quality.measurable`` is False) get no SEG,
    whatever the profile: the SR and the summary say "not reliably measurable" with the
    reasons. A radiologist opening a SEG expects it to show the lesions; the mask of a
    result the gate rejected would be shown as a normal segmentation (and tools that
    recompute volume from a SEG would bring the withheld number back), and an empty SEG
    would wrongly say "no lesions". No segmentation is better than a misleading one.
    """
    tpl = _templates(templates)
    profile = OutputProfile.parse(profile)
    if supersedes is None:
        previous: list[Dataset] = []
    elif isinstance(supersedes, Dataset):
        previous = [supersedes]
    else:
        previous = list(supersedes)
    software = _software_version()
    result = _with_source_headers(result)

    want_seg = OutputProfile.SEG in profile and status.withheld(result.findings) is None
    seg = encode_seg(result, tpl, uid_seed, software) if want_seg else None
    sr = encode_sr(result, tpl, uid_seed, seg, previous, software) if OutputProfile.SR in profile else None
    summary = encode_summary(result, tpl, uid_seed, software) if OutputProfile.SUMMARY in profile else None
    return EncodedResults(
        sr=fit_text(sr) if sr is not None else None,
        seg=fit_text(seg) if seg is not None else None,
        summary=fit_text(summary) if summary is not None else None,
    )
