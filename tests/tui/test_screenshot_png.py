"""The PNG made of a screenshot keeps the spaces that begin a run of text."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from corral.tui.screenshots import to_png

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(not shutil.which("rsvg-convert"), reason="rsvg-convert not installed"),
]

SVG = (
    '<svg viewBox="0 0 200 20" xmlns="http://www.w3.org/2000/svg">'
    '<rect width="200" height="20" fill="white"/>'
    '<text x="0" y="15" font-family="monospace" font-size="14">{}X</text></svg>'
)


def test_leading_spaces_of_a_text_run_move_what_follows_them(tmp_path: Path) -> None:
    plain, spaced = tmp_path / "plain.svg", tmp_path / "spaced.svg"
    plain.write_text(SVG.format(""))
    spaced.write_text(SVG.format("&#160;&#160;&#160;&#160;"))  # as Rich writes spaces
    a, b = to_png(plain), to_png(spaced)
    assert a is not None and b is not None
    assert a.read_bytes() != b.read_bytes()  # the X was drawn further right
