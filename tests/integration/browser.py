"""Headless-Chromium harness: open a report page from disk and say what a reader would see.

A report that passes string checks can still show a broken image, throw in the console or
render as a white page; only a real browser can tell. The harness drives Debian's system
``chromium`` (installed by ``scripts/ensure_chromium.sh``) through Playwright, which here is
only the driver: it never downloads a browser of its own (``executable_path`` points at the
system one). The page is loaded through a ``file://`` URL with the network switched off and
every non-file request aborted, so a page that needs the network fails the check instead of
fetching.

Use :func:`unavailable_reason` to skip when the browser or Playwright is missing, then
``with Browser() as b: b.check(html, png)`` (one browser for many pages) or
:func:`check_page` for one page.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

# At or below this share of non-background pixels a screenshot counts as blank: an empty page
# is exactly 0, one heading letter "x" is ~0.03% at 1000x800, a lmalloc page with only its
# title ~0.2%, a report with two figures several percent.
INK_THRESHOLD = 1e-4
_NOT_FILE = re.compile(r"^(?!file:|data:)")
_IMAGES_JS = """() => Array.from(document.images).map(i => ({
    src: (i.currentSrc || i.src).slice(0, 80), ok: i.complete && i.naturalWidth > 0}))"""


@dataclass(frozen=True)
class PageCheck:
    """What the browser saw: errors, images that did not decode, and whether anything shows."""

    console_errors: list[str]
    broken_images: list[str]
    n_images: int
    screenshot_nonblank: bool
    ink_fraction: float = field(default=0.0)


def find_chromium() -> str | None:
    """The system Chromium: ``$LMALLOC_CHROMIUM``, else ``chromium`` on PATH."""
    env = os.environ.get("LMALLOC_CHROMIUM")
    if env:
        return env if Path(env).is_file() else None
    return shutil.which("chromium") or shutil.which("chromium-browser")


def unavailable_reason() -> str | None:
    """Why the browser test cannot run here, or None when it can."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install playwright; no browser download needed)"
    try:
        import PIL  # noqa: F401
    except ImportError:
        return "Pillow is not installed (it comes with matplotlib, the 'report' extra)"
    if find_chromium() is None:
        return "chromium is not installed (scripts/ensure_chromium.sh installs it with apt-get)"
    return None


def ink_fraction(png_path: str | os.PathLike[str]) -> float:
    """Share of pixels that differ from the most common colour (the background)."""
    import numpy as np
    from PIL import Image

    with Image.open(png_path) as im:
        rgb = np.asarray(im.convert("RGB"), dtype=np.uint32)  # (H, W, 3)
    packed = (rgb[..., 0] << 16 | rgb[..., 1] << 8 | rgb[..., 2]).ravel()
    _, counts = np.unique(packed, return_counts=True)
    return float(1.0 - counts.max() / packed.size)


class Browser:
    """One headless Chromium for several checks; each check gets a fresh, offline context."""

    def __init__(self, timeout_s: float = 20.0) -> None:
        self.timeout_ms = timeout_s * 1000
        self._pw: Any = None
        self._browser: Any = None

    def __enter__(self) -> Browser:
        from playwright.sync_api import sync_playwright

        reason = unavailable_reason()
        if reason:
            raise RuntimeError(reason)
        self._pw = sync_playwright().start()
        try:
            self._browser = self._pw.chromium.launch(
                executable_path=find_chromium(),
                args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
                timeout=self.timeout_ms,
            )
        except BaseException:
            self._pw.stop()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType
    ) -> None:
        try:
            if self._browser is not None:
                self._browser.close()
        finally:
            self._pw.stop()

    def check(
        self, html_path: str | os.PathLike[str], screenshot_path: str | os.PathLike[str]
    ) -> PageCheck:
        """Load ``html_path`` from disk, collect errors, test every image, take a screenshot."""
        errors: list[str] = []
        context = self._browser.new_context(
            offline=True, java_script_enabled=True, viewport={"width": 1000, "height": 800}
        )
        try:
            context.set_default_timeout(self.timeout_ms)
            context.route(_NOT_FILE, lambda route: route.abort())
            page = context.new_page()
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
            page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url[:80]}"))
            page.goto(Path(html_path).resolve().as_uri(), wait_until="load")
            images = page.evaluate(_IMAGES_JS)
            page.screenshot(path=str(screenshot_path), full_page=True)
        finally:
            context.close()
        ink = ink_fraction(screenshot_path)
        return PageCheck(
            console_errors=errors,
            broken_images=[img["src"] for img in images if not img["ok"]],
            n_images=len(images),
            screenshot_nonblank=ink > INK_THRESHOLD,
            ink_fraction=ink,
        )


def check_page(
    html_path: str | os.PathLike[str],
    screenshot_path: str | os.PathLike[str],
    timeout_s: float = 20.0,
) -> PageCheck:
    """Check one page in a browser of its own (launch, check, close)."""
    with Browser(timeout_s) as browser:
        return browser.check(html_path, screenshot_path)
