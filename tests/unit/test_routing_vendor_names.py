"""The packaged routing table on vendor and language naming a review found misrouted: contrast CT named by its
series (glued Siemens names, Dutch/German, post-contrast), bolus-tracking series, a contrast module with an empty
agent, dual-energy iodine/VNC maps, the C-spine series of a head + C-spine CT, a renamed Siemens SWI magnitude,
Philips' 'sWIP' prefix, Hitachi/Fujifilm BSI, and plain CT saying 'without contrast' in other languages."""
import pytest
from pydicom import Dataset

from svdmark.domain import RouteKind
from svdmark.route import decide


def _ds(**kw):
    d = Dataset()
    for k, v in kw.items():
        setattr(d, k, v)
    return d


def ct(desc, **kw):
    base = dict(Modality="CT", SOPClassUID="1.2.840.10008.5.1.4.1.1.2", ImageType=["ORIGINAL", "PRIMARY", "AXIAL"],
                Manufacturer="SIEMENS", BodyPartExamined="HEAD", ConvolutionKernel=["Hv36f", "3"],
                ReconstructionDiameter="220", SeriesDescription=desc)
    return _ds(**{**base, **kw})


def ge_ct(desc, **kw):
    return ct(desc, Manufacturer="GE MEDICAL SYSTEMS", ConvolutionKernel="STANDARD", **kw)


def mr(desc, manufacturer, image_type, **kw):
    base = dict(Modality="MR", SOPClassUID="1.2.840.10008.5.1.4.1.1.4", Manufacturer=manufacturer,
                BodyPartExamined="HEAD", SeriesDescription=desc, ImageType=image_type)
    return _ds(**{**base, **kw})


def _is(d, kind, rule):
    assert (d.kind, d.rule_id) == (kind, rule), d.reason


PHILIPS = "Philips Medical Systems"
FFE = ["ORIGINAL", "PRIMARY", "M_FFE", "M", "FFE"]


# --- A: contrast CT named by its series -----------------------------------------------------------------------
@pytest.mark.parametrize("desc", [
    "HeadAngio  1.0  Hv36  3",      # Siemens, angio glued to 'Head'
    "CarotidAngio  1.0  Hv36",
    "NeuroVPCT  5.0  Hr36",         # Siemens perfusion, VPCT glued to 'Neuro'
    "Carotis 1.0 Hv40f",            # Dutch/German CTA naming
    "Perfusie 5.0 Hr36",            # Dutch perfusion
    "Head Post 5mm",                # post-contrast head
])
def test_contrast_ct_named_by_its_series_is_ignored(desc):
    _is(decide(ct(desc)), RouteKind.IGNORED, "ct-contrast-description")


@pytest.mark.parametrize("desc", ["Post Fossa 2.5mm", "PostFossa", "Head Post Fossa 2.5mm"])
def test_posterior_fossa_recon_is_not_called_contrast(desc):
    # GE's plain-CT posterior-fossa reconstruction: 'post' here is not post-contrast
    _is(decide(ge_ct(desc)), RouteKind.WML, "ct-head-noncontrast")


@pytest.mark.parametrize("desc", [
    "Head 5mm", "Brain Routine 5.0 H30s", "Axial 0.625", "Helical Brain", "HEAD STD", "CT hersenen blanco",
    "Hersenen 5.0 J40s", "Stroke 5mm", "Routine Head", "Perfect Brain 5mm",
])
def test_plain_ct_names_are_not_called_contrast(desc):
    _is(decide(ct(desc)), RouteKind.WML, "ct-head-noncontrast")


# --- B: bolus-tracking / test-bolus series --------------------------------------------------------------------
@pytest.mark.parametrize("desc,kernel", [
    ("SmartPrep", "STANDARD"), ("Smart Prep", "STANDARD"), ("Monitoring  10.0  B30f", ["B30f"]),
    ("PreMonitoring", ["B30f"]), ("Testbolus 10.0 B30f", ["B30f"]), ("Test Bolus", "STANDARD"),
    ("Tracker", "STANDARD"), ("Bolus Tracking", "STANDARD"), ("BolusTracking", "STANDARD"),
])
def test_bolus_tracking_series_is_ignored_as_contrast_timed(desc, kernel):
    d = decide(ct(desc, ConvolutionKernel=kernel))
    _is(d, RouteKind.IGNORED, "ct-bolus-tracking")
    assert "bolus-tracking / test-bolus series (contrast-timed CT)" in d.reason


# --- C: contrast module filled, agent empty -------------------------------------------------------------------
def test_contrast_module_with_empty_agent_is_ignored():
    d = ge_ct("Axial 0.625", ContrastBolusAgent="", ContrastBolusRoute="IV", ContrastBolusVolume="70",
              ContrastBolusIngredient="IODINE")
    _is(decide(d), RouteKind.IGNORED, "ct-contrast-agent")


def test_contrast_ingredient_alone_is_contrast():
    _is(decide(ge_ct("Axial 0.625", ContrastBolusIngredient="IODINE")), RouteKind.IGNORED, "ct-contrast-agent")


def test_contrast_total_dose_alone_is_contrast():
    _is(decide(ge_ct("Axial 0.625", ContrastBolusTotalDose="80")), RouteKind.IGNORED, "ct-contrast-agent")


def test_contrast_route_alone_is_not_contrast():
    # protocol templates fill the route on plain scans
    _is(decide(ge_ct("Axial 0.625", ContrastBolusRoute="IV")), RouteKind.WML, "ct-head-noncontrast")


def test_contrast_volume_zero_is_not_contrast():
    _is(decide(ge_ct("Axial 0.625", ContrastBolusVolume="0", ContrastBolusRoute="IV")), RouteKind.WML,
        "ct-head-noncontrast")


def test_contrast_ingredient_none_is_not_contrast():
    _is(decide(ge_ct("Axial 0.625", ContrastBolusIngredient="NONE")), RouteKind.WML, "ct-head-noncontrast")


# --- D: dual-energy iodine maps and virtual non-contrast ------------------------------------------------------
@pytest.mark.parametrize("desc", [
    "Iodine 1.0 Qr40", "DE_Brain Iodine", "Iodine(Water) 1.25mm", "VNC 1.0 Qr40", "Virtual Non-Contrast",
])
def test_dual_energy_material_map_or_vnc_is_ignored(desc):
    _is(decide(ct(desc)), RouteKind.IGNORED, "ct-dual-energy-map")


# --- E: the C-spine series of a head + C-spine CT --------------------------------------------------------------
@pytest.mark.parametrize("kw", [
    dict(BodyPartExamined="HEAD", StudyDescription="CT HEAD AND C-SPINE WO CONTRAST"),
    dict(BodyPartExamined="HEADNECK"),
    dict(BodyPartExamined="", StudyDescription="CT HEAD AND C-SPINE WO CONTRAST"),
    dict(BodyPartExamined="", ProtocolName="Trauma Head C-Spine"),
], ids=["head+study", "headneck", "empty+study", "empty+protocol"])
def test_cspine_series_of_head_cspine_study_is_ignored(kw):
    _is(decide(ge_ct("C-Spine Soft 2.5mm", **kw)), RouteKind.IGNORED, "ct-cervical-spine-series")


@pytest.mark.parametrize("desc", ["CSpine 2.5mm", "Cervical Spine Soft", "HWS 2mm Weichteil", "CWK 2.0 Hr40"])
def test_cervical_spine_series_names_are_ignored(desc):
    _is(decide(ge_ct(desc, BodyPartExamined="HEAD")), RouteKind.IGNORED, "ct-cervical-spine-series")


@pytest.mark.parametrize("kw", [
    dict(BodyPartExamined="HEADNECK"),
    dict(BodyPartExamined="HEAD", StudyDescription="CT HEAD AND C-SPINE WO CONTRAST"),
    dict(BodyPartExamined="", StudyDescription="CT HEAD AND C-SPINE WO CONTRAST"),
], ids=["headneck", "head+study", "empty+study"])
def test_head_series_of_head_cspine_study_reaches_wml(kw):
    _is(decide(ge_ct("Head 5mm", **kw)), RouteKind.WML, "ct-head-noncontrast")


# --- F: Siemens SWI magnitude renamed --------------------------------------------------------------------------
def test_siemens_swi_magnitude_without_mag_in_its_name_is_ignored():
    d = mr("swi_tra_p2_1.5mm", "SIEMENS", ["ORIGINAL", "PRIMARY", "M", "ND", "NORM"], SequenceName="*swi3d1r")
    _is(decide(d), RouteKind.IGNORED, "swi-siemens-source-magnitude")


@pytest.mark.parametrize("image_type", [
    ["DERIVED", "PRIMARY", "M", "SWI", "NORM", "DIS2D"],
    ["ORIGINAL", "PRIMARY", "M", "SWI", "NORM", "DIS2D"],
])
def test_siemens_processed_swi_renamed_still_reaches_cmb(image_type):
    d = mr("swi_tra_p2_1.5mm", "SIEMENS", image_type, SequenceName="*swi3d1r")
    _is(decide(d), RouteKind.CMB, "swi-siemens")


def test_siemens_non_swi_magnitude_keeps_its_reason():
    d = mr("t2_tirm_tra_dark-fluid", "SIEMENS", ["ORIGINAL", "PRIMARY", "M", "ND", "NORM"], SequenceName="*tir2d1_16")
    _is(decide(d), RouteKind.IGNORED, "mr-not-swi")


# --- G: Philips 'sWIP' prefix ----------------------------------------------------------------------------------
def test_philips_t2star_ffe_with_swip_prefix_is_not_swi():
    _is(decide(mr("sWIP T2*W_FFE", PHILIPS, FFE)), RouteKind.IGNORED, "mr-not-swi")


def test_philips_t2star_ffe_with_swip_prefix_in_protocol_name_is_not_swi():
    _is(decide(mr("sWIP T2*W_FFE", PHILIPS, FFE, ProtocolName="sWIP T2*W_FFE")), RouteKind.IGNORED, "mr-not-swi")


def test_philips_t2star_ffe_with_wip_prefix_is_not_swi():
    _is(decide(mr("WIP T2*W_FFE", PHILIPS, FFE)), RouteKind.IGNORED, "mr-not-swi")


@pytest.mark.parametrize("desc", ["SWIp", "sWIP SWIp 0.9mm", "WIP SWIp", "VenBOLD", "SWI"])
def test_philips_swi_names_still_reach_cmb(desc):
    _is(decide(mr(desc, PHILIPS, FFE, ProtocolName=desc)), RouteKind.CMB, "swip-philips")


# --- H: Hitachi / Fujifilm BSI ---------------------------------------------------------------------------------
@pytest.mark.parametrize("manufacturer", ["Hitachi Medical Corporation", "FUJIFILM Healthcare Corporation"])
@pytest.mark.parametrize("desc", ["BSI", "BSI_AX"])
def test_hitachi_fujifilm_bsi_reaches_cmb(manufacturer, desc):
    _is(decide(mr(desc, manufacturer, ["ORIGINAL", "PRIMARY", "M"])), RouteKind.CMB, "bsi-hitachi")


def test_hitachi_bsi_minip_is_ignored():
    d = mr("BSI MinIP", "Hitachi Medical Corporation", ["DERIVED", "SECONDARY", "M"])
    _is(decide(d), RouteKind.IGNORED, "minimum-intensity-projection")


def test_hitachi_bsi_phase_is_ignored():
    d = mr("BSI_AX", "FUJIFILM Healthcare Corporation", ["ORIGINAL", "PRIMARY", "P"])
    _is(decide(d), RouteKind.IGNORED, "phase-image")


# --- I: plain CT saying 'without contrast' in other languages --------------------------------------------------
@pytest.mark.parametrize("desc", [
    "CT hersenen zonder contrast", "CCT ohne KM", "Schädel ohne KM", "Cerebrum nativ", "Hersenen blanco",
])
def test_plain_ct_saying_without_contrast_in_dutch_or_german_reaches_wml(desc):
    _is(decide(ct(desc, ConvolutionKernel=["Hr38f", "3"])), RouteKind.WML, "ct-head-noncontrast")


# --- J: ContrastBolusAgent 'none' in words ---------------------------------------------------------------------
@pytest.mark.parametrize("agent", ["No Contrast Agent", "Ohne KM", "Zonder contrast", "Geen"])
def test_contrast_agent_none_in_words_reaches_wml(agent):
    _is(decide(ct("Head 5mm", ContrastBolusAgent=agent, ConvolutionKernel=["Hr38f", "3"])), RouteKind.WML,
        "ct-head-noncontrast")


def test_a_real_contrast_agent_is_still_contrast():
    _is(decide(ct("Head 5mm", ContrastBolusAgent="Omnipaque 350")), RouteKind.IGNORED, "ct-contrast-agent")
