"""The summary Secondary Capture as a radiologist meets it in a PACS viewer.

No line is cut (every drawn line's bounding box, measured with the font it is drawn with, lies
inside the image margins, and the wrapped lines join back into the whole text) for every wording
variant: both tasks, every rule category, withheld, interval crossing, flags not attached,
microbleed counts 0, 9, 10, 30, 31, 60. Images are labelled with the source Instance Number; every
counted microbleed is shown; the study attributes equal the SR's and SEG's; the pixels are stored
RLE Lossless.
"""
from __future__ import annotations

import io
import re

import numpy as np
import pydicom
import pytest
from pydicom import Dataset
from pydicom.uid import RLELossless

from svdmark.domain import Interval, Quality
from svdmark.encode import Templates, results, summary_text
from svdmark.encode.summary import MARGIN, MAX_CROPS, WIDTH, image_labels, render
from svdmark.rules import RuleSet

from tests.unit.test_encode_support import (
    WITHHELD,
    cmb_result,
    ct_series,
    enhanced_mr_series,
    swi_series,
    wml_mask,
    wml_result,
)

TPL = Templates.load()
TTA = "test-time augmentation, 4 passes, min-max"


def _bytes(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


@pytest.fixture(scope="module")
def ct():
    return ct_series()


@pytest.fixture(scope="module")
def swi():
    return swi_series()


def _variants(ct, swi):
    series, vol = ct
    mask = wml_mask(vol)
    s, v = swi
    long_reason = Quality(measurable=False, reasons=("Image noise " + "very " * 40 + "high",
                                                     "UID 1.2.3." + "4" * 120))
    cases = {
        "wml-below": wml_result(series, vol, mask, volume_ml=3.2),
        "wml-large": wml_result(series, vol, mask, volume_ml=42.0),
        "wml-below-interval": wml_result(series, vol, mask, volume_ml=3.2, interval=Interval(2.6, 3.9, TTA)),
        "wml-crossing-below": wml_result(series, vol, mask, volume_ml=16.5, interval=Interval(15.2, 18.1, TTA)),
        "wml-crossing-above": wml_result(series, vol, mask, volume_ml=17.5, interval=Interval(16.0, 19.0, TTA)),
        "wml-withheld": wml_result(series, vol, mask, quality=WITHHELD, interval=Interval(1, 9, TTA)),
        "wml-withheld-long": wml_result(series, vol, mask, quality=long_reason,
                                        warnings=("Warning " + "long " * 60,)),
        "wml-no-flag": wml_result(series, vol, mask, ruleset=RuleSet.load().configured("never")),
        "cmb-withheld": cmb_result(s, v, 12, quality=WITHHELD),
    }
    for n in (0, 9, 10, 30, 31, 60):
        cases[f"cmb-{n}"] = cmb_result(s, v, n)
        cases[f"cmb-{n}-interval"] = cmb_result(s, v, n, interval=Interval(max(0, n - 2), n + 2, TTA))
    return cases


def _traced(result):
    drawn: list[tuple[str, tuple[int, int, int, int]]] = []
    img = render(result, TPL, trace=lambda text, box: drawn.append((text, box)))
    return img, drawn


def _flat(text: str) -> str:
    return " ".join(text.split())


def test_every_variant_covers_every_category(ct, swi):
    cats = {f.category for r in _variants(ct, swi).values() for f in r.flags}
    assert cats == {"below-cut-point", "large-wml", "not-measurable", "grade-0", "grade-1", "grade-2", "grade-3"}


@pytest.mark.parametrize("name", [
    "wml-below", "wml-large", "wml-below-interval", "wml-crossing-below", "wml-crossing-above", "wml-withheld",
    "wml-withheld-long", "wml-no-flag", "cmb-withheld"]
    + [f"cmb-{n}{s}" for n in (0, 9, 10, 30, 31, 60) for s in ("", "-interval")])
def test_no_line_is_cut(ct, swi, name):
    result = _variants(ct, swi)[name]
    img, drawn = _traced(result)
    assert img.width == WIDTH and drawn
    for text, (x0, y0, x1, y1) in drawn:
        assert MARGIN <= x0 and x1 <= WIDTH - MARGIN, f"{text!r} runs from x={x0} to {x1}"
        assert 0 <= y0 and y1 <= img.height, f"{text!r} runs from y={y0} to {y1} of {img.height}"
    # nothing was lost in the wrapping: each whole text is there, in the drawn lines joined back
    shown = _flat(" ".join(t for t, _ in drawn))
    expected = [TPL.label("research_notice")]
    for flag in result.flags:
        expected += [flag.population, *flag.brief, f"doi:{flag.evidence_doi}"]
    expected += [f"\u2022 {r}" for r in (result.findings.quality.reasons if result.findings.quality else ())]
    expected += [f"\u2022 {w}" for w in result.findings.warnings]
    bare = re.sub(r"\s", "", shown)  # a word too wide for a line (a UID) is cut into pieces without a space
    for text in expected:
        assert re.sub(r"\s", "", text) in bare, text
    # and the text the tests read is what is drawn
    assert _flat(" ".join(summary_text(result, TPL)).replace("\t", " ")) in shown


def test_numbers_lead_and_no_bare_factor(ct, swi):
    cases = _variants(ct, swi)
    lines = summary_text(cases["wml-crossing-below"], TPL)
    assert lines[0] == "Results" and lines[1].startswith("WML volume:\t16.50 mL (uncertainty interval 15.20")
    key = next(i for i, line in enumerate(lines) if line.startswith("Key images"))
    evidence = next(i for i, line in enumerate(lines) if line.startswith("Evidence-based context"))
    assert any("Category uncertain" in line for line in lines[:key]) and key < evidence
    # the evidence section starts with the population; the interaction as reported, never "x0.40"
    assert lines[evidence + 1].startswith("Evidence population: adults undergoing endovascular treatment")
    for result in cases.values():
        text = "\n".join(summary_text(result, TPL))
        assert not re.search(r"\u00d7\s*\d", text), text
        assert "OR modification" not in text
    text = "\n".join(summary_text(cases["wml-large"], TPL))
    assert "aOR 0.96 per mL (95% CI 0.93\u20130.99)" in _flat(text)
    assert "Category: Large WML (>= 17.0 mL, svdmark cut-point)." in _flat(text)
    no_flag = "\n".join(summary_text(cases["wml-no-flag"], TPL))
    assert "Evidence" not in no_flag and "aspirin" not in no_flag.lower() and "3.20 mL" not in no_flag


def test_images_are_numbered_as_the_viewer_numbers_them():
    series, vol = ct_series(seed=3)
    # a head-to-feet series: the viewer's image 1 is the top slice, svdmark's volume runs feet to head
    by_uid = {ds.SOPInstanceUID: ds for ds in series.datasets}
    n = vol.shape[0]
    for k, f in enumerate(vol.frames):
        by_uid[f.sop_instance_uid].InstanceNumber = n - k
    mask = np.zeros(vol.shape, np.uint8)
    mask[2, 20:40, 20:40] = 1  # the lesion is on volume slice 2 of 12: the viewer's image 10
    result = wml_result(series, vol, mask)
    assert image_labels(result, TPL)[2] == "Image 10"
    tiles = next(line for line in summary_text(result, TPL) if line.startswith("Image "))
    assert "Image 10" in tiles.split("\t") and "Image 3" not in tiles.split("\t")
    # multi-frame: instance and frame; no Instance Number: said so, with the rank
    s, v = enhanced_mr_series()
    labels = image_labels(cmb_result(s, v, 2), TPL)
    assert labels[0] == f"Image 1, frame {v.frames[0].frame_number}"
    for ds in series.datasets:
        del ds.InstanceNumber
    assert image_labels(result, TPL)[2] == f"Slice 3 of {n} (no Instance Number)"
    img, drawn = _traced(result)
    captions = [t for t, box in drawn if t.startswith("Slice ")]
    assert captions and all(MARGIN <= box[0] and box[2] <= WIDTH - MARGIN for t, box in drawn)


@pytest.mark.parametrize("n", [4, MAX_CROPS, MAX_CROPS + 1, 60])
def test_every_counted_microbleed_is_shown(swi, n):
    s, v = swi
    result = cmb_result(s, v, n)
    lines = summary_text(result, TPL)
    assert f"Every counted microbleed ({n})" in lines
    labels = image_labels(result, TPL)
    by_uid = {ds.SOPInstanceUID: ds for ds in s.datasets}
    crops = [line for line in lines if re.fullmatch(r"#\d+ Image \d+", line)]
    assert len(crops) == min(n, MAX_CROPS)
    listed = " ".join(lines)
    for i, mb in enumerate(result.findings.microbleeds, start=1):
        # the image the microbleed's centre lies on, by geometry, as the viewer numbers it
        k = int(np.argmin(np.abs((np.asarray(mb.center_mm) - v.positions) @ v.normal)))
        number = by_uid[v.frames[k].sop_instance_uid].InstanceNumber
        assert labels[k] == f"Image {number}"
        assert f"#{i} Image {number}" in listed, i
    more = [line for line in lines if line.startswith("+")]
    assert (len(more) > 0) is (n > MAX_CROPS)
    if n > MAX_CROPS:
        assert more[0].startswith(f"+{n - MAX_CROPS} more: #{MAX_CROPS + 1} Image ")


def test_withheld_shows_no_microbleeds(swi):
    s, v = swi
    lines = summary_text(cmb_result(s, v, 12, quality=WITHHELD), TPL)
    assert not any(line.startswith("Every counted microbleed") or line.startswith("#") for line in lines)


def test_study_attributes_as_in_sr_and_seg(ct):
    series, vol = ct_series(seed=4)
    for ds in series.datasets:
        ds.StudyDescription = "CT Code Stroke"
        ds.PatientAge = "071Y"
        ds.PatientIdentityRemoved = "YES"
        ds.DeidentificationMethod = "research pseudonymisation"
        ds.PatientWeight = 80
        ds.AdmittingDiagnosesDescription = "stroke"
    enc = results(wml_result(series, vol, wml_mask(vol)), uid_seed="attrs")
    sc, sr, seg = (pydicom.dcmread(io.BytesIO(_bytes(d))) for d in (enc.summary, enc.sr, enc.seg))
    for kw in ("StudyDescription", "PatientAge", "PatientIdentityRemoved", "DeidentificationMethod", "PatientWeight",
               "AdmittingDiagnosesDescription", "PatientName", "PatientID", "PatientBirthDate", "PatientSex",
               "StudyInstanceUID", "StudyDate", "StudyTime", "AccessionNumber", "StudyID", "ReferringPhysicianName"):
        assert kw in sc, kw
        assert sc[kw].value == sr[kw].value == seg[kw].value == series.datasets[0][kw].value, kw
    # whatever else of the Patient/Study modules the SR copied, the summary has too
    study_level = {e.keyword for e in series.datasets[0] if e.tag.group in (0x0008, 0x0010, 0x0020)}
    assert {e.keyword for e in sr if e.keyword in study_level} - {e.keyword for e in sc} <= \
        {"SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID", "Modality", "SeriesNumber", "SeriesDescription",
         "InstanceNumber", "FrameOfReferenceUID", "PositionReferenceIndicator", "ImageType", "Manufacturer"}


def test_stored_rle_lossless_and_smaller(ct, swi):
    series, vol = ct
    for result in (wml_result(series, vol, wml_mask(vol)), cmb_result(*swi, 60)):
        enc = results(result, uid_seed="size")
        data = _bytes(enc.summary)
        back = pydicom.dcmread(io.BytesIO(data))
        assert back.file_meta.TransferSyntaxUID == RLELossless
        img = np.asarray(render(result, TPL))
        np.testing.assert_array_equal(back.pixel_array, img)  # lossless
        uncompressed = img.size  # bytes of 8-bit RGB pixel data
        assert len(data) < 0.5 * uncompressed, (len(data), uncompressed)


@pytest.mark.parametrize("n,spans", [(0, "0\u20131"), (9, "1\u20132"), (30, "2\u20133"), (60, None), (20, None)])
def test_the_grade_row_says_when_the_count_interval_spans_grades(swi, n, spans):
    """With or without an ECMO flag attached, the burden grade's row says when the interval's ends lie in other
    grades."""
    s, v = swi
    for ruleset in (None, RuleSet.load().configured("never")):
        kw = {} if ruleset is None else {"ruleset": ruleset}
        result = cmb_result(s, v, n, interval=Interval(max(0, n - 2), n + 2, TTA), **kw)
        grade_row = next(line for line in summary_text(result, TPL) if line.startswith("Burden grade:"))
        if spans is None:
            assert "spans" not in grade_row
        else:
            assert grade_row.endswith(f"the interval spans grades {spans}"), grade_row
    plain = next(line for line in summary_text(cmb_result(s, v, 9), TPL) if line.startswith("Burden grade:"))
    assert "spans" not in plain  # no interval, no claim
