"""``lmalloc run``: prepare → profile → split → search → ladder → fit → plan → train → eval →
summary → report, under one budget, in one run directory; with a deployment limit
(``deploy=2MB`` in the budget) also precision (after fit) and compress (after eval).

Every stage writes its artifact atomically and records itself in the manifest; a rerun skips
finished stages and resumes the interrupted one (the search from its study, the ladder run by
run, the final run from its checkpoint), so a run killed at any point continues where it was.
The options of a run are stored in the manifest: resuming with different ones is an error
rather than a silent mix of two runs.

Budget accounting: everything is charged to the ledger (``RunDir.charge``); each stage gets
what the split assigned minus what earlier stages overspent, and the final run gets whatever
is left, so the whole run stays inside the budget (up to the time model's error, which the
final run's hard time limit bounds).
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lmalloc.errors import UserError
from lmalloc.plan.budget_bar import BudgetBar
from lmalloc.plan.explore import LADDER_CSV, Recipe, read_ladder
from lmalloc.rundir import (
    RunDir,
    atomic_write_json,
    read_json,
    refused_writes,
    remove_stale_temps,
)

DEFAULT_BUDGET = "15m"
LADDER_FLOOR_HALVINGS = 2
"""When the budget cannot pay for a ladder of ``Recipe.min_params``-sized models (a slow or
busy machine), the split halves that floor up to this many times before giving up."""
STAGES = ("prepare", "profile", "split", "search", "ladder", "fit", "precision", "plan", "train",
          "eval", "compress", "summary", "report")
DEPLOY_STAGES = ("precision", "compress")
"""Run only with a deployment limit (``deploy=`` in the budget): measure what quantizing
costs on the ladder's models before planning, and compress the final model to the limit."""
PROFILE_JSON = "hardware.json"
SPLIT_JSON = "split.json"
SEARCH_JSON = "search.json"
LAWS_JSON = "laws.json"
PLAN_JSON = "plan.json"
COMPRESSED_RESULT = "compressed/result.json"
SUMMARY_JSON = "summary.json"


@dataclass(frozen=True)
class RunOptions:
    """What ``lmalloc run`` was asked for (stored in the manifest; a resume must match)."""

    data: tuple[str, ...] = ()
    budget: str = DEFAULT_BUDGET
    hardware: str | None = None
    seed: int = 0
    vocab_size: int = 4096
    bootstrap: int = 200  # resamples of the scaling fit (its intervals)
    recipe: Recipe = field(default_factory=Recipe)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["data"] = list(self.data)
        return d


class Pipeline:
    """One run of the whole pipeline; ``Pipeline(run_dir, options).run()``."""

    def __init__(self, run_dir: str | Path, options: RunOptions,
                 say: Callable[[str], None] = lambda _m: None, progress: bool = False,
                 nproc: int = 1, parallel: str = "auto") -> None:
        # how the final run is laid out (not a run option: a resume may use other values)
        self.nproc, self.parallel = nproc, parallel
        self.run_dir = RunDir(run_dir)
        self.opt = options
        self.recipe = Recipe(**{**asdict(options.recipe), "seed": options.seed})
        self.say, self.progress = say, progress
        self.t0 = time.perf_counter()

    # -- bookkeeping --------------------------------------------------------------------------
    def _check_options(self) -> None:
        m = self.run_dir.manifest()
        saved = m.get("run_options")
        if saved is None:
            self.run_dir.update_manifest(run_options=self.opt.to_dict())
        elif saved != self.opt.to_dict():
            diff = [k for k in saved if saved.get(k) != self.opt.to_dict().get(k)]
            raise UserError(
                f"{self.run_dir.root} holds a run with other options ({', '.join(diff)}); "
                "resume it with the same options or choose another --run directory")

    def _done(self, stage: str) -> bool:
        return stage in self.run_dir.manifest().get("stages", {})

    def spent(self) -> float:
        """Budget spent so far in the budget's unit."""
        return float(self.run_dir.spent()[self.unit])

    def left(self) -> float:
        return self.total - self.spent()

    # -- the run ------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """Run (or resume) every stage. One ``lmalloc run`` per run directory at a time (a
        lock); what killed writes left behind is removed first; a write the disk refuses
        (full, read-only) is a :class:`UserError` naming the file."""
        with self._run_lock(), refused_writes(self.run_dir.root):
            remove_stale_temps(self.run_dir.root)
            return self._run()

    @contextlib.contextmanager
    def _run_lock(self) -> Iterator[None]:
        path = self.run_dir.root / ".run.lock"
        with refused_writes(path):
            path.parent.mkdir(parents=True, exist_ok=True)
            f = open(path, "a+")  # noqa: SIM115 - held for the whole run
        with f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise UserError(f"another `lmalloc run` is running on {self.run_dir.root} "
                                f"(lock {path}); wait for it to finish") from None
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def _run(self) -> dict[str, Any]:
        self._check_options()
        self._prepare()
        self._profile()
        self._budget()
        for stage in STAGES[2:]:
            if stage in DEPLOY_STAGES and self.deploy is None:
                continue
            if not self._done(stage):
                self.say(f"[bold]{stage}[/]")
                t = time.perf_counter()
                getattr(self, f"_{stage}")()
                if stage not in ("search", "ladder", "train"):  # those charge themselves
                    self.run_dir.charge(stage, 0.0, time.perf_counter() - t)
            else:
                self.say(f"{stage}: done earlier, skipped")
        result: dict[str, Any] = read_json(self.run_dir.path(SUMMARY_JSON), "run summary")
        return result

    def _prepare(self) -> None:
        from lmalloc.data.config import PrepareConfig
        from lmalloc.data.pipeline import prepare_run

        if self._done("prepare"):
            return
        self.say("[bold]prepare[/]")
        prepare_run(self.run_dir.root, list(self.opt.data) or None,
                    PrepareConfig(vocab_size=self.opt.vocab_size), progress=self.progress)

    def _profile(self) -> None:
        from lmalloc.cost.hardware import get_hardware

        path = self.run_dir.path(PROFILE_JSON)
        if self.opt.hardware is not None:
            self.hw = get_hardware(self.opt.hardware)
            return
        if not path.exists():
            import torch

            from lmalloc.cost.profile import profile_machine

            self.say("[bold]profile[/] (measuring this machine)")
            t = time.perf_counter()
            device = "cuda" if torch.cuda.is_available() else "cpu"
            prof = profile_machine("local", device=device)
            prof.save(path)
            self.run_dir.charge("profile", 0.0, time.perf_counter() - t)
            self.run_dir.record_stage("profile", out=PROFILE_JSON)
        self.hw = get_hardware(str(path))

    def _budget(self) -> None:
        from lmalloc.cost.budget import parse_budget
        from lmalloc.data.shards import TokenData

        b = parse_budget(self.opt.budget, hardware=self.hw)
        if b.flops_given is not None:
            self.unit, self.total = "flops", float(b.flops_given)
        elif b.seconds is not None:
            self.unit, self.total = "seconds", float(b.seconds)
        else:
            raise UserError(f"the budget {self.opt.budget!r} gives neither time nor compute: "
                            "add one, e.g. '15m' or '1e15flops'")
        self.memory, self.deploy = b.memory_bytes, b.deploy_bytes
        data = TokenData(self.run_dir.data)
        self.vocab = data.vocab_size
        val = data.split("val")
        self.tokens_per_byte = val.num_tokens / max(1, val.num_bytes)

    def _cost(self, evals: int = 1, calibrated: bool = True) -> Callable[[Any, float], float]:
        from lmalloc.plan.planner import cost_function

        scale = self.time_scale() if calibrated else 1.0
        return cost_function(self.unit, self.hw, self.recipe, evals, time_scale=scale)

    def time_scale(self) -> float:
        """Measured over predicted seconds of this run's own trainings so far (search trials
        and ladder runs), clipped to [0.25, 10]; 1 for FLOP budgets or before any training.
        The profile is measured once, quickly, and other load on the machine or per-run
        overheads (model build, evaluation, checkpoints) shift real times: the stages after
        the search plan with the time model corrected by this factor."""
        if self.unit != "seconds":
            return 1.0
        from lmalloc.model.config import GPTConfig

        predicted = measured = 0.0
        search = self.run_dir.path(SEARCH_JSON)
        if search.exists():
            doc = read_json(search, "search summary")
            proxy = GPTConfig.from_dict(doc["proxy"])
            cost = self._cost(self.recipe.evals_per_run, calibrated=False)
            for t in doc["trials"]:
                if t.get("tokens") and t.get("seconds"):
                    predicted += cost(proxy, float(t["tokens"]))
                    measured += float(t["seconds"])
        for row in self.run_dir.manifest().get("ledger", []):
            if row.get("predicted"):
                predicted += float(row["predicted"])
                measured += float(row["seconds"])
        return min(10.0, max(0.25, measured / predicted)) if predicted > 0 else 1.0

    # -- stages -------------------------------------------------------------------------------
    def _split(self) -> None:
        from lmalloc.plan.planner import cost_function, tokens_within
        from lmalloc.plan.split import choose_split_lowering_floor

        cost = self._cost()
        flops_cost = cost_function("flops", self.hw, self.recipe)

        def final_flops(amount: float) -> float:
            if self.unit == "flops":
                return amount
            from lmalloc.model.shape import shape_for

            # seconds → FLOPs at a representative 1e6-parameter shape: only the split's
            # comparison of fractions needs it; the plan stage allocates per shape
            cfg = shape_for(1e6, vocab_size=self.vocab, seq_len=self.recipe.seq_len)
            return flops_cost(cfg, tokens_within(cfg, amount, cost, self.recipe.batch_tokens))

        split, floor = choose_split_lowering_floor(
            self.left(), cost, final_flops, self.vocab, self.recipe.seq_len,
            self.recipe.batch_tokens, min_params=self.recipe.min_params,
            halvings=LADDER_FLOOR_HALVINGS, cooldown_frac=self.recipe.cooldown_frac)
        if floor < self.recipe.min_params:
            self.say(f"[yellow]warning:[/] on this machine the budget leaves no room for a "
                     f"ladder of models of >= {self.recipe.min_params:.3g} parameters; the "
                     f"ladder starts at {floor:.3g} instead (a larger budget gives a better fit)")
        doc = {**split.to_dict(), "unit": self.unit, "total": self.total,
               "spent_before": self.spent(), "min_params": floor}
        atomic_write_json(self.run_dir.path(SPLIT_JSON), doc)
        self.run_dir.update_manifest(budget_split={
            "unit": self.unit, "total": self.total, "explore_fraction": split.explore_fraction,
            "search": split.search_budget, "ladder": split.ladder_budget,
            "final": split.final_budget})
        self.run_dir.record_stage("split", out=SPLIT_JSON)

    def _split_doc(self) -> dict[str, Any]:
        doc: dict[str, Any] = read_json(self.run_dir.path(SPLIT_JSON), "budget split")
        return doc

    def _proxy(self) -> dict[str, Any]:
        from lmalloc.plan.ladder import Ladder

        ladder = Ladder.from_dict(self._split_doc()["ladder"])
        smallest = min(ladder.runs, key=lambda r: r.N)
        return dict(smallest.model)

    def _search(self) -> None:
        from lmalloc.model.config import GPTConfig
        from lmalloc.plan.explore import run_search_stage
        from lmalloc.plan.planner import tokens_within

        split = self._split_doc()
        budget = float(split["search_budget"])
        proxy = self._proxy()
        proxy["mup_base_width"] = proxy["d_model"]
        cfg = GPTConfig.from_dict(proxy)
        trial_tokens = max(4 * self.recipe.batch_tokens, tokens_within(
            cfg, budget / 8, self._cost(self.recipe.evals_per_run), self.recipe.batch_tokens))
        with BudgetBar(self.run_dir, "search", budget, self.unit, self.progress) as bar:
            summary = run_search_stage(
                self.run_dir, proxy, self.recipe, budget=budget, unit=self.unit,
                trial_tokens=trial_tokens, hardware=str(self.run_dir.path(PROFILE_JSON))
                if self.opt.hardware is None else self.opt.hardware, on_poll=bar.update)
        summary["proxy"] = proxy
        summary["trial_tokens"] = trial_tokens
        atomic_write_json(self.run_dir.path(SEARCH_JSON), summary)
        self.run_dir.record_stage("search", out=SEARCH_JSON, best=summary["best_params"])

    def _ladder(self) -> None:
        from lmalloc.plan.explore import run_ladder_stage
        from lmalloc.plan.ladder import Ladder, LadderBudgetError, design_ladder

        split = self._split_doc()
        best = read_json(self.run_dir.path(SEARCH_JSON), "search summary")
        ladder_path = self.run_dir.path("ladder.json")
        budget = float(split["search_budget"]) + float(split["ladder_budget"]) - float(
            self.run_dir.spent("search")[self.unit])  # what the search left of exploration
        if ladder_path.exists():  # resuming: the design is fixed once the first run started
            ladder = Ladder.from_dict(read_json(ladder_path, "ladder design"))
        else:  # re-design with what the search left of the exploration budget
            planned = Ladder.from_dict(split["ladder"])
            try:
                ladder = design_ladder(budget, self._cost(), planned.target_flops, self.vocab,
                                       self.recipe.seq_len, self.recipe.batch_tokens,
                                       min_params=float(split.get("min_params",
                                                                  self.recipe.min_params)),
                                       cooldown_frac=self.recipe.cooldown_frac)
            except LadderBudgetError as e:  # slower than profiled: keep the split's design
                self.say(f"[yellow]warning:[/] {e}; keeping the split's ladder design")
                ladder = planned
            atomic_write_json(ladder_path, ladder.to_dict())
        params = best["best_params"]
        with BudgetBar(self.run_dir, "ladder", budget, self.unit, self.progress) as bar:
            rows = run_ladder_stage(self.run_dir, ladder, self.recipe, lr=float(params["lr"]),
                                    warmup=float(params.get("warmup", self.recipe.warmup)),
                                    mup_base_width=int(best["proxy"]["d_model"]),
                                    cost=self._cost(calibrated=False), budget=budget,
                                    unit=self.unit, on_size=bar.update)
        self.run_dir.record_stage("ladder", out=LADDER_CSV, points=len(rows),
                                  time_scale=self.time_scale())

    def _fit(self) -> None:
        import numpy as np

        from lmalloc.scaling import fit_parametric, save_laws
        from lmalloc.scaling.table import read_runs

        runs = read_runs(self.run_dir.path(LADDER_CSV))
        ok = np.isfinite(runs.loss)
        fit = fit_parametric(runs.N[ok], runs.D[ok], runs.loss[ok], bootstrap=self.opt.bootstrap,
                             param_convention="non_embedding", seed=self.opt.seed)
        warns = fit_warnings(fit.params)
        for w in warns:
            self.say(f"[yellow]warning:[/] {w}")
        save_laws(self.run_dir.path(LAWS_JSON), {"parametric": fit, "warnings": warns})
        self.run_dir.record_artifact(LAWS_JSON)
        self.run_dir.record_stage("fit", out=LAWS_JSON, points=int(ok.sum()),
                                  params=fit.params, warnings=warns)

    def _precision(self) -> None:
        from lmalloc.plan.precision import PRECISION_JSON, run_precision_stage

        law = run_precision_stage(self.run_dir, read_ladder(self.run_dir))
        self.run_dir.record_artifact(PRECISION_JSON)
        if law is None:
            self.say("[yellow]warning:[/] the precision law could not be fitted (see "
                     f"{PRECISION_JSON}); the plan ships the model unquantized")
        self.run_dir.record_stage(
            "precision", out=PRECISION_JSON, fitted=law is not None,
            **({} if law is None else {"gamma_d": law.gamma_d, "gamma_n": law.gamma_n,
                                       "gamma_b": law.gamma_b}))

    def _deploy_limit(self) -> Any:
        """The deployment limit and the run's precision law, for the planner (or None)."""
        from lmalloc.plan.allocate import Deploy
        from lmalloc.plan.precision import load_precision_law

        if self.deploy is None:
            return None
        return Deploy(float(self.deploy), load_precision_law(self.run_dir))

    def _plan(self) -> None:
        from lmalloc.plan.planner import make_plan
        from lmalloc.scaling import load_laws

        fit = load_laws(self.run_dir.path(LAWS_JSON))["parametric"]
        best = read_json(self.run_dir.path(SEARCH_JSON), "search summary")
        params = best["best_params"]
        left = self.left() - self._reserve()
        if left <= 0:
            raise UserError(f"the budget {self.opt.budget!r} was spent by exploration "
                            f"({self.spent():.3g} of {self.total:.3g} {self.unit}); "
                            "give a larger budget")
        plan = make_plan(
            fit, amount=left, unit=self.unit, hardware=self.hw, vocab_size=self.vocab,
            recipe=self.recipe, lr=float(params["lr"]),
            warmup=float(params.get("warmup", self.recipe.warmup)),
            mup_base_width=int(best["proxy"]["d_model"]), tokens_per_byte=self.tokens_per_byte,
            memory_bytes=self.memory, source="search at the ladder's smallest width, μP",
            time_scale=self.time_scale(), deploy=self._deploy_limit(),
        )
        atomic_write_json(self.run_dir.path(PLAN_JSON), plan)
        self.run_dir.record_artifact(PLAN_JSON)
        self.run_dir.record_stage("plan", out=PLAN_JSON, N=plan["predicted"]["N"],
                                  D=plan["predicted"]["D"])

    def _reserve(self) -> float:
        """Budget kept back for evaluation and the summary, and for compression when there
        is a deployment limit (time budgets only)."""
        if self.unit == "flops":
            return 0.0
        return min(30.0, 0.03 * self.total) + (0.05 * self.total if self.deploy else 0.0)

    def _train(self) -> None:
        from lmalloc.train.launch import launch_train

        self.run_dir.verify_artifact(PLAN_JSON)
        launch_train(self.run_dir.root, nproc=self.nproc, parallel=self.parallel,
                     memory_bytes=self.memory, progress=self.progress, say=self.say,
                     memory_source="the run's hardware profile or budget mem=")

    def _eval(self) -> None:
        from lmalloc.evaluate.perplexity import evaluate_run

        res = evaluate_run(self.run_dir.root)
        self.run_dir.record_stage("eval", out="eval.json", bpb=res["bpb"])

    def _compress(self) -> None:
        from lmalloc.compress.stage import compress_run

        assert self.deploy is not None
        res = compress_run(self.run_dir.root, budget_bytes=int(self.deploy))
        self.run_dir.record_stage("compress", out=COMPRESSED_RESULT, size_bytes=res["size_bytes"],
                                  loss=res["loss"], bpb=res["bpb"])

    def _deploy_summary(self, plan: dict[str, Any]) -> dict[str, Any] | None:
        """Predicted (law + plan) versus achieved (compressed model) after compression."""
        shipped = plan.get("deploy")
        if self.deploy is None or not shipped or shipped.get("loss") is None:
            return None
        got = read_json(self.run_dir.path(COMPRESSED_RESULT), "compression result")
        pred = shipped["loss"]
        lo, hi = pred.get("low"), pred.get("high")
        return {"limit_bytes": self.deploy, "planned_bits": shipped.get("bits"),
                "predicted": {"loss": pred, "bpb": shipped.get("bpb")},
                "achieved": {"loss": got["loss"], "bpb": got["bpb"],
                             "size_bytes": got["size_bytes"], "formats": got["formats"]},
                "within_interval": lo is not None and hi is not None
                and lo <= got["loss"] <= hi}

    def _summary(self) -> None:
        plan = read_json(self.run_dir.path(PLAN_JSON), "plan")
        m = self.run_dir.manifest()
        final = m["stages"]["train"]
        ev = read_json(self.run_dir.path("eval.json"), "evaluation")["perplexity"]["val"]
        pred = plan["predicted"]
        lo, hi = pred["loss"]["low"], pred["loss"]["high"]
        achieved = final.get("val_loss")
        by_stage: dict[str, dict[str, float]] = {}
        for row in m.get("ledger", []):
            s = by_stage.setdefault(row["stage"], {"flops": 0.0, "seconds": 0.0})
            s["flops"] += row["flops"]
            s["seconds"] += row["seconds"]
        summary = {
            "allocation": {"N": pred["N"], "D": pred["D"], "model": plan["model"],
                           "lr": plan["train"]["lr"],
                           "batch_tokens": plan["train"]["batch_tokens"]},
            "predicted": {"loss": pred["loss"], "bpb": pred["bpb"]},
            "achieved": {"val_loss": achieved, "val_bpb": final.get("val_bpb"),
                         "status": final.get("status"), "eval_bpb": ev["bpb"],
                         "eval_loss": ev["loss"]},
            "within_interval": achieved is not None and math.isfinite(achieved)
            and lo is not None and hi is not None and lo <= achieved <= hi,
            "spent": self.run_dir.spent(), "by_stage": by_stage,
            "time_scale": self.time_scale(),
            "warnings": m["stages"]["fit"].get("warnings", []),
            "budget": {"text": self.opt.budget, "unit": self.unit, "total": self.total},
            "split": m.get("budget_split"),
            "deploy": self._deploy_summary(plan),
        }
        atomic_write_json(self.run_dir.path(SUMMARY_JSON), summary)
        self.run_dir.record_stage("summary", out=SUMMARY_JSON)

    def _report(self) -> None:
        """report.html; a failure here must not lose the run: it is logged in the manifest
        (``report_error``) and warned about, and the next rerun (or ``lmalloc report``) tries
        again."""
        from lmalloc.report.build import build_report

        try:
            path = build_report(self.run_dir.root)
        except Exception as e:  # noqa: BLE001 - the trained model matters more than its report
            self.run_dir.update_manifest(report_error=f"{type(e).__name__}: {e}")
            self.say(f"[yellow]warning:[/] the report could not be built ({type(e).__name__}: "
                     f"{e}); the run is complete: retry with `lmalloc report "
                     f"{self.run_dir.root}`")
            return
        if self.run_dir.manifest().get("report_error"):
            self.run_dir.update_manifest(report_error=None)  # an earlier failure, now fixed
        self.run_dir.record_stage("report", out=path.name)
        self.say(f"report: {path}")


EXPONENT_RANGE = (0.02, 2.0)  # published fits: 0.07-0.7; outside, a term has vanished


def fit_warnings(params: dict[str, float]) -> list[str]:
    """Plain-language warnings about a degenerate L(N, D) fit: an exponent at an extreme means
    the ladder could not see that term (e.g. larger models no better at the token counts
    explored), and the plan then follows the other term alone."""
    out = []
    lo, hi = EXPONENT_RANGE
    for name, term in (("alpha", "model size"), ("beta", "training tokens")):
        v = params.get(name)
        if v is not None and not lo <= v <= hi:
            out.append(f"the fitted exponent {name} = {v:.3g} is outside [{lo}, {hi}]: the "
                       f"ladder did not resolve the effect of {term}; the plan's choice of it "
                       "rests on the edge of the explored range (give a larger budget)")
    return out


def run_pipeline(run_dir: str | Path, options: RunOptions | None = None,
                 say: Callable[[str], None] = lambda _m: None,
                 progress: bool = False, nproc: int = 1,
                 parallel: str = "auto") -> dict[str, Any]:
    """Run (or resume) the whole pipeline; returns ``summary.json``. ``nproc`` and
    ``parallel``: the final run's processes and layout (see ``train.launch.launch_train``)."""
    return Pipeline(run_dir, options or RunOptions(), say, progress, nproc, parallel).run()
