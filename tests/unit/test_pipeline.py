"""``pipeline.run``: the header is routed before any pixel data is read; every outcome is a value (analysed,
ignored, or failed at a named stage), never an exception."""
from __future__ import annotations

import pydicom
import pytest

import svdmark.pipeline as P
from svdmark.domain import FULL_PROFILE, OutputKind, RouteKind
from svdmark.route import RoutingTable

from tests.unit.test_encode_support import ct_series, wml_mask, wml_result
from tests.unit.test_worker import Stages

IGNORE_CT = """
[[rule]]
id = "no-ct-here"
description = "this site sends CT elsewhere"
ignore = "CT goes elsewhere"
all = [ { attr = "Modality", equals = "CT" } ]
"""


@pytest.fixture(scope="module")
def ct():
    series, vol = ct_series()
    return series, wml_result(series, vol, wml_mask(vol))


def _source(series, tmp_path) -> P.SeriesSource:
    paths = []
    for ds in series.datasets:
        path = tmp_path / f"{ds.SOPInstanceUID}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append((str(ds.SOPInstanceUID), path))
    return P.SeriesSource(series.study_uid, series.series_uid, tuple(reversed(paths)))


def test_an_ignored_header_is_answered_before_any_pixel_data_is_read(ct, tmp_path, monkeypatch):
    series, result = ct
    source = _source(series, tmp_path)
    reads = []
    real = pydicom.dcmread

    def dcmread(src, **kwargs):
        reads.append(kwargs.get("stop_before_pixels", False))
        return real(src, **kwargs)

    readers = P.read_header, P.read_series
    ctx = Stages(monkeypatch, series, result).context
    monkeypatch.setattr(P, "read_header", readers[0])  # the real reads (counted) and a real routing table
    monkeypatch.setattr(P, "read_series", readers[1])
    monkeypatch.setattr(P.pydicom, "dcmread", dcmread)
    ctx = P.Context(routing=RoutingTable.loads(IGNORE_CT), models=ctx.models, runtime=ctx.runtime, rules=ctx.rules)
    outcome = P.run(source, ctx)
    assert isinstance(outcome, P.Ignored)
    assert (outcome.decision.kind, outcome.rule_id) == (RouteKind.IGNORED, "no-ct-here")
    assert outcome.reason.startswith("ignored: CT goes elsewhere")
    assert reads == [True]  # one header, without its pixel data


def test_the_header_routed_is_the_first_instance_by_sop_instance_uid(ct, tmp_path):
    series, _ = ct
    header = P.read_header(_source(series, tmp_path))
    assert str(header.SOPInstanceUID) == min(str(d.SOPInstanceUID) for d in series.datasets)
    assert "PixelData" not in header


def test_an_analysed_series_comes_with_its_objects_per_profile(ct, monkeypatch):
    series, result = ct
    stages = Stages(monkeypatch, series, result)
    sr_only = frozenset({OutputKind.SR})
    outcome = P.run(P.SeriesSource(series.study_uid, series.series_uid, (("1", "unread"),)), stages.context,
                    profiles=[FULL_PROFILE, sr_only], completion_warning="incomplete series: 11 of 12 images")
    assert isinstance(outcome, P.Analysed)
    assert outcome.seed == P.uid_seed(series, result.model, result.ruleset.version)
    assert set(outcome.encoded) == {FULL_PROFILE, sr_only}
    assert outcome.encoded[sr_only].seg is None and outcome.encoded[FULL_PROFILE].seg is not None
    assert outcome.result.volume.warnings[0] == "incomplete series: 11 of 12 images"


def test_a_failure_is_an_outcome_naming_its_stage(ct, monkeypatch):
    from svdmark.errors import InvalidSeries, ModelError

    series, result = ct
    stages = Stages(monkeypatch, series, result)
    source = P.SeriesSource(series.study_uid, series.series_uid, (("1", "unread"),))

    def raising(error):
        def boom(*args, **kwargs):
            raise error
        return boom

    monkeypatch.setattr(P.volume, "load", raising(InvalidSeries("2 slices share one position")))
    failed = P.run(source, stages.context)
    assert (failed.stage, failed.reason, failed.blame, failed.expected, failed.transient) == (
        "volume", "2 slices share one position", "input", True, False)
    assert failed.detail == "volume failed: 2 slices share one position"
    monkeypatch.setattr(P.volume, "load", lambda s: result.volume)
    monkeypatch.setattr(stages.context.models, "active", raising(ModelError("no active wml model")))
    failed = P.run(source, stages.context)
    assert (failed.stage, failed.blame, failed.error) == ("infer", "model", "ModelError")


def test_an_empty_source_fails_reading():
    failed = P.run(P.SeriesSource("1", "2", ()), None)
    assert (failed.stage, failed.reason, failed.blame) == ("read", "series 2 has no stored instances", "input")
