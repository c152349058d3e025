"""Structured logging: one line per event, ``ts level logger event key=value ...``.

Callers pass UIDs and reasons, never patient names, IDs or birth dates;
``pseudonym`` gives a keyed hash where a patient must be told apart.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import sys
import time
from typing import Any

_FORBIDDEN = {"PatientName", "PatientID", "PatientBirthDate", "patient_name", "patient_id", "birth_date"}


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"
        fields = getattr(record, "fields", {})
        parts = [ts, record.levelname, record.name, record.getMessage()]
        for key, value in fields.items():
            text = value if isinstance(value, (int, float)) else json.dumps(str(value), ensure_ascii=False)
            parts.append(f"{key}={text}")
        line = " ".join(str(p) for p in parts)
        if record.exc_info:
            line += " exc=" + json.dumps(self.formatException(record.exc_info))
        return line


def setup(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # pynetdicom is chatty at INFO (every PDU); keep its warnings only.
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)


def event(logger: logging.Logger, name: str, level: int = logging.INFO, exc_info: bool = False, **fields: Any) -> None:
    """Log one structured event. Refuses patient-identifying field names outright."""
    bad = _FORBIDDEN.intersection(fields)
    if bad:
        raise ValueError(f"refusing to log patient identifiers: {sorted(bad)}")
    logger.log(level, name, extra={"fields": fields}, exc_info=exc_info)


def pseudonym(value: str, key: bytes) -> str:
    """Keyed hash of a patient identifier (HMAC-SHA256, 16 hex chars)."""
    return hmac.new(key, value.encode("utf-8"), hashlib.sha256).hexdigest()[:16]
