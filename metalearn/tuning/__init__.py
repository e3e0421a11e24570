"""Tuning of meta-learners on CATE losses, with nuisance fits shared between candidates.

Two ways to tune a learner:

* metalearn's own searches, :class:`MetaLearnerGridSearch`,
  :class:`MetaLearnerRandomizedSearch` and :class:`MetaLearnerOptunaSearch`:
  every candidate is scored against one shared set of scoring nuisances
  (R-loss, DR-loss, plug-in loss, the learner's own nuisance losses), on a
  validation set or by cross-fitting, and candidates that share their
  nuisance settings share one fitted nuisance stage;
* scikit-learn's ``GridSearchCV`` / ``RandomizedSearchCV`` with a metalearn
  scorer (:func:`metalearn.scoring.make_cate_scorer`) and ``w`` routed as
  metadata. Each split refits every nuisance model, but the whole
  scikit-learn toolbox (``cv`` splitters, ``refit`` callables, ``Pipeline``)
  applies:

  >>> import sklearn
  >>> import metalearn as ml
  >>> from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
  >>> from sklearn.model_selection import GridSearchCV
  >>> from metalearn.scoring import make_cate_scorer
  >>> sim = ml.datasets.simulate_nie_wager("B", n=1000, seed=0)
  >>> learner = ml.RLearner(outcome_model=LinearRegression(),
  ...                       propensity_model=LogisticRegression(),
  ...                       effect_model=Ridge(), n_folds=2, random_state=0)
  >>> scorer = make_cate_scorer("r_loss", nuisance=ml.Nuisance(
  ...     outcome_model=LinearRegression(), propensity_model=LogisticRegression(),
  ...     n_folds=2, random_state=0))
  >>> with sklearn.config_context(enable_metadata_routing=True):
  ...     search = GridSearchCV(learner, {"effect_model__alpha": [0.1, 1e5]}, cv=2,
  ...                           scoring=scorer).fit(sim.X, sim.y, w=sim.w)
  >>> search.best_params_
  {'effect_model__alpha': 0.1}

  Without ``enable_metadata_routing`` the search cannot pass ``w`` to the
  learner and the scorer. The learners request ``w`` (and ``propensity``)
  for ``fit`` and ``score`` by default, so ``scoring=None`` works too: it
  uses ``learner.score``, minus the R-loss against default scoring
  nuisances. ``RandomizedSearchCV`` is used the same way.
"""

from metalearn.tuning._selection import SelectionCheck, SelectionWarning
from metalearn.tuning._spaces import lightgbm_space
from metalearn.tuning.auto import AutoCATE, auto_cate
from metalearn.tuning.grid import MetaLearnerGridSearch, MetaLearnerRandomizedSearch
from metalearn.tuning.optuna import MetaLearnerOptunaSearch

__all__ = [
    "AutoCATE",
    "MetaLearnerGridSearch",
    "MetaLearnerOptunaSearch",
    "MetaLearnerRandomizedSearch",
    "SelectionCheck",
    "SelectionWarning",
    "auto_cate",
    "lightgbm_space",
]
