"""Series routing: header → WML (head NCCT), CMB (SWI) or ignored with a reason.

Rules are data: ``svdmark/data/routing.toml`` (see ``table.py`` for the
format). ``decide`` never raises; ``RoutingTable.load`` raises ``ConfigError``
for a broken table.
"""
from svdmark.route.table import (
    FALLBACK_RULE_ID,
    Condition,
    Rule,
    RoutingTable,
    RuleTrace,
    decide,
    explain,
    format_explanation,
    values_of,
)

__all__ = [
    "FALLBACK_RULE_ID",
    "Condition",
    "Rule",
    "RoutingTable",
    "RuleTrace",
    "decide",
    "explain",
    "format_explanation",
    "values_of",
]
