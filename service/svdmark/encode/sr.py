"""Comprehensive 3D SR holding a TID 1500 Measurement Report."""
from __future__ import annotations

from typing import Sequence

import highdicom as hd
import numpy as np
from highdicom.sr import (
    AlgorithmIdentification,
    CodedConcept,
    ContainerContentItem,
    FindingSite,
    ImageRegion3D,
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

from ..domain import AnalysisResult, CmbFindings, Flag, Task, WmlFindings
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
    measurements = [
        Measurement(
            name=templates.code("concepts", "flag_input"),
            value=float(flag.input_value),
            unit=templates.unit(flag.input_unit) if flag.input_unit in templates.common["units"]
            else CodedConcept(flag.input_unit, "UCUM", flag.input_unit),
        )
    ]
    for key, spec in ftpl["values"].items():
        if key in flag.values:
            measurements.append(Measurement(name=concept(spec["name"]), value=float(flag.values[key]),
                                            unit=templates.unit(spec["unit"])))
    return MeasurementsAndQualitativeEvaluations(
        tracking_identifier=_tracking(uid_seed, f"flag-{flag.rule_id}", ftpl["tracking_identifier"]),
        finding_type=concept(ftpl["finding_type"]),
        algorithm_id=rules_algorithm(result, flag, templates),
        measurements=measurements,
        qualitative_evaluations=[QualitativeEvaluation(
            name=concept(ftpl["category_concept"]), value=concept(ftpl["categories"][flag.category]))],
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
    for flag in result.flags:
        items.append(_text(concept(c["flag_rule"]), f"{flag.rule_id} {flag.rule_version} ({flag.name})"))
        items.append(_text(concept(c["flag_statement"]), flag.statement))
        items.append(_text(concept(c["evidence_doi"]), f"doi:{flag.evidence_doi}"))
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
    groups: list = []
    if task is Task.WML:
        if not isinstance(findings, WmlFindings):
            raise EncodeError("model task is WML but findings are not WmlFindings")
        m = tpl["measurements"]["volume"]
        groups.append(_whole_finding_group(
            result, templates, uid_seed, seg,
            [Measurement(name=concept(m["name"]), value=float(findings.volume_ml), unit=templates.unit(m["unit"]),
                         algorithm_id=model_algorithm(result, templates))],
            []))
    else:
        if not isinstance(findings, CmbFindings):
            raise EncodeError("model task is CMB but findings are not CmbFindings")
        m = tpl["measurements"]["count"]
        grade = int(findings.grade)
        groups.append(_whole_finding_group(
            result, templates, uid_seed, seg,
            [Measurement(name=concept(m["name"]), value=float(findings.count), unit=templates.unit(m["unit"]),
                         algorithm_id=model_algorithm(result, templates))],
            [QualitativeEvaluation(name=concept(tpl["grade"]["concept"]),
                                   value=concept(tpl["grade"]["values"][str(grade)]))]))
    for flag in result.flags:
        groups.append(_flag_group(result, flag, templates, uid_seed))
    if task is Task.CMB:
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
