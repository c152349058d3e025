"""Findings → descriptive flags, driven by the versioned ``data/rules.toml``.

Public API::

    ruleset = RuleSet.load()            # packaged rules, or RuleSet.load(path)
    ruleset.info                        # RuleSetInfo(id, version)
    ruleset.evaluate(findings)          # tuple[Flag, ...]

Every number, threshold and word of wording lives in the TOML file. This
module only does arithmetic and string formatting, and refuses inputs it
cannot describe honestly (negative, NaN or infinite volumes).
"""
from __future__ import annotations

from .engine import RuleInputError, RuleSet

__all__ = ["RuleInputError", "RuleSet"]
