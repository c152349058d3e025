"""Keep patient data out of the logs of every command that reads DICOM (``logs.setup`` installs this).

pydicom reports bad values by quoting them (``Invalid value for VR DA: '17.04.1923'``), both as a
Python warning and on its logger, and pynetdicom logs handler and PDU exceptions with tracebacks
whose messages may quote element values. :func:`install` silences pydicom's value warnings and
puts a filter on the pydicom and pynetdicom loggers that keeps each record's level and logger
but drops its arguments, traceback and any text after the first quote. svdmark's own checks
(``inspect``, ``structure``) say what is wrong without values.

Invalid UIDs may hold an identifier, so they are logged as :func:`uid_hash`: a keyed hash
(``svdmark.logs.pseudonym``, HMAC-SHA256) under the site's pseudonymisation key when
:func:`install` is given one, else under a key drawn at start-up.
"""
from __future__ import annotations

import logging
import secrets
import warnings

from .logs import pseudonym

_key: bytes = secrets.token_bytes(32)
_LOGGERS = ("pydicom", "pynetdicom")


def uid_hash(value: str) -> str:
    """``uid#<16 hex>``: tells two bad UIDs apart without showing either."""
    return "uid#" + pseudonym(str(value), _key)


class ValueFreeFilter(logging.Filter):
    """Rewrites pydicom/pynetdicom records so that no element value can pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        cut = min((i for i in (text.find("'"), text.find('"'), text.find("\n")) if i >= 0), default=len(text))
        record.msg = text[:cut].rstrip(" :") + (" [details withheld]" if cut < len(text) else "")
        record.args = None
        if record.exc_info and record.exc_info[0] is not None:
            record.msg += f" ({record.exc_info[0].__name__})"
        record.exc_info = None
        record.exc_text = None
        record.stack_info = None
        return True


_FILTER = ValueFreeFilter()


def install(key: bytes | None = None) -> None:
    """Idempotent: filter pydicom's and pynetdicom's loggers (and their children), silence pydicom's
    value warnings; use ``key`` for :func:`uid_hash`."""
    global _key
    if key:
        _key = key
    warnings.filterwarnings("ignore", module=r"pydicom(\.|$)")
    names = [n for n in logging.root.manager.loggerDict if n.split(".")[0] in _LOGGERS] + list(_LOGGERS)
    for name in names:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
