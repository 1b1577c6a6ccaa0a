"""Verdicts on a run: is the fit sound, the search enough, the interval right, the budget held?

A report that only draws the fit says nothing when the fit is nonsense: a new user's report
showed E = 1.9e-09, A up to 1e43, a plan of 108 parameters and an importance chart from 2
trials, all without a word. Each verdict here is one topic, a severity (``ok``, ``warning``,
``problem``) and one plain sentence with the numbers, computed from the run's artifacts as
plain JSON dicts (laws.json, search.json, plan.json, summary.json, the final run's manifest
entry and metrics, eval.json), so the rules are testable without training anything. The
report shows them first; ``summary.json`` carries them (``verdicts``).

Example::

    for v in judge(laws=laws_doc, search=search_doc, plan=plan_doc):
        print(v.severity, v.topic, v.text)
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from lmalloc.report.words import LOSS_UNIT, count_text, vs_interval
from lmalloc.scaling.degeneracy import diagnose, is_degenerate

OK, WARNING, PROBLEM = "ok", "warning", "problem"
SEVERITIES = (PROBLEM, WARNING, OK)  # worst first: the order the report shows them in

MIN_IMPORTANCE_TRIALS = 20
"""Completed trials below which the report draws no hyperparameter importances. Measured
(``bench/importance_min_trials.py``, BENCHMARKS.md): on a synthetic lr/warmup objective whose
lr importance is 0.97 from 400 trials, fANOVA from 10 random trials misses it by 0.28 (median)
and ranks lr first in 73 % of studies; from 20, by 0.08 and 97 %."""
UNIDENTIFIED_SPREAD = 1e3
"""A coefficient whose bootstrap interval spans more than this factor is not identified."""
FLOOR_SLACK = 1.1
"""A planned N within this factor of the ladder's smallest size is "at the floor" (the
shape grid does not hit a size exactly)."""
SHARE_SLACK = 0.05
"""A stage over its share by more than this fraction is said to have overspent."""
SHORT_RUN = 0.95
"""A final run that trained less than this fraction of its planned tokens stopped short."""
LONG_RUN = 0.05
"""A final run that trained more than 1 + this of its planned tokens (``fill_time``) is said
to have."""
OVERFIT_GAP = 0.5
"""Validation loss above the final training loss by more than this many nats: memorising."""


@dataclass(frozen=True)
class Verdict:
    """One finding: what it is about, how bad, and one sentence with the numbers."""

    topic: str
    severity: str
    text: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def judge(*, laws: dict[str, Any] | None = None, search: dict[str, Any] | None = None,
          plan: dict[str, Any] | None = None, summary: dict[str, Any] | None = None,
          train: dict[str, Any] | None = None, evaluation: dict[str, Any] | None = None,
          final_metrics: Sequence[dict[str, Any]] = ()) -> list[Verdict]:
    """Every verdict the artifacts allow, worst first; a stage that has not run gives none.

    Args:
        laws, search, plan, summary, evaluation: laws.json, search.json, plan.json,
            summary.json and eval.json as plain JSON (None where not written yet).
        train: the final run's entry in the manifest (``status``, ``tokens``, ``val_loss``).
        final_metrics: the final run's ``metrics.jsonl`` rows (train and eval).
    """
    calls: list[tuple[str, Callable[[], Verdict | None]]] = []
    if laws is not None:
        calls += [("fit", lambda: fit_verdict(laws)),
                  ("backtest", lambda: backtest_verdict(laws.get("backtest"),
                                                        laws.get("extrapolation")))]
        if plan is not None:
            calls.append(("plan", lambda: floor_verdict(laws, plan)))
    if search is not None:
        calls.append(("search", lambda: search_verdict(search)))
    if plan is not None and train is not None:
        calls.append(("interval", lambda: interval_verdict(plan, train)))
    if summary is not None:
        calls += [("budget", lambda: budget_verdict(summary)),
                  ("final run", lambda: final_share_verdict(summary, plan, train))]
    if plan is not None:
        calls.append(("data", lambda: data_verdict(plan, train, final_metrics)))
    if train is not None and evaluation is not None:
        calls.append(("losses", lambda: losses_verdict(train, evaluation, final_metrics)))
    found = [v for v in map(_guarded, calls) if v is not None]
    return sorted(found, key=lambda v: SEVERITIES.index(v.severity))


def _guarded(call: tuple[str, Callable[[], Verdict | None]]) -> Verdict | None:
    """One verdict; an artifact shaped otherwise than expected (written by another version,
    edited by hand) is said as a warning instead of failing the report and the other verdicts."""
    topic, fn = call
    try:
        return fn()
    except (KeyError, TypeError, ValueError, AttributeError, ZeroDivisionError) as e:
        return Verdict(topic, WARNING, f"Could not be judged from the run's artifacts "
                       f"({type(e).__name__}: {e}).")


# -- the fit -----------------------------------------------------------------------------------
def _params(laws: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in (laws.get("parametric") or {}).get("params", {}).items()}


def _problems(items: Sequence[dict[str, str]], brief: bool = False) -> str:
    """The problems' messages; ``brief``: only what was found, not what it means."""
    return "; ".join(p["message"].split(": ")[0] if brief else p["message"] for p in items)


def fit_verdict(laws: dict[str, Any]) -> Verdict | None:
    """Degenerate (which problems, whether the remedy fixed it, the prior and its width), an
    exponent outside the sane range, E ≈ 0, or a coefficient its bootstrap cannot pin down."""
    fit = laws.get("parametric") or {}
    p = _params(laws)
    if not {"E", "A", "B", "alpha", "beta"} <= set(p):  # not an L(N, D) fit (e.g. L(C))
        return None
    deg = laws.get("degeneracy") or {}
    after = _final_problems(laws)
    law = (f"alpha = {p['alpha']:.3g}, beta = {p['beta']:.3g}, E = {p['E']:.3g}, "
           f"A = {p['A']:.3g}, B = {p['B']:.3g} from {fit.get('n_points', '?')} ladder runs")
    spread = _unidentified(fit)
    if deg.get("degenerate"):
        prior = _prior_text(deg.get("prior"))
        if still_degenerate(laws):
            still = f": {_problems(after)}" if after else ""
            return Verdict("fit", PROBLEM, (
                f"The scaling-law fit is degenerate: "
                f"{_problems(deg.get('problems', []), brief=True)}. "
                f"The remedy{prior} did not fix it{still}. The law ({law}) cannot be trusted "
                "to choose N or to predict the loss; give a larger budget."))
        return Verdict("fit", WARNING, (
            f"The plain fit was degenerate ({_problems(deg.get('problems', []))}); the "
            f"remedy{prior} fixed it ({law}), so the exponents rest partly on the prior, "
            "not on the ladder alone" + (f"; still: {_problems(after)}" if after else "")
            + spread + "."))
    if is_degenerate(after):  # a laws.json written without the remedy
        return Verdict("fit", PROBLEM, f"The scaling-law fit is degenerate and was not "
                       f"remedied: {_problems(after)} ({law}).")
    if after or spread:
        what = "; ".join(filter(None, (_problems(after), spread.removeprefix("; "))))
        return Verdict("fit", WARNING, f"The scaling-law fit resolves both exponents, but "
                       f"{what} ({law}).")
    return Verdict("fit", OK, f"The scaling-law fit is sound: {law}, exponents inside the "
                   "sane range and every term resolved.")


def _final_problems(laws: dict[str, Any]) -> list[dict[str, str]]:
    """What is wrong with the law the run uses: after the remedy if one was applied; for a
    laws.json without the degeneracy report, :func:`diagnose` on the law itself."""
    deg = laws.get("degeneracy") or {}
    after = deg.get("problems_after") if deg.get("remedy") else deg.get("problems")
    if after is not None:
        return list(after)
    fit = laws.get("parametric") or {}
    rng = {k: tuple(v) for k, v in (fit.get("input_range") or {}).items()}
    return diagnose(_params(laws), rng) if {"N", "D"} <= set(rng) else []


def still_degenerate(laws: dict[str, Any]) -> bool:
    """Whether the law the run plans with is degenerate (the remedy, if any, did not fix it)."""
    deg = laws.get("degeneracy") or {}
    if deg.get("degenerate") and deg.get("remedy") is None:
        return True
    return bool(deg.get("degenerate_after", is_degenerate(_final_problems(laws))))


def _prior_text(prior: dict[str, Any] | None) -> str:
    if not prior:
        return " (none was applied)"
    mean = ", ".join(f"{k} {v:g}" for k, v in prior.get("mean", {}).items())
    return (f", a MAP fit with a Gaussian prior on the exponents (mean {mean}, width sd "
            f"{prior.get('sd')}; {prior.get('source', 'unnamed source')}),")


def _unidentified(fit: dict[str, Any]) -> str:
    """"; A's 90 % interval spans 6.2e+03–1e+43: not identified" for each such coefficient."""
    out = []
    for name in ("E", "A", "B"):
        iv = (fit.get("intervals") or {}).get(name) or {}
        lo, hi = iv.get("low"), iv.get("high")
        if lo is None or hi is None or not (math.isfinite(lo) and math.isfinite(hi)):
            continue
        if hi > UNIDENTIFIED_SPREAD * max(lo, 1e-300):
            out.append(f"{name}'s {iv.get('level', 0.9):.0%} interval spans {lo:.2g} to "
                       f"{hi:.2g}: not identified by the ladder")
    return "".join(f"; {s}" for s in out)


def floor_verdict(laws: dict[str, Any], plan: dict[str, Any]) -> Verdict | None:
    """A plan at the ladder's smallest size: preferred by the law, clamped there by a law that
    would go smaller, or an artefact of a degenerate fit."""
    rng = ((laws.get("parametric") or {}).get("input_range") or {}).get("N")
    N = float(plan.get("predicted", {}).get("N", 0.0))
    if not rng or N <= 0:
        return None
    lo, hi = float(rng[0]), float(rng[1])
    if N > FLOOR_SLACK * lo:
        where = (f"inside the ladder's sizes ({lo:,.0f} to {hi:,.0f})" if N <= hi else
                 f"{N / hi:.1f}× the ladder's largest size ({hi:,.0f}): an extrapolation")
        return Verdict("plan", OK, f"The planned model (N = {N:,.0f}) lies {where}.")
    head = f"The planned model (N = {N:,.0f}) is the ladder's smallest size ({lo:,.0f})"
    if still_degenerate(laws):
        source = ((plan.get("allocation") or {}).get("size_source") or {}).get("source")
        if source == "data: smallest":
            return Verdict("plan", WARNING, (
                f"{head}: the fit does not resolve N, but at every IsoFLOP level of the "
                "ladder the smallest size had the lowest loss, so the measurements, not an "
                "exponent at its bound, put the plan there; a smaller model may be better "
                "still (a ladder that starts lower would tell)."))
        return Verdict("plan", PROBLEM, f"{head}: an artefact of the degenerate fit, not a "
                       "size the law prefers.")
    half = next((r for r in (plan.get("allocation") or {}).get("sensitivity") or []
                 if r.get("N_factor") == 0.5), None)
    if half is None:
        return Verdict("plan", WARNING, f"{head}; the plan has no sensitivity row to say "
                       "whether the law would go smaller.")
    delta = float(half["delta_loss"])
    if delta < 0:
        return Verdict("plan", WARNING, (
            f"{head}, where the plan stops because the law says nothing below its runs: half "
            f"the size predicts {-delta:.3g} {LOSS_UNIT} lower loss, so the law would go "
            "smaller; a ladder that starts lower would tell."))
    return Verdict("plan", OK, f"{head}, and the law prefers it: half the size predicts "
                   f"{delta:.3g} {LOSS_UNIT} higher loss.")


def backtest_verdict(bt: dict[str, Any] | None, ex: dict[str, Any] | None = None,
                     ) -> Verdict | None:
    """The fit without the ladder's largest size, predicting it: the error and inside count;
    and its check in compute (``ex``: without each size's longest training), whose error the
    plan's interval carries."""
    if bt is None:
        return None
    if not bt.get("available"):
        return Verdict("backtest", WARNING,
                       f"No backtest of the law: {bt.get('reason', 'not available')}.")
    inside, of = int(bt["inside"]), int(bt["of"])
    text = (f"Fitted without the ladder's largest size (N = {bt['held_out_N']:,.0f}), the law "
            f"predicts its {of} points with mean error {100 * bt['mean_abs_error']:.2g} %; "
            f"{inside} of {of} inside their intervals.")
    if ex and ex.get("available"):
        way = "pessimistic" if ex["mean_error"] > 0 else "optimistic"
        text += (f" Fitted without each size's longest training, it predicts those "
                 f"{ex['factor']:.2g}× further with mean error {100 * ex['mean_error']:+.2g} % "
                 f"({way}; rms {100 * ex['rms_log_error']:.2g} %); the plan's interval grows "
                 "this error with its own extrapolation.")
    return Verdict("backtest", OK if inside == of else WARNING, text)


# -- the search --------------------------------------------------------------------------------
def trial_counts(search: dict[str, Any]) -> Counter[str]:
    """Trials by state (``complete``, ``pruned``, ``fail``...), from the trial list when
    search.json has one, else from its ``counts``."""
    trials = search.get("trials")
    if trials:
        return Counter(str(t.get("state", "?")) for t in trials)
    return Counter({str(k): int(v) for k, v in (search.get("counts") or {}).items()})


def search_verdict(search: dict[str, Any]) -> Verdict:
    """How many trials of those started completed; too few for importances is a warning."""
    counts = trial_counts(search)
    started, done = sum(counts.values()), counts.get("complete", 0)
    rest = ", ".join(f"{n} {state}" for state, n in sorted(counts.items())
                     if state != "complete")
    head = f"{done} trial{'s' if done != 1 else ''} of {started} completed" + (
        f" ({rest})" if rest else "")
    if done == 0:
        return Verdict("search", PROBLEM, f"{head}: the hyperparameters rest on no finished "
                       "trial.")
    if done < MIN_IMPORTANCE_TRIALS:
        return Verdict("search", WARNING, (
            f"{head}: the chosen hyperparameters rest on few finished trials, and "
            f"hyperparameter importances need at least {MIN_IMPORTANCE_TRIALS}, so the "
            "report does not draw them."))
    return Verdict("search", OK, f"{head}.")


# -- predicted against achieved ----------------------------------------------------------------
def _trained_share(plan: dict[str, Any], train: dict[str, Any] | None) -> float | None:
    """Tokens the final run trained over those planned (None when unknown)."""
    planned = float(plan.get("predicted", {}).get("D") or 0.0)
    got = (train or {}).get("tokens")
    return float(got) / planned if got is not None and planned > 0 else None


def interval_verdict(plan: dict[str, Any], train: dict[str, Any]) -> Verdict | None:
    """Achieved own-validation loss inside or outside the predicted interval, and which way."""
    pred, got = plan.get("predicted", {}).get("loss"), train.get("val_loss")
    if not pred or got is None or not math.isfinite(float(got)) or None in (
            pred.get("low"), pred.get("high")):
        return None
    got = float(got)
    where = vs_interval(got, pred.get("low"), pred.get("high"))
    text = (f"The final run's own validation loss {got:.3f} {LOSS_UNIT} is {where} "
            f"(predicted {pred['value']:.3f}, {pred.get('level', 0.9):.0%} interval "
            f"{pred['low']:.3f} to {pred['high']:.3f})")
    parts = (plan["predicted"].get("interval") or {}).get("parts")
    text += ("; its width: " + ", ".join(f"{n} -{v['below']:.2g}/+{v['above']:.2g}"
                                         for n, v in parts.items()) if parts else
             "; it carries the law's bootstrap only (no seed or hyperparameter noise measured)")
    short = _trained_share(plan, train)
    severity = OK if where == "inside the interval" else PROBLEM
    if short is not None and short < SHORT_RUN:
        text += (f"; but the run trained only {short:.0%} of the planned tokens, so it is "
                 "not the run the prediction is for")
        severity = PROBLEM if severity == PROBLEM else WARNING
    elif short is not None and short > 1 + LONG_RUN:
        text += (f"; the run trained {short:.0%} of the planned tokens (it filled its time "
                 "limit), so its loss is expected a little below the prediction for the plan")
    return Verdict("interval", severity, text + ".")


# -- the budget --------------------------------------------------------------------------------
def _amount(v: float, unit: str) -> str:
    return f"{v:.3g} FLOPs" if unit == "flops" else f"{v:.1f} s"


def budget_verdict(summary: dict[str, Any]) -> Verdict | None:
    """Exploration stages over their shares (summary.json ``shares``), and dropped sizes."""
    shares = summary.get("shares") or {}
    unit = (summary.get("budget") or {}).get("unit", "seconds")
    explore = {k: shares[k] for k in ("search", "ladder") if k in shares}
    if not explore:
        return None
    over = [f"{k} spent {_amount(v['spent'], unit)} of its {_amount(v['share'], unit)} share "
            f"({v['spent'] / v['share'] - 1:+.0%})" for k, v in explore.items()
            if v["share"] > 0 and v["spent"] > (1 + SHARE_SLACK) * v["share"]
            or v["share"] <= 0 < v["spent"]]
    dropped = summary.get("ladder_dropped") or []
    tail = (f"; the ladder dropped {', '.join(dropped)} to hold its share" if dropped else "")
    if over:
        return Verdict("budget", WARNING, "Over budget: " + "; ".join(over) + tail + ".")
    held = ", ".join(f"{k} {_amount(v['spent'], unit)} of {_amount(v['share'], unit)}"
                     for k, v in explore.items())
    return Verdict("budget", WARNING if dropped else OK,
                   f"Exploration held its shares ({held}){tail}.")


def final_share_verdict(summary: dict[str, Any], plan: dict[str, Any] | None,
                        train: dict[str, Any] | None) -> Verdict | None:
    """Whether the final run got its promised share (``final_share``) and used it."""
    note = summary.get("final_share")
    unit = (summary.get("budget") or {}).get("unit", "seconds")
    if note:
        severity = PROBLEM if note.get("over_total") else WARNING
        return Verdict("final run", severity, (
            f"The final run got {_amount(note['given'], unit)} of the "
            f"{_amount(note['promised'], unit)} promised: {note['why']}."))
    share = (summary.get("shares") or {}).get("train")
    if share is None:
        return None
    text = f"The final run got its promised share ({_amount(share['share'], unit)})"
    got = _trained_share(plan, train) if plan is not None else None
    if got is None or got >= SHORT_RUN:
        return Verdict("final run", OK, text + ".")
    status = (train or {}).get("status", "?")
    why = ("it trained slower than the time model predicted" if status == "time_limit"
           else str((train or {}).get("reason") or status))
    return Verdict("final run", WARNING, f"{text} but trained only {got:.0%} of its planned "
                   f"tokens ({status}): {why}.")


# -- the data ----------------------------------------------------------------------------------
def final_train_loss(rows: Sequence[dict[str, Any]], last: int = 20) -> float | None:
    """Mean training loss of the final run's last ``last`` logged steps (one step is noisy)."""
    losses = [float(r["loss"]) for r in rows if r.get("kind") == "train"
              and isinstance(r.get("loss"), int | float) and math.isfinite(r["loss"])]
    return sum(losses[-last:]) / len(losses[-last:]) if losses else None


def data_verdict(plan: dict[str, Any], train: dict[str, Any] | None,
                 final_metrics: Sequence[dict[str, Any]]) -> Verdict | None:
    """Data repeated (epochs > 1, priced by Muennighoff et al. 2023) and, once trained, a
    validation loss far above the training loss (memorising the repeated data)."""
    data = plan.get("data") or {}
    epochs = data.get("epochs")
    if epochs is None:
        return None
    unique, trained = float(data["unique_tokens"]), (train or {}).get("tokens")
    passes = float(trained) / unique if trained is not None and unique > 0 else float(epochs)
    text = (f"The plan repeats the data: {epochs:.2g} passes over {count_text(unique)} unique "
            f"training tokens, priced as {count_text(data['effective_tokens'])} effective of "
            f"{count_text(data['tokens'])} tokens (Muennighoff et al. 2023)" if epochs > 1 else
            f"The plan sees each training token at most once ({count_text(data['tokens'])} of "
            f"{count_text(unique)} unique tokens)")
    if trained is not None and abs(float(trained) / float(data["tokens"]) - 1) > 1 - SHORT_RUN:
        text += f"; the run trained {count_text(float(trained))} tokens, {passes:.2g} passes"
    if passes > 4:
        text += "; beyond about 4 passes repeated data is worth clearly less than fresh"
    severity = WARNING if passes > 1 else OK
    tl, vl = final_train_loss(final_metrics), (train or {}).get("val_loss")
    if tl is not None and vl is not None and float(vl) - tl > OVERFIT_GAP:
        text += (f"; its validation loss {float(vl):.3f} is {float(vl) - tl:.2f} {LOSS_UNIT} "
                 f"above its training loss {tl:.3f}: it memorises the training data")
        severity = PROBLEM
    return Verdict("data", severity, text + ".")


# -- the two validation losses -----------------------------------------------------------------
def losses_verdict(train: dict[str, Any], evaluation: dict[str, Any],
                   final_metrics: Sequence[dict[str, Any]]) -> Verdict | None:
    """Names the two losses apart: the final run's own validation (the first tokens of the
    val split, what the plan predicts) and ``lmalloc eval``'s whole val split."""
    whole = ((evaluation.get("perplexity") or {}).get("val") or {})
    own = train.get("val_loss")
    if own is None or whole.get("loss") is None:
        return None
    evals = [r for r in final_metrics if r.get("kind") == "eval" and r.get("val_tokens")]
    n_own = f"its first {int(evals[-1]['val_tokens']):,} tokens" if evals else "a sample"
    n_whole = f"all {int(whole['tokens']):,} tokens" if whole.get("tokens") else "all of it"
    own, gap = float(own), float(whole["loss"]) - float(own)
    return Verdict("losses", OK, (
        f"Two validation losses, two samples of the val split: {own:.3f} {LOSS_UNIT} is the "
        f"final run's own validation ({n_own}; the loss the plan predicts), "
        f"{float(whole['loss']):.3f} is `lmalloc eval` on the whole split ({n_whole}); "
        f"they differ by {gap:+.3f}: the same model, scored on different text."))
