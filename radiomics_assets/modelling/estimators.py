"""The candidate classifiers, their hyperparameter grids and the one Pipeline that holds all that is learned
from data."""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from radiomics_assets.modelling.selection import NearZeroVariance, Selector
from radiomics_assets.modelling.settings import SELECTION_METHODS


class CalibratedSVC(ClassifierMixin, BaseEstimator):
    """Class-balanced RBF SVM with Platt-scaled probabilities.

    scikit-learn 1.9 deprecates ``SVC(probability=True)`` and recommends ``CalibratedClassifierCV(SVC(),
    ensemble=False)``: the sigmoid is fitted on cross-validated decision values, then the SVM is refitted on all
    the data. The calibration folds follow the smallest class (2 or 3), because inner-CV training sets of a
    small cohort hold as few as 2 patients of a class and a fixed ``cv=3`` would fail there.
    ``decision_function`` is deliberately not exposed, so every AUC (inner search and outer CV) is computed on
    the same calibrated probabilities.
    """

    def __init__(self, C: float = 1.0, gamma="scale", class_weight="balanced", random_state: int = 0):
        self.C = C
        self.gamma = gamma
        self.class_weight = class_weight
        self.random_state = random_state

    def fit(self, X, y):
        y = np.asarray(y)
        self.classes_, counts = np.unique(y, return_counts=True)
        folds = int(max(2, min(3, counts.min())))
        svm = SVC(kernel="rbf", C=self.C, gamma=self.gamma, class_weight=self.class_weight)
        self.calibrated_ = CalibratedClassifierCV(
            svm,
            method="sigmoid",
            ensemble=False,
            cv=StratifiedKFold(folds, shuffle=True, random_state=self.random_state),
        ).fit(X, y)
        return self

    def predict_proba(self, X):
        return self.calibrated_.predict_proba(X)

    def predict(self, X):
        return self.calibrated_.predict(X)


def _estimator(name: str, seed: int):
    if name == "logreg":
        return LogisticRegression(class_weight="balanced", max_iter=5000, random_state=seed)
    if name == "random_forest":
        return RandomForestClassifier(n_estimators=100, class_weight="balanced", random_state=seed)
    if name == "svm":
        return CalibratedSVC(class_weight="balanced", random_state=seed)
    if name == "gradient_boosting":
        return HistGradientBoostingClassifier(
            max_iter=50, learning_rate=0.1, class_weight="balanced", min_samples_leaf=3, random_state=seed
        )
    raise ValueError(f"unknown model {name!r}; choose from {list(PARAM_GRIDS)}")


PARAM_GRIDS: dict[str, dict[str, list]] = {
    "logreg": {"select__k": [5, 10, 20], "classify__C": [0.05, 0.5, 5.0]},
    "random_forest": {"select__k": [5, 20], "classify__max_depth": [3, None]},
    "svm": {"select__k": [5, 10, 20], "classify__C": [0.5, 5.0]},
    "gradient_boosting": {"select__k": [5, 20], "classify__max_depth": [2, 3]},
}


def make_pipeline(
    seed: int,
    model: str = "logreg",
    selection: str = "anova",
    max_correlation: float = 0.95,
    standardise: bool = True,
) -> Pipeline:
    """impute (median) -> drop near-zero variance -> scale (optional) -> select (configurable) -> classifier.

    ``keep_empty_features`` keeps a column that is all missing in a training fold (as zeros, which the
    near-zero-variance step then drops), so column positions, and hence selected feature names, stay aligned.
    """
    if selection not in SELECTION_METHODS:
        raise ValueError(f"unknown selection method {selection!r}; choose one of {SELECTION_METHODS}")
    return Pipeline(
        [
            ("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
            ("near_zero_variance", NearZeroVariance()),
            ("scale", StandardScaler() if standardise else "passthrough"),
            ("select", Selector(selection, k=10, max_correlation=max_correlation, random_state=seed)),
            ("classify", _estimator(model, seed)),
        ]
    )


def tuned_model(
    n_samples: int,
    seed: int,
    smallest_class: int = 3,
    model: str = "logreg",
    selection: str = "anova",
    standardise: bool = True,
) -> GridSearchCV:
    inner = StratifiedKFold(n_splits=max(2, min(3, smallest_class)), shuffle=True, random_state=seed)
    grid = {k: [v for v in vs if k != "select__k" or v < n_samples] or vs for k, vs in PARAM_GRIDS[model].items()}
    pipeline = make_pipeline(seed, model, selection, standardise=standardise)
    return GridSearchCV(pipeline, grid, scoring="roc_auc", cv=inner, error_score="raise")
