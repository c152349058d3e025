"""svdmark's SR and SEG as OHIF reads them: dcmjs + @cornerstonejs/adapters under node.

The results are encoded exactly as the service does (``svdmark.encode.results``) for WML with and
without lesions, CMB with 0, several and more than 30 bleeds, single-frame and Enhanced MR sources, and
withheld ("not reliably measurable") results; ``read_results.mjs`` loads each SR/SEG with dcmjs, walks
the SR as OHIF's SR extension does and runs ``MeasurementReport.generateToolState``. Needs node and
``npm ci --prefix tests/viewer`` (scripts/test.sh does both); skipped without them.
"""
from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from svdmark.domain import Interval
from svdmark.encode import results
from tests.unit.test_encode_support import (
    WITHHELD,
    cmb_result,
    ct_series,
    enhanced_mr_series,
    swi_series,
    wml_mask,
    wml_result,
)

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "read_results.mjs"

pytestmark = pytest.mark.interop


def _node() -> str:
    node = shutil.which("node")
    if not node:
        pytest.skip("node not installed (scripts/test.sh installs it)")
    if not (HERE / "node_modules" / "@cornerstonejs" / "adapters").is_dir():
        pytest.skip("viewer libraries not installed: npm ci --prefix tests/viewer")
    return node


def ohif_value(value: float, unit: str) -> str:
    """The text OHIF shows for a NUM: ``NumericValue ? Number(v).toFixed(2) : ''`` and the unit's code value."""
    return f"{value:.2f} {unit}" if value else f" {unit}"


def _cases():
    ct, ct_vol = ct_series()
    swi, swi_vol = swi_series()
    emr, emr_vol = enhanced_mr_series()
    return {
        "wml-lesions": wml_result(ct, ct_vol, wml_mask(ct_vol)),
        "wml-zero": wml_result(ct, ct_vol, np.zeros(ct_vol.shape, np.uint8)),
        "wml-interval": wml_result(ct, ct_vol, wml_mask(ct_vol), interval=Interval(15.2, 18.1, "TTA, min-max"),
                                   volume_ml=16.4987),
        "wml-withheld": wml_result(ct, ct_vol, wml_mask(ct_vol), quality=WITHHELD),
        "cmb-0": cmb_result(swi, swi_vol, 0),
        "cmb-5": cmb_result(swi, swi_vol, 5),
        "cmb-35": cmb_result(swi, swi_vol, 35, interval=Interval(31, 38, "thresholds, min-max")),
        "cmb-9-spans": dataclasses.replace(cmb_result(swi, swi_vol, 9, interval=Interval(8, 12, "thresholds")),
                                           flags=()),  # a routine SWI: no ECMO flag
        "cmb-enhanced-mr": cmb_result(emr, emr_vol, 4),
        "cmb-withheld": cmb_result(swi, swi_vol, 12, quality=WITHHELD),
    }


CASES = _cases()


@pytest.fixture(scope="module")
def viewer(tmp_path_factory):
    """{case: (result, encoded, node's reading)} for every case, from one node run."""
    node = _node()
    root = tmp_path_factory.mktemp("viewer")
    job, encoded = [], {}
    for name, result in CASES.items():
        enc = results(result, uid_seed=f"viewer-{name}")
        d = root / name
        d.mkdir()
        images = []
        for n, ds in enumerate(result.series.datasets):
            p = d / f"image{n:03d}.dcm"
            ds.save_as(p, enforce_file_format=True)
            images.append(str(p))
        entry = {"name": name, "images": images}
        for kind, ds in enc.items():
            if kind in ("sr", "seg"):
                p = d / f"{kind}.dcm"
                ds.save_as(p, enforce_file_format=True)
                entry[kind] = str(p)
        job.append(entry)
        encoded[name] = enc
    (root / "job.json").write_text(json.dumps(job))
    proc = subprocess.run([node, str(SCRIPT), str(root / "job.json")], capture_output=True, text=True, timeout=300,
                          cwd=HERE)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(proc.stdout)
    return {name: (CASES[name], encoded[name], out[name]) for name in CASES}


def _ohif(reading) -> list[dict]:
    ohif = reading["ohif"]
    assert "error" not in ohif, f"OHIF's SR code would throw: {ohif.get('error')}"
    return ohif["measurements"]


def _labels(m) -> dict[str, str]:
    return {lab["label"]: lab["value"] for lab in m["labels"]}


def _shown(measurements) -> list[dict]:
    """The measurements OHIF places on an image and lists in its measurement panel."""
    return [m for m in measurements if m["loaded"]]


def _with_label(measurements, label: str) -> list[dict]:
    return [m for m in measurements if label in _labels(m)]


@pytest.mark.parametrize("name", sorted(CASES))
def test_ohif_opens_sr_and_every_group_is_placed(viewer, name):
    result, enc, reading = viewer[name]
    measurements = _ohif(reading)
    assert measurements, "OHIF found no measurement group"
    source = {ds.SOPInstanceUID for ds in result.series.datasets}
    for m in measurements:
        assert m["loaded"], f"group {m['TrackingIdentifier']!r} is not placed on any source image"
        if m["mode"] == "2D":
            assert m["ReferencedSOPInstanceUID"] in source


@pytest.mark.parametrize("name", ["wml-lesions", "wml-zero", "wml-interval"])
def test_wml_volume_labelled_at_001_ml(viewer, name):
    result, enc, reading = viewer[name]
    v = round(result.findings.volume_ml, 2)
    shown = _with_label(_shown(_ohif(reading)), "Volume")
    assert len(shown) == 1
    assert _labels(shown[0])["Volume"] == ohif_value(v, "ml")
    # the panel's text line says the value with its unit even when OHIF blanks a zero
    assert f"WML volume {v:.2f} mL" in _labels(shown[0])
    if result.findings.interval is not None:
        labels = _labels(shown[0])
        assert labels["Lower limit of uncertainty interval"] == ohif_value(15.2, "ml")
        assert labels["Upper limit of uncertainty interval"] == ohif_value(18.1, "ml")


@pytest.mark.parametrize("name,n,grade", [("cmb-0", 0, 0), ("cmb-5", 5, 1), ("cmb-35", 35, 3),
                                          ("cmb-enhanced-mr", 4, 1)])
def test_cmb_count_and_grade_labelled(viewer, name, n, grade):
    result, enc, reading = viewer[name]
    shown = _with_label(_shown(_ohif(reading)), "Number of lesions")
    assert len(shown) == 1
    labels = _labels(shown[0])
    assert labels["Number of lesions"] == ohif_value(n, "{count}")
    assert labels["Cerebral microbleed burden grade"] == ohif_value(grade, "{grade}")
    text = [k for k, v in labels.items() if v == "" and k.startswith(f"{n} cerebral microbleed")]
    assert text and f"grade {grade}" in text[0].lower()


def test_grade_span_labelled_without_a_flag(viewer):
    """OHIF's label of the count says that its interval spans burden grades, though no flag applies."""
    result, enc, reading = viewer["cmb-9-spans"]
    (shown,) = _with_label(_shown(_ohif(reading)), "Number of lesions")
    labels = _labels(shown)
    assert labels["Lower limit of uncertainty interval"] == ohif_value(8, "{count}")
    assert labels["Upper limit of uncertainty interval"] == ohif_value(12, "{count}")
    text = [k for k, v in labels.items() if v == "" and k.startswith("9 cerebral microbleeds")]
    assert text == ["9 cerebral microbleeds, Grade 1: 1-9 cerebral microbleeds; the uncertainty interval 8-12 spans "
                    "grades 1-2"], labels


@pytest.mark.parametrize("name", ["cmb-0", "cmb-5", "cmb-35", "cmb-enhanced-mr"])
def test_each_microbleed_is_a_clickable_measurement(viewer, name):
    result, enc, reading = viewer[name]
    bleeds = [m for m in _shown(_ohif(reading)) if re.match(r"Cerebral microbleed \d+ \(", m["TrackingIdentifier"])]
    expected = result.findings.microbleeds
    assert len(bleeds) == len(expected)
    vol = result.volume
    for m, mb in zip(bleeds, expected):
        assert m["kind"] == "TID1410"
        # placed on its source image (2D), which is what lets OHIF hydrate it into a tool
        frame, k = _nearest_frame(vol, mb.center_mm)
        assert m["mode"] == "2D" and m["ReferencedSOPInstanceUID"] == frame.sop_instance_uid
        assert m["frameNumber"] == (frame.frame_number or 1)
        c = m["coords"][0]
        assert c["ValueType"] == "SCOORD" and c["GraphicType"] == "POINT"
        col, row = c["GraphicData"]
        off = np.asarray(mb.center_mm) - vol.index_to_patient(k, row - 0.5, col - 0.5)
        np.testing.assert_allclose(off - float(off @ vol.normal) * vol.normal, 0, atol=1e-3)
        assert _labels(m)["Diameter"] == ohif_value(round(mb.diameter_mm, 1), "mm")
        words = {"unspecified": "location not classified"}.get(mb.location, mb.location)
        assert m["TrackingIdentifier"].endswith(f"({words})")


def _nearest_frame(vol, xyz):
    """(SOP Instance UID, frame number or None, in-plane (column, row) + 0.5) of the slice nearest to xyz."""
    d = [abs(float(np.dot(np.asarray(xyz) - p, vol.normal))) for p in vol.positions]
    k = int(np.argmin(d))
    return vol.frames[k], k


@pytest.mark.parametrize("name", ["cmb-0", "cmb-5", "cmb-35", "cmb-enhanced-mr"])
def test_tool_state_per_microbleed(viewer, name):
    result, enc, reading = viewer[name]
    state = reading["toolState"]
    assert "error" not in state, state.get("error")
    tools = state["tools"]
    assert sum(len(v) for v in tools.values()) == result.findings.count, tools.keys()
    probes = tools.get("Probe", [])
    assert len(probes) == result.findings.count
    vol = result.volume
    for t, mb in zip(probes, result.findings.microbleeds):
        frame, k = _nearest_frame(vol, mb.center_mm)
        assert t["sopInstanceUid"] == frame.sop_instance_uid
        assert t["referencedImageId"] == f"svdmark:{frame.sop_instance_uid}:{frame.frame_number or 1}"
        assert len(t["points"]) == 1
        p = np.asarray(t["points"][0])
        off = p - np.asarray(mb.center_mm)
        along = float(np.dot(off, vol.normal))
        assert abs(along) <= vol.slice_spacing / 2 + 1e-3  # on the nearest source slice
        np.testing.assert_allclose(off - along * vol.normal, 0, atol=1e-3)  # exactly above the centre


@pytest.mark.parametrize("name", ["wml-lesions", "wml-zero", "wml-interval", "wml-withheld", "cmb-withheld"])
def test_no_tool_state_without_microbleeds(viewer, name):
    state = viewer[name][2]["toolState"]
    assert "error" not in state, state.get("error")
    assert not any(state["tools"].values())


@pytest.mark.parametrize("name", ["wml-withheld", "cmb-withheld"])
def test_withheld_shows_no_number(viewer, name):
    result, enc, reading = viewer[name]
    measurements = _ohif(reading)
    assert len(measurements) == 1 + len(result.flags)  # the finding and its flag, placed, without a number
    for m in measurements:
        assert m["kind"] == "TID1410" and m["coords"][0]["GraphicType"] == "CIRCLE"
        assert not any(re.search(r"\d", lab["value"]) for lab in m["labels"]), m["labels"]
    assert "seg" not in reading
    # the words are in each group (OHIF's SR text view, dsr2html), the reasons with the finding
    comments = [i.TextValue for g in _groups(enc.sr) for i in g.ContentSequence if i.ConceptNameCodeSequence[0].CodeValue == "121106"]
    assert comments[0] == "Not reliably measurable: " + "; ".join(WITHHELD.reasons)
    assert comments[1] == result.flags[0].statement


def _groups(sr):
    """The measurement groups of an SR dataset."""
    imaging = [i for i in sr.ContentSequence if i.ConceptNameCodeSequence[0].CodeValue == "126010"][0]
    return [g for g in imaging.ContentSequence if g.ConceptNameCodeSequence[0].CodeValue == "125007"]


@pytest.mark.parametrize("name", ["wml-lesions", "cmb-5", "cmb-enhanced-mr"])
def test_seg_frames_reference_source_images(viewer, name):
    result, enc, reading = viewer[name]
    seg = reading["seg"]
    assert "error" not in seg, seg.get("error")
    assert seg["frameOfReferenceUID"] == result.volume.frame_of_reference_uid
    assert seg["referencedSeries"] == result.series.series_uid
    assert [s["label"] for s in seg["segments"]] == ["WML" if name.startswith("wml") else "CMB"]
    source = {(f.sop_instance_uid, f.frame_number) for f in result.volume.frames}
    assert seg["numberOfFrames"] == len(seg["frames"]) > 0
    for f in seg["frames"]:
        assert (f["source"], f["sourceFrame"]) in source
