"""svdmark.route: one routing test per vendor style, target and distractor, plus overrides and explain()."""
from __future__ import annotations

import textwrap

import pytest
from pydicom import Dataset
from pydicom.sequence import Sequence

from svdmark.domain import RouteKind
from svdmark.errors import ConfigError
from svdmark.route import FALLBACK_RULE_ID, RoutingTable, decide, explain, format_explanation

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4"
ENHANCED_MR = "1.2.840.10008.5.1.4.1.1.4.1"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"

VENDORS = {
    "siemens": "SIEMENS",
    "ge": "GE MEDICAL SYSTEMS",
    "philips": "Philips",
    "canon": "CANON_MEC",
}


def header(modality: str, manufacturer: str, description: str, image_type=("ORIGINAL", "PRIMARY"), **attrs) -> Dataset:
    ds = Dataset()
    ds.Modality = modality
    ds.SOPClassUID = CT_IMAGE if modality == "CT" else MR_IMAGE
    ds.Manufacturer = manufacturer
    ds.SeriesDescription = description
    ds.ImageType = list(image_type)
    for k, v in attrs.items():
        setattr(ds, k, v)
    return ds


def ge_private_image_type(ds: Dataset, value: int) -> Dataset:
    """GE's (0043,102F) private image type: 0 magnitude, 1 phase, 2 real, 3 imaginary."""
    ds.add_new((0x0043, 0x0010), "LO", "GEMS_PARM_01")
    ds.add_new((0x0043, 0x102F), "SS", value)
    return ds


def ct(vendor: str, description: str, kernel: str, image_type=("ORIGINAL", "PRIMARY", "AXIAL"), **attrs) -> Dataset:
    attrs.setdefault("BodyPartExamined", "HEAD")
    return header("CT", VENDORS[vendor], description, image_type, ConvolutionKernel=kernel, **attrs)


def mr(vendor: str, description: str, image_type=("ORIGINAL", "PRIMARY", "M", "ND"), **attrs) -> Dataset:
    return header("MR", VENDORS[vendor], description, image_type, **attrs)


# (vendor, name, header, expected kind, expected rule id)
CASES = [
    # ---------------------------------------------------------------- Siemens
    ("siemens", "ct head Hr38", ct("siemens", "Head 5.0 Hr38 axial", ["Hr38h", "3"]), RouteKind.WML, "ct-head-noncontrast"),
    ("siemens", "ct head H31s", ct("siemens", "HeadSeq 4.8 H31s", "H31s"), RouteKind.WML, "ct-head-noncontrast"),
    ("siemens", "bone kernel", ct("siemens", "Head 2.0 H70h", "H70h"), RouteKind.IGNORED, "ct-bone-kernel"),
    ("siemens", "bone kernel Hr64", ct("siemens", "Head 1.0", ["Hr64h", "3"]), RouteKind.IGNORED, "ct-bone-kernel"),
    ("siemens", "topogram", ct("siemens", "Topogram 0.6 T20s", "T20s", ("ORIGINAL", "PRIMARY", "LOCALIZER")), RouteKind.IGNORED, "localizer"),
    ("siemens", "cta", ct("siemens", "CTA Head 0.75 Hv36", "Hv36", ContrastBolusAgent="Imeron 350"), RouteKind.IGNORED, "ct-contrast-agent"),
    ("siemens", "swi", mr("siemens", "SWI_Images", ("DERIVED", "PRIMARY", "M", "SWI", "NORM", "DIS2D"), SequenceName="*swi3d1r"), RouteKind.CMB, "swi-siemens"),
    ("siemens", "phase", mr("siemens", "Pha_Images", ("ORIGINAL", "PRIMARY", "P", "ND"), SequenceName="*swi3d1r"), RouteKind.IGNORED, "phase-image"),
    ("siemens", "minip", mr("siemens", "mIP_Images(SW)", ("DERIVED", "PRIMARY", "MNIP", "SWI"), SequenceName="*swi3d1r"), RouteKind.IGNORED, "minimum-intensity-projection"),
    ("siemens", "magnitude", mr("siemens", "Mag_Images", ("ORIGINAL", "PRIMARY", "M", "ND", "NORM"), SequenceName="*swi3d1r"), RouteKind.IGNORED, "swi-source-magnitude"),
    ("siemens", "localizer", mr("siemens", "localizer", ("ORIGINAL", "PRIMARY", "M", "ND", "NORM")), RouteKind.IGNORED, "localizer"),
    ("siemens", "aahead scout", mr("siemens", "AAHead_Scout_64ch-head-coil", ("ORIGINAL", "PRIMARY", "M", "ND", "NORM")), RouteKind.IGNORED, "localizer"),
    ("siemens", "flair", mr("siemens", "t2_tirm_tra_dark-fluid", SequenceName="*tir2d1_16"), RouteKind.IGNORED, "mr-not-swi"),
    ("siemens", "mprage", mr("siemens", "t1_mprage_sag_p2_iso", SequenceName="*tfl3d1_16ns"), RouteKind.IGNORED, "mr-not-swi"),
    ("siemens", "mpr reformat", mr("siemens", "t1_mprage_sag_p2_iso_MPR_tra", ("DERIVED", "SECONDARY", "MPR", "NORM")), RouteKind.IGNORED, "projection-or-reformat"),
    ("siemens", "dwi adc", mr("siemens", "ep2d_diff_tra_ADC", ("DERIVED", "PRIMARY", "DIFFUSION", "ADC")), RouteKind.IGNORED, "derived-image"),
    # ---------------------------------------------------------------- GE
    ("ge", "ct head standard", ct("ge", "5mm Std", "STANDARD"), RouteKind.WML, "ct-head-noncontrast"),
    ("ge", "ct head soft no body part", ct("ge", "HEAD W/O CONTRAST 5mm", "SOFT", BodyPartExamined=""), RouteKind.WML, "ct-head-noncontrast"),
    ("ge", "boneplus", ct("ge", "1.25mm Bone", "BONEPLUS"), RouteKind.IGNORED, "ct-bone-kernel"),
    ("ge", "hd lung", ct("ge", "Head 0.625", "HD LUNG"), RouteKind.IGNORED, "ct-bone-kernel"),
    ("ge", "scout", ct("ge", "Scout", "STANDARD", ("ORIGINAL", "PRIMARY", "LOCALIZER")), RouteKind.IGNORED, "localizer"),
    ("ge", "cta by description", ct("ge", "CTA HEAD 0.625", "STANDARD"), RouteKind.IGNORED, "ct-contrast-description"),
    ("ge", "c+ by description", ct("ge", "HEAD C+ 5mm", "STANDARD"), RouteKind.IGNORED, "ct-contrast-description"),
    ("ge", "reformat", ct("ge", "Sag 2mm", "STANDARD", ("DERIVED", "SECONDARY", "REFORMATTED", "AVERAGE")), RouteKind.IGNORED, "projection-or-reformat"),
    ("ge", "swan", mr("ge", "Ax SWAN", ("ORIGINAL", "PRIMARY", "OTHER")), RouteKind.CMB, "swan-ge"),
    ("ge", "swan magnitude tag", ge_private_image_type(mr("ge", "Ax SWAN", ("ORIGINAL", "PRIMARY", "OTHER")), 0), RouteKind.CMB, "swan-ge"),
    ("ge", "swan phase (private tag)", ge_private_image_type(mr("ge", "Ax SWAN", ("ORIGINAL", "PRIMARY", "OTHER")), 1), RouteKind.IGNORED, "phase-image"),
    ("ge", "swan minip", mr("ge", "SWAN MinIP", ("DERIVED", "SECONDARY", "REFORMATTED")), RouteKind.IGNORED, "minimum-intensity-projection"),
    ("ge", "3-plane loc", mr("ge", "3-Plane Loc", ("ORIGINAL", "PRIMARY", "OTHER")), RouteKind.IGNORED, "localizer"),
    ("ge", "t2 flair", mr("ge", "Ax T2 FLAIR", ("ORIGINAL", "PRIMARY", "OTHER")), RouteKind.IGNORED, "mr-not-swi"),
    # ---------------------------------------------------------------- Philips
    ("philips", "ct brain UB", ct("philips", "Brain 5mm", "UB"), RouteKind.WML, "ct-head-noncontrast"),
    ("philips", "bone YC", ct("philips", "Brain 1mm", "YC"), RouteKind.IGNORED, "ct-bone-kernel"),
    ("philips", "bone D", ct("philips", "Head", "D"), RouteKind.IGNORED, "ct-bone-kernel"),
    ("philips", "surview", ct("philips", "Surview", "UB", ("ORIGINAL", "PRIMARY", "LOCALIZER")), RouteKind.IGNORED, "localizer"),
    ("philips", "swip", mr("philips", "SWIp", ("ORIGINAL", "PRIMARY", "M_FFE", "M", "FFE")), RouteKind.CMB, "swip-philips"),
    ("philips", "swi 3d", mr("philips", "SWI_3D_1mm", ("ORIGINAL", "PRIMARY", "M_FFE", "M", "FFE")), RouteKind.CMB, "swip-philips"),
    ("philips", "swip phase (image type)", mr("philips", "SWIp", ("ORIGINAL", "PRIMARY", "PHASE MAP", "P", "FFE")), RouteKind.IGNORED, "phase-image"),
    ("philips", "minip", mr("philips", "mIP SWIp", ("DERIVED", "PRIMARY", "PROJECTION IMAGE", "MINIP")), RouteKind.IGNORED, "minimum-intensity-projection"),
    ("philips", "survey", mr("philips", "SURVEY", ("ORIGINAL", "PRIMARY", "M_SE", "M", "SE")), RouteKind.IGNORED, "localizer"),
    ("philips", "flair", mr("philips", "T2W_FLAIR", ("ORIGINAL", "PRIMARY", "M_IR", "M", "IR")), RouteKind.IGNORED, "mr-not-swi"),
    # ---------------------------------------------------------------- Canon / Toshiba
    ("canon", "ct brain FC26", ct("canon", "Brain 5.0 FC26", "FC26"), RouteKind.WML, "ct-head-noncontrast"),
    ("canon", "bone FC30", ct("canon", "Brain 1.0 FC30", "FC30"), RouteKind.IGNORED, "ct-bone-kernel"),
    ("canon", "bone FC81", ct("canon", "Head 0.5", "FC81"), RouteKind.IGNORED, "ct-bone-kernel"),
    ("canon", "scanogram", ct("canon", "Scanogram", "FC26", ("ORIGINAL", "PRIMARY", "LOCALIZER")), RouteKind.IGNORED, "localizer"),
    ("canon", "contrast agent", ct("canon", "Brain 0.5", "FC43", ContrastBolusAgent="Iopamiron"), RouteKind.IGNORED, "ct-contrast-agent"),
    ("canon", "swi", mr("canon", "SWI", ("ORIGINAL", "PRIMARY", "OTHER")), RouteKind.CMB, "swi-canon"),
    ("canon", "fsbb", mr("canon", "FSBB 3D", ("ORIGINAL", "PRIMARY", "OTHER")), RouteKind.CMB, "swi-canon"),
    ("canon", "swi phase", mr("canon", "SWI", ("ORIGINAL", "PRIMARY", "OTHER"), ComplexImageComponent="PHASE"), RouteKind.IGNORED, "phase-image"),
    ("canon", "swi minip", mr("canon", "SWI minIP", ("DERIVED", "SECONDARY", "OTHER")), RouteKind.IGNORED, "minimum-intensity-projection"),
    ("canon", "dwi", mr("canon", "DWI b1000", ("ORIGINAL", "PRIMARY", "OTHER")), RouteKind.IGNORED, "mr-not-swi"),
]


@pytest.fixture(scope="module")
def table() -> RoutingTable:
    return RoutingTable.load()


@pytest.mark.parametrize(("vendor", "name", "ds", "kind", "rule"), CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_vendor_routing(table, vendor, name, ds, kind, rule):
    d = decide(ds, table)
    assert (d.kind, d.rule_id) == (kind, rule), d.reason
    if kind is RouteKind.IGNORED:
        assert d.reason.startswith("ignored: ")
    else:
        assert d.reason.startswith(f"{kind.value}: ")


def test_every_vendor_has_target_and_distractors():
    for vendor in VENDORS:
        kinds = {c[3] for c in CASES if c[0] == vendor}
        assert kinds == {RouteKind.WML, RouteKind.CMB, RouteKind.IGNORED}, vendor


def test_reasons_are_readable(table):
    d = decide(mr("siemens", "Pha_Images", ("ORIGINAL", "PRIMARY", "P", "ND")), table)
    assert d.reason == "ignored: phase image (ImageType contains P) — only SWI magnitude/processed images are analysed"
    d = decide(ct("siemens", "Head 2.0", "H70h"), table)
    assert d.reason.startswith("ignored: bone/sharp-kernel CT reconstruction (kernel 'H70h') (ConvolutionKernel 'H70h' matches a bone/lung kernel)")
    d = decide(mr("ge", "Ax T2 FLAIR"), table)
    assert d.reason.startswith("ignored: MR series is not susceptibility-weighted (series description 'Ax T2 FLAIR')")


def test_enhanced_multiframe_swi_routes(table):
    ds = mr("siemens", "SWI_Images", ("DERIVED", "PRIMARY", "SWI", "NONE"))
    ds.SOPClassUID = ENHANCED_MR
    ds.NumberOfFrames = 3
    assert decide(ds, table).kind is RouteKind.CMB
    # an enhanced phase object: ComplexImageComponent only inside the functional groups
    ph = mr("philips", "SWIp", ("ORIGINAL", "PRIMARY", "PHASE", "NONE"))
    del ph.ImageType
    ph.SOPClassUID = ENHANCED_MR
    ft = Dataset()
    ft.ComplexImageComponent = "PHASE"
    ft.FrameType = ["ORIGINAL", "PRIMARY", "PHASE", "NONE"]
    shared = Dataset()
    shared.MRImageFrameTypeSequence = Sequence([ft])
    ph.SharedFunctionalGroupsSequence = Sequence([shared])
    d = decide(ph, table)
    assert (d.kind, d.rule_id) == (RouteKind.IGNORED, "phase-image")


@pytest.mark.parametrize(
    ("ds", "rule"),
    [
        (ct("ge", "CT HEAD WITHOUT CONTRAST", "STANDARD"), "ct-head-noncontrast"),
        (ct("ge", "NCCT Head", "STANDARD", BodyPartExamined=""), "ct-head-noncontrast"),
        (ct("siemens", "Head 5mm", "H31s", ContrastBolusAgent="NONE"), "ct-head-noncontrast"),
        (ct("siemens", "Head 5mm", "H31s", ContrastBolusAgent="  "), "ct-head-noncontrast"),
        (ct("siemens", "Head post contrast", "H31s"), "ct-contrast-description"),
        (ct("siemens", "Perfusion 5mm", "H20f"), "ct-contrast-description"),
        (ct("ge", "Chest 5mm", "STANDARD", BodyPartExamined="CHEST"), "non-head"),
        (ct("ge", "Chest 5mm", "STANDARD", BodyPartExamined=""), "ct-non-head-description"),
        (ct("ge", "Head Neck 5mm", "STANDARD", BodyPartExamined=""), "ct-head-noncontrast"),
        (ct("ge", "Dose Report", "STANDARD"), "dose-report"),
        (header("SR", "svdmark", "svdmark WML report"), "non-image-object"),
        (header("CT", "svdmark", "svdmark summary"), "own-output"),
        (header("OT", "ACME", "key images", SOPClassUID=SECONDARY_CAPTURE), "secondary-capture"),
        (header("US", "ACME", "carotid"), "unsupported-modality"),
    ],
)
def test_ct_and_other_edge_cases(table, ds, rule):
    assert decide(ds, table).rule_id == rule


def test_strange_header_never_raises(table):
    d = decide(Dataset(), table)
    assert d.kind is RouteKind.IGNORED
    ds = Dataset()
    ds.Modality = "MR"
    ds.ImageType = "ORIGINAL"  # single-valued string
    ds.add_new((0x0043, 0x102F), "UN", b"\x01\x00")  # private tag of unknown VR
    d = decide(ds, table)
    assert (d.kind, d.rule_id) == (RouteKind.IGNORED, "phase-image")


def test_fallback_when_no_rule_matches(tmp_path):
    path = tmp_path / "routing.toml"
    path.write_text(textwrap.dedent("""
        [[rule]]
        id = "only-ct"
        description = "CT only"
        route = "wml"
        all = [ { attr = "Modality", equals = "CT" } ]
    """))
    t = RoutingTable.load(path)
    d = decide(mr("ge", "Ax T2"), t)
    assert d.kind is RouteKind.IGNORED and d.rule_id == FALLBACK_RULE_ID
    assert d.reason == "no routing rule matched: modality MR, series description 'Ax T2'"


def test_override_file(tmp_path):
    path = tmp_path / "site.toml"
    path.write_text(textwrap.dedent("""
        [table]
        id = "st-elsewhere"
        version = "7"

        [[rule]]
        id = "research-t2star"
        description = "Our site's T2* GRE is read for microbleeds too"
        route = "cmb"
        all = [ { attr = "Modality", equals = "MR" } ]
        any = [ { attr = "SeriesDescription", regex = 't2\\\\*|hemo', label = "T2* naming" } ]

        [[rule]]
        id = "disabled"
        description = "switched off"
        enabled = false
        ignore = "never"
        all = [ { attr = "Modality", equals = "MR" } ]

        [[rule]]
        id = "rest"
        description = "everything else"
        ignore = "not read at this site"
        hint = "ask the PACS team"
    """))
    t = RoutingTable.load(path)
    assert (t.id, t.version, [r.id for r in t.rules]) == ("st-elsewhere", "7", ["research-t2star", "rest"])
    assert decide(mr("siemens", "t2_fl2d_tra_hemo"), t).kind is RouteKind.CMB
    d = decide(mr("siemens", "SWI_Images"), t)
    assert d.reason == "ignored: not read at this site — ask the PACS team"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[[rule]]\nid='x'\ndescription='d'\nroute='wml'\nall=[{attr='SeriesDescription', regex='('}]", "invalid regular expression"),
        ("[[rule]]\nid='x'\ndescription='d'\nall=[]", "exactly one action"),
        ("[[rule]]\nid='x'\ndescription='d'\nroute='ct'", "route must be"),
        ("[[rule]]\nid='x'\ndescription='d'\nignore='a'\n[[rule]]\nid='x'\ndescription='d'\nignore='b'", "used twice"),
        ("[[rule]]\nid='x'\ndescription='d'\nignore='a'\nwhen=[]", "unknown keys"),
        ("[[rule]]\nid='x'\ndescription='d'\nignore='a'\nall=[{attr='Modality', like='CT'}]", "unknown test 'like'"),
        ("[[rule]]\nid='x'\ndescription='d'\nignore='a'\nall=[{equals='CT'}]", "lacks 'attr'"),
        ("[[rule]]\nid='Bad Id'\ndescription='d'\nignore='a'", "lower-case identifier"),
        ("[table]\nid='t'", "no [[rule]]"),
        ("this is = not toml [", "not valid TOML"),
    ],
)
def test_config_errors(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")):
        RoutingTable.load(path)


def test_missing_override_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read routing table"):
        RoutingTable.load(tmp_path / "nope.toml")


def test_packaged_table_is_cached_and_ordered(table):
    assert RoutingTable.load() is table
    ids = [r.id for r in table.rules]
    # exclusions before targets
    for target in ("swi-siemens", "swan-ge", "swip-philips", "swi-canon", "swi-generic", "ct-head-noncontrast"):
        for exclusion in ("localizer", "phase-image", "minimum-intensity-projection", "derived-image", "ct-bone-kernel", "ct-contrast-agent"):
            assert ids.index(exclusion) < ids.index(target)


def test_explain_lists_tried_rules_with_reasons(table):
    ds = mr("siemens", "Pha_Images", ("ORIGINAL", "PRIMARY", "P", "ND"))
    traces = explain(ds, table)
    assert traces[-1].matched and traces[-1].rule_id == "phase-image"
    assert not any(t.matched for t in traces[:-1])
    assert [t.rule_id for t in traces] == [r.id for r in table.rules][: len(traces)]
    loc = next(t for t in traces if t.rule_id == "localizer")
    assert "does not match localiser naming" in loc.why
    text = format_explanation(traces)
    assert "MATCH phase-image" in text
    every = explain(ds, table, all_rules=True)
    assert len(every) == len(table.rules)
    # the fallback shows up when nothing matched
    t = RoutingTable.loads("[[rule]]\nid='ct'\ndescription='CT'\nroute='wml'\nall=[{attr='Modality', equals='CT'}]")
    traces = explain(mr("ge", "Ax T2"), t)
    assert traces[-1].rule_id == FALLBACK_RULE_ID and traces[-1].matched
    assert "modality MR" in traces[-1].why


# --------------------------------------------------------------------------- phantom studies (when the writer exists)


def _phantom_writer():
    phantom = pytest.importorskip("svdmark_phantom")
    write_study = getattr(phantom, "write_study", None)
    if write_study is None:
        pytest.skip("svdmark_phantom.write_study is not there yet")
    return phantom, write_study


@pytest.mark.slow
@pytest.mark.parametrize("vendor", list(VENDORS))
@pytest.mark.parametrize("kind", ["ncct", "swi"])
def test_phantom_study_only_targets_route(tmp_path, table, vendor, kind):
    import inspect
    from pathlib import Path

    from pydicom import dcmread

    phantom, write_study = _phantom_writer()
    params = inspect.signature(write_study).parameters
    wanted = {"vendor": vendor, "kind": kind, "distractors": True, "seed": 7, "matrix": 64, "small": True}
    kwargs = {k: v for k, v in wanted.items() if k in params}
    truth = write_study(tmp_path, **kwargs)
    assert truth.series, "the phantom study has no series"
    seen_target = False
    for s in truth.series:
        folder = Path(s.folder)
        if not folder.is_absolute():
            folder = Path(truth.out_dir or tmp_path) / folder
        files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() not in (".json", ".txt"))
        assert files, f"no files for series {s.description} in {folder}"
        ds = dcmread(files[0], stop_before_pixels=True)
        d = decide(ds, table)
        if s.target:
            seen_target = True
            expected = RouteKind.WML if kind == "ncct" else RouteKind.CMB
            assert d.kind is expected, f"{vendor} {s.kind} '{s.description}': {d.reason}"
        else:
            assert d.kind is RouteKind.IGNORED, f"{vendor} distractor {s.kind} '{s.description}' was routed: {d.reason}"
    assert seen_target
