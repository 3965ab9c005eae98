"""Third-party-style estimators: the scikit-learn estimator API written by hand, no scikit-learn base class.

They stand in for LightGBM's or XGBoost's scikit-learn wrappers (which the project must not require) in tests
that prove any estimator with that API trains, evaluates and registers. What scikit-learn's Pipeline, `clone`,
the searches and the scorers need of such a class: `fit`, `get_params`/`set_params`, `predict` (and
`predict_proba` for a classifier), `classes_` after fitting, and the estimator tags (`__sklearn_tags__`) that
say what it is. Both are real learners (a Gaussian naive Bayes and a ridge regression, in numpy), deterministic.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.utils import ClassifierTags, InputTags, RegressorTags, Tags, TargetTags


class _Params:
    """get_params/set_params over the constructor's arguments, as scikit-learn's `clone` uses them."""

    _param_names: tuple[str, ...] = ()

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self._param_names}

    def set_params(self, **params: Any) -> Any:
        for name, value in params.items():
            if name not in self._param_names:
                raise ValueError(f"{type(self).__name__} has no parameter {name!r}")
            setattr(self, name, value)
        return self


class _GaussianNaiveBayes(_Params):
    """Gaussian naive Bayes: per class, feature means and variances (+ `smoothing`), softmax of the log-likelihoods."""

    _param_names = ("smoothing", "random_state")

    def __init__(self, smoothing: float = 1e-3, random_state: int | None = None) -> None:
        self.smoothing = smoothing
        self.random_state = random_state  # unused: accepted like most estimators, so the spec seed is applied

    def fit(self, x: Any, y: Any) -> Any:
        values, labels = np.asarray(x, dtype=float), np.asarray(y)
        self.classes_ = np.unique(labels)
        self.n_features_in_ = values.shape[1]
        self.means_ = np.stack([values[labels == c].mean(axis=0) for c in self.classes_])
        spread = values.var(axis=0).max() * self.smoothing + 1e-12
        self.vars_ = np.stack([values[labels == c].var(axis=0) + spread for c in self.classes_])
        self.log_prior_ = np.log(np.array([(labels == c).mean() for c in self.classes_]))
        return self

    def predict_proba(self, x: Any) -> np.ndarray:
        values = np.asarray(x, dtype=float)[:, None, :]
        log_like = -0.5 * (((values - self.means_) ** 2) / self.vars_ + np.log(2 * np.pi * self.vars_)).sum(axis=2)
        scores = log_like + self.log_prior_
        scores -= scores.max(axis=1, keepdims=True)
        weights = np.exp(scores)
        return weights / weights.sum(axis=1, keepdims=True)

    def predict(self, x: Any) -> np.ndarray:
        return self.classes_[self.predict_proba(x).argmax(axis=1)]


class RidgeRegressor(_Params):
    """Ridge regression on standardized features, solved in closed form."""

    _param_names = ("alpha",)

    def __init__(self, alpha: float = 1.0) -> None:
        self.alpha = alpha

    def __sklearn_tags__(self) -> Tags:
        return Tags(estimator_type="regressor", target_tags=TargetTags(required=True),
                    regressor_tags=RegressorTags(), input_tags=InputTags())

    def fit(self, x: Any, y: Any) -> RidgeRegressor:
        values, target = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
        self.n_features_in_ = values.shape[1]
        self.center_, self.scale_ = values.mean(axis=0), values.std(axis=0) + 1e-12
        z = (values - self.center_) / self.scale_
        self.intercept_ = float(target.mean())
        gram = z.T @ z + self.alpha * np.eye(z.shape[1])
        self.coef_ = np.linalg.solve(gram, z.T @ (target - self.intercept_))
        return self

    def predict(self, x: Any) -> np.ndarray:
        z = (np.asarray(x, dtype=float) - self.center_) / self.scale_
        return np.asarray(z @ self.coef_ + self.intercept_)


class GaussianClassifier(_GaussianNaiveBayes):
    """The naive Bayes classifier with the estimator tags scikit-learn reads (`is_classifier`)."""

    def __sklearn_tags__(self) -> Tags:
        return Tags(estimator_type="classifier", target_tags=TargetTags(required=True),
                    classifier_tags=ClassifierTags(), input_tags=InputTags())


class UntaggedClassifier(_GaussianNaiveBayes):
    """The classifier without estimator tags (as in an estimator package made for scikit-learn < 1.6)."""
