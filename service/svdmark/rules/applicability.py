"""Whether a rule's flag is attached to a study: its evidence population's condition on the header.

Each rule's evidence comes from one population (MR CLEAN-MED: adults undergoing endovascular
treatment for acute ischaemic stroke; the microbleed grades: adults after ECMO). The flag is
attached only when the study's header says the patient is in that clinical context, so the
aspirin wording does not land on every non-contrast head CT.

A condition is written like a routing rule's (``all`` / ``any`` / ``none`` lists of
``{ attr = ..., regex = ... }`` tests, parsed by :class:`svdmark.route.table.Condition`, so the
two files share one condition language). The packaged default of each rule is
``[rule.applies_when]`` in ``data/rules.toml``; a site replaces it per rule in ``svdmark.toml``
(``[flags.conditions.<rule-id>]``) and sets the mode (``[flags] applicability``):

``condition`` (default)  attach a rule's flag only when its condition holds;
``always``               attach every flag (research cohorts already selected for the population);
``never``                attach no flag (measurements only).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

from ..errors import ConfigError
from ..route.table import Condition, evaluate_groups

if TYPE_CHECKING:  # pragma: no cover
    from pydicom import Dataset

MODES = ("condition", "always", "never")
_KEYS = {"all", "any", "none", "description"}


@dataclass(frozen=True)
class Applicability:
    """One rule's condition: every ``all`` holds, one ``any`` holds (if given), no ``none`` holds."""

    description: str
    all: tuple[Condition, ...] = ()
    any: tuple[Condition, ...] = ()
    none: tuple[Condition, ...] = ()

    @classmethod
    def parse(cls, raw: Any, where: str) -> "Applicability":
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{where}: must be a table with 'description' and all/any/none condition lists")
        unknown = set(raw) - _KEYS
        if unknown:
            raise ConfigError(f"{where}: unknown keys {sorted(unknown)} (known: {sorted(_KEYS)})")
        description = raw.get("description")
        if not isinstance(description, str) or not description.strip():
            raise ConfigError(f"{where}: needs a 'description' saying which studies it selects")
        groups: dict[str, tuple[Condition, ...]] = {}
        for key in ("all", "any", "none"):
            items = raw.get(key, [])
            if isinstance(items, Mapping):
                items = [items]
            if not isinstance(items, list):
                raise ConfigError(f"{where}: '{key}' must be a list of conditions")
            groups[key] = tuple(Condition.parse(c, f"{where}, {key}[{i}]") for i, c in enumerate(items))
        if not (groups["all"] or groups["any"]):
            raise ConfigError(f"{where}: needs at least one 'all' or 'any' condition "
                              "(use [flags] applicability = \"always\" to attach a flag to every study)")
        return cls(description=description.strip(), **groups)

    def check(self, header: "Dataset") -> tuple[bool, str]:
        """(applies, the deciding evidence in words)."""
        ok, evidence = evaluate_groups(self.all, self.any, self.none, header)
        return ok, "; ".join(evidence)


def check_mode(mode: str, where: str = "[flags] applicability") -> str:
    if mode not in MODES:
        raise ConfigError(f"{where}: {mode!r} is not one of {', '.join(MODES)}")
    return mode
