"""Series routing: header → WML (head NCCT), CMB (SWI) or ignored with a reason.

Rules are data: ``svdmark/data/routing.toml`` (see ``table.py`` for the
format). ``decide`` never raises; ``RoutingTable.load`` raises ``ConfigError``
for a broken table. After the volume is built, ``require_head`` (``anatomy.py``)
checks that the pixels are a head and raises ``Ignored`` with the reason if not.
"""
from svdmark.route.anatomy import AnatomyLimits, AnatomyVerdict, check_ct, check_mr, require_head
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
    "AnatomyLimits",
    "AnatomyVerdict",
    "check_ct",
    "check_mr",
    "require_head",
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
