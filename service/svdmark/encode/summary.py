"""Summary image: the numbers first, the key images, every counted microbleed, a few lines of evidence.

Many PACS viewers render neither SR nor SEG; this Secondary Capture is what a radiologist sees
there, so it is laid out to be read in seconds:

1. the measurement and its uncertainty interval (or "not reliably measurable" with the reasons),
   each flag's category, and a box when the interval crosses a category boundary;
2. three key images, labelled with the source image's Instance Number (what the viewer shows as
   the image number), not svdmark's own slice rank;
3. for microbleeds, a crop of every counted microbleed (up to :data:`MAX_CROPS`, then "+k more"
   with their image numbers);
4. per flag: its evidence population, the rule's short lines (``Flag.brief``) and the DOI;
5. quality warnings and the model / rule-set line.

Text layout is our own code (Pillow draws text but does not wrap it): every line is wrapped to the
width it is drawn in, measured with the font it is drawn with, and :func:`render` can report each
drawn line with its bounding box (``trace``) so tests check that nothing leaves the image. Words
on the image come from the templates (``labels``, with the defaults in :data:`LABELS` for the
summary's own captions), the flags or the measurements.

Patient and study attributes are copied from the source by highdicom's
``copy_patient_and_study_information``, the code its SR and SEG constructors use, so the three
objects carry the same StudyDescription, PatientAge, PatientIdentityRemoved, ...; the pixel data
are RLE Lossless compressed (flat colours compress well, and every PACS accepts RLE).
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable

import highdicom as hd
import numpy as np
from PIL import Image, ImageDraw, ImageFont
from pydicom import Dataset
from pydicom.uid import RLELossless

from ..domain import AnalysisResult, CmbFindings, Microbleed, Volume, WmlFindings
from . import status
from .seg import EncodeError, source_datasets
from .templates import Templates
from .uids import derive

WIDTH = 1280
MARGIN = 24
N_TILES = 3
BODY_PX = 26
TITLE_PX = 36
SMALL_PX = 21
CROP_PX = 140  # one microbleed crop
CROP_MM = 40.0  # field of view of a crop
CROP_GAP = 12
MAX_CROPS = 40  # five rows of eight; the rest are listed by image number
TRANSFER_SYNTAX = RLELossless
# DejaVu Sans, which draws every character svdmark writes (en dash, ×, •, ≥, ±, accented and Greek letters):
# matplotlib's copy first, a dependency so present in every installation (a slim container has no system fonts,
# and Pillow's built-in font draws those characters as boxes), then the system's
_FONT_DIRS = ("/usr/share/fonts/truetype/dejavu", "/usr/share/fonts/dejavu", "/usr/share/fonts/TTF")

# The summary's own captions; a template's ``labels`` entry of the same key replaces the default.
LABELS = {
    "summary_image_label": "Image {number}",
    "summary_image_frame_label": "Image {number}, frame {frame}",
    "summary_image_no_number": "Slice {rank} of {total} (no Instance Number)",
    "summary_key_images_heading": "Key images (image numbers as in the viewer)",
    "summary_microbleeds_heading": "Every counted microbleed ({count})",
    "summary_microbleed_label": "#{index} {image}",
    "summary_more_microbleeds": "+{more} more: {items}",
    "summary_evidence_source": "Source: doi:{doi} \u00b7 rule {rule_id} {rule_version}",
    "summary_limitations_heading": "Model limitations",
}


def _font_dirs() -> list[Path]:
    spec = importlib.util.find_spec("matplotlib")  # its location only: importing it costs a second
    bundled = [Path(d) / "mpl-data" / "fonts" / "ttf" for d in (spec.submodule_search_locations or [])] if spec else []
    return bundled + [Path(d) for d in _FONT_DIRS]


@lru_cache(maxsize=None)
def font(size: int, bold: bool = False) -> ImageFont.FreeTypeFont:
    """DejaVu Sans at ``size`` px (module constants); an error, never a font that draws boxes, where there is none."""
    name = "DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"
    for d in _font_dirs():
        if (d / name).exists():
            return ImageFont.truetype(str(d / name), size)
    raise EncodeError(f"no {name} for the summary image (matplotlib's mpl-data/fonts/ttf or {', '.join(_FONT_DIRS)})")


def _label(templates: Templates, key: str) -> str:
    return templates.common["labels"].get(key, LABELS.get(key, key))


# --------------------------------------------------------------------------- text wrapping


def _break_word(draw: ImageDraw.ImageDraw, word: str, fnt, width: int) -> list[str]:
    """A word wider than ``width`` (a UID, a digest) cut into pieces that fit."""
    pieces, piece = [], ""
    for ch in word:
        if piece and draw.textlength(piece + ch, font=fnt) > width:
            pieces.append(piece)
            piece = ch
        else:
            piece += ch
    return pieces + [piece] if piece else pieces


def _wrap(draw: ImageDraw.ImageDraw, text: str, fnt, width: int) -> list[str]:
    """Lines of ``text`` no wider than ``width`` px (words kept whole unless one alone is too wide)."""
    width = max(int(width), 1)
    lines: list[str] = []
    for para in text.split("\n"):
        line = ""
        for word in para.split():
            trial = f"{line} {word}".strip()
            if draw.textlength(trial, font=fnt) <= width:
                line = trial
                continue
            if line:
                lines.append(line)
            if draw.textlength(word, font=fnt) <= width:
                line = word
            else:
                *full, line = _break_word(draw, word, fnt, width)
                lines.extend(full)
        lines.append(line)
    return lines


_SCRATCH = ImageDraw.Draw(Image.new("RGB", (10, 10)))


# --------------------------------------------------------------------------- geometry


def _letter(v) -> str:
    v = np.asarray(v, float)
    a = int(np.argmax(np.abs(v)))
    return ("L", "P", "H")[a] if v[a] > 0 else ("R", "A", "F")[a]


def key_slices(volume: Volume, mask: np.ndarray, n: int = N_TILES) -> list[int]:
    """Slices with the largest lesion load; ties (and empty masks) go to the middle of the stack."""
    depth = volume.shape[0]
    load = np.asarray(mask).reshape(depth, -1).astype(bool).sum(axis=1)
    mid = (depth - 1) / 2
    order = sorted(range(depth), key=lambda k: (-int(load[k]), abs(k - mid), k))
    return sorted(order[: min(n, depth)])


def image_labels(result: AnalysisResult, templates: Templates) -> list[str]:
    """Per volume slice, the source image as a viewer numbers it: its Instance Number (and frame).

    The volume is sorted geometrically (feet to head), a viewer by Instance Number, so the rank of a
    slice in the volume is not the number a radiologist finds it under.
    """
    by_uid = {ds.SOPInstanceUID: ds for ds in result.series.datasets}
    frames = result.volume.frames
    out = []
    for k, f in enumerate(frames):
        ds = by_uid.get(f.sop_instance_uid)
        number = ds.get("InstanceNumber", None) if ds is not None else None
        if number is None or str(number).strip() == "":
            out.append(_label(templates, "summary_image_no_number").format(rank=k + 1, total=len(frames)))
        elif f.frame_number is not None:
            out.append(_label(templates, "summary_image_frame_label").format(number=int(number), frame=f.frame_number))
        else:
            out.append(_label(templates, "summary_image_label").format(number=int(number)))
    return out


@dataclass(frozen=True)
class _Spot:
    """Where a microbleed lies in the volume: nearest slice k and in-plane pixel (i, j)."""

    k: int
    i: float
    j: float


def _locate(volume: Volume, mb: Microbleed) -> _Spot:
    c = np.asarray(mb.center_mm, float)
    normal = volume.normal
    k = int(np.argmin(np.abs((c - volume.positions) @ normal)))
    d = c - volume.positions[k]
    j = float(np.dot(d, np.asarray(volume.row_direction))) / volume.pixel_spacing[1]
    i = float(np.dot(d, np.asarray(volume.column_direction))) / volume.pixel_spacing[0]
    return _Spot(k, i, j)


def _grey(volume: Volume, window: dict | None) -> np.ndarray:
    arr = volume.array.astype(np.float32)
    if window:
        lo = window["center"] - window["width"] / 2
        hi = window["center"] + window["width"] / 2
    else:
        finite = arr[np.isfinite(arr)]
        lo, hi = (np.percentile(finite, [1, 99.5]) if finite.size else (0.0, 1.0))
        if hi <= lo:
            hi = lo + 1
    return (np.clip((arr - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8)


def _edges(m: np.ndarray) -> np.ndarray:
    inner = m.copy()
    inner[1:, :] &= m[:-1, :]
    inner[:-1, :] &= m[1:, :]
    inner[:, 1:] &= m[:, :-1]
    inner[:, :-1] &= m[:, 1:]
    e = m & ~inner
    thick = e.copy()
    thick[1:, :] |= e[:-1, :]
    thick[:, 1:] |= e[:, :-1]
    return thick


def _tile(result: AnalysisResult, grey: np.ndarray, k: int, size: int, rgb: tuple[int, int, int],
          outline: bool = True) -> Image.Image:
    """One key slice, scaled to ``size``; lesions outlined (microbleeds circled) unless ``outline`` is False."""
    v = result.volume
    rows, cols = v.shape[1:]
    h_mm, w_mm = rows * v.pixel_spacing[0], cols * v.pixel_spacing[1]
    scale = size / max(h_mm, w_mm)
    th, tw = max(1, round(h_mm * scale)), max(1, round(w_mm * scale))
    img = Image.fromarray(grey[k]).resize((tw, th), Image.BILINEAR).convert("RGB")
    if outline:
        m = Image.fromarray((np.asarray(result.findings.mask[k]) > 0).astype(np.uint8) * 255)
        m = np.asarray(m.resize((tw, th), Image.NEAREST)) > 0
        px = np.asarray(img).copy()
        px[_edges(m)] = rgb
        img = Image.fromarray(px)
    draw = ImageDraw.Draw(img)
    if outline and isinstance(result.findings, CmbFindings):
        for mb in result.findings.microbleeds:
            spot = _locate(v, mb)
            d = np.asarray(mb.center_mm) - v.positions[k]
            if abs(float(np.dot(d, v.normal))) > max(v.slice_spacing, 1e-6) / 2 + mb.diameter_mm / 2:
                continue
            x, y = (spot.j + 0.5) * tw / cols, (spot.i + 0.5) * th / rows
            r = max(10.0, mb.diameter_mm * scale / 2 + 8)
            draw.ellipse([x - r, y - r, x + r, y + r], outline=rgb, width=3)
    canvas = Image.new("RGB", (size, size), (0, 0, 0))
    canvas.paste(img, ((size - tw) // 2, (size - th) // 2))
    d = ImageDraw.Draw(canvas)
    f = font(SMALL_PX, bold=True)
    d.text((6, size // 2), _letter(-np.asarray(v.row_direction)), fill=(255, 255, 255), font=f, anchor="lm")
    d.text((size - 6, size // 2), _letter(v.row_direction), fill=(255, 255, 255), font=f, anchor="rm")
    d.text((size // 2, 4), _letter(-np.asarray(v.column_direction)), fill=(255, 255, 255), font=f, anchor="mt")
    return canvas


def _crop(result: AnalysisResult, grey: np.ndarray, mb: Microbleed, rgb: tuple[int, int, int]) -> Image.Image:
    """A ``CROP_MM`` square around one microbleed on its nearest slice, circled, ``CROP_PX`` wide."""
    v = result.volume
    spot = _locate(v, mb)
    rows, cols = v.shape[1:]
    half_i, half_j = CROP_MM / 2 / v.pixel_spacing[0], CROP_MM / 2 / v.pixel_spacing[1]
    # a padded window, so a microbleed near the edge stays centred
    box = (spot.j - half_j + 0.5, spot.i - half_i + 0.5, spot.j + half_j + 0.5, spot.i + half_i + 0.5)
    src = Image.fromarray(grey[spot.k])
    img = src.transform((CROP_PX, CROP_PX), Image.EXTENT, box, Image.BILINEAR).convert("RGB")
    d = ImageDraw.Draw(img)
    c = CROP_PX / 2
    r = max(8.0, mb.diameter_mm / CROP_MM * CROP_PX / 2 + 6)
    d.ellipse([c - r, c - r, c + r, c + r], outline=rgb, width=2)
    return img


# --------------------------------------------------------------------------- text content


def _result_fields(result: AnalysisResult) -> dict:
    f = result.findings
    fields: dict = {}
    if isinstance(f, WmlFindings):
        fields = {"volume_ml": f.volume_ml}
    elif isinstance(f, CmbFindings):
        fields = {"count": f.count, "grade": int(f.grade), "grade_meaning": f.grade.meaning}
    interval = status.interval(f)
    if interval is not None:
        fields.update(interval_low=float(interval.low), interval_high=float(interval.high))
        span = status.grade_span(f)  # the grades the interval spans, whether or not a flag applies
        if span is not None:
            fields.update(grade_low=span[0], grade_high=span[1])
    return fields


def _result_rows(result: AnalysisResult, templates: Templates) -> list[tuple[str, str]]:
    """(label, value) rows: the measurement (with its interval) and each flag's category.

    A microbleed count whose interval spans burden grades says so on the grade's row
    (``result_rows_interval_spans``), with or without a flag. A withheld result shows the template's
    ``result_rows_not_measurable`` and no number at all.
    """
    tpl = templates.task(result.model.task)
    summary = tpl["summary"]
    if status.withheld(result.findings) is not None:
        rows = [(a, b) for a, b in summary.get("result_rows_not_measurable",
                                                [["Result", templates.label("summary_not_measurable")]])]
    else:
        fields = _result_fields(result)
        key = "result_rows_interval" if "interval_low" in fields and "result_rows_interval" in summary \
            else "result_rows"
        if fields.get("grade_low", 0) != fields.get("grade_high", 0) and "result_rows_interval_spans" in summary:
            key = "result_rows_interval_spans"  # the interval's ends fall into different burden grades
        rows = [(a, b.format(**fields)) for a, b in summary[key]]
    for flag in result.flags:
        ftpl = tpl["flags"].get(flag.rule_id, {})
        meaning = ftpl.get("categories", {}).get(flag.category, [None, None, flag.category])[2]
        if status.category_uncertain(flag):
            meaning += templates.label("summary_uncertain_suffix")
        rows.append((flag.name, meaning))
    return rows


# Colours of the boxes that must not be overlooked.
_WITHHELD_BG, _WITHHELD_FG = (120, 20, 20), (255, 255, 255)
_UNCERTAIN_BG, _UNCERTAIN_FG = (90, 60, 0), (255, 225, 150)
_BOX_PAD = 12
_TEXT_W = WIDTH - 2 * MARGIN
_TILE = (WIDTH - MARGIN * (N_TILES + 1)) // N_TILES  # one key image
_PER_ROW = max(1, (_TEXT_W + CROP_GAP) // (CROP_PX + CROP_GAP))  # microbleed crops per row

# A block: (kind, payload, colour, font). "heading"/"line": one line of text; "row": (label lines,
# value lines, value x); "box": ((line, font, colour) list, background); "space": a height in px;
# "tiles": key slice indices; "crops": (microbleed indices shown, captions).
Block = tuple[str, object, object, object]


def _line_h(fnt) -> int:
    return int(fnt.size * 1.35)


class _Blocks(list):
    """Blocks with helpers that wrap every text to the width it is drawn in."""

    def lines(self, text: str, colour, fnt, width: int = _TEXT_W) -> None:
        for line in _wrap(_SCRATCH, text, fnt, width):
            self.append(("line", line, colour, fnt))

    def heading(self, text: str, colour, fnt) -> None:
        for line in _wrap(_SCRATCH, text, fnt, _TEXT_W):
            self.append(("heading", line, colour, fnt))

    def box(self, entries: list[tuple[str, object, tuple[int, int, int]]], bg: tuple[int, int, int]) -> None:
        width = _TEXT_W - 2 * _BOX_PAD
        wrapped = [(line, fnt, colour) for text, fnt, colour in entries for line in _wrap(_SCRATCH, text, fnt, width)]
        self.append(("box", (wrapped, bg), None, None))

    def space(self, px: int) -> None:
        self.append(("space", px, None, None))


def _layout(result: AnalysisResult, templates: Templates) -> list[Block]:
    """The whole summary below the banner, top to bottom, every text line already wrapped."""
    labels = templates.common["labels"]
    withheld = status.withheld(result.findings) is not None
    body, bold, title, small = font(BODY_PX), font(BODY_PX, True), font(TITLE_PX, True), font(SMALL_PX)
    b = _Blocks()
    # 1. the numbers, their uncertainty, the categories
    b.heading(labels["summary_results_heading"], (255, 255, 255), bold)
    if withheld:
        b.box([(labels["summary_not_measurable"], title, _WITHHELD_FG),
               (labels["summary_not_measurable_detail"], body, _WITHHELD_FG)]
              + [(f"\u2022 {r}", bold, _WITHHELD_FG) for r in status.reasons(result.findings)], _WITHHELD_BG)
        b.space(10)
    x = int(_TEXT_W * 0.45)  # value column; longer labels wrap in front of it
    for a, v in _result_rows(result, templates):
        b.append(("row", (_wrap(_SCRATCH, f"{a}:", body, x - 16), _wrap(_SCRATCH, v, bold, _TEXT_W - x), x),
                  (230, 230, 230), body))
    interval = status.interval(result.findings)
    if interval is not None and interval.method:
        b.lines(labels["summary_interval_method"].format(method=interval.method), (190, 190, 190), small)
    crossings = [t for t in (status.crossing_text(result, fl, templates) for fl in result.flags) if t]
    if crossings:
        b.space(8)
        b.box([(labels["summary_uncertain_heading"], bold, _UNCERTAIN_FG)]
              + [(t, body, _UNCERTAIN_FG) for t in crossings], _UNCERTAIN_BG)
    b.space(14)
    # 2. key images, numbered as the viewer numbers them
    shown_mask = np.zeros(result.volume.shape, np.uint8) if withheld else result.findings.mask
    b.heading(_label(templates, "summary_key_images_heading"), (255, 255, 255), bold)
    slices = key_slices(result.volume, shown_mask)
    names = image_labels(result, templates)
    b.append(("tiles", (slices, [_wrap(_SCRATCH, names[k], small, _TILE) for k in slices]), (200, 200, 200), small))
    # 3. every counted microbleed
    if isinstance(result.findings, CmbFindings) and not withheld and result.findings.count:
        mbs = result.findings.microbleeds
        where = [names[_locate(result.volume, mb).k] for mb in mbs]
        b.heading(_label(templates, "summary_microbleeds_heading").format(count=len(mbs)), (255, 255, 255), bold)
        shown = list(range(min(len(mbs), MAX_CROPS)))
        captions = [_wrap(_SCRATCH, _label(templates, "summary_microbleed_label").format(index=i + 1, image=where[i]),
                          small, CROP_PX) for i in shown]
        b.append(("crops", (shown, captions), (200, 200, 200), small))
        if len(mbs) > MAX_CROPS:
            items = ", ".join(f"#{i + 1} {where[i]}" for i in range(MAX_CROPS, len(mbs)))
            b.lines(_label(templates, "summary_more_microbleeds").format(more=len(mbs) - MAX_CROPS, items=items),
                    (230, 230, 230), body)
        b.space(10)
    b.space(8)
    # 4. evidence: population, the rule's short lines, the source
    if result.flags:
        b.heading(labels["summary_flags_heading"], (255, 255, 255), bold)
        for flag in result.flags:
            b.lines(flag.population or flag.name, (255, 235, 160), bold)
            for line in flag.brief or (flag.statement,):
                b.lines(line, (230, 230, 230), body)
            b.lines(_label(templates, "summary_evidence_source").format(
                doi=flag.evidence_doi, rule_id=flag.rule_id, rule_version=flag.rule_version), (170, 200, 255), small)
            b.space(10)
    # 5. warnings, model
    warnings = tuple(dict.fromkeys(tuple(result.volume.warnings) + tuple(result.findings.warnings)))
    if warnings:
        b.heading(labels["summary_warnings_heading"], (255, 190, 80), bold)
        for w in warnings:
            b.lines(f"\u2022 {w}", (255, 210, 140), body)
        b.space(10)
    m = result.model
    if m.manifest.limitations:
        b.heading(_label(templates, "summary_limitations_heading"), (200, 200, 200), bold)
        for sentence in m.manifest.limitations:
            b.lines(f"\u2022 {sentence}", (200, 200, 200), small)
        b.space(6)
    b.lines(labels["summary_model_line"].format(
        model=m.label, sha12=m.sha256[:12], ruleset_id=result.ruleset.id,
        ruleset_version=result.ruleset.version), (170, 170, 170), small)
    return b


def summary_text(result: AnalysisResult, templates: Templates) -> list[str]:
    """Every line of text on the summary image below the banner, in reading order (as wrapped).

    Row labels and values are joined with a tab; image captions are included. For tests and for
    logging what a viewer shows.
    """
    out: list[str] = []
    for kind, payload, _, _ in _layout(result, templates):
        if kind in ("heading", "line"):
            out.append(str(payload))
        elif kind == "row":
            out.append(" ".join(payload[0]) + "\t" + " ".join(payload[1]))
        elif kind == "box":
            out.extend(line for line, _, _ in payload[0])
        elif kind == "tiles":
            out.append("\t".join(" ".join(lines) for lines in payload[1]))
        elif kind == "crops":
            out.extend(" ".join(c) for c in payload[1])
    return out


# --------------------------------------------------------------------------- drawing



def _height(kind: str, payload, fnt) -> int:
    if kind == "space":
        return int(payload)
    if kind == "heading":
        return int(fnt.size * 1.6)
    if kind == "row":
        return _line_h(fnt) * max(len(payload[0]), len(payload[1]), 1)
    if kind == "box":
        return sum(_line_h(f) for _, f, _ in payload[0]) + 2 * _BOX_PAD
    if kind == "tiles":
        return _TILE + 4 + _line_h(fnt) * max((len(c) for c in payload[1]), default=1) + 4
    if kind == "crops":
        shown, captions = payload
        rows = [captions[i:i + _PER_ROW] for i in range(0, len(shown), _PER_ROW)]
        return sum(CROP_PX + 4 + _line_h(fnt) * max(len(c) for c in row) + CROP_GAP for row in rows)
    return _line_h(fnt)


Trace = Callable[[str, tuple[int, int, int, int]], None]


def render(result: AnalysisResult, templates: Templates, trace: Trace | None = None) -> Image.Image:
    """The summary as a PIL RGB image, ``WIDTH`` px wide.

    ``trace(text, bbox)`` is called for every line of text drawn, with its bounding box in the
    image as the drawing font measures it (tests check that every box lies inside the image).
    Withheld results (quality gate: not reliably measurable) get a prominent box with the
    reasons, no number, no outline and no microbleed crops. A flag whose uncertainty interval
    crosses its category boundary gets an amber box with the crossing sentence.
    """
    tpl = templates.task(result.model.task)
    labels = templates.common["labels"]
    withheld = status.withheld(result.findings) is not None
    rgb = tuple(tpl["summary"]["outline_rgb"])
    grey = _grey(result.volume, tpl["summary"].get("window"))
    bold, title = font(BODY_PX, True), font(TITLE_PX, True)
    blocks = _layout(result, templates)

    title_lines = _wrap(_SCRATCH, tpl["summary"]["title"], title, _TEXT_W)
    notice_lines = _wrap(_SCRATCH, labels["research_notice"], bold, _TEXT_W)
    banner_h = 10 + len(title_lines) * (TITLE_PX + 6) + 6 + len(notice_lines) * _line_h(bold) + 16
    total_h = banner_h + MARGIN + sum(_height(k, p, f) for k, p, _, f in blocks) + MARGIN
    total_h += total_h % 2
    img = Image.new("RGB", (WIDTH, total_h), (16, 16, 20))
    d = ImageDraw.Draw(img)

    def text(xy: tuple[int, int], line: str, fill, fnt) -> None:
        d.text(xy, line, fill=fill, font=fnt)
        if trace is not None:
            trace(line, tuple(int(v) for v in d.textbbox(xy, line, font=fnt)))

    d.rectangle([0, 0, WIDTH, banner_h], fill=(150, 20, 20))
    y = 10
    for line in title_lines:
        text((MARGIN, y), line, (255, 255, 255), title)
        y += TITLE_PX + 6
    y += 6
    for line in notice_lines:
        text((MARGIN, y), line, (255, 255, 200), bold)
        y += _line_h(bold)
    y = banner_h + MARGIN
    for kind, payload, colour, fnt in blocks:
        if kind in ("heading", "line"):
            text((MARGIN, y), payload, colour, fnt)
        elif kind == "row":
            label_lines, value_lines, x = payload
            for i, line in enumerate(label_lines):
                text((MARGIN, y + i * _line_h(fnt)), line, (180, 180, 180), fnt)
            for i, line in enumerate(value_lines):
                text((MARGIN + x, y + i * _line_h(fnt)), line, colour, bold)
        elif kind == "box":
            entries, bg = payload
            d.rectangle([MARGIN, y, MARGIN + _TEXT_W - 1, y + _height(kind, payload, fnt) - 1], fill=bg)
            yy = y + _BOX_PAD
            for line, f, c in entries:
                text((MARGIN + _BOX_PAD, yy), line, c, f)
                yy += _line_h(f)
        elif kind == "tiles":
            for i, (k, caption) in enumerate(zip(*payload)):
                x = MARGIN + i * (_TILE + MARGIN)
                img.paste(_tile(result, grey, k, _TILE, rgb, outline=not withheld), (x, y))
                for j, line in enumerate(caption):
                    text((x, y + _TILE + 4 + j * _line_h(fnt)), line, colour, fnt)
        elif kind == "crops":
            shown, captions = payload
            mbs = result.findings.microbleeds  # type: ignore[union-attr]
            yy = y
            for start in range(0, len(shown), _PER_ROW):
                row = shown[start:start + _PER_ROW]
                for n, idx in enumerate(row):
                    x = MARGIN + n * (CROP_PX + CROP_GAP)
                    img.paste(_crop(result, grey, mbs[idx], rgb), (x, yy))
                    for j, line in enumerate(captions[start + n]):
                        text((x, yy + CROP_PX + 4 + j * _line_h(fnt)), line, colour, fnt)
                rows_h = max(len(captions[start + n]) for n in range(len(row)))
                yy += CROP_PX + 4 + _line_h(fnt) * rows_h + CROP_GAP
        y += _height(kind, payload, fnt)
    return img


# --------------------------------------------------------------------------- DICOM


def encode_summary(result: AnalysisResult, templates: Templates, uid_seed: str,
                   software_version: str) -> Dataset:
    """A single-frame RGB Secondary Capture in the source study, RLE Lossless compressed."""
    img = render(result, templates)
    ref = source_datasets(result)[0]
    eq = templates.common["equipment"]
    series = templates.common["series"]["summary"]
    v = result.volume
    sc = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=ref,
        pixel_array=np.asarray(img, dtype=np.uint8),
        photometric_interpretation=hd.PhotometricInterpretationValues.RGB,
        bits_allocated=8,
        coordinate_system=hd.CoordinateSystemNames.PATIENT,
        series_instance_uid=derive(uid_seed, "summary-series"),
        series_number=int(series["number"]),
        sop_instance_uid=derive(uid_seed, "summary"),
        instance_number=1,
        manufacturer=eq["manufacturer"],
        patient_orientation=(_letter(v.row_direction), _letter(v.column_direction)),
        transfer_syntax_uid=TRANSFER_SYNTAX,
        series_description=series["description"],
    )
    # the Patient, General Study, Patient Study and Clinical Trial modules, as the SR and SEG carry them
    sc.copy_patient_and_study_information(ref)
    sc.ManufacturerModelName = eq["manufacturer_model_name"]
    sc.SoftwareVersions = software_version
    sc.BurnedInAnnotation = "YES"
    sc.Laterality = ""  # General Series type 2C: a head is not a paired structure (absent, dciodvfy calls an error)
    sc.ImageComments = templates.label("research_notice")
    if "SpecificCharacterSet" in ref:
        sc.SpecificCharacterSet = ref.SpecificCharacterSet
    return sc
