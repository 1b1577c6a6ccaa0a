"""A self-contained HTML page: the run report's skeleton, independent of any stage.

The report must open from disk on a machine with no network, be mailed as one file and still
show its plots years later, so the page embeds everything: CSS inline, images as ``data:``
URIs, no scripts, no fonts, no external URL. A Content-Security-Policy ``<meta>`` makes that a
rule the browser enforces (any external fetch is blocked and logged), which the headless
browser test turns into a failure. All text goes through :func:`html.escape`: titles, cells and
captions come from run names, corpus paths and config values that a user controls.

Example::

    page = Page("Run demo")
    page.summary("The 12M model reached 3.41 nats, inside the predicted interval.")
    sec = page.section("Training")
    sec.table(["step", "loss"], [[100, 4.123456], [200, None]])
    sec.figure(png_bytes, caption="Loss curve", alt="training loss falls with steps")
    page.section("Compression").note("stage not run yet")
    page.write(run_dir / "report.html")
"""

from __future__ import annotations

import base64
import numbers
import os
import re
from collections.abc import Iterable, Sequence
from html import escape
from pathlib import Path

from lmalloc.errors import UserError, invalid
from lmalloc.rundir import atomic_write_text

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_SVG_HEAD = re.compile(rb"^\s*(<\?xml[^>]*>\s*)?(<!--.*?-->\s*)*(<!DOCTYPE[^>]*>\s*)?<svg\b", re.S)
_ID = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")
_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
_CSS = """
body{font:15px/1.5 system-ui,-apple-system,"Segoe UI",sans-serif;color:#1f2328;
 max-width:60rem;margin:2rem auto;padding:0 1rem;background:#fff}
h1{font-size:1.7rem;margin:0 0 .5rem}h2{font-size:1.3rem;margin-top:2.2rem;
 border-bottom:1px solid #d0d7de;padding-bottom:.2rem}
.summary{font-size:1.05rem;background:#f6f8fa;border-left:4px solid #0969da;padding:.6rem 1rem}
nav ol{margin:.3rem 0;padding-left:1.4rem}a{color:#0969da}
table{border-collapse:collapse;margin:.8rem 0;font-variant-numeric:tabular-nums}
th,td{border:1px solid #d0d7de;padding:.25rem .6rem;text-align:left}
th{background:#f6f8fa}td.num{text-align:right}caption{caption-side:bottom;color:#57606a;
 font-size:.9rem;text-align:left;padding-top:.3rem}
figure{margin:1rem 0}figure img{max-width:100%;height:auto;border:1px solid #eaeef2}
figcaption{color:#57606a;font-size:.9rem}.note{color:#6e7781;font-style:italic}
.verdicts ul{list-style:none;padding:0;margin:.5rem 0}.verdicts li{margin:.35rem 0;
 padding:.35rem .8rem;border-left:4px solid}.verdicts b{text-transform:uppercase;
 font-size:.8rem;margin-right:.4rem}.v-problem{border-color:#cf222e;background:#ffebe9}
.v-warning{border-color:#9a6700;background:#fff8c5}.v-ok{border-color:#1a7f37;
 background:#dafbe1}
"""
_VERDICT_CLASSES = ("problem", "warning", "ok")


def format_cell(value: object) -> str:
    """Format one table value for reading: floats to 4 significant digits, None as a dash.

    Four digits are enough to compare losses and FLOP counts by eye without pretending to a
    precision that seeds and bootstrap noise do not have. ``bool`` is checked before numbers
    because it is an ``int`` subclass. numpy scalars register with :mod:`numbers`, so they
    format like Python's.
    """
    if value is None:
        return "\u2014"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        return f"{float(value):.4g}"
    return str(value)


def image_data_uri(image: bytes | str | os.PathLike[str]) -> str:
    """Read a PNG or SVG (bytes or a path) and return it as a base64 ``data:`` URI.

    SVG is embedded through ``<img src="data:image/svg+xml;base64,...">`` rather than inline
    ``<svg>``: inside ``<img>`` the SVG's scripts never run and its ids and CSS (matplotlib
    names every figure's elements alike) cannot collide with the page or another figure, and
    both formats get the same ``alt`` text and the same load check in the browser test.
    """
    if isinstance(image, bytes):
        data = image
    else:
        path = Path(image)
        if not path.is_file():
            raise UserError(f"figure image {str(path)!r} does not exist or is not a file")
        data = path.read_bytes()
    if data.startswith(_PNG_MAGIC):
        mime = "image/png"
    elif _SVG_HEAD.match(data[:4096]):
        mime = "image/svg+xml"
    else:
        raise invalid("figure image", data[:16], "PNG or SVG data (or a path to such a file)")
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


class Section:
    """One titled part of the page; blocks render in the order they were added.

    Blocks are rendered to escaped HTML as they are added, so a bad image fails at the call
    that added it, not later in :meth:`Page.render`. Methods return ``self`` for chaining.
    """

    def __init__(self, title: str, id: str) -> None:
        self.title = title
        self.id = id
        self.blocks: list[str] = []

    def paragraph(self, text: str) -> Section:
        self.blocks.append(f"<p>{escape(text)}</p>")
        return self

    def note(self, text: str) -> Section:
        """A muted message, e.g. "stage not run yet", so a missing part is visible, not blank."""
        self.blocks.append(f'<p class="note">{escape(text)}</p>')
        return self

    def table(
        self,
        headers: Sequence[str],
        rows: Iterable[Sequence[object]],
        caption: str | None = None,
    ) -> Section:
        """A table; numeric cells are right-aligned so digits line up."""
        head = "".join(f"<th>{escape(str(h))}</th>" for h in headers)
        body = []
        for i, row in enumerate(rows):
            if len(row) != len(headers):
                raise ValueError(f"table row {i} has {len(row)} cells, headers {len(headers)}")
            cells = "".join(f"<td{_num_class(v)}>{escape(format_cell(v))}</td>" for v in row)
            body.append(f"<tr>{cells}</tr>")
        cap = f"<caption>{escape(caption)}</caption>" if caption else ""
        self.blocks.append(
            f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
        )
        return self

    def figure(self, image: bytes | str | os.PathLike[str], caption: str, alt: str) -> Section:
        """Embed a PNG or SVG inline (see :func:`image_data_uri`) with a caption and alt text."""
        uri = image_data_uri(image)
        self.blocks.append(
            f'<figure><img src="{uri}" alt="{escape(alt)}">'
            f"<figcaption>{escape(caption)}</figcaption></figure>"
        )
        return self

    def render(self) -> str:
        return (
            f'<section id="{self.id}"><h2>{escape(self.title)}</h2>\n'
            + "\n".join(self.blocks)
            + "\n</section>"
        )


def _num_class(value: object) -> str:
    is_num = isinstance(value, numbers.Real) and not isinstance(value, bool)
    return ' class="num"' if is_num else ""


def _slug(title: str) -> str:
    words = re.findall(r"[a-z0-9]+", title.lower())
    return "sec-" + "-".join(words) if words else "sec"


class Page:
    """Builder of one self-contained HTML5 report page.

    Verdicts come first (is the result to be trusted?), then a summary paragraph in plain
    language (what a reader who stops there must know), then a table of contents, then the
    sections in the order they were created.
    """

    def __init__(self, title: str) -> None:
        self.title = title
        self._summary: str | None = None
        self._verdicts: list[tuple[str, str, str]] = []
        self._sections: list[Section] = []

    def summary(self, text: str) -> Page:
        self._summary = text
        return self

    def verdicts(self, items: Iterable[tuple[str, str, str]]) -> Page:
        """``(severity, topic, text)`` findings shown first, above the summary, each marked
        by its severity in words as well as in colour (``problem``, ``warning`` or ``ok``)."""
        for severity, topic, text in items:
            if severity not in _VERDICT_CLASSES:
                raise invalid("verdict severity", severity, ", ".join(_VERDICT_CLASSES))
            self._verdicts.append((severity, topic, text))
        return self

    def _render_verdicts(self) -> str:
        items = "".join(f'<li class="v-{sev}"><b>{sev}</b>{escape(topic)}: {escape(text)}</li>'
                        for sev, topic, text in self._verdicts)
        return (f'<section id="verdicts" class="verdicts"><h2>Verdicts</h2><ul>{items}</ul>'
                "</section>")

    def section(self, title: str, id: str | None = None) -> Section:
        """Return the section with this title (or id), creating it at the end if new.

        Returning an existing one lets separate stages add to a shared section without
        coordinating. Ids are derived from the title unless given, and kept unique.
        """
        for sec in self._sections:
            if sec.id == id or (id is None and sec.title == title):
                return sec
        if id is not None and not _ID.match(id):
            raise invalid("section id", id, "a letter then letters, digits, '-' or '_'")
        sid = id or _slug(title)
        taken = {s.id for s in self._sections}
        base, n = sid, 2
        while sid in taken:
            sid, n = f"{base}-{n}", n + 1
        sec = Section(title, sid)
        self._sections.append(sec)
        return sec

    def render(self) -> str:
        """The whole document as one string: no external resource, no script."""
        parts = [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{escape(self.title)}</title><style>{_CSS}</style></head><body>",
            f"<header><h1>{escape(self.title)}</h1></header>",
        ]
        if self._verdicts:
            parts.append(self._render_verdicts())
        if self._summary is not None:
            parts.append(f'<p class="summary">{escape(self._summary)}</p>')
        if self._sections:
            links = "".join(
                f'<li><a href="#{s.id}">{escape(s.title)}</a></li>' for s in self._sections
            )
            parts.append(f'<nav aria-label="Contents"><h2>Contents</h2><ol>{links}</ol></nav>')
        parts.extend(s.render() for s in self._sections)
        parts.append("</body></html>\n")
        return "\n".join(parts)

    def write(self, path: str | os.PathLike[str]) -> Path:
        """Write the page atomically, so a reader never opens half a report."""
        return atomic_write_text(path, self.render())
