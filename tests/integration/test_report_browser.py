"""A report page in real headless Chromium: no errors, every image decodes, not a blank page.

The negative tests prove the harness can fail: a broken image, a throwing script and an
external URL (blocked by the page's Content-Security-Policy) must each be reported.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from lmalloc.report import Page

try:
    from browser import Browser, PageCheck, unavailable_reason
except ImportError as e:  # pragma: no cover - the harness is beside this file
    pytest.skip(f"browser harness not importable: {e}", allow_module_level=True)

pytest.importorskip("matplotlib", reason="the test draws its figures with matplotlib ('report')")
_REASON = unavailable_reason()
if _REASON:
    pytest.skip(_REASON, allow_module_level=True)

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with Browser(timeout_s=20.0) as b:
        yield b


def _figures(tmp: Path) -> tuple[bytes, Path]:
    """A real matplotlib PNG (bytes) and SVG (file), made with the Agg backend."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 3), dpi=72, layout="tight")
    ax.plot([1, 2, 3, 4], [4.1, 3.6, 3.4, 3.3], marker="o")
    ax.set(xlabel="step", ylabel="loss", title="loss curve")
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    ax.clear()
    ax.loglog([1e6, 1e7, 1e8], [5.0, 3.9, 3.2], marker="s")
    ax.set(xlabel="N", ylabel="loss", title="fitted law")
    svg = tmp / "law.svg"
    fig.savefig(svg, format="svg")
    plt.close(fig)
    return buf.getvalue(), svg


def _check(browser: Browser, tmp: Path, name: str, html: str) -> PageCheck:
    path = tmp / f"{name}.html"
    path.write_text(html, encoding="utf-8")
    return browser.check(path, tmp / f"{name}.png")


def test_report_page_renders_cleanly(browser: Browser, tmp_path: Path) -> None:
    png, svg = _figures(tmp_path)
    page = Page("Run <demo> report")
    page.summary("The 12M model reached 3.41 nats, inside the predicted interval.")
    train = page.section("Training")
    train.paragraph("Loss fell steadily.").table(
        ["step", "loss", "val"], [[100, 4.123456, None], [200, 3.51, 3.6]], caption="losses"
    )
    train.figure(png, caption="Training loss", alt="loss falls with steps")
    page.section("Scaling law").figure(svg, caption="Fitted law", alt="law on log axes")
    page.section("Compression").note("stage not run yet")
    out = page.write(tmp_path / "report.html")
    check = browser.check(out, tmp_path / "report.png")
    assert check.console_errors == []
    assert check.broken_images == []
    assert check.n_images == 2
    assert check.screenshot_nonblank and check.ink_fraction > 0.01, check.ink_fraction
    assert (tmp_path / "report.png").stat().st_size > 1000


def test_harness_reports_a_broken_image(browser: Browser, tmp_path: Path) -> None:
    html = '<!DOCTYPE html><h1>x</h1><img alt="bad" src="data:image/png;base64,AAAA">'
    check = _check(browser, tmp_path, "broken", html)
    assert check.n_images == 1
    assert check.broken_images == ["data:image/png;base64,AAAA"]


def test_harness_reports_a_throwing_script(browser: Browser, tmp_path: Path) -> None:
    html = "<!DOCTYPE html><h1>x</h1><script>null.boom(); </script>"
    check = _check(browser, tmp_path, "throws", html)
    assert any("page error" in e and "boom" in e for e in check.console_errors), check


def test_harness_reports_external_urls_and_blank_pages(browser: Browser, tmp_path: Path) -> None:
    page = Page("p")
    page.section("s").paragraph("text")
    html = page.render().replace(
        "<p>text</p>", '<img alt="remote" src="https://example.org/plot.png">'
    )
    check = _check(browser, tmp_path, "external", html)
    assert check.console_errors, "the page's CSP must block and log the external image"
    assert check.broken_images == ["https://example.org/plot.png"]
    blank = _check(browser, tmp_path, "blank", "<!DOCTYPE html><title>t</title>")
    assert not blank.screenshot_nonblank and blank.ink_fraction == 0.0


@pytest.mark.timeout(900)  # the shared pipeline run may be built by this test's setup
def test_real_pipeline_report_renders_cleanly(browser: Browser, finished_run: Path,
                                              tmp_path: Path) -> None:
    """The report ``lmalloc run`` wrote for the tiny pipeline run, in a real browser."""
    import optuna

    report = finished_run / "report.html"
    assert report.is_file()  # the pipeline's report stage wrote it
    html = report.read_text(encoding="utf-8")
    figures = sorted(p.stem for p in (finished_run / "plots").glob("*.png"))
    assert {"ledger", "search_history", "isoflop", "scaling_fit", "training_curves",
            "predicted_vs_achieved"} <= set(figures)
    assert "Compression: not run yet." in html and "achieved" in html
    shot = tmp_path / "real_report.png"
    check = browser.check(report, shot)
    assert check.console_errors == []
    assert check.broken_images == []
    assert check.n_images == len(figures) == html.count("<img ")
    assert check.screenshot_nonblank and check.ink_fraction > 0.02, check.ink_fraction
    from lmalloc.report import run_status

    status = run_status(finished_run)
    assert all(r["state"] == "done" for r in status["stages"] if r["stage"] != "profile")
    assert status["plan"] is not None and status["best_trial"] is not None
    # optuna-dashboard opens the same storage: it must read with Optuna's own API
    url = f"sqlite:///{finished_run / 'study.db'}"
    names = [s.study_name for s in optuna.get_all_study_summaries(url)]
    assert names == ["explore"]
    assert optuna.load_study(study_name="explore", storage=url).trials
