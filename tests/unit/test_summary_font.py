"""The summary image's font draws every character svdmark writes, on a host without system fonts (a slim container):
Pillow's built-in font drew the interval's en dash, ×, • and — as boxes."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from svdmark.encode import EncodeError
from svdmark.encode import summary as summary_mod


@pytest.fixture
def no_system_fonts(monkeypatch):
    monkeypatch.setattr(summary_mod, "_FONT_DIRS", ("/nonexistent/fonts",))
    summary_mod.font.cache_clear()
    yield
    summary_mod.font.cache_clear()


def _glyph(ch: str, f) -> np.ndarray:
    img = Image.new("L", (40, 40))
    ImageDraw.Draw(img).text((4, 4), ch, font=f, fill=255)
    return np.asarray(img)


@pytest.mark.parametrize("bold", [False, True])
def test_without_system_fonts_every_character_svdmark_writes_is_drawn(no_system_fonts, bold):
    f = summary_mod.font(21, bold)
    box = _glyph("\ue000", f)  # a code point no font assigns: what a missing glyph looks like in this font
    for ch in "–—×•≥±µé":
        assert not np.array_equal(_glyph(ch, f), box), ch
    assert "DejaVuSans-Bold" in f.path if bold else f.path.endswith("DejaVuSans.ttf")


def test_no_font_at_all_is_an_error_not_boxes(no_system_fonts, monkeypatch):
    monkeypatch.setattr(summary_mod.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(EncodeError, match="DejaVuSans.ttf"):
        summary_mod.font(21)

