"""Only head scans are analysed (svdmark issue 13): header rules, the pixel check, and the two together.

Real non-head CT/MR from the pydicom corpus (``tests/corpus.py`` lists it), generated body volumes written
with a vendor's *head* header (``tests/body_phantoms.py``), and svdmark's own head phantoms, which must still
reach the models.
"""
from __future__ import annotations

import textwrap
import warnings

import numpy as np
import pydicom
import pytest

from svdmark import volume
from svdmark.domain import FrameRef, RouteKind, RoutingDecision, Series, Volume
from svdmark.errors import ConfigError, InvalidSeries
from svdmark.infer import ModelRegistry, Runtime
from svdmark_phantom import make_ncct, make_swi, write_series
from svdmark.pipeline import Context, Ignored, analyse
from svdmark.route import AnatomyLimits, RoutingTable, check_ct, check_mr, decide, not_a_head
from svdmark.route.anatomy import RULE_CT, RULE_MR
from svdmark.rules import RuleSet

from tests import body_phantoms, corpus

WML = RoutingDecision(RouteKind.WML, "ct-head-noncontrast", "wml: test")
CMB = RoutingDecision(RouteKind.CMB, "swi-generic", "cmb: test")


@pytest.fixture(scope="module")
def table() -> RoutingTable:
    return RoutingTable.load()


@pytest.fixture(scope="module")
def context(table, tmp_path_factory) -> Context:
    """The real stages with tiny real ONNX models (``tests/cli/fakemodels.py``, in their own folder so that a
    model being installed in the package meanwhile changes nothing here) on the CPU. A series that got past
    routing and the pixel check would be analysed by them and come back as a result."""
    from tests.cli import fakemodels

    root = tmp_path_factory.mktemp("models")
    fakemodels.make_wml(root)
    fakemodels.make_cmb(root)
    return Context(routing=table, models=ModelRegistry(root), runtime=Runtime(providers=["CPUExecutionProvider"]),
                   rules=RuleSet.load())


def _series(paths) -> Series:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = tuple(pydicom.dcmread(p) for p in paths)
    return Series(str(ds[0].StudyInstanceUID), str(ds[0].SeriesInstanceUID), ds)


def _written(phantom, tmp_path, vendor="siemens", **header) -> Series:
    paths = write_series(phantom, tmp_path, vendor=vendor)
    series = _series(paths)
    for ds in series.datasets:
        for k, v in header.items():
            if v is None:
                if k in ds:
                    delattr(ds, k)
            else:
                setattr(ds, k, v)
    return series


def _volume_of_one_file(path) -> Volume:
    """A one-slice volume (``volume.load`` wants three) to show the pixel check on a single real image."""
    ds = corpus.dataset(path)
    hu = ds.pixel_array.astype(np.float32) * float(ds.get("RescaleSlope", 1)) + float(ds.get("RescaleIntercept", 0))
    iop = [float(x) for x in ds.ImageOrientationPatient]
    return Volume(array=hu[None], row_direction=tuple(iop[:3]), column_direction=tuple(iop[3:]),
                  pixel_spacing=tuple(float(x) for x in ds.PixelSpacing),
                  positions=np.array([[float(x) for x in ds.ImagePositionPatient]]),
                  frames=(FrameRef(str(ds.SOPInstanceUID), str(ds.SOPClassUID)),),
                  frame_of_reference_uid=str(ds.get("FrameOfReferenceUID", "1")),
                  slice_thickness=float(ds.get("SliceThickness", 5) or 5))


# --------------------------------------------------------------------------- the corpus's real files

SMARTSCORE = "CT5N"
# what each non-head CT/MR of the corpus is ignored as (series folder or file name → rule id)
EXPECTED_RULE = {
    "CT5N": "ct-cardiac",  # GE SmartScore - Gated (the issue's series)
    "CT2N": "localizer",
    "MR1": "localizer", "MR2": "localizer",
    "MR700": "projection-or-reformat",
    "CT_small.dcm": "ct-contrast-agent",
    "bad_sequence.dcm": "non-head",
    "explicit_VR-UN.dcm": "secondary-capture",
    "MR-SIEMENS-DICOM-WithOverlays.dcm": "non-head", "examples_overlay.dcm": "non-head",
    "MR2_UNCR.dcm": "mr-non-head-description",
}
# heads (or images too incomplete to be anything): the header may route them; the pixels/volume decide
HEAD_OR_UNUSABLE = {"CT2", "TINY_ALPHA", "693_J2KR.dcm", "693_UNCR.dcm", "J2K_pixelrep_mismatch.dcm"}


def test_the_corpus_holds_the_series_the_issue_names():
    folders = {k.split("/")[0] for k in corpus.ct_mr_series()}
    assert {"CT5N", "CT2N", "CT2", "MR1", "MR2", "MR700", "test_files", "data"} <= folders


@pytest.mark.parametrize("path", [p for p in corpus.files()
                                  if (corpus._read(p, stop_before_pixels=True).get("Modality") in ("CT", "MR"))],
                         ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_corpus_ct_and_mr_header_is_ignored_unless_it_may_be_a_head(table, path):
    header = corpus._read(path, stop_before_pixels=True)
    d = decide(header, table)
    key = path.parent.name if path.parent.name in ("CT5N", "CT2N", "MR1", "MR2", "MR700", "CT2") else path.name
    if path.parent.name.startswith("SE0") or "TINY_ALPHA" in str(path):
        key = "TINY_ALPHA"
    if key in HEAD_OR_UNUSABLE:
        return  # routed or not: the pixels and the volume decide (next test)
    assert d.kind is RouteKind.IGNORED, f"{key} was routed: {d.reason}"
    assert d.reason.startswith("ignored: ")
    if key in EXPECTED_RULE:
        assert d.rule_id == EXPECTED_RULE[key], d.reason


def test_smartscore_is_ignored_as_cardiac_by_its_header(table):
    series = next(v for k, v in corpus.ct_mr_series().items() if k.startswith(SMARTSCORE + "/"))
    d = decide(corpus._read(series[0], stop_before_pixels=True), table)
    assert (d.kind, d.rule_id) == (RouteKind.IGNORED, "ct-cardiac")
    assert "SmartScore - Gated 0.5 sec" in d.reason


def test_smartscore_with_a_head_header_is_still_ignored_by_its_pixels(context):
    """The issue's failure, with the header made to lie: body part HEAD, no description."""
    paths = next(v for k, v in corpus.ct_mr_series().items() if k.startswith(SMARTSCORE + "/"))
    series = _series(paths)
    for ds in series.datasets:
        ds.BodyPartExamined = "HEAD"
        ds.SeriesDescription = "Kopf nativ"
        ds.FilterType = "HEAD FILTER"
    assert decide(series.header, context.routing).kind is RouteKind.WML
    ignored = analyse(series, context)
    assert isinstance(ignored, Ignored) and ignored.rule_id == RULE_CT
    assert "no slice shows a skull ring" in ignored.reason


@pytest.mark.slow
def test_no_corpus_ct_or_mr_series_reaches_the_models(context):
    """Each series as the worker would have it: ignored (header or pixels) or unusable, never a result."""
    outcomes = {}
    for key, paths in corpus.ct_mr_series().items():
        try:
            result = analyse(_series(paths), context)
        except InvalidSeries as exc:
            outcomes[key] = ("unusable", str(exc)[:60])
            continue
        if not isinstance(result, Ignored):
            pytest.fail(f"{key} was analysed: {result.routing.reason}")
        outcomes[key] = ("ignored", result.rule_id)
    assert [v for k, v in outcomes.items() if k.startswith("CT5N/")] == [("ignored", "ct-cardiac")]
    assert len(outcomes) >= 10


def test_a_real_single_head_slice_shows_a_skull_ring():
    """693_UNCR: a real head CT slice whose header says nothing about the head."""
    from pydicom.data import get_testdata_file

    verdict = check_ct(_volume_of_one_file(get_testdata_file("693_UNCR.dcm")))
    assert verdict.is_head, verdict.reason
    assert 80 < verdict.figures["max_enclosed_brain_cm2"] < 260


@pytest.mark.parametrize("name", ["CT_small.dcm", "bad_sequence.dcm", "explicit_VR-UN.dcm"])
def test_real_body_slices_show_no_skull_ring(name):
    from pydicom.data import get_testdata_file

    verdict = check_ct(_volume_of_one_file(get_testdata_file(name)))
    assert not verdict.is_head
    assert "no slice shows a skull ring" in verdict.reason


# --------------------------------------------------------------------------- generated body volumes

BODY = [
    ("abdomen_ct", "no slice shows a skull ring"),
    ("pelvis_ct", "no slice shows a skull ring"),  # a bony ring, but around fat and gas
    ("chest_ct", "no slice shows a skull ring"),
    ("knee_mr", "smaller than a head"),
    ("spine_mr", "longer than a head"),
    ("sphere_phantom_mr", "a test phantom"),
]


@pytest.mark.parametrize(("name", "why"), BODY, ids=[b[0] for b in BODY])
def test_body_volumes_with_a_head_header_are_ignored_before_the_model(tmp_path, context, name, why):
    phantom = getattr(body_phantoms, name)()
    # the writer records the body FOV (ReconstructionDiameter > 320 mm, a header rule): leave it out
    series = _written(phantom, tmp_path, vendor="siemens", ReconstructionDiameter=None)
    d = decide(series.header, context.routing)
    assert d.kind is not RouteKind.IGNORED, d.reason  # the header (HEAD, Kopf, head coil) says head...
    ignored = analyse(series, context)  # ...the pixels do not: nothing is run, nothing is produced
    assert isinstance(ignored, Ignored) and ignored.rule_id == (RULE_CT if phantom.modality == "CT" else RULE_MR)
    assert ignored.reason.startswith("ignored: not a head in the pixels (")
    assert why in ignored.reason


def test_abdomen_with_a_silent_header_is_ignored_by_default_and_by_header_where_a_site_asks(tmp_path, context):
    series = _written(body_phantoms.abdomen_ct(), tmp_path, vendor="ge", BodyPartExamined=None,
                      SeriesDescription="5mm STANDARD", ProtocolName="5.1 ROUTINE", StudyDescription=None,
                      ReconstructionDiameter=None)
    d = decide(series.header, context.routing)
    assert d.kind is RouteKind.WML  # nothing in the header says head or not head: the pixels decide
    ignored = analyse(series, context)
    assert isinstance(ignored, Ignored) and ignored.rule_id == RULE_CT
    strict = _strict_table()
    d = decide(series.header, strict)
    assert (d.kind, d.rule_id) == (RouteKind.IGNORED, "no-head-evidence")


def _strict_table() -> RoutingTable:
    from importlib import resources

    text = (resources.files("svdmark") / "data" / "routing.toml").read_text(encoding="utf-8")
    assert "enabled = false  # a site" in text
    return RoutingTable.loads(text.replace("enabled = false  # a site", "enabled = true  # a site"), "strict")


def test_cardiac_body_fov_and_body_filter_headers_are_ignored(table):
    def ct(**attrs):
        ds = pydicom.Dataset()
        ds.Modality, ds.ImageType, ds.ConvolutionKernel = "CT", ["ORIGINAL", "PRIMARY", "AXIAL"], "STANDARD"
        for k, v in attrs.items():
            setattr(ds, k, v)
        return ds

    assert decide(ct(SeriesDescription="Ca Scoring 3.0"), table).rule_id == "ct-cardiac"
    assert decide(ct(ProtocolName="Cardiac Calcium Score"), table).rule_id == "ct-cardiac"
    assert decide(ct(HeartRate=62), table).rule_id == "ct-cardiac"
    assert decide(ct(ReconstructionDiameter="380"), table).rule_id == "ct-body-field-of-view"
    assert decide(ct(ReconstructionDiameter="250"), table).rule_id == "ct-head-noncontrast"
    assert decide(ct(FilterType="BODY FILTER"), table).rule_id == "ct-body-field-of-view"
    assert decide(ct(StudyDescription="CT ABDOMEN PELVIS"), table).rule_id == "ct-non-head-description"
    assert decide(ct(SeriesDescription="Thorax nativ"), table).rule_id == "ct-non-head-description"
    mr = pydicom.Dataset()
    mr.Modality, mr.ImageType, mr.SeriesDescription = "MR", ["ORIGINAL", "PRIMARY", "M"], "SWI"
    mr.ReceiveCoilName = "Knee 18"
    assert decide(mr, table).rule_id == "mr-non-head-coil"
    mr.ReceiveCoilName = "HeadNeck_64"
    assert decide(mr, table).kind is RouteKind.CMB
    del mr.ReceiveCoilName
    mr.ProtocolName = "l-spine swi"
    assert decide(mr, table).rule_id == "mr-non-head-description"
    mr.ProtocolName = "QA phantom SWI"
    assert decide(mr, table).rule_id == "qa-phantom"


@pytest.mark.parametrize("body_part", ["HEAD", "BRAIN", "KOPF", "SCHAEDEL", "SCHÄDEL", "CEREBRUM", "CRANEO", "CABEZA",
                                       "TETE", "CRANE", "HOOFD", "HERSENEN", "TESTA", "CRANIO", "ENCEFALO", "SKULL",
                                       "HEAD_NECK"])
def test_head_body_parts_in_scanner_languages_count_as_head(body_part):
    ds = pydicom.Dataset()
    ds.Modality, ds.ImageType, ds.ConvolutionKernel = "CT", ["ORIGINAL", "PRIMARY", "AXIAL"], "STANDARD"
    ds.BodyPartExamined = body_part
    assert decide(ds, _strict_table()).kind is RouteKind.WML


@pytest.mark.parametrize("description", ["Schädel nativ 5mm", "Kopf 5.0 Hr38", "Cráneo simple", "CRANEO SIN CONTRASTE",
                                         "Tête sans injection", "Crâne 5mm", "Hoofd blanco", "Hersenen 5mm",
                                         "Testa senza mdc", "TC Encefalo", "Cerebrum 5mm", "7.1 ROUTINE HEAD",
                                         "Brain (Adult)", "NeuroSeq 4.8", "Cabeza rutina"])
def test_head_descriptions_in_scanner_languages_count_as_head_evidence(description):
    ds = pydicom.Dataset()
    ds.Modality, ds.ImageType, ds.ConvolutionKernel = "CT", ["ORIGINAL", "PRIMARY", "AXIAL"], "STANDARD"
    ds.SeriesDescription = description
    d = decide(ds, _strict_table())
    assert d.kind is RouteKind.WML, d.reason
    del ds.SeriesDescription
    assert decide(ds, _strict_table()).rule_id == "no-head-evidence"
    assert decide(ds, RoutingTable.load()).kind is RouteKind.WML  # by default the pixels decide


# --------------------------------------------------------------------------- svdmark's own heads still go through


@pytest.mark.parametrize("vendor", ["siemens", "ge", "philips", "canon"])
def test_generated_head_series_pass_the_pixel_check(tmp_path, table, vendor):
    for phantom in (make_ncct(seed=31, matrix=64, slice_thickness=5.0, wml_ml=3.0),
                    make_swi(seed=32, matrix=64, slice_thickness=2.0, n_slices=40, n_cmb=4)):
        series = _written(phantom, tmp_path / phantom.modality, vendor=vendor)
        d = decide(series.header, table)
        assert d.kind is (RouteKind.WML if phantom.modality == "CT" else RouteKind.CMB), d.reason
        assert not_a_head(d, volume.load(series), table.anatomy) is None


def test_the_test_suites_small_partial_head_stacks_pass(ncct_study, swi_study, table):
    """The shared fixtures (6 CT slices, 10 SWI slices) are partial heads: the quality gate's business, not ours."""
    from pathlib import Path

    for study in (ncct_study, swi_study):
        for target in study.targets:
            paths = sorted(p for p in Path(study.out_dir).rglob("*.dcm")
                           if str(pydicom.dcmread(p, stop_before_pixels=True).SeriesInstanceUID) == target.series_uid)
            series = _series(paths)
            assert not_a_head(decide(series.header, table), volume.load(series), table.anatomy) is None


def test_head_phantoms_over_seeds_sizes_and_tilts_are_heads():
    for seed, (matrix, n, tilt) in enumerate([(48, None, 0.0), (96, 12, 20.0), (128, None, 12.0), (64, 4, 0.0)]):
        p = make_ncct(seed=100 + seed, matrix=matrix, n_slices=n, tilt_deg=tilt, slice_thickness=5.0)
        v = Volume(array=p.image, row_direction=p.row_direction, column_direction=p.column_direction,
                   pixel_spacing=p.pixel_spacing, positions=p.positions,
                   frames=tuple(FrameRef(str(i), "1") for i in range(p.shape[0])), frame_of_reference_uid="1",
                   slice_thickness=p.slice_thickness)
        verdict = check_ct(v)
        assert verdict.is_head, (seed, verdict.reason)
        if n is None:
            assert 800 <= verdict.figures["intracranial_ml"] <= 2000
        s = make_swi(seed=200 + seed, matrix=matrix, n_slices=n and 3 * n, slice_thickness=2.0)
        v = Volume(array=s.image, row_direction=s.row_direction, column_direction=s.column_direction,
                   pixel_spacing=s.pixel_spacing, positions=s.positions,
                   frames=tuple(FrameRef(str(i), "1") for i in range(s.shape[0])), frame_of_reference_uid="1",
                   slice_thickness=s.slice_thickness)
        assert check_mr(v).is_head, (seed, check_mr(v).reason)


# --------------------------------------------------------------------------- configuration


def test_anatomy_limits_come_from_the_routing_file_and_are_checked():
    base = '[[rule]]\nid = "x"\ndescription = "x"\nroute = "wml"\nall = [ { attr = "Modality", equals = "CT" } ]\n'
    assert RoutingTable.loads(base).anatomy == AnatomyLimits()
    t = RoutingTable.loads(base + "[anatomy]\nenabled = false\nct_brain_ml = [600, 2200]\n")
    assert (t.anatomy.enabled, t.anatomy.ct_brain_ml) == (False, (600.0, 2200.0))
    for bad, words in [("ct_brain_ml = [2000, 800]", "low < high"), ("ct_bone_hu = 'high'", "number"),
                       ("enabled = 1", "true or false"), ("skull_hu = 300", "unknown keys")]:
        with pytest.raises(ConfigError, match=words):
            RoutingTable.loads(base + "[anatomy]\n" + bad + "\n")


def test_the_pixel_check_can_be_switched_off_by_a_site(tmp_path):
    vol = volume.load(_written(body_phantoms.knee_mr(), tmp_path))
    refused = not_a_head(CMB, vol, AnatomyLimits())
    assert (refused.kind, refused.rule_id) == (RouteKind.IGNORED, RULE_MR)
    assert not_a_head(CMB, vol, AnatomyLimits(enabled=False)) is None  # no pixel check: the header rules decide
    assert not_a_head(RoutingDecision(RouteKind.IGNORED, "x", "ignored: x"), vol, AnatomyLimits()) is None


def test_numeric_conditions():
    text = textwrap.dedent("""
        [[rule]]
        id = "wide"
        description = "wide"
        ignore = "wide ({ReconstructionDiameter} mm)"
        any = [ { attr = "ReconstructionDiameter", greater = 320 }, { attr = "SliceThickness", less = 0.5 } ]
        [[rule]]
        id = "rest"
        description = "rest"
        route = "wml"
        all = [ { attr = "Modality", equals = "CT" } ]
    """)
    t = RoutingTable.loads(text)
    ds = pydicom.Dataset()
    ds.Modality = "CT"
    for diameter, thickness, rule in [("400", "5", "wide"), ("250", "5", "rest"), ("250", "0.4", "wide"),
                                      ("", "5", "rest")]:
        ds.ReconstructionDiameter, ds.SliceThickness = diameter, thickness
        assert t.decide(ds).rule_id == rule
    ds.ReconstructionDiameter = "400"
    assert "ReconstructionDiameter is 400, more than 320" in t.decide(ds).reason
    with pytest.raises(ConfigError, match="must be a number"):
        RoutingTable.loads(text.replace("greater = 320", "greater = '320'"))
