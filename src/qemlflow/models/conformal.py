"""Split-conformal quantiles: the interval half-width that reaches a target coverage."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

__all__ = ["conformal_quantile"]


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
