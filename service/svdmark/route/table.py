"""Routing rules: an ordered table of readable rules, first match wins.

The table is data (``svdmark/data/routing.toml``, overridable by a path), in
the spirit of mercure's routing rules. A rule looks like::

    [[rule]]
    id = "phase-image"
    description = "Phase images of an SWI/SWAN acquisition"
    ignore = "phase image"
    hint = "only SWI magnitude/processed images are analysed"
    all = [ { attr = "Modality", equals = "MR" } ]
    any = [
      { attr = "ImageType", contains = ["P", "PHASE"] },
      { attr = "SeriesDescription", regex = '(^|[^a-z])pha(se)?([^a-z]|$)', label = "phase naming" },
    ]
    none = [ ... ]

A rule matches when every condition in ``all`` holds, at least one in ``any``
holds (if ``any`` is given) and none in ``none`` holds. Its action is either
``route = "wml" | "cmb"`` or ``ignore = "<what the series is>"``.

A condition names one attribute ``attr`` (a keyword such as ``ImageType`` or a
tag such as ``"(0043,102F)"``) and one or more tests, all of which must hold:

=================  ==========================================================
``equals``         some value equals one of these (case-insensitive)
``not_equals``     no value equals any of these
``contains``       the multi-valued attribute has one of these values
``not_contains``   the attribute has none of these values
``regex``          some value matches (``re.search``, case-insensitive)
``not_regex``      no value matches
``present``        ``true``: the attribute is there and not empty; ``false``: absent/empty
``prefix``         some value starts with one of these (for UIDs)
``greater``        some value is a number greater than this one
``less``           some value is a number less than this one
=================  ==========================================================

Attributes missing at the top level of an enhanced multi-frame header are
looked up in the first item of its shared and per-frame functional groups.

An optional ``[anatomy]`` table holds the limits of the pixel check that runs
after the volume is built (``anatomy.py``); the table's rules see only headers.
"""
from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from svdmark.domain import RouteKind, RoutingDecision
from svdmark.errors import ConfigError
from svdmark.route.anatomy import AnatomyLimits

if TYPE_CHECKING:  # pragma: no cover
    from pydicom import Dataset

FALLBACK_RULE_ID = "no-rule-matched"
FALLBACK_REASON = "no routing rule matched: modality {Modality}, series description '{SeriesDescription}'"

_OPS = ("equals", "not_equals", "contains", "not_contains", "regex", "not_regex", "present", "prefix", "greater",
        "less")
_RULE_KEYS = {"id", "description", "route", "ignore", "hint", "all", "any", "none", "enabled"}
_TAG_RE = re.compile(r"^\(?\s*([0-9a-fA-F]{4})\s*,\s*([0-9a-fA-F]{4})\s*\)?$")


# --------------------------------------------------------------------------- attribute access


def _tag_of(attr: str) -> int | None:
    m = _TAG_RE.match(attr)
    if not m:
        return None
    return (int(m.group(1), 16) << 16) | int(m.group(2), 16)


def _lookup(ds: "Dataset", attr: str) -> Any:
    """The element value of ``attr`` in ``ds`` (top level, then functional groups), or None."""
    tag = _tag_of(attr)
    key: Any = tag if tag is not None else attr

    def get(d: Any) -> Any:
        try:
            if key in d:
                return d[key].value
        except Exception:  # a malformed element reads as absent
            return None
        return None

    value = get(ds)
    if value is not None:
        return value
    for group_kw in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        groups = getattr(ds, group_kw, None) if hasattr(ds, group_kw) else None
        if not groups:
            continue
        item = groups[0]
        for elem in item:
            if elem.VR == "SQ" and elem.value:
                found = get(elem.value[0])
                if found is not None:
                    return found
    return None


def _as_text(v: Any) -> str:
    if isinstance(v, bytes):
        if len(v) in (2, 4) and not all(32 <= b < 127 for b in v):
            return str(int.from_bytes(v, "little", signed=True))
        return v.decode("latin-1", errors="replace").strip("\x00 ")
    return str(v).strip()


def values_of(ds: "Dataset", attr: str) -> list[str]:
    """All values of an attribute as stripped strings; [] when absent or empty."""
    value = _lookup(ds, attr)
    if value is None:
        return []
    # a sequence: its items' CodeMeaning if coded, else a marker that it is present
    if hasattr(value, "__iter__") and not isinstance(value, (str, bytes)) and value.__class__.__name__ == "Sequence":
        out = []
        for item in value:
            meaning = getattr(item, "CodeMeaning", None) if "CodeMeaning" in item else None
            out.append(str(meaning) if meaning else "<item>")
        return out
    if isinstance(value, (list, tuple)) or value.__class__.__name__ == "MultiValue":
        items = [_as_text(x) for x in value]
    elif isinstance(value, str) and "\\" in value:
        items = [x.strip() for x in value.split("\\")]
    else:
        items = [_as_text(value)]
    return [x for x in items if x != ""]


def _first(ds: "Dataset", attr: str) -> str:
    vals = values_of(ds, attr)
    return "\\".join(vals)


class _HeaderFields(dict):
    """``str.format_map`` source: ``{SeriesDescription}`` reads the header, missing → ''."""

    def __init__(self, ds: "Dataset"):
        super().__init__()
        self._ds = ds

    def __missing__(self, key: str) -> str:
        try:
            return _first(self._ds, key)
        except Exception:
            return ""


def _fill(template: str, ds: "Dataset") -> str:
    try:
        return template.format_map(_HeaderFields(ds))
    except (ValueError, IndexError, AttributeError):
        return template


# --------------------------------------------------------------------------- conditions


def _as_list(v: Any, what: str) -> tuple[str, ...]:
    if isinstance(v, str):
        return (v,)
    if isinstance(v, list) and all(isinstance(x, str) for x in v):
        return tuple(v)
    raise ConfigError(f"{what}: expected a string or a list of strings, got {v!r}")


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if value == value else None  # NaN is no number


def _show(vals: list[str]) -> str:
    if not vals:
        return "absent"
    return "'" + "\\".join(vals) + "'"


@dataclass(frozen=True)
class Condition:
    """One attribute and the tests it must pass (all of them)."""

    attr: str
    tests: tuple[tuple[str, Any], ...]
    label: str = ""

    @classmethod
    def parse(cls, raw: Any, where: str) -> "Condition":
        if not isinstance(raw, dict):
            raise ConfigError(f"{where}: a condition must be a table like {{ attr = \"Modality\", equals = \"CT\" }}")
        raw = dict(raw)
        attr = raw.pop("attr", None)
        if not isinstance(attr, str) or not attr:
            raise ConfigError(f"{where}: condition lacks 'attr' (the DICOM keyword or tag to test)")
        label = raw.pop("label", "")
        if not isinstance(label, str):
            raise ConfigError(f"{where}: 'label' must be a string")
        tests: list[tuple[str, Any]] = []
        for op, arg in raw.items():
            if op not in _OPS:
                raise ConfigError(f"{where}: unknown test '{op}' on {attr} (known: {', '.join(_OPS)})")
            if op == "present":
                if not isinstance(arg, bool):
                    raise ConfigError(f"{where}: 'present' must be true or false")
                tests.append((op, arg))
            elif op in ("greater", "less"):
                if not isinstance(arg, (int, float)) or isinstance(arg, bool):
                    raise ConfigError(f"{where}: '{op}' must be a number")
                tests.append((op, float(arg)))
            elif op in ("regex", "not_regex"):
                pats = _as_list(arg, f"{where}: {op}")
                try:
                    compiled = tuple(re.compile(p, re.IGNORECASE) for p in pats)
                except re.error as exc:
                    raise ConfigError(f"{where}: invalid regular expression for {attr}: {exc}") from exc
                tests.append((op, compiled))
            else:
                tests.append((op, tuple(x.upper() for x in _as_list(arg, f"{where}: {op}"))))
        if not tests:
            raise ConfigError(f"{where}: condition on {attr} has no test ({', '.join(_OPS)})")
        return cls(attr=attr, tests=tuple(tests), label=label)

    def evaluate(self, ds: "Dataset") -> tuple[bool, str]:
        """(holds, a sentence saying why)."""
        try:
            vals = values_of(ds, self.attr)
        except Exception as exc:  # never let a strange header break routing
            return False, f"{self.attr} could not be read ({exc})"
        upper = [v.upper() for v in vals]
        shown = _show(vals)
        subj = f"{self.attr} {shown}" if vals else f"{self.attr} (absent)"
        reasons: list[str] = []
        for op, arg in self.tests:
            if op == "equals":
                hit = next((v for v in vals if v.upper() in arg), None)
                ok = hit is not None
                reasons.append(f"{self.attr} is '{hit}'" if ok else f"{self.attr} is {shown}, not {' or '.join(arg)}")
            elif op == "not_equals":
                hit = next((v for v in vals if v.upper() in arg), None)
                ok = hit is None
                reasons.append(f"{self.attr} is {shown}, not {' or '.join(arg)}" if ok else f"{self.attr} is '{hit}'")
            elif op == "contains":
                hit = next((a for a in arg if a in upper), None)
                ok = hit is not None
                reasons.append(
                    f"{self.attr} contains {hit}" if ok else f"{subj} contains none of {', '.join(arg)}"
                )
            elif op == "not_contains":
                hit = next((a for a in arg if a in upper), None)
                ok = hit is None
                reasons.append(
                    f"{subj} contains none of {', '.join(arg)}" if ok else f"{self.attr} contains {hit}"
                )
            elif op in ("regex", "not_regex"):
                what = self.label or "/" + "|".join(p.pattern for p in arg) + "/"
                hit = next((v for v in vals for p in arg if p.search(v)), None)
                if op == "regex":
                    ok = hit is not None
                    reasons.append(f"{self.attr} '{hit}' matches {what}" if ok else f"{subj} does not match {what}")
                else:
                    ok = hit is None
                    reasons.append(f"{subj} does not match {what}" if ok else f"{self.attr} '{hit}' matches {what}")
            elif op == "prefix":
                hit = next((v for v in vals for a in arg if v.upper().startswith(a)), None)
                ok = hit is not None
                reasons.append(f"{self.attr} is {hit}" if ok else f"{self.attr} is {shown}")
            elif op in ("greater", "less"):
                hit = next((v for v in vals if _number(v) is not None
                            and (_number(v) > arg if op == "greater" else _number(v) < arg)), None)
                ok = hit is not None
                word = "more" if op == "greater" else "less"
                reasons.append(f"{self.attr} is {hit}, {word} than {arg:g}" if ok
                               else f"{self.attr} is {shown}, not {word} than {arg:g}")
            elif op == "present":
                ok = bool(vals) == arg
                reasons.append(f"{self.attr} is {shown}" if vals else f"{self.attr} is absent")
            else:  # pragma: no cover - parse() forbids it
                ok = False
            if not ok:
                return False, reasons[-1]
        # all tests hold: the first says it best ("ContrastBolusAgent is 'Imeron'")
        why = reasons[0]
        if self.label and self.tests[0][0] in ("equals", "contains", "prefix"):
            why += f" ({self.label})"
        return True, why


# --------------------------------------------------------------------------- rules



def evaluate_groups(all_: tuple, any_: tuple, none: tuple, ds: "Dataset",
                    quiet: tuple[str, ...] = ()) -> tuple[bool, list[str]]:
    """Every ``all_`` condition, at least one ``any_`` (when given), no ``none``: (holds, evidence) when it
    holds, else (False, [the reason]). Conditions on a ``quiet`` attribute are not quoted as evidence.
    Shared by routing rules and the rules' applicability conditions."""
    evidence: list[str] = []
    for cond in all_:
        ok, why = cond.evaluate(ds)
        if not ok:
            return False, [why]
        if cond.attr not in quiet:
            evidence.append(why)
    if any_:
        misses = []
        for cond in any_:
            ok, why = cond.evaluate(ds)
            if ok:
                evidence.insert(0, why)
                break
            misses.append(why)
        else:
            return False, ["none of: " + "; ".join(misses)]
    for cond in none:
        ok, why = cond.evaluate(ds)
        if ok:
            return False, [f"excepted because {why}"]
    return True, evidence

@dataclass(frozen=True)
class RuleTrace:
    """What one rule made of one header (for ``explain``)."""

    rule_id: str
    description: str
    matched: bool
    outcome: str  # "route wml" / "ignore: phase image"
    why: str  # the deciding evidence, in words

    def __str__(self) -> str:
        mark = "MATCH" if self.matched else "no   "
        return f"{mark} {self.rule_id:<28} {self.outcome:<34} {self.why}"


@dataclass(frozen=True)
class Rule:
    id: str
    description: str
    kind: RouteKind
    label: str  # for IGNORED: what the series is, e.g. "phase image"; for routes: what it is taken for
    hint: str = ""
    all: tuple[Condition, ...] = ()
    any: tuple[Condition, ...] = ()
    none: tuple[Condition, ...] = ()

    @classmethod
    def parse(cls, raw: Any, index: int) -> "Rule":
        where = f"rule #{index + 1}"
        if not isinstance(raw, dict):
            raise ConfigError(f"{where}: must be a table")
        rid = raw.get("id")
        if not isinstance(rid, str) or not re.fullmatch(r"[a-z0-9][a-z0-9_.-]*", rid):
            raise ConfigError(f"{where}: 'id' must be a lower-case identifier like 'phase-image', got {rid!r}")
        where = f"rule '{rid}'"
        unknown = set(raw) - _RULE_KEYS
        if unknown:
            raise ConfigError(f"{where}: unknown keys {sorted(unknown)} (known: {sorted(_RULE_KEYS)})")
        description = raw.get("description", "")
        if not isinstance(description, str) or not description:
            raise ConfigError(f"{where}: needs a 'description'")
        has_route, has_ignore = "route" in raw, "ignore" in raw
        if has_route == has_ignore:
            raise ConfigError(f"{where}: needs exactly one action, route = \"wml\"|\"cmb\" or ignore = \"<reason>\"")
        if has_route:
            try:
                kind = RouteKind(str(raw["route"]).lower())
            except ValueError:
                kind = RouteKind.IGNORED
            if kind is RouteKind.IGNORED:
                raise ConfigError(f"{where}: route must be \"wml\" or \"cmb\", got {raw['route']!r}")
            label = description
        else:
            kind = RouteKind.IGNORED
            label = raw["ignore"]
            if not isinstance(label, str) or not label.strip():
                raise ConfigError(f"{where}: 'ignore' must say why, in words a PACS admin understands")
        hint = raw.get("hint", "")
        if not isinstance(hint, str):
            raise ConfigError(f"{where}: 'hint' must be a string")
        groups = {}
        for key in ("all", "any", "none"):
            items = raw.get(key, [])
            if isinstance(items, dict):
                items = [items]
            if not isinstance(items, list):
                raise ConfigError(f"{where}: '{key}' must be a list of conditions")
            groups[key] = tuple(Condition.parse(c, f"{where}, {key}[{i}]") for i, c in enumerate(items))
        return cls(id=rid, description=description, kind=kind, label=label, hint=hint, **groups)

    @property
    def outcome(self) -> str:
        return f"ignore: {self.label}" if self.kind is RouteKind.IGNORED else f"route {self.kind.value}"

    def evaluate(self, ds: "Dataset") -> tuple[bool, str]:
        ok, evidence = evaluate_groups(self.all, self.any, self.none, ds, quiet=("Modality",))
        if ok and not evidence:
            evidence = [why for c in self.all for ok, why in [c.evaluate(ds)]]
        return ok, "; ".join(evidence)

    def decision(self, ds: "Dataset", evidence: str) -> RoutingDecision:
        if self.kind is RouteKind.IGNORED:
            reason = f"ignored: {_fill(self.label, ds)}"
            if evidence:
                reason += f" ({evidence})"
            if self.hint:
                reason += f" — {_fill(self.hint, ds)}"
        else:
            reason = f"{self.kind.value}: {_fill(self.label, ds)}"
            if evidence:
                reason += f" ({evidence})"
        return RoutingDecision(kind=self.kind, rule_id=self.id, reason=reason)


@dataclass(frozen=True)
class RoutingTable:
    """An ordered list of rules; ``decide`` takes the first that matches."""

    rules: tuple[Rule, ...]
    id: str = "svdmark-routing"
    version: str = "0"
    source: str = "<memory>"
    fallback: str = field(default=FALLBACK_REASON)
    anatomy: AnatomyLimits = field(default_factory=AnatomyLimits)

    @classmethod
    def loads(cls, text: str, source: str = "<string>") -> "RoutingTable":
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"routing table {source} is not valid TOML: {exc}") from exc
        meta = data.get("table", {})
        if not isinstance(meta, dict):
            raise ConfigError(f"routing table {source}: [table] must be a table")
        raw_rules = data.get("rule", [])
        if not isinstance(raw_rules, list) or not raw_rules:
            raise ConfigError(f"routing table {source} has no [[rule]] entries")
        rules: list[Rule] = []
        seen: set[str] = set()
        for i, raw in enumerate(raw_rules):
            try:
                rule = Rule.parse(raw, i)
            except ConfigError as exc:
                raise ConfigError(f"routing table {source}: {exc}") from exc
            if rule.id in seen:
                raise ConfigError(f"routing table {source}: rule id '{rule.id}' is used twice")
            seen.add(rule.id)
            if raw.get("enabled", True) is False:
                continue
            rules.append(rule)
        return cls(
            rules=tuple(rules),
            id=str(meta.get("id", "svdmark-routing")),
            version=str(meta.get("version", "0")),
            source=source,
            fallback=str(meta.get("fallback", FALLBACK_REASON)),
            anatomy=AnatomyLimits.parse(data.get("anatomy"), source),
        )

    @classmethod
    def load(cls, path: Path | str | None = None) -> "RoutingTable":
        """The packaged ``data/routing.toml``, or the file at ``path``."""
        if path is None:
            return _packaged()
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read routing table {p}: {exc.strerror or exc}") from exc
        return cls.loads(text, source=str(p))

    def rule(self, rule_id: str) -> Rule:
        for r in self.rules:
            if r.id == rule_id:
                return r
        raise KeyError(rule_id)

    def trace(self, ds: "Dataset", *, all_rules: bool = False) -> list[RuleTrace]:
        out: list[RuleTrace] = []
        for rule in self.rules:
            ok, why = rule.evaluate(ds)
            out.append(RuleTrace(rule.id, rule.description, ok, _fill(rule.outcome, ds), why))
            if ok and not all_rules:
                break
        return out

    def decide(self, ds: "Dataset") -> RoutingDecision:
        for rule in self.rules:
            ok, why = rule.evaluate(ds)
            if ok:
                return rule.decision(ds, why)
        return RoutingDecision(RouteKind.IGNORED, FALLBACK_RULE_ID, _fill(self.fallback, ds))


@lru_cache(maxsize=1)
def _packaged() -> RoutingTable:
    ref = resources.files("svdmark") / "data" / "routing.toml"
    try:
        text = ref.read_text(encoding="utf-8")
    except OSError as exc:  # pragma: no cover - broken install
        raise ConfigError(f"the packaged routing table is missing ({exc}); reinstall svdmark") from exc
    return RoutingTable.loads(text, source="svdmark/data/routing.toml")


def decide(header: "Dataset", table: RoutingTable | None = None) -> RoutingDecision:
    """Route one series by its header. Never raises for a strange header."""
    return (table or RoutingTable.load()).decide(header)


def explain(header: "Dataset", table: RoutingTable | None = None, *, all_rules: bool = False) -> list[RuleTrace]:
    """The rules tried, in order, with why each did or did not match.

    Stops at the first match (the one ``decide`` uses) unless ``all_rules``.
    When nothing matched, the last entry is the built-in fallback.
    """
    t = table or RoutingTable.load()
    traces = t.trace(header, all_rules=all_rules)
    if not any(tr.matched for tr in traces):
        d = t.decide(header)
        traces.append(RuleTrace(FALLBACK_RULE_ID, "built-in fallback", True, "ignore", d.reason))
    return traces


def format_explanation(traces: Iterable[RuleTrace]) -> str:
    return "\n".join(str(t) for t in traces)
