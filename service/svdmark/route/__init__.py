"""Series routing: header → WML (head NCCT), CMB (SWI) or ignored with a reason.

Rules are data: ``svdmark/data/routing.toml`` (see ``table.py`` for the
format). ``decide`` never raises; ``RoutingTable.load`` raises ``ConfigError``
for a broken table. After the volume is built, ``not_a_head`` (``anatomy.py``)
checks that the pixels are a head and answers the IGNORED decision, with the reason, if not.
"""
from svdmark.route.anatomy import AnatomyLimits, AnatomyVerdict, check_ct, check_mr, not_a_head
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
    "not_a_head",
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
