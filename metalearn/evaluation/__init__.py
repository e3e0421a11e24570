r"""Evaluate CATE estimates without ground truth: targeting curves, calibration, policies.

Every function takes the predicted effects ``tau`` of some rows, their
observed outcomes ``y`` and variants ``w``, and the propensities of the
design, and returns estimates with standard errors and confidence
intervals. Use rows the CATE model was *not* trained on (a held-out set, or
the out-of-fold estimates of :meth:`~metalearn.DRLearner.fit_predict`).

Effect scores
-------------
All estimators average *scores* :math:`\Gamma_{k,i}` whose mean over any
fixed set of rows is unbiased for the mean effect of variant ``k`` against
the control ``c`` on those rows. With known propensities only (a randomized
experiment) they are the inverse-propensity-weighted (IPW, Horvitz-Thompson)
scores

.. math:: \Gamma_{k,i} = \frac{1\{W_i=k\} Y_i}{e_k(X_i)} - \frac{1\{W_i=c\} Y_i}{e_c(X_i)},

and with outcome predictions ``mu`` (cross-fitted, e.g. from
:func:`metalearn.scoring.fit_scoring_nuisance`) the doubly robust (AIPW)
scores of Robins, Rotnitzky and Zhao (1994) [1]_

.. math:: \Gamma_{k,i} = \hat\mu_k(X_i) - \hat\mu_c(X_i)
   + \frac{1\{W_i=k\}(Y_i - \hat\mu_k(X_i))}{\hat e_k(X_i)}
   - \frac{1\{W_i=c\}(Y_i - \hat\mu_c(X_i))}{\hat e_c(X_i)},

which are needed on observational data (with estimated propensities) and
are more precise in experiments. ``method`` in every result says which.

Several variants
----------------
Effects and curves are computed for each treated variant against the
control (``tau`` has one column per treated variant, in sorted variant
order, as :meth:`~metalearn.DRLearner.predict` returns them). With more
than two variants the ranking functions add the policy ``"best"``: rank
rows by their largest predicted effect and treat each with its best
predicted variant.

Normalisation of the targeting curves
-------------------------------------
Rows are ranked by decreasing predicted effect; the x-axis is the share
``q`` of the population (of the total sample weight) that is targeted, so
every curve lives on ``[0, 1]`` whatever the sample size. The *gain*
(Qini) curve is the incremental outcome per unit of the **whole**
population when the top ``q`` share is treated,
:math:`g(q) = \frac{1}{n}\sum_{i \in \text{top } q} \Gamma_i`, on the scale of
the outcome. Random targeting gains :math:`q \cdot \mathrm{ATE}` (the
straight line from 0 to the ATE at ``q = 1``). Radcliffe's (2007) [2]_
count-based Qini value at ``q`` is :math:`n_T\, g(q)` in a randomized
experiment with :math:`n_T` treated rows. Areas are right-endpoint
Riemann sums over the rows, :math:`\sum_j \Delta_j g(s_j)`, so random
targeting has area :math:`\mathrm{ATE}\,(n+1)/(2n)`. Rows with tied
predictions are averaged over their possible orders, so a constant
prediction scores exactly like random targeting. No normalisation by an
"optimal" curve is made: with a continuous outcome the best possible
ordering is not identified from data.

Standard errors
---------------
Curves, areas, calibration tables, BLP and policy values are linear in the
scores for the given ranking; their standard errors treat the evaluation
rows (hence the ranking) as fixed and are conservative for the effect on
those rows (they include the spread of the true effects). :func:`rate` uses
the bootstrap instead (Yadlowsky et al.), which also accounts for the
estimated quantiles of the ranking. Intervals are normal ``level``
intervals; p-values are two-sided.

References
----------
.. [1] Robins, J. M., Rotnitzky, A. and Zhao, L. P. (1994). Estimation of
   regression coefficients when some regressors are not always observed.
   JASA 89(427), 846-866.
.. [2] Radcliffe, N. J. (2007). Using control groups to target on predicted
   lift: building and assessing uplift models. Direct Marketing Analytics
   Journal 1, 14-21.
"""

from metalearn.evaluation._calibration import blp_test, calibration_table
from metalearn.evaluation._common import BLPResult, PolicyValue, RATEResult, TargetingArea
from metalearn.evaluation._policy import budget_curve, policy_value
from metalearn.evaluation._targeting import auuc, qini_coefficient, qini_curve, rate, uplift_curve

__all__ = [
    "uplift_curve",
    "qini_curve",
    "auuc",
    "qini_coefficient",
    "calibration_table",
    "blp_test",
    "rate",
    "policy_value",
    "budget_curve",
    "TargetingArea",
    "RATEResult",
    "BLPResult",
    "PolicyValue",
]

for _obj in (TargetingArea, RATEResult, BLPResult, PolicyValue):
    _obj.__module__ = __name__  # documented and pickled under the public module
del _obj
