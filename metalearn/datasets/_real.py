"""Real data sets, loaded from packages that ship them (optional dependencies)."""

from __future__ import annotations

from typing import Any, Literal

import narwhals as nw

__all__ = ["load_rand_hie"]

_Backend = Literal["polars", "pandas", "pyarrow"]


def load_rand_hie(*, backend: _Backend = "polars") -> Any:
    """Load the RAND Health Insurance Experiment data (20,190 person-years, 10 columns).

    The subset of the RAND HIE used by Cameron and Trivedi (2005), as
    shipped by :mod:`statsmodels` (``statsmodels.datasets.randhie``; public
    domain). Columns:

    ==========  ==========================================================
    ``mdvis``   number of outpatient visits to a medical doctor (int)
    ``lncoins`` ``ln(coinsurance + 1)``, coinsurance between 0 and 100 %
    ``idp``     1 for an individual deductible plan (int)
    ``lpi``     ``ln(max(1, annual participation incentive payment))``
    ``fmde``    0 if ``idp = 1``, else ``ln(max(1, MDE / (0.01 coinsurance)))``
    ``physlm``  1 if the person has a physical limitation
    ``disea``   number of chronic diseases
    ``hlthg``   1 if self-rated health is good (int)
    ``hlthf``   1 if self-rated health is fair (int)
    ``hlthp``   1 if self-rated health is poor (int; excellent is omitted)
    ==========  ==========================================================

    Insurance plans were randomized across families, but a binary
    "generous plan" treatment such as ``lncoins`` below its mean is not
    randomized given the other columns (``fmde`` and ``lpi`` are functions of
    the plan), which makes the data a useful test of overlap and balance
    diagnostics.

    Parameters
    ----------
    backend : {"polars", "pandas", "pyarrow"}, default="polars"
        Data-frame library of the result.

    Returns
    -------
    DataFrame
        One row per person-year, the columns above in that order.

    Raises
    ------
    ImportError
        When statsmodels is not installed; install the extra
        ``pip install "metalearn[data]"``.

    References
    ----------
    .. [1] Manning, W. G., Newhouse, J. P., Duan, N., Keeler, E. B.,
       Leibowitz, A. and Marquis, M. S. (1987). Health insurance and the
       demand for medical care: evidence from a randomized experiment.
       American Economic Review 77(3), 251-277.
    .. [2] Cameron, A. C. and Trivedi, P. K. (2005). Microeconometrics:
       Methods and Applications. Cambridge University Press.

    Examples
    --------
    >>> import metalearn as ml
    >>> df = ml.datasets.load_rand_hie()
    >>> df.shape
    (20190, 10)
    >>> df.columns[:3]
    ['mdvis', 'lncoins', 'idp']
    """
    if backend not in ("polars", "pandas", "pyarrow"):
        raise ValueError(
            f"`backend` must be one of 'polars', 'pandas', 'pyarrow'; got {backend!r}."
        )
    try:
        from statsmodels.datasets import randhie
    except ImportError as exc:  # pragma: no cover - exercised by monkeypatching
        raise ImportError(
            "load_rand_hie needs statsmodels, which ships the RAND HIE data. Install it with "
            '`pip install "metalearn[data]"` (or `pip install statsmodels`).'
        ) from exc
    frame = randhie.load_pandas().data
    if backend == "pandas":
        return frame.copy()
    data = {str(col): frame[col].to_numpy() for col in frame.columns}
    return nw.from_dict(data, backend=backend).to_native()
