"""Structured logging with structlog: one line per event, as text for people or JSON for a log shipper.

svdmark code logs through ``event(logger, name, **fields)`` on standard-library loggers (so
pytest's ``caplog`` and any stdlib handler still see the record, its ``getMessage()`` being the
event name and ``record.fields`` its fields). ``setup`` puts one handler on the root logger whose
formatter is structlog's ``ProcessorFormatter``: every record, svdmark's and third-party libraries'
(highdicom, pynetdicom, pydicom, onnxruntime, ``warnings``) alike, becomes one line of one shape.

The format: ``--log-format`` (any subcommand), else ``$SVDMARK_LOG_FORMAT``, else ``[logging] format``
(serve), else text.

Text (``--log-format text``, the default)::

    2026-11-30T19:40:37.112Z INFO svdmark.worker analysis_done job_id=3 series_uid="1.2.3" task="wml"

  i.e. ``<UTC timestamp> <LEVEL> <logger> <event>`` then ``key=value`` pairs; the event bare when
  it is a snake_case name, else a JSON string; numbers, booleans and null bare, every other value a JSON string (so spaces and newlines stay on the line). ``TEXT_LINE``
  is the regular expression of that shape.

JSON (``--log-format json``)::

    {"ts": "2026-11-30T19:40:37.112Z", "level": "INFO", "logger": "svdmark.worker", "event": "analysis_done", ...}

A third-party library's record keeps its logger name and becomes the event ``library_message``
with its text in ``message`` (one line, at most 2000 characters); libraries are held at
WARNING unless ``third_party_level`` says otherwise. An exception's traceback is the field ``exc``.

Callers pass UIDs and reasons, never patient names, IDs or birth dates (``event`` refuses those
field names); ``pseudonym`` gives a keyed hash where a patient must be told apart.
"""
from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import logging
import re
import sys
import time
from typing import Any

import structlog

from .config import LOG_FORMAT_ENV, log_format_from_env
from .errors import ConfigError

FORMATS = ("text", "json")
_chosen_format: str | None = None
THIRD_PARTY = ("highdicom", "pynetdicom", "pydicom", "onnxruntime", "py.warnings", "PIL", "numba")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
TEXT_LINE = re.compile(r'^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (?P<level>DEBUG|INFO|WARNING|ERROR|CRITICAL) '
                       r'(?P<logger>[\w.]+) (?P<event>[a-z][a-z0-9_]*|"([^"\\]|\\.)*")'
                       r'( [A-Za-z_][\w.]*=(-?\d+(\.\d+)?([eE][-+]?\d+)?|true|false|null|"([^"\\]|\\.)*"))*$')
_FORBIDDEN = {"PatientName", "PatientID", "PatientBirthDate", "patient_name", "patient_id", "birth_date"}
_RESERVED = {"ts", "level", "logger", "event"}
_MAX_MESSAGE = 2000


def _timestamp(record: logging.LogRecord) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"


def _from_record(logger: Any, method: str, ed: dict) -> dict:
    """structlog pre-chain: a stdlib record → ``{ts, level, logger, event, **fields}``."""
    record: logging.LogRecord = ed["_record"]
    out = {"ts": _timestamp(record), "level": record.levelname, "logger": record.name}
    fields = getattr(record, "fields", None)
    if isinstance(fields, dict) and (record.name == "svdmark" or record.name.startswith("svdmark.")):
        out["event"] = str(ed["event"])
        out.update({(f"field_{k}" if k in _RESERVED else k): v for k, v in fields.items()})
    else:  # a library's free text: one stable event name, the text as a field
        text = " ".join(str(ed["event"]).split())
        out["event"] = "library_message"
        out["message"] = text[:_MAX_MESSAGE]
    if ed.get("exc_info"):
        out["exc_info"] = ed["exc_info"]
    return out


def _exception(logger: Any, method: str, ed: dict) -> dict:
    exc = ed.pop("exc_info", None)
    if exc:
        ed["exc"] = _format_exc(exc)
    return ed


def _format_exc(exc_info) -> str:
    """The traceback's frames, and each exception of its chain named by ``failures.reason_of``: never its raw text,
    in which pydicom and highdicom quote the value they could not read (a name, an ID, a birth date)."""
    import traceback

    from .failures import reason_of  # failures imports nothing of logs; lazy keeps the import order free

    if exc_info is True:
        exc_info = sys.exc_info()
    chain, exc = [], exc_info[1]
    while exc is not None and all(exc is not e for e in chain):
        chain.append(exc)
        exc = exc.__cause__ if exc.__cause__ is not None else (None if exc.__suppress_context__ else exc.__context__)
    parts = ["Traceback (most recent call last):\n" + "".join(traceback.format_tb(e.__traceback__)) + reason_of(e)
             for e in reversed(chain)]
    return "\n\nDuring it, or because of it, this followed:\n\n".join(parts).rstrip()


def _json_value(value: Any) -> Any:
    """A JSON scalar: None, bool, int, finite float, str (NaN and infinities as text: JSON has none)."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float) and value == value and value not in (float("inf"), float("-inf")):
        return value
    return str(value)


def _render_text(logger: Any, method: str, ed: dict) -> str:
    event = str(ed.pop("event"))
    parts = [ed.pop("ts"), ed.pop("level"), ed.pop("logger"), event if _NAME.match(event) else json.dumps(event)]
    for key, value in ed.items():
        parts.append(f"{key}={_text_value(value)}")
    return " ".join(str(p) for p in parts)


def _text_value(value: Any) -> str:
    return json.dumps(_json_value(value), ensure_ascii=False)


def _render_json(logger: Any, method: str, ed: dict) -> str:
    return json.dumps({k: _json_value(v) for k, v in ed.items()}, ensure_ascii=False)


def formatter(fmt: str = "text") -> logging.Formatter:
    """The formatter of ``setup``'s handler (for a caller that adds its own handler)."""
    if fmt not in FORMATS:
        raise ConfigError(f"log format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[_from_record],
        processors=[_exception,
                    _render_json if fmt == "json" else _render_text],
    )


def use_format(fmt: str | None) -> None:
    """The format every later ``setup`` uses when it is not given one (the ``--log-format`` option)."""
    global _chosen_format
    if fmt is not None and fmt not in FORMATS:
        raise ConfigError(f"log format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    _chosen_format = fmt
    chosen_format()  # a bad $SVDMARK_LOG_FORMAT is said now, not at the first log line


def format_given() -> bool:
    """Whether ``--log-format`` or ``$SVDMARK_LOG_FORMAT`` chose the format (they win over the config file)."""
    return bool(_chosen_format or log_format_from_env())


def chosen_format() -> str:
    """``use_format``'s choice, else ``$SVDMARK_LOG_FORMAT``, else ``text``."""
    fmt = _chosen_format or log_format_from_env() or "text"
    if fmt not in FORMATS:
        raise ConfigError(f"${LOG_FORMAT_ENV} must be one of {', '.join(FORMATS)}, not {fmt!r}")
    return fmt


def setup(level: str = "INFO", fmt: str | None = None, third_party_level: str = "WARNING", stream=None) -> None:
    """One handler on the root logger (stderr), every record through ``formatter(fmt)``;
    ``fmt`` None: ``chosen_format()``."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter(fmt or chosen_format()))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(str(level).upper())
    logging.captureWarnings(True)  # warnings.warn from pydicom/highdicom: a logged line, not raw stderr text
    for name in THIRD_PARTY:
        lib = logging.getLogger(name)
        lib.setLevel(str(third_party_level).upper())
        lib.handlers[:] = []  # a library's own handler would print a second, unstructured line
        lib.propagate = True
    from . import phi  # here, not at the top: phi keys its UID hashes with this module's pseudonym

    phi.install()  # pydicom's and pynetdicom's messages quote element values: never into a log


def add_format_option(p: argparse.ArgumentParser) -> None:
    """``--log-format text|json`` (the command line calls ``use_format`` with it before a command runs)."""
    p.add_argument("--log-format", choices=FORMATS, default=argparse.SUPPRESS,
                   help=f"text: one 'ts LEVEL logger event key=value' line per event (default); json: one "
                        f"JSON object per line, for a log shipper (default: ${LOG_FORMAT_ENV}, else text)")


def event(logger: logging.Logger, name: str, level: int = logging.INFO, exc_info: bool = False, **fields: Any) -> None:
    """Log one structured event. Refuses patient-identifying field names outright."""
    bad = _FORBIDDEN.intersection(fields)
    if bad:
        raise ValueError(f"refusing to log patient identifiers: {sorted(bad)}")
    logger.log(level, name, extra={"fields": fields}, exc_info=exc_info)


def pseudonym(value: str, key: bytes) -> str:
    """Keyed hash of a patient identifier (HMAC-SHA256, 16 hex chars)."""
    return hmac.new(key, value.encode("utf-8"), hashlib.sha256).hexdigest()[:16]


def patient_pseudonym(header: Any, key: bytes) -> str:
    """The keyed hash of a header's patient: Patient ID qualified by Issuer of Patient ID when the header has one,
    so one ID issued by two sites of a trial stays two patients ("" without a Patient ID). Backslash joins them:
    an LO value cannot hold one."""
    pid = str(header.get("PatientID", "") or "").strip()
    if not pid:
        return ""
    issuer = str(header.get("IssuerOfPatientID", "") or "").strip()
    return pseudonym(f"{issuer}\\{pid}" if issuer else pid, key)
