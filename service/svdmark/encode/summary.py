"""Summary image: key slices with lesions outlined, results and flag text burned in.

Many PACS viewers render neither SR nor SEG; this Secondary Capture is what a
radiologist sees there. Every word on it comes from the templates, the flags
or the measurements. Every line is wrapped to the image width.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import highdicom as hd
import numpy as np
from PIL import Image, ImageDraw, ImageFont
from pydicom import Dataset

from ..domain import AnalysisResult, CmbFindings, Volume, WmlFindings
from . import status
from .seg import source_datasets
from .templates import Templates
from .uids import derive

WIDTH = 1280
MARGIN = 24
N_TILES = 3
BODY_PX = 26
TITLE_PX = 36
SMALL_PX = 21
_FONT_DIRS = ("/usr/share/fonts/truetype/dejavu", "/usr/share/fonts/dejavu", "/usr/share/fonts/TTF")


@lru_cache(maxsize=None)
def font(size: int, bold: bool = False) -> ImageFont.ImageFont:
    name = "DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"
    for d in _FONT_DIRS:
        p = Path(d) / name
        if p.exists():
            return ImageFont.truetype(str(p), size)
    return ImageFont.load_default(size=size)  # pillow >= 10.1, scalable


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
        origin = v.positions[k]
        normal = v.normal
        row_d, col_d = np.asarray(v.row_direction), np.asarray(v.column_direction)
        for mb in result.findings.microbleeds:
            d = np.asarray(mb.center_mm) - origin
            if abs(float(np.dot(d, normal))) > max(v.slice_spacing, 1e-6) / 2 + mb.diameter_mm / 2:
                continue
            j = float(np.dot(d, row_d)) / v.pixel_spacing[1]
            i = float(np.dot(d, col_d)) / v.pixel_spacing[0]
            x, y = (j + 0.5) * tw / cols, (i + 0.5) * th / rows
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


def _value_x(text_w: int) -> int:
    """Value column: 45% across; longer labels wrap in front of it."""
    return int(text_w * 0.45)


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
    return fields


def _result_rows(result: AnalysisResult, templates: Templates) -> list[tuple[str, str]]:
    """(label, value) rows: the measurement (with its interval) and each flag's category.

    A withheld result shows the template's ``result_rows_not_measurable`` and no number at all.
    """
    task = result.model.task
    tpl = templates.task(task)
    summary = tpl["summary"]
    if status.withheld(result.findings) is not None:
        rows = [(a, b) for a, b in summary.get("result_rows_not_measurable",
                                                [["Result", templates.label("summary_not_measurable")]])]
    else:
        fields = _result_fields(result)
        key = "result_rows_interval" if "interval_low" in fields and "result_rows_interval" in summary \
            else "result_rows"
        rows = [(a, b.format(**fields)) for a, b in summary[key]]
    for flag in result.flags:
        ftpl = tpl["flags"].get(flag.rule_id, {})
        meaning = ftpl.get("categories", {}).get(flag.category, [None, None, flag.category])[2]
        if status.category_uncertain(flag):
            meaning += templates.label("summary_uncertain_suffix")
        rows.append((flag.name, meaning))
        if "or_ratio" in flag.values:
            rows.append(("Aspirin sICH OR modification vs 0 mL",
                         f"\u00d7{flag.values['or_ratio']:.2f} (95% CI {flag.values['ci_low']:.2f}\u2013"
                         f"{flag.values['ci_high']:.2f})"))
    return rows


# Colours of the boxes that must not be overlooked.
_WITHHELD_BG, _WITHHELD_FG = (120, 20, 20), (255, 255, 255)
_UNCERTAIN_BG, _UNCERTAIN_FG = (90, 60, 0), (255, 225, 150)


_BOX_PAD = 12


def _text_width() -> int:
    return WIDTH - 2 * MARGIN


def _layout(result: AnalysisResult, templates: Templates) -> list[tuple[str, object, object, object]]:
    """The text part of the summary as blocks, every line already wrapped to the image width.

    (kind, payload, colour, font): "heading"/"line" payloads are one line; "row" payloads are
    (label lines, value lines, value x); "box" payloads ((line, font, colour) list, background);
    "space" payloads a height in px.
    """
    labels = templates.common["labels"]
    withheld = status.withheld(result.findings) is not None
    scratch = ImageDraw.Draw(Image.new("RGB", (10, 10)))
    body, bold, title, small = font(BODY_PX), font(BODY_PX, True), font(TITLE_PX, True), font(SMALL_PX)
    text_w = _text_width()
    box_w = text_w - 2 * _BOX_PAD
    blocks: list[tuple[str, object, object, object]] = []

    def lines(text: str, colour, fnt, width: int = text_w) -> None:
        for line in _wrap(scratch, text, fnt, width):
            blocks.append(("line", line, colour, fnt))

    def box(entries: list[tuple[str, object, tuple[int, int, int]]], bg: tuple[int, int, int]) -> None:
        wrapped = [(line, fnt, colour) for text, fnt, colour in entries for line in _wrap(scratch, text, fnt, box_w)]
        blocks.append(("box", (wrapped, bg), None, None))

    blocks.append(("heading", labels["summary_results_heading"], (255, 255, 255), bold))
    if withheld:
        box([(labels["summary_not_measurable"], title, _WITHHELD_FG),
             (labels["summary_not_measurable_detail"], body, _WITHHELD_FG)]
            + [(f"\u2022 {r}", bold, _WITHHELD_FG) for r in status.reasons(result.findings)], _WITHHELD_BG)
        blocks.append(("space", 10, None, None))
    for a, b in _result_rows(result, templates):
        x = _value_x(text_w)
        blocks.append(("row", (_wrap(scratch, f"{a}:", body, x - 16), _wrap(scratch, b, bold, text_w - x), x),
                       (230, 230, 230), body))
    interval = status.interval(result.findings)
    if interval is not None and interval.method:
        lines(labels["summary_interval_method"].format(method=interval.method), (190, 190, 190), small)
    crossings = [t for t in (status.crossing_text(result, fl, templates) for fl in result.flags) if t]
    if crossings:
        blocks.append(("space", 8, None, None))
        box([(labels["summary_uncertain_heading"], bold, _UNCERTAIN_FG)]
            + [(t, body, _UNCERTAIN_FG) for t in crossings], _UNCERTAIN_BG)
    blocks.append(("space", 12, None, None))
    blocks.append(("heading", labels["summary_flags_heading"], (255, 255, 255), bold))
    for flag in result.flags:
        lines(flag.statement, (230, 230, 230), body)
        lines(f"Source: doi:{flag.evidence_doi} \u00b7 rule {flag.rule_id} {flag.rule_version}", (170, 200, 255), small)
        blocks.append(("space", 10, None, None))
    warnings = tuple(dict.fromkeys(tuple(result.volume.warnings) + tuple(result.findings.warnings)))
    if warnings:
        blocks.append(("heading", labels["summary_warnings_heading"], (255, 190, 80), bold))
        for w in warnings:
            lines(f"\u2022 {w}", (255, 210, 140), body)
        blocks.append(("space", 10, None, None))
    m = result.model
    lines(labels["summary_model_line"].format(
        model=m.label, sha12=m.sha256[:12], ruleset_id=result.ruleset.id,
        ruleset_version=result.ruleset.version), (170, 170, 170), small)
    return blocks


def summary_text(result: AnalysisResult, templates: Templates) -> list[str]:
    """Every line of text on the summary image below the banner, in reading order (as wrapped).

    Row labels and values are joined with a tab; for tests and for logging what a viewer shows.
    """
    out: list[str] = []
    for kind, payload, _, _ in _layout(result, templates):
        if kind in ("heading", "line"):
            out.append(str(payload))
        elif kind == "row":
            out.append(" ".join(payload[0]) + "\t" + " ".join(payload[1]))
        elif kind == "box":
            out.extend(line for line, _, _ in payload[0])
    return out


def render(result: AnalysisResult, templates: Templates) -> Image.Image:
    """The summary as a PIL RGB image (``WIDTH`` px wide); every line is wrapped to fit the width.

    Withheld results (quality gate: not reliably measurable) get a prominent box with the
    reasons, no number and no outline on the key slices (the mask is not shown, as it is not
    sent as a SEG). A flag whose uncertainty interval crosses its category boundary gets an
    amber box with the crossing sentence.
    """
    task = result.model.task
    tpl = templates.task(task)
    labels = templates.common["labels"]
    withheld = status.withheld(result.findings) is not None
    rgb = tuple(tpl["summary"]["outline_rgb"])
    grey = _grey(result.volume, tpl["summary"].get("window"))
    tile = (WIDTH - MARGIN * (N_TILES + 1)) // N_TILES
    shown_mask = np.zeros(result.volume.shape, np.uint8) if withheld else result.findings.mask
    slices = key_slices(result.volume, shown_mask)
    scratch = ImageDraw.Draw(Image.new("RGB", (10, 10)))
    bold, title, small = font(BODY_PX, True), font(TITLE_PX, True), font(SMALL_PX)
    text_w = _text_width()
    box_pad = _BOX_PAD
    blocks = _layout(result, templates)

    def line_h(fnt) -> int:
        return int(fnt.size * 1.35)

    def height(kind, payload, fnt) -> int:
        if kind == "space":
            return int(payload)
        if kind == "heading":
            return int(fnt.size * 1.6)
        if kind == "row":
            return line_h(fnt) * max(len(payload[0]), len(payload[1]), 1)
        if kind == "box":
            return sum(line_h(f) for _, f, _ in payload[0]) + 2 * box_pad
        return line_h(fnt)

    title_lines = _wrap(scratch, tpl["summary"]["title"], title, text_w)
    notice_lines = _wrap(scratch, labels["research_notice"], bold, text_w)
    banner_h = 10 + len(title_lines) * (TITLE_PX + 6) + 6 + len(notice_lines) * line_h(bold) + 16
    tiles_h = tile + SMALL_PX + 24
    text_h = sum(height(k, p, f) for k, p, _, f in blocks)
    total_h = banner_h + MARGIN + tiles_h + text_h + 2 * MARGIN
    total_h += total_h % 2
    img = Image.new("RGB", (WIDTH, total_h), (16, 16, 20))
    d = ImageDraw.Draw(img)
    # banner: what this is and that it is research-only
    d.rectangle([0, 0, WIDTH, banner_h], fill=(150, 20, 20))
    y = 10
    for line in title_lines:
        d.text((MARGIN, y), line, fill=(255, 255, 255), font=title)
        y += TITLE_PX + 6
    y += 6
    for line in notice_lines:
        d.text((MARGIN, y), line, fill=(255, 255, 200), font=bold)
        y += line_h(bold)
    y = banner_h + MARGIN
    n = result.volume.shape[0]
    for i, k in enumerate(slices):
        x = MARGIN + i * (tile + MARGIN)
        img.paste(_tile(result, grey, k, tile, rgb, outline=not withheld), (x, y))
        d.text((x, y + tile + 4), f"Slice {k + 1}/{n}", fill=(200, 200, 200), font=small)
    y += tiles_h
    for kind, payload, colour, fnt in blocks:
        if kind == "heading":
            d.text((MARGIN, y), payload, fill=colour, font=fnt)
        elif kind == "row":
            label_lines, value_lines, x = payload
            for i, line in enumerate(label_lines):
                d.text((MARGIN, y + i * line_h(fnt)), line, fill=(180, 180, 180), font=fnt)
            for i, line in enumerate(value_lines):
                d.text((MARGIN + x, y + i * line_h(fnt)), line, fill=colour, font=bold)
        elif kind == "box":
            entries, bg = payload
            d.rectangle([MARGIN, y, MARGIN + text_w - 1, y + height(kind, payload, fnt) - 1], fill=bg)
            yy = y + box_pad
            for line, f, c in entries:
                d.text((MARGIN + box_pad, yy), line, fill=c, font=f)
                yy += line_h(f)
        elif kind == "line":
            d.text((MARGIN, y), payload, fill=colour, font=fnt)
        y += height(kind, payload, fnt)
    return img


def encode_summary(result: AnalysisResult, templates: Templates, uid_seed: str,
                   software_version: str) -> Dataset:
    """A single-frame RGB Secondary Capture in the source study."""
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
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        series_description=series["description"],
    )
    sc.ManufacturerModelName = eq["manufacturer_model_name"]
    sc.SoftwareVersions = software_version
    sc.BurnedInAnnotation = "YES"
    sc.Laterality = ""  # General Series type 2C: a head is not a paired structure
    sc.ImageComments = templates.label("research_notice")
    if "SpecificCharacterSet" in ref:
        sc.SpecificCharacterSet = ref.SpecificCharacterSet
    return sc
