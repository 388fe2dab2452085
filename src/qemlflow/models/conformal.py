"""Conformal prediction intervals: split-conformal quantiles and CV+ intervals."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

__all__ = ["conformal_quantile", "cv_plus_interval"]


def conformal_quantile(residuals: npt.ArrayLike, coverage: float) -> float:
    """Return the finite-sample conformal quantile of absolute residuals.

    With ``n`` calibration residuals the half-width is the ``k``-th smallest one,
    ``k = ceil((n + 1) * coverage)``. When ``k > n`` there are too few points to
    guarantee the coverage and the half-width is ``inf`` (an unbounded interval),
    which is the honest answer rather than a silently narrower one.

    Parameters
    ----------
    residuals : array-like of shape (n,)
        Absolute residuals ``|y - y_hat|`` on points not used to fit the model.
    coverage : float
        Target coverage in (0, 1).

    Returns
    -------
    float
        The half-width of the prediction interval.

    Examples
    --------
    >>> conformal_quantile([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0], 0.8)
    0.9
    >>> conformal_quantile([0.1, 0.2], 0.9)
    inf
    """
    r = np.sort(np.abs(np.asarray(residuals, dtype=np.float64).ravel()))
    n = r.size
    # The small epsilon keeps e.g. (9 + 1) * 0.9 from rounding up to 10 ulp-wise.
    k = math.ceil((n + 1) * coverage - 1e-9)
    if n == 0 or k > n:
        return math.inf
    return float(r[max(k, 1) - 1])


def cv_plus_interval(
    fold_predictions: npt.ArrayLike,
    residuals: npt.ArrayLike,
    fold_of: npt.ArrayLike,
    coverage: float,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Return CV+ prediction intervals (Barber et al. 2021, *Predictive inference with
    the jackknife+*, section on CV+).

    Each training point ``i`` was held out of fold ``k(i)`` and has the out-of-fold
    residual ``R_i``. For a new point with fold-model predictions ``mu_k(x)`` the interval
    is ``[-q(R_i - mu_k(i)(x)), q(mu_k(i)(x) + R_i)]`` where ``q`` is the
    ``ceil((n + 1) * coverage)``-th smallest of the ``n`` values; with too few points for
    `coverage` the largest is used (finite, covering at most ``n / (n + 1)``).

    Parameters
    ----------
    fold_predictions : array-like of shape (n_samples, n_folds)
        Each fold model's prediction for each new point.
    residuals : array-like of shape (n,)
        Absolute out-of-fold residuals of the training points.
    fold_of : array-like of shape (n,)
        The fold (column of `fold_predictions`) that held each training point out.
    coverage : float
        Target coverage in (0, 1).

    Returns
    -------
    lower, upper : ndarray of shape (n_samples,)

    Examples
    --------
    >>> lower, upper = cv_plus_interval([[1.0, 3.0]], [0.5, 0.5, 1.0, 1.0], [0, 0, 1, 1], 0.5)
    >>> float(lower[0]), float(upper[0])
    (0.5, 4.0)
    """
    mu = np.asarray(fold_predictions, dtype=np.float64)
    r = np.abs(np.asarray(residuals, dtype=np.float64).ravel())
    fold = np.asarray(fold_of, dtype=np.int64).ravel()
    n = r.size
    lower = np.full(mu.shape[0], -math.inf)
    upper = np.full(mu.shape[0], math.inf)
    if n == 0:
        return lower, upper
    k = min(max(math.ceil((n + 1) * coverage - 1e-9), 1), n)
    # Chunks bound the (rows x n) matrices (a screen scores millions of molecules).
    step = max(1, 4_000_000 // n)
    for start in range(0, mu.shape[0], step):
        per_point = mu[start : start + step][:, fold]
        high = np.partition(per_point + r, k - 1, axis=1)[:, k - 1]
        low = np.partition(r - per_point, k - 1, axis=1)[:, k - 1]
        lower[start : start + step] = -low
        upper[start : start + step] = high
    return lower, upper
