"""Comprehensive 3D SR holding a TID 1500 Measurement Report.

Uncertainty: a measured volume/count (and the flag's FLAGINPUT) that comes with an
interval carries, as HAS PROPERTIES children of its NUM, the TID 310 Measurement
Properties items (371886008, SCT) "+, range of upper measurement uncertainty" and
(371885007, SCT) "-, range of lower measurement uncertainty" (distances from the value,
in the value's unit; only when the value lies inside the interval), the interval's
absolute ends UNCLOW / UNCHIGH and its method UNCMETHOD (private codes: DCMR and
SNOMED have no "limit of uncertainty interval" concept). The flag group then has a
qualitative evaluation CATUNCERT = Yes/No, and when Yes a TEXT UNCNOTE in the
Qualitative Evaluations container says so in words.

Quality gate: for a withheld result (``Quality.measurable`` False) there is no
volume/count NUM, no grade, no per-microbleed group and no FLAGINPUT; the whole-finding
group and the flag group carry MEASSTAT = NOTMEAS ("Not reliably measurable"), and the
Qualitative Evaluations container holds the same code followed by one TEXT NOTMEASRSN
per reason. No SEG is produced for it (see :func:`svdmark.encode.results`).
"""
from __future__ import annotations

from typing import Sequence

import highdicom as hd
import numpy as np
from highdicom.sr import (
    AlgorithmIdentification,
    CodedConcept,
    CodeContentItem,
    ContainerContentItem,
    FindingSite,
    ImageRegion3D,
    Measurement,
    MeasurementProperties,
    MeasurementReport,
    MeasurementsAndQualitativeEvaluations,
    NumContentItem,
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

from ..domain import AnalysisResult, CmbFindings, Flag, Interval, Task, WmlFindings
from . import status
from .seg import EncodeError, source_datasets
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


def _property_num(name: CodedConcept, value: float, unit: CodedConcept) -> NumContentItem:
    return NumContentItem(name=name, value=float(value), unit=unit,
                          relationship_type=RelationshipTypeValues.HAS_PROPERTIES)


def interval_properties(value: float, interval: Interval | None, unit: CodedConcept,
                        templates: Templates) -> MeasurementProperties | None:
    """TID 310 properties of a NUM for its uncertainty interval (None without an interval).

    highdicom's own ``upper/lower_measurement_uncertainty`` arguments write unit "1"; the
    uncertainty of a volume is in mL, so the items are built here with the value's unit.
    """
    if interval is None:
        return None
    c = templates.common["concepts"]
    low, high, value = float(interval.low), float(interval.high), float(value)
    props = MeasurementProperties()
    if low <= value <= high:
        props.append(_property_num(concept(c["upper_uncertainty"]), high - value, unit))
        props.append(_property_num(concept(c["lower_uncertainty"]), value - low, unit))
    props.append(_property_num(concept(c["interval_low"]), low, unit))
    props.append(_property_num(concept(c["interval_high"]), high, unit))
    if interval.method:
        props.append(TextContentItem(name=concept(c["interval_method"]), value=str(interval.method),
                                     relationship_type=RelationshipTypeValues.HAS_PROPERTIES))
    return props


def _not_measurable_evaluation(templates: Templates) -> QualitativeEvaluation:
    c = templates.common["concepts"]
    return QualitativeEvaluation(name=concept(c["measurement_status"]), value=concept(c["not_measurable"]))


def _referenced_segment(seg: Dataset, result: AnalysisResult) -> ReferencedSegment:
    return ReferencedSegment(
        sop_class_uid=seg.SOPClassUID,
        sop_instance_uid=seg.SOPInstanceUID,
        segment_number=1,
        source_series=SourceSeriesForSegmentation(result.series.series_uid),
    )


def _whole_finding_group(result: AnalysisResult, templates: Templates, uid_seed: str, seg: Dataset | None,
                         measurements: list[Measurement], evaluations: list[QualitativeEvaluation]):
    task = result.model.task
    tpl = templates.task(task)
    kwargs = dict(
        tracking_identifier=_tracking(uid_seed, "finding", tpl["tracking_identifier"]),
        finding_category=concept(tpl["finding_category"]),
        finding_type=concept(tpl["finding_type"]),
        finding_sites=[FindingSite(anatomic_location=concept(tpl["finding_site"]))],
        algorithm_id=model_algorithm(result, templates),
        measurements=measurements,
        qualitative_evaluations=evaluations or None,
    )
    if seg is not None:
        return VolumetricROIMeasurementsAndQualitativeEvaluations(
            referenced_segment=_referenced_segment(seg, result), **kwargs)
    return MeasurementsAndQualitativeEvaluations(**kwargs)


def _flag_group(result: AnalysisResult, flag: Flag, templates: Templates, uid_seed: str):
    task = result.model.task
    ftpl = templates.task(task)["flags"].get(flag.rule_id)
    if ftpl is None:
        raise EncodeError(f"no SR template for flag {flag.rule_id!r} in {templates.source}")
    if flag.category not in ftpl["categories"]:
        raise EncodeError(f"no SR code for category {flag.category!r} of flag {flag.rule_id!r}")
    evaluations = [QualitativeEvaluation(
        name=concept(ftpl["category_concept"]), value=concept(ftpl["categories"][flag.category]))]
    measurements: list[Measurement] = []
    if flag.category != status.NOT_MEASURABLE:  # withheld: category NOTMEAS only, no numbers
        unit = templates.unit(flag.input_unit) if flag.input_unit in templates.common["units"] \
            else CodedConcept(flag.input_unit, "UCUM", flag.input_unit)
        measurements.append(Measurement(
            name=templates.code("concepts", "flag_input"),
            value=float(flag.input_value),
            unit=unit,
            properties=interval_properties(flag.input_value, status.interval(result.findings), unit, templates),
        ))
        for key, spec in ftpl["values"].items():
            if key in flag.values:
                measurements.append(Measurement(name=concept(spec["name"]), value=float(flag.values[key]),
                                                unit=templates.unit(spec["unit"])))
        uncertain = status.category_uncertain(flag)
        if uncertain is not None:
            c = templates.common["concepts"]
            evaluations.append(QualitativeEvaluation(name=concept(c["category_uncertain"]),
                                                     value=concept(c["yes" if uncertain else "no"])))
    return MeasurementsAndQualitativeEvaluations(
        tracking_identifier=_tracking(uid_seed, f"flag-{flag.rule_id}", ftpl["tracking_identifier"]),
        finding_type=concept(ftpl["finding_type"]),
        algorithm_id=rules_algorithm(result, flag, templates),
        measurements=measurements or None,
        qualitative_evaluations=evaluations,
    )


def _microbleed_groups(result: AnalysisResult, templates: Templates, uid_seed: str):
    tpl = templates.task(Task.CMB)
    findings = result.findings
    assert isinstance(findings, CmbFindings)
    meas = tpl["measurements"]
    groups = []
    for i, mb in enumerate(findings.microbleeds, start=1):
        point = np.asarray([mb.center_mm], dtype=float)
        location = mb.location if mb.location in tpl["location"]["values"] else "unspecified"
        groups.append(PlanarROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=_tracking(uid_seed, f"cmb-{i}", tpl["microbleed_tracking_identifier"].format(index=i)),
            referenced_region=ImageRegion3D(
                graphic_type=hd.sr.GraphicTypeValues3D.POINT,
                graphic_data=point,
                frame_of_reference_uid=result.volume.frame_of_reference_uid,
            ),
            finding_category=concept(tpl["finding_category"]),
            finding_type=concept(tpl["finding_type"]),
            finding_sites=[FindingSite(anatomic_location=concept(tpl["finding_site"]))],
            measurements=[
                Measurement(name=concept(meas["diameter"]["name"]), value=float(mb.diameter_mm),
                            unit=templates.unit(meas["diameter"]["unit"])),
                Measurement(name=concept(meas["confidence"]["name"]), value=float(mb.confidence),
                            unit=templates.unit(meas["confidence"]["unit"])),
            ],
            qualitative_evaluations=[QualitativeEvaluation(
                name=concept(tpl["location"]["concept"]), value=concept(tpl["location"]["values"][location]))],
        ))
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
    for flag in result.flags:
        items.append(_text(concept(c["flag_rule"]), f"{flag.rule_id} {flag.rule_version} ({flag.name})"))
        items.append(_text(concept(c["flag_statement"]), flag.statement))
        items.append(_text(concept(c["evidence_doi"]), f"doi:{flag.evidence_doi}"))
        crossing = status.crossing_text(result, flag, templates)
        if crossing:
            items.append(_text(concept(c["uncertainty_statement"]), crossing))
    items.append(_text(concept(c["rule_set"]), f"{result.ruleset.id} {result.ruleset.version}"))
    items.append(_text(concept(c["model_sha256"]), result.model.sha256))
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


def build_report(result: AnalysisResult, templates: Templates, uid_seed: str, seg: Dataset | None,
                 supersedes: Sequence[Dataset]) -> MeasurementReport:
    task = result.model.task
    tpl = templates.task(task)
    findings = result.findings
    withheld = status.withheld(findings) is not None
    interval = status.interval(findings)
    groups: list = []
    if task is Task.WML:
        if not isinstance(findings, WmlFindings):
            raise EncodeError("model task is WML but findings are not WmlFindings")
        m = tpl["measurements"]["volume"]
        unit = templates.unit(m["unit"])
        if withheld:
            groups.append(_whole_finding_group(result, templates, uid_seed, seg, [],
                                               [_not_measurable_evaluation(templates)]))
        else:
            groups.append(_whole_finding_group(
                result, templates, uid_seed, seg,
                [Measurement(name=concept(m["name"]), value=float(findings.volume_ml), unit=unit,
                             algorithm_id=model_algorithm(result, templates),
                             properties=interval_properties(findings.volume_ml, interval, unit, templates))],
                []))
    else:
        if not isinstance(findings, CmbFindings):
            raise EncodeError("model task is CMB but findings are not CmbFindings")
        m = tpl["measurements"]["count"]
        unit = templates.unit(m["unit"])
        if withheld:
            groups.append(_whole_finding_group(result, templates, uid_seed, seg, [],
                                               [_not_measurable_evaluation(templates)]))
        else:
            grade = int(findings.grade)
            groups.append(_whole_finding_group(
                result, templates, uid_seed, seg,
                [Measurement(name=concept(m["name"]), value=float(findings.count), unit=unit,
                             algorithm_id=model_algorithm(result, templates),
                             properties=interval_properties(findings.count, interval, unit, templates))],
                [QualitativeEvaluation(name=concept(tpl["grade"]["concept"]),
                                       value=concept(tpl["grade"]["values"][str(grade)]))]))
    for flag in result.flags:
        groups.append(_flag_group(result, flag, templates, uid_seed))
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
              supersedes: Sequence[Dataset], software_version: str) -> hd.sr.Comprehensive3DSR:
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
        sop_instance_uid=derive(uid_seed, "sr"),
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
