"""IHE IOCM rejection note: a Key Object Selection Document titled (113001, DCM, "Rejected for Quality Reasons").

When a re-analysis replaces results a PACS already holds, this note names every old SR, SEG and summary
instance (SOP Class/Instance UID, series, study) so that an IOCM-aware PACS hides them. highdicom builds the
document (Patient and Study modules copied from the rejected objects, the evidence sequence from their UIDs);
only the UIDs are ours, derived like every other output (:mod:`.uids`) so that a re-run makes the same note.
"""
from __future__ import annotations

import hashlib
from typing import Sequence

import highdicom as hd
from pydicom import Dataset
from pydicom.sr.codedict import codes

from .uids import derive

TITLE = codes.DCM.RejectedForQualityReasons  # (113001, DCM): IOCM's "Rejected for Quality Reasons"
SERIES_NUMBER = 9901  # apart from the SR/SEG/summary series numbers
SERIES_DESCRIPTION = "svdmark rejected results"


def rejection_seed(uid_seed: str, rejected_uids: Sequence[str]) -> str:
    """The seed of one note: the new results' seed and the set of instances it rejects."""
    h = hashlib.sha256(uid_seed.encode() + b"\0")
    for uid in sorted(set(rejected_uids)):
        h.update(uid.encode() + b"\0")
    return h.hexdigest()


def rejection_note(rejected: Sequence[Dataset], *, uid_seed: str) -> Dataset:
    """The KOS rejecting ``rejected`` (svdmark's earlier SR/SEG/summary objects, all of one study).

    ``uid_seed`` is the seed of the results that replace them; the note's UIDs also depend on which
    instances it rejects. Raises ``ValueError`` for no objects or objects of more than one study.
    """
    if not rejected:
        raise ValueError("a rejection note needs at least one rejected object")
    studies = {str(ds.StudyInstanceUID) for ds in rejected}
    if len(studies) != 1:
        raise ValueError(f"a rejection note covers one study, got {len(studies)}")
    from . import _software_version  # the package imports this module's siblings, not this module

    ordered = sorted(rejected, key=lambda ds: str(ds.SOPInstanceUID))
    seed = rejection_seed(uid_seed, [str(ds.SOPInstanceUID) for ds in ordered])
    content = hd.ko.KeyObjectSelection(document_title=TITLE, referenced_objects=ordered)
    return hd.ko.KeyObjectSelectionDocument(
        evidence=ordered,
        content=content,
        series_instance_uid=derive(seed, "rejection-series"),
        series_number=SERIES_NUMBER,
        sop_instance_uid=derive(seed, "rejection"),
        instance_number=1,
        manufacturer="svdmark project",
        manufacturer_model_name="svdmark",
        series_description=SERIES_DESCRIPTION,
        software_versions=_software_version(),
    )


def rejected_uids(note: Dataset) -> set[str]:
    """The SOP Instance UIDs a rejection note names (its Current Requested Procedure Evidence)."""
    return {str(ref.ReferencedSOPInstanceUID)
            for study in note.CurrentRequestedProcedureEvidenceSequence
            for series in study.ReferencedSeriesSequence
            for ref in series.ReferencedSOPSequence}
