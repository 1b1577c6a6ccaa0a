"""The scaling-ladder design: which model sizes and token counts the exploration trains.

**Family.** ``k`` model sizes (``k`` in ``sizes``) log-spaced over a factor ``spread`` centred
on the prior's compute-optimal ``N*(C_top)`` (Chinchilla eq. 4, :func:`optimal_nd`). Each size
trains **once** with a warmup-stable-decay schedule (Hägele et al. 2024, arXiv:2405.18392): a
stable phase with snapshots, then one short linear cooldown branch per snapshot. Branch ``b``
ends at ``D_b = f_b · D_i`` tokens, ``D_i = C_top / train_flops_per_token(cfg_i)``, so with
the default ``fractions = (1/4, 1/2, 1)`` the longest branches form an IsoFLOP curve at
``C_top`` and the shorter ones give points near ``C_top/4`` and ``C_top/2`` for free. A branch
resumes from the stable snapshot at ``S_b = D_b - c_b`` and cools down over
``c_b = cooldown_frac · D_b`` tokens (``Trainer(branch_from=..., cooldown_tokens=c_b)``); the
stable run goes to ``max S_b``. A size costs ``cost_fn(cfg, S_max) + sum_b cost_fn(cfg, c_b)``
in the caller's budget unit (FLOPs or seconds).

**Identifiable at any budget it accepts.** Every design has at least :data:`MIN_SIZES` (4)
distinct shapes spanning at least :data:`MIN_SPAN` (8x) in N, each with several branches:
with fewer sizes over a shorter range the fit trades the N term against E (alpha at its bound,
A → 0), which is what the run's own 3-size, 4x ladders gave. When the smallest such family
(sizes from ``min_params`` up) cannot be trained to its prior compute-optimal tokens, the
design spends up to :data:`UNDERSPEND` times less per size (shorter runs, each branch at least
:data:`MIN_BRANCH_STEPS` batches) before it refuses; the refusal
(:class:`LadderBudgetError`) names the smallest budget that works, in the cost function's
unit, so with a calibrated seconds cost it is this machine's measured speed.

**Choice.** For every candidate ``(k, spread)`` a search finds the largest ``C_top`` whose
design fits the budget; the candidate with the least delta-method variance of
``log N*(C_target)`` wins (ties within :data:`TIE_TOL`: the one that spends more). The variance
comes from the Fisher information of the design under the prior law: with
``theta = (log A, log B, log E, alpha, beta)`` (the raw coordinates of
:class:`~lmalloc.scaling.laws.ChinchillaLaw`) and ``J = d log L / d theta`` at the design's
``(N, D_b)`` points, ``I = J^T J / noise^2 + diag(1 / PRIOR_SD^2)``, and
``Var log N* = g^T I^-1 g`` with ``g = d log N*(C_target) / d theta`` (central differences).
``noise`` is the standard deviation of one run's log-loss (0.01 is typical of repeated seeds).
The weak Gaussian prior precision keeps ``I`` invertible when the design cannot separate
``E`` from ``A`` and ``alpha`` (few sizes, short range); its standard deviations
(:data:`PRIOR_SD`) are wider than the spread of published fits, so with a usable design the
data dominate.

**Prior.** Before any data the law is Hoffmann et al. 2022's approach-3 fit (E = 1.69,
A = 406.4, B = 410.7, alpha = 0.34, beta = 0.28). Its absolute values hardly matter for the
design: the Fisher matrix depends on the parameters mainly through the exponents (which set
where the optimum sits and how the loss bends), so a prior fitted on other data, models or
tokenizers still gives a sensible design. A second pass may pass a fitted
:class:`~lmalloc.scaling.parametric.ParametricFit` (or its parameter dict) as ``law``.

**Shapes.** Every size is a real GPT shape (:func:`~lmalloc.model.shape.shape_for`). Sizes are
placed on a grid of 1/:data:`GRID_PER_OCTAVE` octave so shapes are computed once and reused
(``shape_for`` costs ~15 ms; the design is evaluated many times by the split rule).

>>> lad = design_ladder(1e13, lambda cfg, t: 6.0 * 2e5 * t, 1e14, 512, 128, 1024)
>>> len(lad.runs) >= 3 and lad.total_cost <= 1e13
True
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from lmalloc.errors import UserError, invalid
from lmalloc.model.accounting import param_count, train_flops_per_token
from lmalloc.model.config import GPTConfig
from lmalloc.model.shape import shape_for
from lmalloc.scaling.laws import ChinchillaLaw
from lmalloc.scaling.optimal import optimal_nd
from lmalloc.scaling.parametric import MIN_POINTS, ParametricFit
from lmalloc.scaling.simulate import CHINCHILLA

FloatArray = NDArray[np.float64]
CostFn = Callable[[GPTConfig, float], float]
LawLike = ParametricFit | Mapping[str, float] | None

PRIOR: dict[str, float] = dict(CHINCHILLA)
"""Hoffmann et al. 2022 approach-3 fit (eq. 10): the law the first design assumes."""

PRIOR_SD = np.array([3.0, 3.0, 1.0, 0.25, 0.25])
"""Weak Gaussian prior sd on ``(log A, log B, log E, alpha, beta)`` (see module docstring)."""

GRID_PER_OCTAVE = 12
TIE_TOL = 0.01  # variances within 1% count as a tie: prefer the design that spends more
MIN_SIZES = 4
"""Fewer distinct sizes let the fit trade the N term against E (alpha at a bound, A → 0):
with 3 sizes over 4x, the fits of the run's own ladders were degenerate on every seed."""
MIN_SPAN = 8.0
"""The sizes span at least this factor in non-embedding N: the N term must move the loss by
more than the seed noise for the fit to see it."""
UNDERSPEND = 8.0
"""When even the smallest sizes cannot be trained to the prior's compute-optimal tokens, the
design may spend up to this factor less per size (fewer tokens: short runs still place the
N term, and a law needs the sizes more than it needs each to be compute-optimal)."""
MIN_BRANCH_STEPS = 8  # every cooldown branch trains at least this many batches
DEFAULT_MIN_PARAMS = 1e5  # ~2 layers of width 64: below this a "model" is a toy
_LAW = ChinchillaLaw()
_SHAPES: dict[tuple[int, int, int, bool], GPTConfig] = {}


class LadderBudgetError(UserError):
    """Even the smallest design exceeds the budget; ``needed`` is what it would take."""

    def __init__(self, message: str, needed: float) -> None:
        super().__init__(message)
        self.needed = needed


@dataclass(frozen=True)
class LadderBranch:
    """One cooldown branch: total tokens ``D_b``, its snapshot ``S_b`` and cooldown ``c_b``."""

    tokens: int
    snapshot_tokens: int
    cooldown_tokens: int


@dataclass(frozen=True)
class LadderRun:
    """One model size: its shape, N (in the law's convention), stable run and branches."""

    model: dict[str, Any]
    N: int
    stable_tokens: int
    branches: tuple[LadderBranch, ...]
    cost: float

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["branches"] = [asdict(b) for b in self.branches]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LadderRun:
        return cls(model=dict(d["model"]), N=int(d["N"]), stable_tokens=int(d["stable_tokens"]),
                   branches=tuple(LadderBranch(**b) for b in d["branches"]),
                   cost=float(d["cost"]))


@dataclass(frozen=True)
class Ladder:
    """The chosen design, its top compute, cost and predicted precision at the target."""

    runs: tuple[LadderRun, ...]
    top_flops: float
    total_cost: float
    sd_log_n_opt: float
    sd_log_loss: float
    target_flops: float
    candidates: list[dict[str, Any]] = field(default_factory=list, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {"runs": [r.to_dict() for r in self.runs], "top_flops": self.top_flops,
                "total_cost": self.total_cost, "sd_log_n_opt": self.sd_log_n_opt,
                "sd_log_loss": self.sd_log_loss, "target_flops": self.target_flops,
                "candidates": list(self.candidates)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Ladder:
        return cls(runs=tuple(LadderRun.from_dict(r) for r in d["runs"]),
                   top_flops=float(d["top_flops"]), total_cost=float(d["total_cost"]),
                   sd_log_n_opt=float(d["sd_log_n_opt"]), sd_log_loss=float(d["sd_log_loss"]),
                   target_flops=float(d["target_flops"]),
                   candidates=list(d.get("candidates", [])))

    def points(self) -> tuple[FloatArray, FloatArray]:
        """The design's ``(N, D)`` points, one per branch."""
        return _points(self.runs)


# ---------------------------------------------------------------------------------- the law
def law_params(law: LawLike = None) -> FloatArray:
    """Natural Chinchilla parameters ``(E, A, B, alpha, beta)`` of a fit, a dict or the prior."""
    if law is None:
        p: Mapping[str, float] = PRIOR
    elif isinstance(law, ParametricFit):
        if law.law != "chinchilla":
            raise UserError(f"the ladder design needs an L(N, D) law; this fit is {law.law!r}")
        p = law.params
    else:
        p = law
    try:
        return np.array([float(p[n]) for n in _LAW.param_names])
    except KeyError as e:
        raise invalid("law", sorted(p), f"parameters {list(_LAW.param_names)}") from e


def _theta(params: FloatArray) -> FloatArray:
    """Raw coordinates ``(log A, log B, log E, alpha, beta)`` from natural parameters."""
    E, A, B, alpha, beta = params
    return np.array([math.log(A), math.log(B), math.log(E), alpha, beta])


def _log_n_opt(theta: FloatArray, C: float, k: float) -> float:
    N, _ = optimal_nd(_LAW.natural(theta), C, k)
    return math.log(float(N))


def _log_loss_opt(theta: FloatArray, C: float, k: float) -> float:
    p = _LAW.natural(theta)
    N, D = optimal_nd(p, C, k)
    return math.log(float(_LAW.predict(p, np.array([[float(N), float(D)]]))[0]))


def _grad(f: Callable[[FloatArray], float], theta: FloatArray, h: float = 1e-5) -> FloatArray:
    """Central-difference gradient (the functions are smooth closed forms)."""
    g = np.empty_like(theta)
    for i in range(theta.size):
        e = np.zeros_like(theta)
        e[i] = h
        g[i] = (f(theta + e) - f(theta - e)) / (2 * h)
    return g


def fisher_sd(params: FloatArray, N: FloatArray, D: FloatArray, target_flops: float,
              noise: float = 0.01, k: float = 6.0) -> tuple[float, float]:
    """Delta-method sd of ``log N*(C_target)`` and of ``log L*(C_target)`` for a design.

    ``N, D`` are the design's points; ``noise`` the sd of one run's log-loss. See the module
    docstring for the information matrix and the prior precision.
    """
    theta = _theta(params)
    logx = np.log(np.stack([N, D], axis=1))
    _, J = _LAW.log_predict_jac(theta, logx)  # (n, 5)
    info = J.T @ J / noise**2 + np.diag(1.0 / PRIOR_SD**2)
    cov = np.linalg.inv(info)
    g_n = _grad(lambda t: _log_n_opt(t, target_flops, k), theta)
    g_l = _grad(lambda t: _log_loss_opt(t, target_flops, k), theta)
    return math.sqrt(max(0.0, float(g_n @ cov @ g_n))), math.sqrt(max(0.0, float(g_l @ cov @ g_l)))


# ------------------------------------------------------------------------------ the design
@dataclass(frozen=True)
class _Setup:
    """Everything fixed for one ``design_ladder`` call."""

    cost_fn: CostFn
    params: FloatArray
    k_flops: float
    vocab_size: int
    seq_len: int
    batch_tokens: int
    non_embedding: bool
    cooldown_frac: float
    fractions: tuple[float, ...]
    min_params: float = 0.0

    def shape(self, idx: int) -> GPTConfig:
        """The GPT shape for grid index ``idx`` (N = 2**(idx / GRID_PER_OCTAVE)), memoised."""
        key = (idx, self.vocab_size, self.seq_len, self.non_embedding)
        if key not in _SHAPES:
            _SHAPES[key] = shape_for(2.0 ** (idx / GRID_PER_OCTAVE), self.vocab_size,
                                     self.seq_len, non_embedding=self.non_embedding)
        return _SHAPES[key]

    def n_opt(self, C: float) -> float:
        return float(optimal_nd(self.params, C, self.k_flops)[0])

    def c_for_n(self, N: float) -> float:
        """Inverse of ``n_opt``: log N* is affine in log C (eq. 4)."""
        n1, n2 = math.log(self.n_opt(1.0)), math.log(self.n_opt(math.e))
        return math.exp((math.log(N) - n1) / (n2 - n1))

    def round_tokens(self, t: float, minimum: int = 1) -> int:
        return max(minimum, round(t / self.batch_tokens)) * self.batch_tokens

    def run(self, cfg: GPTConfig, C_top: float) -> LadderRun:
        D_top = C_top / train_flops_per_token(cfg)
        branches: list[LadderBranch] = []
        for f in self.fractions:
            D_b = self.round_tokens(f * D_top, minimum=2)
            if any(b.tokens == D_b for b in branches):
                continue  # tiny runs: two fractions rounded to the same batch count
            c_b = min(self.round_tokens(self.cooldown_frac * D_b), D_b - self.batch_tokens)
            branches.append(LadderBranch(tokens=D_b, snapshot_tokens=D_b - c_b,
                                         cooldown_tokens=c_b))
        stable = max(b.snapshot_tokens for b in branches)
        cost = self.cost_fn(cfg, float(stable)) + sum(
            self.cost_fn(cfg, float(b.cooldown_tokens)) for b in branches)
        return LadderRun(model=cfg.to_dict(), N=param_count(cfg, self.non_embedding),
                         stable_tokens=stable, branches=tuple(branches), cost=float(cost))


def _indices(centre: int, k: int, spread: float) -> list[int]:
    """Grid indices of k sizes log-spaced over ``spread`` around grid index ``centre``."""
    half = GRID_PER_OCTAVE * math.log2(spread) / 2
    return [centre + round(-half + 2 * half * j / (k - 1)) for j in range(k)]


def _shapes(s: _Setup, centre: int, k: int, spread: float) -> list[GPTConfig]:
    """The distinct shapes of a design: at tiny sizes neighbouring grid points round to the
    same shape, and training one shape twice would only duplicate a point. A smallest shape
    that rounds below ``min_params`` moves the design up the grid; when rounding to shapes
    shrank the span below ``spread``, the largest size moves up the grid until it is restored
    (at most half an octave)."""
    idx = _indices(centre, k, spread)
    for _ in range(GRID_PER_OCTAVE):  # a shape may round below its target: keep the floor
        if param_count(s.shape(idx[0]), s.non_embedding) >= s.min_params:
            break
        idx = [i + 1 for i in idx]
    for _ in range(GRID_PER_OCTAVE // 2):
        cfgs = list(dict.fromkeys(s.shape(i) for i in idx))
        ns = [param_count(c, s.non_embedding) for c in cfgs]
        if max(ns) >= spread * min(ns) * 0.999:
            break
        idx[-1] += 1
    return cfgs


def _design(s: _Setup, centre: int, k: int, spread: float, C_top: float) -> tuple[LadderRun, ...]:
    return tuple(s.run(cfg, C_top) for cfg in _shapes(s, centre, k, spread))


def _c_low(s: _Setup, centre: int) -> float:
    """Smallest C_top whose prior optimum rounds to grid index ``centre``."""
    return s.c_for_n(2.0 ** ((centre - 0.5) / GRID_PER_OCTAVE))


def _cost(runs: tuple[LadderRun, ...]) -> float:
    return sum(r.cost for r in runs)


def _fit_candidate(s: _Setup, k: int, spread: float, budget: float, min_params: float,
                   hint: int | None = None) -> tuple[tuple[LadderRun, ...], float, int] | float:
    """The largest-C_top design of one family that fits ``budget``, or the cost it needs.

    First the largest feasible centre grid index (exponential search from ``hint``, the
    previous family's answer, then binary search), then, with those shapes fixed, bisection on
    C_top inside the centre's band. Returns the runs, C_top and the centre index.
    """
    half = math.ceil(GRID_PER_OCTAVE * math.log2(spread) / 2)
    g_lo = math.ceil(GRID_PER_OCTAVE * math.log2(min_params)) + half

    def fits(g: int) -> bool:
        return _cost(_design(s, g, k, spread, _c_low(s, g))) <= budget

    if not fits(g_lo):
        return _underspent(s, g_lo, k, spread, budget)
    lo = max(g_lo, hint if hint is not None else g_lo)
    step = 4
    if fits(lo):
        hi = lo + step
        while fits(hi):
            lo, hi, step = hi, hi + 2 * step, 2 * step
    else:
        hi = lo
        lo = max(g_lo, hi - step)
        while not fits(lo):
            hi, lo, step = lo, max(g_lo, lo - 2 * step), 2 * step
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    cfgs = _shapes(s, lo, k, spread)
    c_top = _largest_c_top(s, cfgs, _c_low(s, lo), _c_low(s, lo + 1), budget)
    return tuple(s.run(c, c_top) for c in cfgs), c_top, lo


def _largest_c_top(s: _Setup, cfgs: list[GPTConfig], c_lo: float, c_hi: float,
                   budget: float) -> float:
    """Bisection for the largest C_top in ``[c_lo, c_hi]`` whose design fits ``budget``
    (``c_lo`` must fit); with the shapes fixed only tokens move, so cost is monotone."""
    for _ in range(30):
        mid = math.sqrt(c_lo * c_hi)
        if sum(s.run(c, mid).cost for c in cfgs) <= budget:
            c_lo = mid
        else:
            c_hi = mid
        if c_hi / c_lo < 1.001:
            break
    return c_lo


def _min_c_top(s: _Setup, cfgs: list[GPTConfig], c_full: float) -> float:
    """The smallest C_top the shapes may train at: ``c_full / UNDERSPEND``, raised until the
    largest shape's shortest branch has MIN_BRANCH_STEPS batches."""
    biggest = max(cfgs, key=train_flops_per_token)
    floor_tokens = MIN_BRANCH_STEPS * s.batch_tokens / min(s.fractions)
    return max(c_full / UNDERSPEND, floor_tokens * train_flops_per_token(biggest))


def _underspent(s: _Setup, g: int, k: int, spread: float, budget: float,
                ) -> tuple[tuple[LadderRun, ...], float, int] | float:
    """The smallest sizes (centre ``g``) at a C_top below their compute-optimal one, the
    largest that fits ``budget`` but not below :func:`_min_c_top`; else the cost at that
    minimum (what the budget would need)."""
    cfgs = _shapes(s, g, k, spread)
    c_hi = _c_low(s, g)
    c_lo = _min_c_top(s, cfgs, c_hi)
    if c_lo >= c_hi or sum(s.run(c, c_lo).cost for c in cfgs) > budget:
        return sum(s.run(c, min(c_lo, c_hi)).cost for c in cfgs)
    c_top = _largest_c_top(s, cfgs, c_lo, c_hi, budget)
    return tuple(s.run(c, c_top) for c in cfgs), c_top, g


def _check_args(budget: float, target_flops: float, batch_tokens: int, noise: float,
                cooldown_frac: float, fractions: tuple[float, ...], sizes: tuple[int, ...],
                spreads: tuple[float, ...]) -> None:
    if not (math.isfinite(budget) and budget > 0):
        raise invalid("budget", budget, "a positive, finite amount (FLOPs or seconds)")
    if not (math.isfinite(target_flops) and target_flops > 0):
        raise invalid("target_flops", target_flops, "a positive number of FLOPs")
    if not (isinstance(batch_tokens, int) and batch_tokens > 0):
        raise invalid("batch_tokens", batch_tokens, "a positive integer")
    if not noise > 0:
        raise invalid("noise", noise, "a positive sd of log-loss (0.01 typical)")
    if not 0 < cooldown_frac < 1:
        raise invalid("cooldown_frac", cooldown_frac, "a fraction in (0, 1)")
    if not fractions or any(not 0 < f <= 1 for f in fractions) or len(set(fractions)) < len(
            fractions):
        raise invalid("fractions", fractions, "distinct fractions in (0, 1]")
    if not sizes or any(not (isinstance(k, int) and k >= MIN_SIZES) for k in sizes):
        raise invalid("sizes", sizes, f"numbers of model sizes, each >= {MIN_SIZES}")
    if max(sizes) * len(fractions) < MIN_POINTS["chinchilla"]:
        raise invalid("sizes", sizes, f"sizes × branches >= {MIN_POINTS['chinchilla']} "
                      "(the number of points an L(N, D) fit needs)")
    if not spreads or any(not s >= MIN_SPAN for s in spreads):
        raise invalid("spreads", spreads, f"size ranges >= {MIN_SPAN:g} (e.g. 8, 16, 32)")


def _setup(law: LawLike, cost_fn: CostFn, vocab_size: int, seq_len: int, batch_tokens: int,
           non_embedding: bool, cooldown_frac: float, fractions: tuple[float, ...],
           min_params: float = 0.0) -> _Setup:
    k_flops = 6.0
    if isinstance(law, ParametricFit):
        k_flops = law.flops_per_token_per_param
        want = "non_embedding" if non_embedding else "total"
        if law.param_convention != want:
            raise invalid("non_embedding", non_embedding,
                          f"the fit's convention ({law.param_convention!r})")
    return _Setup(cost_fn=cost_fn, params=law_params(law), k_flops=k_flops,
                  vocab_size=vocab_size, seq_len=seq_len, batch_tokens=batch_tokens,
                  non_embedding=non_embedding, cooldown_frac=cooldown_frac,
                  fractions=tuple(sorted(fractions)), min_params=min_params)


def design_ladder(
    budget: float, cost_fn: CostFn, target_flops: float, vocab_size: int, seq_len: int,
    batch_tokens: int, *, law: LawLike = None, non_embedding: bool = True,
    noise: float = 0.01, cooldown_frac: float = 0.2,
    fractions: tuple[float, ...] = (0.25, 0.5, 1.0), min_params: float = DEFAULT_MIN_PARAMS,
    sizes: tuple[int, ...] = (4, 5, 6), spreads: tuple[float, ...] = (8.0, 16.0, 32.0),
) -> Ladder:
    """The scaling ladder that best pins down ``N*(target_flops)`` within ``budget``.

    See the module docstring for the family, the Fisher score and the prior.

    Args:
        budget: what the ladder may spend, in ``cost_fn``'s unit (FLOPs or seconds).
        cost_fn: ``cost_fn(cfg, tokens)``: cost of training ``cfg`` on ``tokens`` tokens.
        target_flops: the compute of the run the law will be extrapolated to.
        vocab_size, seq_len, batch_tokens: fixed by the data and the recipe; every token
            count is a multiple of ``batch_tokens`` (at least one batch per phase).
        law: the law assumed (None: :data:`PRIOR`; or a fit, or its parameter dict).
        non_embedding: whether N counts non-embedding parameters (the fit's convention).
        noise: sd of one run's log-loss. cooldown_frac: cooldown length / branch length.
        fractions: branch lengths as fractions of each size's top token count.
        min_params: the smallest model any design may contain.
        sizes, spreads: the candidate numbers of sizes and ranges (max / min size).

    Raises:
        UserError: a bad argument, or even the smallest design exceeds the budget (the
            message says how much it needs).
    """
    fractions, sizes, spreads = tuple(fractions), tuple(sizes), tuple(spreads)
    _check_args(budget, target_flops, batch_tokens, noise, cooldown_frac, fractions, sizes,
                spreads)
    s = _setup(law, cost_fn, vocab_size, seq_len, batch_tokens, non_embedding, cooldown_frac,
               fractions, min_params)
    rows: list[dict[str, Any]] = []
    best: tuple[float, float, tuple[LadderRun, ...], float, float] | None = None
    needed, hint = math.inf, None
    for k in sizes:
        if k * len(fractions) < MIN_POINTS["chinchilla"]:
            continue
        for spread in spreads:
            got = _fit_candidate(s, k, spread, budget, min_params, hint)
            if isinstance(got, float):
                needed = min(needed, got)
                rows.append({"sizes": k, "spread": spread, "feasible": False, "needs": got})
                continue
            runs, C_top, hint = got
            N, D = _points(runs)
            span = max(r.N for r in runs) / min(r.N for r in runs)
            if len(runs) < MIN_SIZES or len(N) < MIN_POINTS["chinchilla"] or (
                    span < MIN_SPAN * 0.999):
                # shapes merged at tiny sizes: too few distinct points to fit the law
                rows.append({"sizes": k, "spread": spread, "feasible": False,
                             "reason": f"only {len(runs)} distinct shapes over {span:.3g}x"})
                needed = min(needed, 2.0 * _cost(runs))  # larger models have finer shapes
                continue
            sd_n, sd_l = fisher_sd(s.params, N, D, target_flops, noise, s.k_flops)
            rows.append({"sizes": k, "spread": spread, "feasible": True, "top_flops": C_top,
                         "cost": _cost(runs), "sd_log_n_opt": sd_n, "sd_log_loss": sd_l})
            if best is None or _better(sd_n, _cost(runs), best[0], best[1]):
                best = (sd_n, _cost(runs), runs, C_top, sd_l)
    if best is None:
        raise LadderBudgetError(
            f"budget too small for a scaling ladder: {budget:.3g} given, the smallest design "
            f"(models of at least {min_params:.3g} parameters) needs at least {needed:.3g}. "
            "Give a larger budget or lower min_params", needed)
    sd_n, cost, runs, C_top, sd_l = best
    return Ladder(runs=runs, top_flops=C_top, total_cost=cost, sd_log_n_opt=sd_n,
                  sd_log_loss=sd_l, target_flops=float(target_flops), candidates=rows)


def _points(runs: tuple[LadderRun, ...]) -> tuple[FloatArray, FloatArray]:
    N = [r.N for r in runs for _ in r.branches]
    D = [b.tokens for r in runs for b in r.branches]
    return np.asarray(N, dtype=np.float64), np.asarray(D, dtype=np.float64)


def _better(sd: float, cost: float, best_sd: float, best_cost: float) -> bool:
    """Least variance wins; variances within TIE_TOL tie and the costlier design wins."""
    if abs(sd**2 - best_sd**2) <= TIE_TOL * min(sd**2, best_sd**2):
        return cost > best_cost
    return sd < best_sd
