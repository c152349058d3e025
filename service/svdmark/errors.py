"""One small error tree. Every error says what is wrong in words an admin can act on."""
from __future__ import annotations


class SvdmarkError(Exception):
    """Base of all svdmark errors."""


class Rejected(SvdmarkError):
    """An incoming instance is refused; carries the DIMSE status to answer."""

    def __init__(self, status: int, reason: str, sop_uid: str | None = None):
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.sop_uid = sop_uid


class InvalidSeries(SvdmarkError):
    """A series cannot be turned into a trustworthy volume (missing slices, duplicates...)."""


class ModelError(SvdmarkError):
    """A model is missing, corrupt, fails its checksum or its self-test."""


class ConfigError(SvdmarkError):
    """Configuration is invalid."""


class SpoolDamaged(SvdmarkError):
    """Files the journal says svdmark stored are not in the spool (removed outside svdmark, a restored backup)."""


class RetryLater(SvdmarkError):
    """A failure of the moment, not of the input: the job goes back to the queue (``failures.transient``)."""
