"""The report's figures: one function per figure, each a PNG and an SVG in ``RUN/plots/``.

Every function takes the loaded :class:`~lmalloc.report.artifacts.RunArtifacts` and the output
folder and returns a :class:`Plot` (paths, caption, alt text), or None when the stage it
draws has not run, so a half-finished run still gets the figures it can have. Figures are
drawn with matplotlib's object API (``matplotlib.figure.Figure``, no ``pyplot``): no global
figure registry to leak, no interactive backend chosen behind the caller's back; saving uses
the Agg renderer. Files are written atomically through :mod:`lmalloc.rundir`.

matplotlib (and Optuna, for the search figures) is imported lazily, so importing
:mod:`lmalloc.report` stays cheap.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lmalloc.errors import UserError
from lmalloc.report.artifacts import RunArtifacts
from lmalloc.report.verdicts import MIN_IMPORTANCE_TRIALS
from lmalloc.rundir import atomic_write_bytes, safe_join

DPI = 110
FAINT, BOLD, ACCENT, GREY = "#8c959f", "#0969da", "#cf222e", "#57606a"


@dataclass(frozen=True)
class Plot:
    """One figure written to disk: its PNG and SVG, with the caption and alt text to show."""

    name: str
    png: Path
    svg: Path
    caption: str
    alt: str


def _figure(width: float = 7.0, height: float = 4.2, ncols: int = 1) -> Any:
    try:
        from matplotlib.figure import Figure
    except ImportError:  # pragma: no cover - matplotlib is a dependency of the report
        raise UserError("the report needs matplotlib: pip install 'lmalloc[report]'") from None
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    axes = fig.subplots(1, ncols)
    return fig, axes


def _finish(ax: Any, **labels: str) -> None:
    """Axis labels, a light grid and a small legend: the line charts' common finish."""
    ax.set(**labels)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def _save(fig: Any, out_dir: Path, name: str, caption: str, alt: str) -> Plot:
    from matplotlib.ticker import NullFormatter

    for ax in fig.axes:  # minor log-axis labels are mathtext: most of the drawing time
        for axis in (ax.xaxis, ax.yaxis):
            if axis.get_scale() == "log":
                axis.set_minor_formatter(NullFormatter())
    paths = {}
    for fmt in ("png", "svg"):
        buf = io.BytesIO()
        # no date in the metadata: the same run gives the same files
        fig.savefig(buf, format=fmt, metadata={"Date": None} if fmt == "svg" else None)
        paths[fmt] = atomic_write_bytes(out_dir / f"{name}.{fmt}", buf.getvalue())
    return Plot(name, paths["png"], paths["svg"], caption, alt)


def _band(reps: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Percentile band of bootstrap replicates ``(R, n)``, ignoring non-finite ones."""
    reps = np.where(np.isfinite(reps), reps, np.nan)
    q = 100 * (1 - level) / 2
    with np.errstate(all="ignore"):
        lo, hi = np.nanpercentile(reps, [q, 100 - q], axis=0)
    return lo, hi


def _err(e: dict[str, Any]) -> list[list[float]]:
    """Error-bar lengths of an estimate; 0 where a bootstrap put the value outside its band."""
    v = float(e["value"])
    return [[max(0.0, v - float(e["low"]))], [max(0.0, float(e["high"]) - v)]]


# -- (a) training curves -----------------------------------------------------------------------
def plot_training_curves(art: RunArtifacts, out_dir: Path) -> Plot | None:
    """Every trial and ladder run faint, the final run bold, its predicted curve dashed."""
    curves = [c for c in art.curves() if c.train or c.eval]
    if not curves:
        return None
    fig, ax = _figure()
    seen: list[float] = []
    for c in curves:
        x, y = _smooth([r["tokens"] for r in c.train], [r["loss"] for r in c.train])
        seen += y.tolist()
        if c.kind == "final":
            ax.plot(x, y, color=BOLD, lw=1.6, label="final run (train loss, smoothed)",
                    zorder=3)
            ev = [(r["tokens"], r["val_loss"]) for r in c.eval]
            if ev:
                ax.plot(*zip(*ev, strict=True), "o", color=BOLD, ms=5, zorder=4,
                        label="final run (validation loss)")
        else:
            ax.plot(x, y, color=FAINT, lw=0.6, alpha=0.35)
    ax.plot([], [], color=FAINT, lw=0.8, label="search trials and ladder runs")
    _predicted_curve(art, ax)
    ax.set_xscale("log")
    if seen:  # the first steps' loss (ln V) would squash the interesting part
        ax.set_ylim(min(seen) * 0.97, float(np.percentile(seen, 99)) * 1.02)
    _finish(ax, xlabel="training tokens", ylabel="loss (nats per token)")
    return _save(fig, out_dir, "training_curves", "Loss against training tokens. The dashed "
                 "line is the fitted law's loss L(N, D) for the final model size at each token "
                 "count D (a completed schedule of that length), with its bootstrap band.",
                 "training loss curves falling with tokens; the final run in bold")


def _smooth(x: list[float], y: list[float], points: int = 60) -> tuple[np.ndarray, np.ndarray]:
    """Moving average over ~len/points steps: per-batch loss noise hides the trend."""
    w = max(1, len(y) // points)
    if w == 1:
        return np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    ys = np.convolve(np.asarray(y, dtype=float), np.ones(w) / w, mode="valid")
    return np.asarray(x, dtype=float)[w - 1:], ys


def _predicted_curve(art: RunArtifacts, ax: Any) -> None:
    fit, plan = art.fit, art.plan
    if fit is None or plan is None or fit.law != "chinchilla":
        return
    N, D_end = float(plan["predicted"]["N"]), float(plan["predicted"]["D"])
    D = np.geomspace(D_end / 30, D_end, 60)
    lo, hi = _band(fit.replicates(N, D), fit.level)
    ax.plot(D, fit.predict(N, D), "--", color=ACCENT, lw=1.6, label="predicted (fitted law)",
            zorder=5)
    ax.fill_between(D, lo, hi, color=ACCENT, alpha=0.12, lw=0,
                    label=f"{fit.level:.0%} bootstrap band")


# -- (b) IsoFLOP curves ------------------------------------------------------------------------
def plot_isoflop(art: RunArtifacts, out_dir: Path) -> Plot | None:
    """Ladder runs grouped by compute level: loss against log N, a parabola and its minimum."""
    from lmalloc.scaling import group_levels

    rows = [r for r in art.ladder_rows if _finite_row(r)]
    if len(rows) < 2:
        return None
    N, C, L = (np.array([float(r[k]) for r in rows]) for k in ("N", "C", "loss"))
    labels = group_levels(C)
    fig, ax = _figure()
    cmap = _colors(int(labels.max()) + 1)
    for lvl in range(int(labels.max()) + 1):
        m = labels == lvl
        color = cmap[lvl]
        ax.plot(N[m], L[m], "o", color=color, label=f"C ≈ {np.median(C[m]):.2g} FLOPs")
        x = np.log(N[m])
        if np.unique(x).size < 3:
            continue
        c2, c1, c0 = np.polyfit(x, L[m], 2)
        xs = np.linspace(x.min() - 0.2, x.max() + 0.2, 60)
        ax.plot(np.exp(xs), c0 + c1 * xs + c2 * xs**2, color=color, lw=1, alpha=0.8)
        if c2 > 0:
            xm = -c1 / (2 * c2)
            if abs(xm - x.mean()) <= 3 * np.ptp(x):
                ax.plot(np.exp(xm), c0 + c1 * xm + c2 * xm**2, "*", color=color, ms=12,
                        mec="black", mew=0.5)
    ax.set_xscale("log")
    _finish(ax, xlabel="model size N (parameters)", ylabel="validation loss")
    return _save(fig, out_dir, "isoflop", "IsoFLOP profiles: ladder runs of equal compute, "
                 "loss against model size, with a parabola in log N per level; a star marks "
                 "a level's minimum when the parabola has one near the data.",
                 "loss against model size for each compute level, with fitted parabolas")


def _finite_row(r: dict[str, Any]) -> bool:
    return all(isinstance(r.get(k), float) and math.isfinite(r[k]) and r[k] > 0
               for k in ("N", "D", "C", "loss"))


def _colors(n: int) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    return [cmap(0.85 * i / max(1, n - 1)) for i in range(n)]


# -- (c) the scaling fit -----------------------------------------------------------------------
def frontier(fit: Any, C: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Loss-optimal loss L*(C) and its bootstrap band for compute ``C = k N D``.

    Each replicate of the fit has its own optimum (Chinchilla eq. 4), so the band is that of
    the replicates' optimal losses, not of one allocation's.
    """
    from lmalloc.scaling import optimal_nd

    k = fit.flops_per_token_per_param
    names = fit.form.param_names

    def loss_at(p: np.ndarray) -> np.ndarray:
        with np.errstate(all="ignore"):
            N, D = optimal_nd(p[..., None, :], C, k)  # type: ignore[arg-type]  # broadcasts
            E, A, B, a, b = (p[..., None, names.index(n)] for n in
                             ("E", "A", "B", "alpha", "beta"))
            out: np.ndarray = E + A * N**-a + B * D**-b
        return out

    best = loss_at(np.array([fit.params[n] for n in names]))
    lo, hi = _band(loss_at(fit.samples), fit.level)
    return best, lo, hi


def plot_scaling_fit(art: RunArtifacts, out_dir: Path) -> Plot | None:
    """The frontier L*(C) with its band, the ladder points and the final run's compute."""
    fit = art.fit
    rows = [r for r in art.ladder_rows if _finite_row(r)]
    if fit is None or fit.law != "chinchilla" or not rows:
        return None
    k = fit.flops_per_token_per_param
    Cl = np.array([k * float(r["N"]) * float(r["D"]) for r in rows])
    Ll = np.array([float(r["loss"]) for r in rows])
    c_hi = Cl.max() * 3
    fig, ax = _figure()
    if art.plan is not None:
        p = art.plan["predicted"]
        c_final = k * float(p["N"]) * float(p["D"])
        c_hi = max(c_hi, c_final * 3)
        loss = p["loss"]
        ax.errorbar([c_final], [loss["value"]], yerr=_err(loss), fmt="s", color=ACCENT, capsize=4,
                    label=f"plan: predicted ({loss.get('level', fit.level):.0%} interval)")
        achieved = (art.summary or {}).get("achieved", {}).get("val_loss")
        if achieved is None:
            achieved = art.stages.get("train", {}).get("val_loss")
        if achieved is not None:
            ax.plot([c_final], [achieved], "*", color=BOLD, ms=13, mec="black", mew=0.5,
                    label="final run: achieved")
    C = np.geomspace(Cl.min() / 3, c_hi, 80)
    best, lo, hi = frontier(fit, C)
    ax.plot(C, best, color=GREY, lw=1.5, label="loss-optimal frontier L*(C)")
    ax.fill_between(C, lo, hi, color=GREY, alpha=0.15, lw=0,
                    label=f"{fit.level:.0%} bootstrap band")
    ax.axvspan(Cl.min(), Cl.max(), color="#d0d7de", alpha=0.25, lw=0)
    ax.plot(Cl, Ll, "o", color=FAINT, mec="black", mew=0.4, label="ladder runs (fitted)")
    ax.set_xscale("log")
    top = max(float(Ll.max()), float(np.nanmax(best)))
    ax.set_ylim(min(float(np.nanmin(best)), float(Ll.min())) * 0.95, top * 1.05)
    _finish(ax, xlabel=f"compute C = {k:g}·N·D (FLOPs)", ylabel="validation loss")
    return _save(fig, out_dir, "scaling_fit", "The fitted law's best achievable loss at each "
                 "compute (shaded grey: the compute the ladder explored), extrapolated to the "
                 "final run's compute, where the plan's prediction and the achieved loss sit.",
                 "loss-optimal frontier against compute with a bootstrap band and the runs")


# -- (d) predicted vs achieved -----------------------------------------------------------------
def plot_predicted_vs_achieved(art: RunArtifacts, out_dir: Path) -> Plot | None:
    """The plan's predicted loss and bits per byte with their intervals, and what was got."""
    if art.plan is None:
        return None
    pred = art.plan["predicted"]
    train = art.stages.get("train", {})
    ev = ((art.eval or {}).get("perplexity") or {}).get("val") or {}
    fig, axes = _figure(7.0, 2.8, ncols=2)
    for ax, key, got_key, ev_key, unit in ((axes[0], "loss", "val_loss", "loss", "nats/token"),
                                           (axes[1], "bpb", "val_bpb", "bpb", "bits/byte")):
        p = pred.get(key)
        if not p:
            ax.set_axis_off()
            continue
        ax.errorbar([p["value"]], [2], xerr=_err(p), fmt="s", color=ACCENT, capsize=5)
        marks = [(1, train.get(got_key), "final run's last eval"),
                 (0, ev.get(ev_key), "whole validation split")]
        for y, v, _ in marks:
            if v is not None:
                ax.plot([v], [y], "*", color=BOLD, ms=13, mec="black", mew=0.5)
        ax.set_yticks([2, 1, 0], [f"predicted ({p.get('level', 0.9):.0%})", marks[0][2],
                                  marks[1][2]], fontsize=8)
        ax.set_ylim(-0.6, 2.6)
        ax.set_xlabel(f"validation {key} ({unit})")
        ax.grid(alpha=0.3, axis="x")
    return _save(fig, out_dir, "predicted_vs_achieved", "The plan's prediction with its "
                 "interval (red) and what the final run achieved (blue stars; absent until it "
                 "has trained and been evaluated).",
                 "predicted loss interval compared with the achieved loss")


# -- (e, f) the search -------------------------------------------------------------------------
@dataclass(frozen=True)
class StudyTrials:
    """One Optuna study's finished trials, as the report needs them."""

    name: str
    strategy: str | None
    minimize: bool
    trials: list[dict[str, Any]]  # number, state, value, flops, params


def read_studies(art: RunArtifacts) -> list[StudyTrials]:
    """Every single-objective study in the run's ``study.db``, read with Optuna's own API."""
    if art.study_url is None:
        return []
    import optuna

    charged = {int(r["trial"]): float(r["flops"]) for r in art.ledger
               if r.get("stage") == "search" and "trial" in r}
    out = []
    for summary in optuna.get_all_study_summaries(art.study_url):
        if len(summary.directions) != 1:
            continue  # multi-objective: no single best-so-far
        study = optuna.load_study(study_name=summary.study_name, storage=art.study_url)
        trials = []
        for t in study.get_trials(deepcopy=False):
            if t.state.name not in ("COMPLETE", "PRUNED") or t.value is None:
                continue
            flops = t.user_attrs.get("flops", charged.get(t.number, 0.0))
            trials.append({"number": t.number, "state": t.state.name.lower(),
                           "value": float(t.value), "flops": float(flops or 0.0),
                           "params": dict(t.params)})
        strategy = study.user_attrs.get("strategy") or (
            (art.search or {}).get("strategy") if summary.study_name ==
            (art.search or {}).get("study") else None)
        out.append(StudyTrials(summary.study_name, strategy,
                               summary.direction.name == "MINIMIZE", trials))
    return out


def plot_search_history(art: RunArtifacts, out_dir: Path,
                        studies: list[StudyTrials] | None = None) -> Plot | None:
    """Best objective so far against cumulative FLOPs, one line per study (strategy)."""
    studies = [s for s in (read_studies(art) if studies is None else studies) if s.trials]
    if not studies:
        return None
    fig, ax = _figure()
    for color, s in zip(_colors(len(studies)), studies, strict=True):
        cum = np.cumsum([t["flops"] for t in s.trials])
        vals = np.array([t["value"] for t in s.trials])
        done = np.array([t["state"] == "complete" for t in s.trials])
        best = np.full(len(vals), np.nan)
        run = math.inf if s.minimize else -math.inf
        for i, (v, ok) in enumerate(zip(vals, done, strict=True)):
            if ok:
                run = min(run, v) if s.minimize else max(run, v)
            best[i] = run if math.isfinite(run) else np.nan
        label = s.name + (f" ({s.strategy})" if s.strategy else "")
        ax.step(cum, best, where="post", color=color, lw=1.8, label=f"{label}: best so far")
        ax.plot(cum[done], vals[done], "o", color=color, ms=4, alpha=0.6)
        ax.plot(cum[~done], vals[~done], "x", color=color, ms=4, alpha=0.6)
    ax.plot([], [], "o", color=GREY, ms=4, label="completed trial")
    ax.plot([], [], "x", color=GREY, ms=4, label="pruned trial (value when stopped)")
    _finish(ax, xlabel="cumulative search compute (FLOPs)",
           ylabel="objective (" + ("lower" if studies[0].minimize else "higher") + " is better)")
    return _save(fig, out_dir, "search_history", "Search history: the best completed trial's "
                 "objective so far against the compute the search had spent.",
                 "best objective so far falling with the search's compute")


def importance_skip_reason(studies: list[StudyTrials]) -> str | None:
    """Why hyperparameter importances cannot be computed, or None when they can."""
    s = _main_study(studies)
    if s is None:
        return "no search study in this run yet"
    complete = [t for t in s.trials if t["state"] == "complete"]
    params = {p for t in complete for p in t["params"]}
    if len(complete) < MIN_IMPORTANCE_TRIALS:
        return (f"importances need at least {MIN_IMPORTANCE_TRIALS} completed trials to mean "
                f"anything; the study has {len(complete)}")
    if len(params) < 2:
        return "importances need at least 2 searched hyperparameters; the study has " \
               f"{len(params)}"
    return None


def _main_study(studies: list[StudyTrials]) -> StudyTrials | None:
    return max(studies, key=lambda s: sum(t["state"] == "complete" for t in s.trials),
               default=None)


def plot_importances(art: RunArtifacts, out_dir: Path,
                     studies: list[StudyTrials] | None = None) -> Plot | None:
    """Optuna's fANOVA importances of the searched hyperparameters (seeded: reproducible)."""
    studies = read_studies(art) if studies is None else studies
    main = _main_study(studies)
    if main is None or importance_skip_reason(studies) is not None or art.study_url is None:
        return None
    import optuna
    from optuna.importance import FanovaImportanceEvaluator

    study = optuna.load_study(study_name=main.name, storage=art.study_url)
    imp = optuna.importance.get_param_importances(study,
                                                  evaluator=FanovaImportanceEvaluator(seed=0))
    names = list(imp)[::-1]
    fig, ax = _figure(6.0, 0.6 + 0.45 * len(names))
    ax.barh(names, [float(imp[n]) for n in names], color=BOLD)
    ax.set(xlabel="importance (fANOVA, share of the objective's variance)", xlim=(0, 1))
    ax.grid(alpha=0.3, axis="x")
    return _save(fig, out_dir, "importances", f"Hyperparameter importances in study "
                 f"{main.name!r} (Optuna's fANOVA evaluator over completed trials).",
                 "bar chart of hyperparameter importances")


# -- (g) the budget ledger ---------------------------------------------------------------------
def plot_ledger(art: RunArtifacts, out_dir: Path) -> Plot | None:
    """Where the compute went: FLOPs and seconds per stage."""
    by = art.by_stage()
    if not by:
        return None
    names = list(by)[::-1]
    fig, axes = _figure(7.5, 0.9 + 0.32 * len(names), ncols=2)
    for ax, key, label in ((axes[0], "flops", "FLOPs"), (axes[1], "seconds", "seconds")):
        vals = [by[n][key] for n in names]
        ax.barh(names, vals, color=[BOLD if n in ("train", "final") else FAINT for n in names])
        total = sum(vals) or 1.0
        for y, v in enumerate(vals):
            if v > 0:
                ax.text(v, y, f" {v / total:.0%}", va="center", fontsize=7)
        ax.set_xlabel(label)
        ax.margins(x=0.15)
        ax.grid(alpha=0.3, axis="x")
    axes[1].tick_params(labelleft=False)
    return _save(fig, out_dir, "ledger", "The budget ledger: FLOPs (left) and wall-clock "
                 "seconds (right) charged by each stage, with its share of the total.",
                 "bar charts of FLOPs and seconds per stage")


# -- (h) compression ---------------------------------------------------------------------------
def plot_compression(art: RunArtifacts, out_dir: Path) -> Plot | None:
    """Size against quality of each compressed model, with the Pareto front."""
    pts = []
    for r in art.compressed:
        size = r.get("size_bytes") or r.get("bytes") or 0.0
        q = next((r[k] for k in ("bpb", "loss", "val_loss") if isinstance(r.get(k), float)),
                 None)
        if q is not None:
            pts.append((float(size), float(q), str(r["name"])))
    if not pts:
        return None
    pts.sort()
    fig, ax = _figure()
    ax.plot([p[0] for p in pts], [p[1] for p in pts], "o", color=FAINT)
    front, best = [], math.inf
    for s, q, _ in pts:
        if q < best:
            front.append((s, q))
            best = q
    ax.step(*zip(*front, strict=True), where="post", color=BOLD, label="Pareto front")
    for s, q, n in pts:
        ax.annotate(n, (s, q), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xscale("log")
    _finish(ax, xlabel="model size (bytes)", ylabel="quality (lower is better)")
    return _save(fig, out_dir, "compression", "Compressed models: size against quality, the "
                 "Pareto front in blue.", "model size against quality with the Pareto front")


def make_plots(art: RunArtifacts, out_dir: Path | None = None,
               studies: list[StudyTrials] | None = None) -> dict[str, Plot | None]:
    """Every figure the run can have (None for those whose stage has not run)."""
    # safe_join: a plots/ that is a link out of the run is refused, never written through
    out = Path(out_dir) if out_dir is not None else safe_join(art.root, "plots")
    studies = read_studies(art) if studies is None else studies
    return {
        "ledger": plot_ledger(art, out),
        "search_history": plot_search_history(art, out, studies),
        "importances": plot_importances(art, out, studies),
        "isoflop": plot_isoflop(art, out),
        "scaling_fit": plot_scaling_fit(art, out),
        "training_curves": plot_training_curves(art, out),
        "predicted_vs_achieved": plot_predicted_vs_achieved(art, out),
        "compression": plot_compression(art, out),
    }
