"""The whole path of one series, for the service's worker and ``svdmark analyze`` alike.

    read header ─route→ decision ─(ignored: stop; no pixel data was read)
    read series ─volume→ Volume ─anatomy→ (a head?) ─infer→ output ─measure→ findings ─rules→ flags
    ─encode→ SR, SEG, SC once per output profile

:func:`run` answers one typed outcome, never an exception: :class:`Analysed` (the result and its objects),
:class:`Ignored` (the header rules or the pixel check said so, with the reason) or :class:`Failed` (the stage
and the reason, from :func:`failure`, the one error policy). The drivers (``worker.py``, ``batch/run.py``)
claim work, call :func:`run`, store the objects and record the outcome; a failure of their own steps
(``store``, ``journal``) goes through :func:`failure` too.

Each stage's wall time goes to the ``svdmark_stage_seconds`` histogram.
"""
from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Collection, Iterator, Literal, Mapping, Sequence

import pydicom

from . import encode, measure, route, volume
from .domain import FULL_PROFILE, AnalysisResult, ModelSpec, RouteKind, RoutingDecision, Series, check_reportable
from .errors import InvalidSeries, ModelError, SvdmarkError
from .failures import reason_of, transient, where
from .health import stage_timer as timed
from .infer import ModelRegistry, Runtime
from .rules import RuleSet

if TYPE_CHECKING:  # pragma: no cover
    from .config import Config


@dataclass(frozen=True)
class Context:
    routing: route.RoutingTable
    models: ModelRegistry
    runtime: Runtime
    rules: RuleSet


def build_context(config: "Config") -> Context:
    """The analysis context: routing table, models (packaged + installed, activation state
    re-read before every job, so `svdmark models activate` needs no restart), runtime, rules."""
    from .infer.registry import managed

    return Context(
        routing=route.RoutingTable.load(config.routing_file),
        models=managed(ModelRegistry(config.models_dir), config.data_dir),
        runtime=Runtime(),
        rules=RuleSet.load(config.rules_file).configured(config.flag_applicability, config.flag_conditions),
    )


class Stage(enum.StrEnum):
    """Where a series is on its path; a failure names the stage it happened in."""

    COMPLETION = "completion"  # the worker: an incomplete series under the ``reject`` policy
    READ = "read"
    ROUTE = "route"
    VOLUME = "volume"
    ANATOMY = "anatomy"
    INFER = "infer"
    MEASURE = "measure"
    RULES = "rules"
    ENCODE = "encode"
    STORE = "store"  # the drivers: objects into the spool or the output folder
    SUPERSEDE = "supersede"  # the worker: rejection notes for earlier results
    JOURNAL = "journal"  # the worker: the outcome into the journal


# --------------------------------------------------------------------------- input


@dataclass(frozen=True)
class SeriesSource:
    """Where a series' instances are: (SOP Instance UID, a path or a zero-argument callable giving what
    ``pydicom.dcmread`` reads) pairs. Nothing is read until :func:`run` asks."""

    study_uid: str
    series_uid: str
    instances: tuple[tuple[str, Any], ...]

    def ordered(self) -> list[tuple[str, Any]]:
        """By SOP Instance UID: the service and ``analyze`` read the same instances in the same order."""
        if not self.instances:
            raise InvalidSeries(f"series {self.series_uid} has no stored instances")
        return sorted(self.instances, key=lambda i: i[0])


def _read(src: Any, **kwargs) -> pydicom.Dataset:
    return pydicom.dcmread(src() if callable(src) else src, **kwargs)


def read_header(source: SeriesSource) -> pydicom.Dataset:
    """The first instance's header (what :attr:`Series.header` will be), without its pixel data."""
    return _read(source.ordered()[0][1], stop_before_pixels=True)


def read_series(source: SeriesSource) -> Series:
    """Every instance in full (pixel data included), ordered by SOP Instance UID; each header's digest is taken
    as read, before any stage parses a value (:func:`uid_seed`)."""
    return Series(source.study_uid, source.series_uid, tuple(_with_digest(_read(src)) for _, src in source.ordered()))


RESULT_SECTIONS = ("input", "candidates", "output", "uncertainty", "quality")  # manifest parts that shape a result


def uid_seed(series: Series, model: ModelSpec, ruleset_version: str) -> str:
    """Same inputs → same output UIDs, so a re-run after a crash reproduces identical objects.

    The inputs are the series' instances (UID, header and pixel data, so a replaced instance with the same
    UID gives new objects: new pixels, or a corrected patient name or ID, which the objects copy and which
    a destination holding the earlier objects under the same UIDs would never receive), the model file
    (sha256), the manifest sections that shape the result (a new calibration or quality-gate limit gives
    new objects) and the rule-set version.
    """
    h = hashlib.sha256()
    sections = json.dumps({k: model.manifest.get(k) for k in RESULT_SECTIONS}, sort_keys=True, default=str)
    for part in [series.series_uid, model.sha256, sections, ruleset_version]:
        h.update(part.encode() + b"\0")
    for d in sorted(series.datasets, key=lambda d: str(d.SOPInstanceUID)):
        h.update(str(d.SOPInstanceUID).encode() + b"\0")
        h.update(getattr(d, _DIGEST, None) or _header_digest(d))
        pixels = d.get("PixelData")
        h.update(hashlib.sha256(bytes(pixels) if pixels is not None else b"").digest())
    return h.hexdigest()


_DIGEST = "_svdmark_header_digest"  # kept on a dataset by read_series


def _with_digest(ds: pydicom.Dataset) -> pydicom.Dataset:
    setattr(ds, _DIGEST, _header_digest(ds))
    return ds


def _header_digest(ds: pydicom.Dataset) -> bytes:
    """The patient and study attributes the objects copy (``encode.COPIED_FROM_SOURCE``): a value not parsed yet as its bytes, less
    their padding (nothing is parsed here: parsing may warn with the value in the text), a parsed one as its text.
    Text values have the same bytes in every little-endian transfer syntax, so the same series read from a bare
    dataset or a Part 10 file gives the same digest; taken as a file is read (:func:`read_series`), the same file
    gives the same digest whatever the stages parse later."""
    h = hashlib.sha256()
    for tag in encode.COPIED_FROM_SOURCE:
        elem = ds.get_item(tag) if tag in ds else None
        value = b"" if elem is None or elem.value is None else elem.value
        raw = bytes(value) if isinstance(value, (bytes, bytearray, memoryview)) else str(value).encode()
        h.update(f"{int(tag):08x}".encode() + raw.rstrip(b" \0") + b"\0")
    return h.digest()


def incomplete_refused(warning: str | None, policy: str) -> "Failed | None":
    """The failure of a series analysed with the assembler's ``warning`` under ``[assemble] incomplete_policy``
    ``policy``: only ``reject`` refuses it (before anything is read)."""
    if not warning or policy != "reject":
        return None
    return Failed(Stage.COMPLETION, f"{warning}; not analysed ([assemble] incomplete_policy = reject)",
                  "IncompleteSeries", blame="input", expected=True)


def with_completion_warning(result: AnalysisResult, warning: str | None) -> AnalysisResult:
    """Put the assembler's ``incomplete series: N of M images`` first among the volume's warnings, which the
    SR (Qualitative Evaluations), the summary image and the job summary's ``warnings`` all show."""
    if not warning:
        return result
    return dataclasses.replace(result, volume=dataclasses.replace(
        result.volume, warnings=(warning, *(w for w in result.volume.warnings if w != warning))))


# --------------------------------------------------------------------------- outcomes


@dataclass(frozen=True)
class Ignored:
    """Deliberately not analysed: the routing decision (header rules or pixel check) with its reason."""

    decision: RoutingDecision

    @property
    def reason(self) -> str:
        return self.decision.reason

    @property
    def rule_id(self) -> str:
        return self.decision.rule_id


@dataclass(frozen=True)
class Analysed:
    """An analysed series and its objects, one :class:`encode.EncodedResults` per output profile asked for."""

    series: Series
    result: AnalysisResult
    seed: str  # what the objects' UIDs derive from (:func:`uid_seed`); rejection notes derive theirs from it too
    encoded: Mapping[encode.Profile, encode.EncodedResults]


Blame = Literal["input", "model", "environment", "internal"]


@dataclass(frozen=True)
class Failed:
    """A failure, named for the journal, a log line or a table: never quoted values (they may be patient data)."""

    stage: Stage
    reason: str
    error: str = ""  # the exception's type name
    where: str = ""  # the innermost frames, file:line
    blame: Blame = "internal"  # environment: retrying later may succeed (a full disk, a busy journal)
    expected: bool = False  # an svdmark error (invalid series, model missing...): a warning, not an error
    routing: RoutingDecision | None = None  # where the series was routed, when it failed after routing

    @property
    def transient(self) -> bool:
        return self.blame == "environment"

    @property
    def detail(self) -> str:
        return f"{self.stage} failed: {self.reason}"


Outcome = Analysed | Ignored | Failed


def failure(stage: Stage, exc: BaseException) -> Failed:
    """The one error policy: any exception in any stage, the drivers' included, becomes a :class:`Failed`."""
    if transient(exc):
        blame: Blame = "environment"
    elif isinstance(exc, InvalidSeries):
        blame = "input"
    elif isinstance(exc, ModelError):
        blame = "model"
    else:
        blame = "internal"
    return Failed(stage, reason_of(exc), type(exc).__name__, where(exc), blame, isinstance(exc, SvdmarkError))


# --------------------------------------------------------------------------- the path


class _Stages:
    """The stage in hand, to name a failure, and each stage's wall time."""

    def __init__(self) -> None:
        self.current = Stage.READ

    @contextmanager
    def __call__(self, stage: Stage) -> Iterator[None]:
        self.current = stage
        with timed(stage.value):
            yield


def analyse(series: Series, ctx: Context, decision: RoutingDecision | None = None, *,
            at: _Stages | None = None) -> AnalysisResult | Ignored:
    """Route (unless ``decision`` is given), load, check the anatomy, infer, measure and apply the rules."""
    at = at or _Stages()
    start = time.perf_counter()
    if decision is None:
        with at(Stage.ROUTE):
            decision = route.decide(series.header, ctx.routing)
    if decision.kind is RouteKind.IGNORED:
        return Ignored(decision)
    with at(Stage.VOLUME):
        image = volume.load(series)
    with at(Stage.ANATOMY):
        refused = route.not_a_head(decision, image, ctx.routing.anatomy)
    if refused is not None:
        return Ignored(refused)
    with at(Stage.INFER):
        model = ctx.models.active(decision.kind.task)
        output = ctx.runtime.run(model, image)
    with at(Stage.MEASURE):
        findings = measure.from_output(model, image, output)
        check_reportable(findings)
    with at(Stage.RULES):
        flags = ctx.rules.evaluate(findings, series.header)  # only flags whose evidence population fits
    return AnalysisResult(series, decision, model, image, findings, flags, ctx.rules.info,
                          seconds=time.perf_counter() - start)


def run(source: SeriesSource, ctx: Context, *, profiles: Collection[encode.Profile] = (FULL_PROFILE,),
        decision: RoutingDecision | None = None, completion_warning: str | None = None,
        earlier: Callable[[], Sequence[pydicom.Dataset]] = tuple) -> Outcome:
    """One series from its files to its encoded objects.

    ``decision``: the routing decision when the driver has already routed this header (``analyze`` does, to
    reuse finished work); otherwise the header is read and routed here, before any pixel data is read.
    ``completion_warning``: the assembler's warning for an incomplete series, shown first in the results.
    ``earlier``: the earlier SR(s) that this result supersedes, asked for only when there is a result to encode.
    """
    at = _Stages()
    try:
        if decision is None:
            with at(Stage.READ):
                header = read_header(source)
            with at(Stage.ROUTE):
                decision = route.decide(header, ctx.routing)
        if decision.kind is RouteKind.IGNORED:
            return Ignored(decision)
        with at(Stage.READ):
            series = read_series(source)
        result = analyse(series, ctx, decision, at=at)
        if isinstance(result, Ignored):
            return result
        result = with_completion_warning(result, completion_warning)
        with at(Stage.ENCODE):
            seed = uid_seed(series, result.model, result.ruleset.version)
            encoded = encode.by_profile(result, profiles, supersedes=earlier(), uid_seed=seed)
        return Analysed(series, result, seed, encoded)
    except Exception as exc:  # every failure is an outcome: the stage and the reason (and where it was routed)
        return dataclasses.replace(failure(at.current, exc), routing=decision)

