"""Output profiles: which objects a destination receives."""
from __future__ import annotations

import enum

from ..errors import ConfigError


class OutputProfile(enum.Flag):
    """A set of output objects. Combine with ``|``; parse config strings with :meth:`parse`.

    Some PACS reject SEG or SR, and many viewers render neither, so each
    destination names its own profile (e.g. ``"full"``, ``"sr+summary"``,
    ``"summary"``).
    """

    SR = enum.auto()
    SEG = enum.auto()
    SUMMARY = enum.auto()

    @classmethod
    def full(cls) -> "OutputProfile":
        return cls.SR | cls.SEG | cls.SUMMARY

    @classmethod
    def parse(cls, text: "str | OutputProfile") -> "OutputProfile":
        """``"full"``/``"all"``, ``"none"`` is refused, else names joined by ``+``, ``,`` or ``|``.

        >>> OutputProfile.parse("sr+summary") == OutputProfile.SR | OutputProfile.SUMMARY
        True
        """
        if isinstance(text, OutputProfile):
            return text
        s = str(text).strip().lower()
        if s in ("full", "all"):
            return cls.full()
        result = cls(0)
        for part in s.replace(",", "+").replace("|", "+").split("+"):
            part = part.strip()
            if not part:
                continue
            try:
                result |= cls[part.upper()]
            except KeyError:
                raise ConfigError(
                    f"unknown output '{part}' in profile {text!r}; use sr, seg, summary or full"
                ) from None
        if not result:
            raise ConfigError(f"output profile {text!r} selects nothing")
        return result

    def __str__(self) -> str:
        return "+".join(m.name.lower() for m in OutputProfile if m in self)
