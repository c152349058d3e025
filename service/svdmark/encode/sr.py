"""Comprehensive 3D SR holding a TID 1500 Measurement Report, laid out so that viewers show it.

Viewer layout (OHIF 3.x's SR extension and the Cornerstone adapters, which OHIF uses to turn an SR
into annotations, read it; tests/viewer runs their code on every kind of result):

* Every NUM has exactly one child: TID 300's INFERRED FROM SCOORD POINT with its SELECTED FROM source
  image (SOP instance, and frame for multi-frame images). OHIF reads a NUM's coordinates from its
  single child (a NUM with no child makes it throw, one with several is dropped); the adapters take
  the first NUM's SCOORD. Whole-series numbers point at the centroid of the mask on its slice of
  largest area (centre of the middle slice when empty); each microbleed's NUMs at its centre on the
  nearest source slice.
* A group without a NUM (a withheld result) gets a group-level SCOORD CIRCLE inscribed in the middle
  source slice (private ``ANALYSED``, "Image analysed"), because OHIF throws on a group it cannot
  place; a circle makes no Cornerstone tool (a point would become a Probe without a value).
* Each whole-finding and flag group has a TEXT (121106, DCM, "Comment"): the value in words ("WML
  volume 0.00 mL" — OHIF shows a zero NUM as blank), or the flag's statement from the rules output,
  both listed by OHIF as labels; or, withheld, "Not reliably measurable: reasons" (OHIF draws a group
  placed by a group-level graphic without its comments: the words are for SR text views).
* Microbleeds are TID 1410 groups whose region ("Image Region" SCOORD POINT) is the centre on the
  nearest source image, followed by the centre in patient mm (SCOORD3D POINT, DCM "Center"): OHIF
  places a group by its first graphic, turns it into a Cornerstone tool only for an "Image Region"
  POINT, and only against images that measurements were placed on in 2D.

Precision: values are written as measured (``decimals`` of each measurement in the templates: volume
0.01 mL, counts and grade whole numbers, diameter 0.1 mm, confidence 0.01).

Uncertainty: with an interval, the whole-finding group holds NUMs UNCLOW / UNCHIGH (the interval's
ends, in the value's unit and precision) beside the value and a TEXT UNCMETHOD (how it was
obtained). They are siblings, not TID 310 HAS PROPERTIES children of the value's NUM, because a
viewer that needs the NUM's single SCOORD child drops a NUM with several. The flag group has a
qualitative evaluation CATUNCERT = Yes/No, and when Yes a TEXT UNCNOTE in the Qualitative
Evaluations container says so in words. A microbleed count's whole-finding group has CATUNCERT for
its burden grade, flag or not; when Yes its Comment says so too (the label OHIF shows) and so does an
UNCNOTE (written once when the ECMO flag's note is the same sentence).

Quality gate: for a withheld result (``Quality.measurable`` False) there is no volume/count NUM, no
grade, no per-microbleed group and no FLAGINPUT; the whole-finding group and the flag group carry
MEASSTAT = NOTMEAS ("Not reliably measurable"), and the Qualitative Evaluations container holds the
same code followed by one TEXT NOTMEASRSN per reason. No SEG is produced for it (see
:func:`svdmark.encode.results`).
"""
from __future__ import annotations

from typing import Sequence

import highdicom as hd
from highdicom.sr import (
    AlgorithmIdentification,
    CodedConcept,
    CodeContentItem,
    ContainerContentItem,
    FindingSite,
    Measurement,
    MeasurementReport,
    MeasurementsAndQualitativeEvaluations,
    ObservationContext,
    ObserverContext,
    PlanarROIMeasurementsAndQualitativeEvaluations,
    QualitativeEvaluation,
    ReferencedSegment,
    RelationshipTypeValues,
    SourceSeriesForSegmentation,
    TextContentItem,
    TrackingIdentifier,
    VolumetricROIMeasurementsAndQualitativeEvaluations,
)
from pydicom import Dataset
from pydicom.sr.codedict import codes
from pydicom.valuerep import DS

from ..domain import AnalysisResult, CmbFindings, Flag, Interval, Task, WmlFindings
from . import status
from .seg import EncodeError, source_datasets
from .sr_points import (ImagePoint, analysed_region, anchor_point, centre_3d, coordinates, image_region,
                        nearest_slice_point)
from .templates import Templates, concept
from .uids import derive


def model_algorithm(result: AnalysisResult, templates: Templates) -> AlgorithmIdentification:
    m = result.model
    return AlgorithmIdentification(
        name=m.name,
        version=m.version,
        parameters=[f"sha256={m.sha256}", f"ruleset={result.ruleset.id} {result.ruleset.version}"],
        family=concept(templates.common["report"]["algorithm_family"]),
        manufacturer=templates.common["equipment"]["manufacturer"],
    )


def rules_algorithm(result: AnalysisResult, flag: Flag, templates: Templates) -> AlgorithmIdentification:
    return AlgorithmIdentification(
        name=templates.common["report"]["rule_engine_name"],
        version=flag.ruleset_version,
        parameters=[f"ruleset={result.ruleset.id} {result.ruleset.version}",
                    f"rule={flag.rule_id} {flag.rule_version}",
                    f"doi={flag.evidence_doi}"],
        manufacturer=templates.common["equipment"]["manufacturer"],
    )


def _tracking(uid_seed: str, key: str, label: str) -> TrackingIdentifier:
    return TrackingIdentifier(uid=derive(uid_seed, f"tracking-{key}"), identifier=label)


def _text(name: CodedConcept, value: str) -> TextContentItem:
    return TextContentItem(name=name, value=value, relationship_type=RelationshipTypeValues.CONTAINS)


def rounded(value: float, decimals: int | None) -> DS:
    """``value`` as a DS string with ``decimals`` places (whole numbers without a decimal point; None: as is)."""
    if decimals is None:
        return DS(float(value), auto_format=True)
    v = round(float(value), decimals)
    return DS(f"{v:.{decimals}f}" if decimals > 0 else str(int(v)))


def num(name: CodedConcept, value: float, unit: CodedConcept, decimals: int | None) -> Measurement:
    """A NUM written at its measured precision (its image point is added by :func:`placed`)."""
    m = Measurement(name=name, value=float(rounded(value, decimals)), unit=unit)
    m[0].MeasuredValueSequence[0].NumericValue = rounded(value, decimals)
    return m


def _spec_num(spec: dict, value: float, templates: Templates) -> Measurement:
    return num(concept(spec["name"]), value, templates.unit(spec["unit"]), spec.get("decimals"))


def placed(group, result: AnalysisResult, point: ImagePoint):
    """``group`` with each of its NUMs given one child: TID 300's INFERRED FROM SCOORD at ``point`` with its
    source image. Added after highdicom built the group: highdicom allows measurement coordinates only in
    TID 1501 groups (TID 1410/1411 carry their region at group level), but the viewers read them from
    the NUMs of every group."""
    for item in group[0].ContentSequence:
        if item.ValueType == "NUM":
            if "ContentSequence" in item:
                raise EncodeError(f"NUM {item.ConceptNameCodeSequence[0].CodeMeaning!r} already has children")
            item.ContentSequence = hd.sr.ContentSequence([coordinates(result.volume, point)])
    return group


def interval_nums(interval: Interval | None, unit: CodedConcept, decimals: int,
                  templates: Templates) -> list[Measurement]:
    """UNCLOW and UNCHIGH NUMs for the interval's ends (none without an interval)."""
    if interval is None:
        return []
    c = templates.common["concepts"]
    return [num(concept(c["interval_low"]), interval.low, unit, decimals),
            num(concept(c["interval_high"]), interval.high, unit, decimals)]


def _interval_method(interval: Interval | None, templates: Templates) -> list[TextContentItem]:
    if interval is None or not interval.method:
        return []
    return [_text(templates.code("concepts", "interval_method"), str(interval.method))]


def _comment(templates: Templates, text: str) -> TextContentItem:
    return _text(templates.code("concepts", "comment"), text)


def _not_measurable_evaluation(templates: Templates) -> QualitativeEvaluation:
    c = templates.common["concepts"]
    return QualitativeEvaluation(name=concept(c["measurement_status"]), value=concept(c["not_measurable"]))


def _not_measurable_items(result: AnalysisResult, templates: Templates, text: str | None = None) -> list:
    """What a group without a number holds besides its evaluations: the image analysed, and the words."""
    if text is None:
        text = templates.label("panel_not_measurable").format(reasons="; ".join(status.reasons(result.findings)))
    return [analysed_region(result.volume, templates.code("concepts", "analysed_region")), _comment(templates, text)]


def _referenced_segment(seg: Dataset, result: AnalysisResult) -> ReferencedSegment:
    return ReferencedSegment(
        sop_class_uid=seg.SOPClassUID,
        sop_instance_uid=seg.SOPInstanceUID,
        segment_number=1,
        source_series=SourceSeriesForSegmentation(result.series.series_uid),
    )


def _whole_finding_group(result: AnalysisResult, templates: Templates, uid_seed: str, seg: Dataset | None,
                         measurements: list[Measurement], evaluations: list[QualitativeEvaluation],
                         extra: list):
    task = result.model.task
    tpl = templates.task(task)
    kwargs = dict(
        tracking_identifier=_tracking(uid_seed, "finding", tpl["tracking_identifier"]),
        finding_category=concept(tpl["finding_category"]),
        finding_type=concept(tpl["finding_type"]),
        finding_sites=[FindingSite(anatomic_location=concept(tpl["finding_site"]))],
        algorithm_id=model_algorithm(result, templates),
        measurements=measurements or None,
        qualitative_evaluations=evaluations or None,
    )
    if seg is not None:
        group = VolumetricROIMeasurementsAndQualitativeEvaluations(
            referenced_segment=_referenced_segment(seg, result), **kwargs)
    else:
        group = MeasurementsAndQualitativeEvaluations(**kwargs)
    group[0].ContentSequence.extend(extra)
    return group


def _flag_group(result: AnalysisResult, flag: Flag, templates: Templates, uid_seed: str, point: ImagePoint):
    task = result.model.task
    ftpl = templates.task(task)["flags"].get(flag.rule_id)
    if ftpl is None:
        raise EncodeError(f"no SR template for flag {flag.rule_id!r} in {templates.source}")
    if flag.category not in ftpl["categories"]:
        raise EncodeError(f"no SR code for category {flag.category!r} of flag {flag.rule_id!r}")
    evaluations = [QualitativeEvaluation(
        name=concept(ftpl["category_concept"]), value=concept(ftpl["categories"][flag.category]))]
    measurements: list[Measurement] = []
    extra: list = []
    if flag.category != status.NOT_MEASURABLE:  # withheld: category NOTMEAS only, no numbers
        unit = templates.unit(flag.input_unit) if flag.input_unit in templates.common["units"] \
            else CodedConcept(flag.input_unit, "UCUM", flag.input_unit)
        main = templates.task(task)["measurements"]["volume" if task is Task.WML else "count"]
        measurements.append(num(templates.code("concepts", "flag_input"), flag.input_value, unit,
                                main.get("decimals")))
        for key, spec in ftpl["values"].items():
            if key in flag.values:
                measurements.append(_spec_num(spec, flag.values[key], templates))
        uncertain = status.category_uncertain(flag)
        if uncertain is not None:
            c = templates.common["concepts"]
            evaluations.append(QualitativeEvaluation(name=concept(c["category_uncertain"]),
                                                     value=concept(c["yes" if uncertain else "no"])))
        extra.append(_comment(templates, flag.statement))
    else:  # no NUM to place the group by (OHIF throws on a group it cannot place)
        extra.extend(_not_measurable_items(result, templates, flag.statement))
    group = MeasurementsAndQualitativeEvaluations(
        tracking_identifier=_tracking(uid_seed, f"flag-{flag.rule_id}", ftpl["tracking_identifier"]),
        finding_type=concept(ftpl["finding_type"]) if ftpl.get("finding_type") else None,
        algorithm_id=rules_algorithm(result, flag, templates),
        measurements=measurements or None,
        qualitative_evaluations=evaluations,
    )
    group[0].ContentSequence.extend(extra)
    return placed(group, result, point)


def _microbleed_groups(result: AnalysisResult, templates: Templates, uid_seed: str):
    tpl = templates.task(Task.CMB)
    findings = result.findings
    assert isinstance(findings, CmbFindings)
    meas = tpl["measurements"]
    groups = []
    for i, mb in enumerate(findings.microbleeds, start=1):
        location = mb.location if mb.location in tpl["location"]["values"] else "unspecified"
        label = tpl["microbleed_tracking_identifier"].format(index=i, location=tpl["location"]["text"][location])
        point = nearest_slice_point(result.volume, mb.center_mm)
        group = placed(PlanarROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=_tracking(uid_seed, f"cmb-{i}", label),
            referenced_region=image_region(result.volume, point),
            finding_category=concept(tpl["finding_category"]),
            finding_type=concept(tpl["finding_type"]),
            finding_sites=[FindingSite(anatomic_location=concept(tpl["finding_site"]))],
            measurements=[_spec_num(meas["diameter"], mb.diameter_mm, templates),
                          _spec_num(meas["confidence"], mb.confidence, templates)],
            qualitative_evaluations=[QualitativeEvaluation(
                name=concept(tpl["location"]["concept"]), value=concept(tpl["location"]["values"][location]))],
        ), result, point)
        items = group[0].ContentSequence
        at = next(n for n, item in enumerate(items) if item.ValueType == "SCOORD")
        items.insert(at + 1, centre_3d(result.volume, mb.center_mm, templates.code("concepts", "center")))
        groups.append(group)
    return groups


def _evaluations_container(result: AnalysisResult, templates: Templates,
                           supersedes: Sequence[Dataset]) -> ContainerContentItem:
    """TID 1500 row "Qualitative Evaluations": the flag wording, its source, warnings, notices."""
    c = templates.common["concepts"]
    items = []
    reasons = status.reasons(result.findings)
    if reasons:  # the finding "not reliably measurable", then each of the gate's reasons
        items.append(CodeContentItem(name=concept(c["measurement_status"]), value=concept(c["not_measurable"]),
                                     relationship_type=RelationshipTypeValues.CONTAINS))
        for reason in reasons:
            items.append(_text(concept(c["not_measurable_reason"]), reason))
    notes = [status.grade_span_text(result.findings, templates)]  # the burden grade's, whether or not a flag applies
    if notes[0]:
        items.append(_text(concept(c["uncertainty_statement"]), notes[0]))
    for flag in result.flags:
        items.append(_text(concept(c["flag_rule"]), f"{flag.rule_id} {flag.rule_version} ({flag.name})"))
        items.append(_text(concept(c["flag_statement"]), flag.statement))
        items.append(_text(concept(c["evidence_doi"]), f"doi:{flag.evidence_doi}"))
        crossing = status.crossing_text(result, flag, templates)
        if crossing and crossing not in notes:  # the ECMO flag's grades are the burden grade's: said once
            items.append(_text(concept(c["uncertainty_statement"]), crossing))
            notes.append(crossing)
    items.append(_text(concept(c["rule_set"]), f"{result.ruleset.id} {result.ruleset.version}"))
    items.append(_text(concept(c["model_sha256"]), result.model.sha256))
    for sentence in result.model.manifest.limitations:  # the model card's measured accuracy, with every number
        items.append(_text(concept(c["model_limitation"]), sentence))
    for w in dict.fromkeys(tuple(result.volume.warnings) + tuple(result.findings.warnings)):
        items.append(_text(concept(c["quality_warning"]), w))
    if supersedes:
        uids = ", ".join(ds.SOPInstanceUID for ds in supersedes)
        items.append(_text(concept(c["supersedes"]), templates.label("supersedes_text").format(uids=uids)))
    items.append(_text(concept(c["research_notice"]), templates.label("research_notice")))
    container = ContainerContentItem(name=concept(c["qualitative_evaluations"]),
                                     relationship_type=RelationshipTypeValues.CONTAINS)
    container.ContentSequence = hd.sr.ContentSequence(items)
    return container


def _finding_groups(result: AnalysisResult, templates: Templates, uid_seed: str, seg: Dataset | None,
                    point: ImagePoint) -> list:
    """The whole-finding group: the number, its interval and (CMB) grade, its text line; or "not measurable"."""
    task = result.model.task
    tpl = templates.task(task)
    findings = result.findings
    expected = WmlFindings if task is Task.WML else CmbFindings
    if not isinstance(findings, expected):
        raise EncodeError(f"model task is {task.name} but findings are not {expected.__name__}")
    if status.withheld(findings) is not None:
        return [_whole_finding_group(result, templates, uid_seed, seg, [], [_not_measurable_evaluation(templates)],
                                     _not_measurable_items(result, templates))]
    interval = status.interval(findings)
    key = "volume" if task is Task.WML else "count"
    spec = tpl["measurements"][key]
    unit, decimals = templates.unit(spec["unit"]), int(spec["decimals"])
    value = findings.volume_ml if task is Task.WML else findings.count
    measurements = [num(concept(spec["name"]), value, unit, decimals)]
    evaluations: list[QualitativeEvaluation] = []
    if task is Task.WML:
        words = tpl["panel_text"].format(volume=round(float(value), decimals))
    else:
        grade = int(findings.grade)
        grade_code = concept(tpl["grade"]["values"][str(grade)])
        measurements.append(_spec_num(tpl["measurements"]["grade"], grade, templates))
        evaluations.append(QualitativeEvaluation(name=concept(tpl["grade"]["concept"]), value=grade_code))
        words = tpl["panel_text"].format(count=findings.count, grade=grade, grade_meaning=grade_code.meaning)
        span = status.grade_span(findings)
        if span is not None:  # does the count's interval span burden grades (whether or not a flag applies)
            c = templates.common["concepts"]
            evaluations.append(QualitativeEvaluation(name=concept(c["category_uncertain"]),
                                                     value=concept(c["yes" if span[0] != span[1] else "no"])))
            if span[0] != span[1]:
                words += tpl["panel_text_spans"].format(interval_low=float(interval.low),
                                                        interval_high=float(interval.high),
                                                        grade_low=span[0], grade_high=span[1])
    if task is Task.CMB and interval is not None and not all(float(x).is_integer() for x in (interval.low,
                                                                                             interval.high)):
        decimals = None  # a count's interval end in fractions (graded as such: 9.4 is under 10) is written as it is
    measurements += interval_nums(interval, unit, decimals, templates)
    return [placed(_whole_finding_group(result, templates, uid_seed, seg, measurements, evaluations,
                                        [_comment(templates, words)] + _interval_method(interval, templates)),
                   result, point)]


def build_report(result: AnalysisResult, templates: Templates, uid_seed: str, seg: Dataset | None,
                 supersedes: Sequence[Dataset]) -> MeasurementReport:
    task = result.model.task
    tpl = templates.task(task)
    withheld = status.withheld(result.findings) is not None
    # where whole-series numbers are shown; a withheld result's mask is not used, not even to point at
    point = anchor_point(result.volume, None if withheld else result.findings.mask)
    groups: list = _finding_groups(result, templates, uid_seed, seg, point)
    for flag in result.flags:
        groups.append(_flag_group(result, flag, templates, uid_seed, point))
    if task is Task.CMB and not withheld:  # per-microbleed points would report the withheld count
        groups.extend(_microbleed_groups(result, templates, uid_seed))

    eq = templates.common["equipment"]
    device = ObserverContext(
        observer_type=codes.cid270.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=derive(f"{result.model.name}|{result.model.version}|{result.model.sha256}", "device-observer"),
            name=eq["manufacturer_model_name"],
            manufacturer_name=eq["manufacturer"],
            model_name=result.model.label,
        ),
    )
    report = MeasurementReport(
        observation_context=ObservationContext(observer_device_context=device),
        procedure_reported=concept(tpl["procedure_reported"]),
        imaging_measurements=groups,
        title=concept(templates.common["report"]["title"]),
    )
    report[0].ContentSequence.append(_evaluations_container(result, templates, supersedes))
    return report


def encode_sr(result: AnalysisResult, templates: Templates, uid_seed: str, seg: Dataset | None,
              supersedes: Sequence[Dataset], software_version: str, uid_kind: str = "sr") -> hd.sr.Comprehensive3DSR:
    """The TID 1500 report; ``uid_kind`` names the variant (with or without the SEG reference) in its UID."""
    sources = source_datasets(result)
    report = build_report(result, templates, uid_seed, seg, supersedes)
    eq = templates.common["equipment"]
    series = templates.common["series"]["sr"]
    evidence = list(sources) + ([seg] if seg is not None else [])
    sr = hd.sr.Comprehensive3DSR(
        evidence=evidence,
        content=report,
        series_instance_uid=derive(uid_seed, "sr-series"),
        series_number=int(series["number"]),
        sop_instance_uid=derive(uid_seed, uid_kind),
        instance_number=1,
        manufacturer=eq["manufacturer"],
        is_complete=True,
        is_final=True,
        previous_versions=list(supersedes) or None,
        series_description=series["description"],
    )
    sr.ManufacturerModelName = eq["manufacturer_model_name"]
    sr.SoftwareVersions = software_version
    scheme = templates.private_scheme
    item = Dataset()
    item.CodingSchemeDesignator = scheme["designator"]
    item.CodingSchemeName = scheme["name"]
    item.CodingSchemeVersion = scheme["version"]
    item.CodingSchemeResponsibleOrganization = scheme["responsible_organization"][:64]
    sr.CodingSchemeIdentificationSequence = [item]
    return sr
