"""The report page builder: structure, escaping, embedded images, self-containment, writing."""

from __future__ import annotations

import base64
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from lmalloc.errors import UserError
from lmalloc.report import Page, format_cell, image_data_uri

# A valid 1x1 PNG (red pixel) so the tests need no plotting library.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC"
)
SVG = (
    b'<?xml version="1.0" encoding="utf-8"?>\n'
    b'<!DOCTYPE svg PUBLIC "-//W3C//DTD SVG 1.1//EN"\n'
    b'  "http://www.w3.org/Graphics/SVG/1.1/DTD/svg11.dtd">\n'
    b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
    b'<rect width="10" height="10" fill="blue"/></svg>\n'
)


class _Tags(HTMLParser):
    """Collects start tags with their attributes, to check structure without regexes."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def find(self, tag: str) -> list[dict[str, str | None]]:
        return [a for t, a in self.tags if t == tag]


def _parse(html: str) -> _Tags:
    p = _Tags()
    p.feed(html)
    p.close()
    return p


def _demo() -> Page:
    page = Page("Run demo")
    page.summary("The model reached 3.41 nats.")
    page.section("Training").paragraph("Loss fell.").table(
        ["step", "loss", "note"], [[100, 4.123456, "ok"], [200, None, True]], caption="losses"
    )
    page.section("Compression").note("stage not run yet")
    return page


def test_structure_toc_links_every_section_in_order() -> None:
    html = _demo().render()
    assert html.startswith("<!DOCTYPE html>")
    tags = _parse(html)
    ids = [a["id"] for a in tags.find("section")]
    assert ids == ["sec-training", "sec-compression"]
    links = [a["href"] for a in tags.find("a")]
    assert links == [f"#{i}" for i in ids]
    assert html.index("The model reached") < html.index("<nav") < html.index('id="sec-training"')
    assert '<p class="note">stage not run yet</p>' in html
    assert "<caption>losses</caption>" in html


def test_section_returns_existing_and_keeps_ids_unique() -> None:
    page = Page("p")
    a = page.section("Loss curves")
    assert page.section("Loss curves") is a
    b = page.section("Loss  curves!", id=None)  # different title, same slug
    c = page.section("Other", id="custom")
    assert (a.id, b.id, c.id) == ("sec-loss-curves", "sec-loss-curves-2", "custom")
    assert page.section("whatever", id="custom") is c
    with pytest.raises(UserError, match="section id"):
        page.section("x", id='bad" onclick="x')


def test_cells_are_formatted_sensibly() -> None:
    assert format_cell(None) == "\u2014"
    assert format_cell(3.14159265) == "3.142"
    assert format_cell(1.234567e18) == "1.235e+18"
    assert format_cell(np.float32(0.000123456)) == "0.0001235"
    assert format_cell(np.int64(1234567)) == "1234567"
    assert format_cell(True) == "yes"
    assert format_cell("abc") == "abc"
    html = _demo().render()
    assert '<td class="num">4.123</td>' in html
    assert "<td>\u2014</td>" in html


def test_table_rejects_ragged_rows() -> None:
    with pytest.raises(ValueError, match="row 1"):
        Page("p").section("s").table(["a", "b"], [[1, 2], [3]])


def test_user_text_is_escaped_everywhere() -> None:
    evil = '<script>alert("x")</script>'
    page = Page(evil)
    page.summary(evil)
    page.verdicts([("problem", evil, evil)])
    sec = page.section(evil)
    sec.paragraph(evil).note(evil).table([evil], [[evil]], caption=evil)
    sec.figure(PNG, caption=evil, alt=evil)
    html = page.render()
    assert "<script" not in html
    escaped = "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;"
    # title, h1, verdict topic and text, summary, toc, h2, paragraph, note, th, td, caption,
    # alt, figcaption
    assert html.count(escaped) == 14


def test_verdicts_come_first_and_say_their_severity_in_words() -> None:
    page = Page("p").summary("the summary")
    page.section("s").paragraph("body")
    page.verdicts([("warning", "search", "2 trials of 33 completed"), ("ok", "fit", "sound")])
    html = page.render()
    assert html.index('id="verdicts"') < html.index("the summary") < html.index("<p>body</p>")
    assert '<li class="v-warning"><b>warning</b>search: 2 trials of 33 completed</li>' in html
    assert '<li class="v-ok"><b>ok</b>fit: sound</li>' in html
    assert 'id="verdicts"' not in Page("q").summary("s").render()  # none given: no block
    with pytest.raises(UserError, match="verdict severity"):
        page.verdicts([("fatal", "fit", "x")])


def test_png_and_svg_round_trip_through_data_uris(tmp_path: Path) -> None:
    svg_path = tmp_path / "fig.svg"
    svg_path.write_bytes(SVG)
    page = Page("figs")
    page.section("F").figure(PNG, "png", "a red pixel").figure(svg_path, "svg", "a blue square")
    imgs = _parse(page.render()).find("img")
    assert [i["alt"] for i in imgs] == ["a red pixel", "a blue square"]
    decoded = []
    for img, mime in zip(imgs, ["image/png", "image/svg+xml"], strict=True):
        src = img["src"] or ""
        prefix = f"data:{mime};base64,"
        assert src.startswith(prefix)
        decoded.append(base64.b64decode(src[len(prefix) :], validate=True))
    assert decoded == [PNG, SVG]
    assert image_data_uri(str(svg_path)) == image_data_uri(SVG)


def test_figure_rejects_missing_or_unknown_images(tmp_path: Path) -> None:
    sec = Page("p").section("s")
    with pytest.raises(UserError, match="does not exist"):
        sec.figure(tmp_path / "nope.png", "c", "a")
    with pytest.raises(UserError, match="PNG or SVG"):
        sec.figure(b"GIF89a....", "c", "a")


def test_no_external_urls_except_escaped_user_text() -> None:
    page = _demo()
    # The SVG's own xmlns/DOCTYPE URLs are inside base64, so they do not count.
    page.section("F").figure(SVG, "c", "a").paragraph("see https://example.org/<x>")
    html = page.render()
    urls = re.findall(r"https?://", html)
    assert len(urls) == 1  # only the user's paragraph, as text
    assert "<p>see https://example.org/&lt;x&gt;</p>" in html
    tags = _parse(html)
    for tag in ("script", "link", "iframe", "object", "embed"):
        assert not tags.find(tag), tag
    for _tag, attrs in tags.tags:
        for name in ("src", "href"):
            value = attrs.get(name)
            assert value is None or value.startswith(("data:", "#")), value
    csp = [a for a in tags.find("meta") if a.get("http-equiv") == "Content-Security-Policy"]
    assert csp and "default-src 'none'" in (csp[0]["content"] or "")


def test_write_is_atomic_and_matches_render(tmp_path: Path) -> None:
    page = _demo()
    out = tmp_path / "run" / "report.html"
    assert page.write(out) == out
    assert out.read_text(encoding="utf-8") == page.render()
    page.section("Later").paragraph("more")
    page.write(out)  # replaces in place, leaving no temp file behind
    assert "more" in out.read_text(encoding="utf-8")
    assert sorted(p.name for p in out.parent.iterdir()) == ["report.html"]
