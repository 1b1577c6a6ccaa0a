"""Scaling-law forms behind one small protocol, and their registry.

A law is a pure function ``loss(inputs, params)`` plus what the Huber fitter needs: the
log-sum-exp parametrisation of ``log loss``, its Jacobian, bounds and a grid of starting points.
Two forms ship:

* ``"chinchilla"``: ``L(N, D) = E + A / N**alpha + B / D**beta`` (Hoffmann et al. 2022,
  arXiv:2203.15556, eq. 2), fitted as ``log L = LSE(a - alpha log N, b - beta log D, e)`` with
  ``A = e**a``, ``B = e**b``, ``E = e**e`` (§3.3, Appendix D.2).
* ``"compute"``: ``L(C) = E + A * C**-alpha``, a single-variable power law in compute, fitted as
  ``log L = LSE(a - alpha log C, e)``.

A new form implements :class:`Law` and is added to :data:`LAWS`; :func:`fit_parametric` then
fits it with the same Huber loss, multi-start and bootstrap.

Lifecycle: the fitter calls ``init_grid()`` once, evaluates ``log_predict`` on the whole grid
(vectorised), runs L-BFGS-B from the best starts with ``log_predict_jac`` and ``bounds()``, and
stores the raw vector; callers get natural parameters through ``natural(theta)`` and predictions
through ``predict(theta, inputs)``.
"""

from __future__ import annotations

import itertools
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from lmalloc.errors import invalid

FloatArray = NDArray[np.float64]


class Law(Protocol):
    """A scaling-law form the Huber fitter can fit (see the module docstring for the lifecycle).

    ``inputs`` names the columns of the ``x`` arrays (e.g. ``("N", "D")``); ``raw_names`` are
    the optimiser's coordinates; ``param_names`` the natural parameters, in matching order.
    """

    name: str
    inputs: tuple[str, ...]
    raw_names: tuple[str, ...]
    param_names: tuple[str, ...]

    def init_grid(self) -> FloatArray:
        """Starting points for the multi-start, shape ``(g, p)`` in raw coordinates."""
        ...

    def bounds(self) -> list[tuple[float | None, float | None]]:
        """L-BFGS-B bounds per raw coordinate."""
        ...

    def log_predict(self, theta: FloatArray, logx: FloatArray) -> FloatArray:
        """``log L`` for raw ``theta`` ``(..., p)`` at ``logx`` ``(n, k)`` → ``(..., n)``."""
        ...

    def log_predict_jac(
        self, theta: FloatArray, logx: FloatArray
    ) -> tuple[FloatArray, FloatArray]:
        """``log L`` ``(n,)`` and its Jacobian ``d log L / d theta`` ``(n, p)`` at one theta."""
        ...

    def natural(self, theta: FloatArray) -> FloatArray:
        """Natural parameters (``param_names`` order) from raw ``theta`` ``(..., p)``."""
        ...

    def predict(self, params: FloatArray, x: FloatArray) -> FloatArray:
        """Loss from natural ``params`` ``(..., p)`` at inputs ``x`` ``(m, k)`` → ``(..., m)``."""
        ...


def _softmax_parts(u: FloatArray) -> tuple[FloatArray, FloatArray]:
    """log-sum-exp over the last axis and the softmax weights (its gradient), stably."""
    m = u.max(axis=-1, keepdims=True)
    ex = np.exp(u - m)
    s = ex.sum(axis=-1, keepdims=True)
    return (m + np.log(s))[..., 0], ex / s


class ChinchillaLaw:
    """``L(N, D) = E + A / N**alpha + B / D**beta`` (Hoffmann et al. 2022, eq. 2).

    Raw coordinates ``(a, b, e, alpha, beta)``; natural ``(E, A, B, alpha, beta)``. The start
    grid is the paper's (Appendix D.2): ``alpha, beta in {0, 0.5, ..., 2}``,
    ``e in {-1, -0.5, ..., 1}``, ``a, b in {0, 5, ..., 25}`` — 4500 points, evaluated at once.

    >>> law = ChinchillaLaw()
    >>> p = np.array([1.69, 406.4, 410.7, 0.34, 0.28])
    >>> round(float(law.predict(p, np.array([[70e9, 1.4e12]]))[0]), 3)
    1.937
    """

    name: str = "chinchilla"
    inputs: tuple[str, ...] = ("N", "D")
    raw_names: tuple[str, ...] = ("a", "b", "e", "alpha", "beta")
    param_names: tuple[str, ...] = ("E", "A", "B", "alpha", "beta")

    def init_grid(self) -> FloatArray:
        exps = np.arange(0.0, 2.01, 0.5)
        es = np.arange(-1.0, 1.01, 0.5)
        abs_ = np.arange(0.0, 25.01, 5.0)
        grid = [
            (a, b, e, al, be) for a, b, e, al, be in itertools.product(abs_, abs_, es, exps, exps)
        ]
        return np.asarray(grid, dtype=np.float64)

    def bounds(self) -> list[tuple[float | None, float | None]]:
        # Exponents stay positive (a negative one is not a scaling law) and finite.
        return [(None, None), (None, None), (None, None), (1e-6, 10.0), (1e-6, 10.0)]

    def _u(self, theta: FloatArray, logx: FloatArray) -> FloatArray:
        a, b, e, alpha, beta = (theta[..., i, None] for i in range(5))
        u1 = a - alpha * logx[:, 0]  # (..., n)
        u2 = b - beta * logx[:, 1]
        u3 = np.broadcast_to(e, u1.shape)
        return np.stack([u1, u2, u3], axis=-1)  # (..., n, 3)

    def log_predict(self, theta: FloatArray, logx: FloatArray) -> FloatArray:
        lse, _ = _softmax_parts(self._u(theta, logx))
        return lse

    def log_predict_jac(
        self, theta: FloatArray, logx: FloatArray
    ) -> tuple[FloatArray, FloatArray]:
        # Hot path of every L-BFGS-B step: written out term by term (no stacking) for speed.
        a, b, e, alpha, beta = (float(v) for v in theta)
        u1 = a - alpha * logx[:, 0]  # (n,)
        u2 = b - beta * logx[:, 1]
        m = np.maximum(np.maximum(u1, u2), e)
        e1, e2, e3 = np.exp(u1 - m), np.exp(u2 - m), np.exp(e - m)
        total = e1 + e2 + e3
        s1, s2, s3 = e1 / total, e2 / total, e3 / total  # softmax = d LSE / d u
        jac = np.empty((u1.shape[0], 5))
        jac[:, 0], jac[:, 1], jac[:, 2] = s1, s2, s3
        jac[:, 3] = -s1 * logx[:, 0]
        jac[:, 4] = -s2 * logx[:, 1]
        return m + np.log(total), jac

    def natural(self, theta: FloatArray) -> FloatArray:
        out = np.array(theta, dtype=np.float64, copy=True)
        out[..., 0] = np.exp(theta[..., 2])  # E
        out[..., 1] = np.exp(theta[..., 0])  # A
        out[..., 2] = np.exp(theta[..., 1])  # B
        return out

    def predict(self, params: FloatArray, x: FloatArray) -> FloatArray:
        E, A, B, alpha, beta = (params[..., i, None] for i in range(5))
        result: FloatArray = E + A / x[:, 0] ** alpha + B / x[:, 1] ** beta
        return result


class ComputeLaw:
    """``L(C) = E + A * C**-alpha``: a pure power law in compute plus an irreducible term.

    Raw coordinates ``(a, e, alpha)``; natural ``(E, A, alpha)``. Start grid: ``alpha`` in
    ``{0.025, 0.05, 0.1, 0.2, 0.4}``, ``e`` in ``{-1, ..., 1}``, ``a`` in ``{0, 2.5, ..., 25}``.

    >>> law = ComputeLaw()
    >>> float(law.predict(np.array([1.0, 10.0, 0.5]), np.array([[100.0]]))[0])
    2.0
    """

    name: str = "compute"
    inputs: tuple[str, ...] = ("C",)
    raw_names: tuple[str, ...] = ("a", "e", "alpha")
    param_names: tuple[str, ...] = ("E", "A", "alpha")

    def init_grid(self) -> FloatArray:
        grid = itertools.product(
            np.arange(0.0, 25.01, 2.5), np.arange(-1.0, 1.01, 0.5), [0.025, 0.05, 0.1, 0.2, 0.4]
        )
        return np.asarray(list(grid), dtype=np.float64)

    def bounds(self) -> list[tuple[float | None, float | None]]:
        return [(None, None), (None, None), (1e-6, 10.0)]

    def _u(self, theta: FloatArray, logx: FloatArray) -> FloatArray:
        a, e, alpha = (theta[..., i, None] for i in range(3))
        u1 = a - alpha * logx[:, 0]
        return np.stack([u1, np.broadcast_to(e, u1.shape)], axis=-1)

    def log_predict(self, theta: FloatArray, logx: FloatArray) -> FloatArray:
        lse, _ = _softmax_parts(self._u(theta, logx))
        return lse

    def log_predict_jac(
        self, theta: FloatArray, logx: FloatArray
    ) -> tuple[FloatArray, FloatArray]:
        lse, s = _softmax_parts(self._u(theta, logx))
        return lse, np.stack([s[:, 0], s[:, 1], -s[:, 0] * logx[:, 0]], axis=1)

    def natural(self, theta: FloatArray) -> FloatArray:
        out = np.array(theta, dtype=np.float64, copy=True)
        out[..., 0] = np.exp(theta[..., 1])  # E
        out[..., 1] = np.exp(theta[..., 0])  # A
        return out

    def predict(self, params: FloatArray, x: FloatArray) -> FloatArray:
        E, A, alpha = (params[..., i, None] for i in range(3))
        result: FloatArray = E + A * x[:, 0] ** -alpha
        return result


LAWS: dict[str, Law] = {"chinchilla": ChinchillaLaw(), "compute": ComputeLaw()}
"""The registry of law forms by name (the ``law`` field of a fit in laws.json)."""


def get_law(name: str) -> Law:
    """Look a law form up by name, with a clear error listing the known ones."""
    try:
        return LAWS[name]
    except KeyError:
        raise invalid("law", name, f"one of {sorted(LAWS)}") from None
