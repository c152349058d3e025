"""The packaged routing table on series a review found misrouted: a plain CT whose contrast agent says "no
contrast" in words, contrast CT named by its series (Circle of Willis, VPCT perfusion), a QSM map."""
import pytest
from pydicom import Dataset

from svdmark.domain import RouteKind
from svdmark.route import decide


def _ct(**kw):
    d = Dataset()
    base = dict(Modality="CT", ImageType=["ORIGINAL", "PRIMARY", "AXIAL"], Manufacturer="SIEMENS",
                BodyPartExamined="HEAD", SeriesDescription="Head 5mm", ConvolutionKernel=["Hr40f", "3"],
                SOPClassUID="1.2.840.10008.5.1.4.1.1.2")
    for k, v in {**base, **kw}.items():
        setattr(d, k, v)
    return d


def _mr(**kw):
    d = Dataset()
    base = dict(Modality="MR", ImageType=["DERIVED", "PRIMARY", "M", "SWI"], Manufacturer="SIEMENS",
                BodyPartExamined="HEAD", SeriesDescription="SWI_Images", SOPClassUID="1.2.840.10008.5.1.4.1.1.4")
    for k, v in {**base, **kw}.items():
        setattr(d, k, v)
    return d


@pytest.mark.parametrize("agent", ["No contrast", "NO CONTRAST", "Non contrast", "NONE USED", "N"])
def test_ncct_whose_contrast_agent_says_none_in_words_reaches_wml(agent):
    # ct-contrast-agent only accepts a bare 'none'/'no'/...; these NCCT are ignored as "contrast-enhanced CT"
    assert decide(_ct(ContrastBolusAgent=agent)).kind is RouteKind.WML


@pytest.mark.parametrize("kw", [
    dict(SeriesDescription="Circle of Willis 0.6 Hv36"),
    dict(SeriesDescription="VPCT Neuro 5.0 Hr36"),  # perfusion source images
    dict(SeriesDescription="Neuro 5.0", ImageType=["ORIGINAL", "PRIMARY", "AXIAL", "PERFUSION"]),
])
def test_contrast_ct_named_by_its_series_is_not_routed_to_wml(kw):
    assert decide(_ct(**kw)).kind is RouteKind.IGNORED


def test_a_plain_ct_of_a_stroke_study_named_for_its_angiography_reaches_wml():
    """A stroke protocol puts the plain CT and the CTA in one study (and often one protocol name): the study's or
    protocol's name says nothing about one series' contrast, so only the series' own attributes decide."""
    d = _ct(StudyDescription="CT ANGIO HEAD", ProtocolName="CTA Head Neck", SeriesDescription="Head 5mm")
    assert decide(d).kind is RouteKind.WML


def test_qsm_map_not_routed_to_cmb():
    # a quantitative susceptibility map (DERIVED, 'QSM') is not an SWI magnitude; derived-image exempts SWI naming
    assert decide(_mr(ImageType=["DERIVED", "PRIMARY", "QSM"], SeriesDescription="SWI_QSM")).kind is RouteKind.IGNORED
