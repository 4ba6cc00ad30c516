"""The candidate classifiers, their hyperparameter grids and the one Pipeline that holds all that is learned
from data."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.feature_selection import SelectorMixin
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedGroupKFold, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from threadpoolctl import threadpool_limits

from radiomics_assets.modelling.robustness import robust_features
from radiomics_assets.modelling.selection import NearZeroVariance, Selector
from radiomics_assets.modelling.settings import DEFAULT_SETTINGS, SELECTION_METHODS, ModellingSettings


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
            max_iter=50, learning_rate=0.1, max_bins=32, class_weight="balanced", min_samples_leaf=3, random_state=seed
        )
    raise ValueError(f"unknown model {name!r}; choose from {list(PARAM_GRIDS)}")


PARAM_GRIDS: dict[str, dict[str, list]] = {
    "logreg": {"select__k": [5, 10], "classify__C": [0.1, 1.0]},
    "random_forest": {"select__k": [5, 20], "classify__max_depth": [3]},
    "svm": {"select__k": [5, 10], "classify__C": [0.5, 5.0]},
    "gradient_boosting": {"select__k": [5, 20], "classify__max_depth": [2]},
}
"""Small on purpose: the outer CV and every permutation refit the whole search, 12 points x inner folds each
(the default procedure on 600 patients must finish in minutes on 2 cores)."""


def make_pipeline(
    seed: int,
    model: str = "logreg",
    selection: str = "anova",
    max_correlation: float = 0.95,
    standardise: bool = True,
    keep: np.ndarray | None = None,
) -> Pipeline:
    """keep (robust columns) -> impute (median) -> drop near-zero variance -> scale (optional) -> select -> classify.

    ``keep``: boolean mask of the input columns that passed the robustness filter (learned from the training
    patients before this Pipeline is built); ``None`` keeps every column. ``keep_empty_features`` keeps a column
    that is all missing in a training fold (as zeros, which the near-zero-variance step then drops), so column
    positions, and hence selected feature names, stay aligned.
    """
    if selection not in SELECTION_METHODS:
        raise ValueError(f"unknown selection method {selection!r}; choose one of {SELECTION_METHODS}")
    return Pipeline(
        [
            ("robust", "passthrough" if keep is None else KeepColumns(keep)),
            ("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
            ("near_zero_variance", NearZeroVariance()),
            ("scale", StandardScaler() if standardise else "passthrough"),
            ("select", Selector(selection, k=10, max_correlation=max_correlation, random_state=seed)),
            ("classify", _estimator(model, seed)),
        ]
    )


def _grid(model: str, n_samples: int) -> dict[str, list]:
    """The model's grid without ``k`` values the training set cannot support."""
    return {k: [v for v in vs if k != "select__k" or v < n_samples] or vs for k, vs in PARAM_GRIDS[model].items()}


class KeepColumns(SelectorMixin, BaseEstimator):
    """A fixed column subset (the features that passed the robustness filter); ``fit`` learns nothing."""

    def __init__(self, keep: np.ndarray):
        self.keep = keep

    def fit(self, X, y=None):
        if np.asarray(X).shape[1] != len(self.keep):
            raise ValueError(f"KeepColumns expects {len(self.keep)} columns, got {np.asarray(X).shape[1]}")
        return self

    def _get_support_mask(self):
        return np.asarray(self.keep, dtype=bool)


def candidate_name(model: str, selection: str, settings: ModellingSettings) -> str:
    """``logreg``, or ``logreg+anova`` when several selection methods are candidates."""
    return model if len(settings.selection_methods) == 1 else f"{model}+{selection}"


def group_folds(y: np.ndarray, groups: np.ndarray, wanted: int) -> int:
    """Folds a grouped stratified split can make: at most the number of groups of the smaller class."""
    per_class = [len(np.unique(groups[y == c])) for c in (0, 1)]
    return int(max(2, min(wanted, *per_class)))


class CandidateSearch(ClassifierMixin, BaseEstimator):
    """The whole model-building procedure as one estimator, so an outer CV evaluates the choice it makes.

    ``fit`` (on one training set): robustness filter on these patients (when configured), then for every
    candidate (model family x selection method) a grid search over its hyperparameters, all scored by the same
    inner grouped stratified k-fold AUC; the best candidate and parameters (highest mean inner AUC, ties: the
    first) are refitted on the whole training set. ``refit_candidates`` also refits every candidate's best
    parameters, so the outer CV can report each candidate's figures (information, not an estimate of the
    chosen model).

    ``X`` is a DataFrame indexed by patient id (the robustness filter needs the ids); ``groups`` keeps
    duplicate images or lesions of one patient on one side of every inner split.
    """

    def __init__(
        self,
        settings: ModellingSettings = DEFAULT_SETTINGS,
        perturbations: pd.DataFrame | None = None,
        refit_candidates: bool = False,
    ):
        self.settings = settings
        self.perturbations = perturbations
        self.refit_candidates = refit_candidates

    def _robust_mask(self, X: pd.DataFrame) -> np.ndarray | None:
        threshold = self.settings.robustness_icc_threshold
        if threshold <= 0:
            return None
        if self.perturbations is None:
            raise ValueError(
                f"robustness_icc_threshold is {threshold} but there is no perturbation table: materialise the "
                "asset feature_robustness first (table feature_perturbations), or set the threshold to 0"
            )
        kept = set(robust_features(self.perturbations, X.columns, threshold, patient_ids=X.index))
        if not kept:
            raise ValueError(f"no feature has ICC >= {threshold} on these training patients (table feature_robustness)")
        return np.array([c in kept for c in X.columns])

    def fit(self, X: pd.DataFrame, y, groups=None):
        settings = self.settings
        if not isinstance(X, pd.DataFrame):
            X = pd.DataFrame(X)
        y_arr = np.asarray(y).astype(int)
        groups = np.arange(len(y_arr)) if groups is None else np.asarray(groups)
        X_arr = X.to_numpy(dtype=float)
        self.classes_ = np.unique(y_arr)
        self.n_features_in_ = X.shape[1]
        self.robust_mask_ = self._robust_mask(X)
        n_inner = group_folds(y_arr, groups, settings.inner_folds)
        splitter = StratifiedGroupKFold(n_splits=n_inner, shuffle=True, random_state=settings.seed)
        inner = list(splitter.split(X_arr, y_arr, groups))
        smallest_train = min(len(train) for train, _ in inner)
        self.candidate_results_: dict[str, dict] = {}
        with threadpool_limits(limits=1):  # on small cohorts BLAS/OpenMP threads cost more than they gain
            for model, selection in settings.candidates:
                pipeline = make_pipeline(
                    settings.seed, model, selection, standardise=settings.standardise, keep=self.robust_mask_
                )
                search = GridSearchCV(
                    pipeline,
                    _grid(model, smallest_train),
                    scoring="roc_auc",
                    cv=inner,
                    refit=False,
                    error_score="raise",
                )
                search.fit(X_arr, y_arr)
                self.candidate_results_[candidate_name(model, selection, settings)] = {
                    "model": model,
                    "selection": selection,
                    "inner_auc": float(search.best_score_),
                    "params": dict(search.best_params_),
                    "pipeline": pipeline,
                }
            self.best_ = max(self.candidate_results_, key=lambda c: self.candidate_results_[c]["inner_auc"])
            best = self.candidate_results_[self.best_]
            self.best_params_ = best["params"]
            self.best_score_ = best["inner_auc"]
            self.best_estimator_ = clone(best["pipeline"]).set_params(**best["params"]).fit(X_arr, y_arr)
            self.candidate_estimators_ = {self.best_: self.best_estimator_}
            if self.refit_candidates:
                for name, result in self.candidate_results_.items():
                    if name != self.best_:
                        fitted = clone(result["pipeline"]).set_params(**result["params"]).fit(X_arr, y_arr)
                        self.candidate_estimators_[name] = fitted
        for result in self.candidate_results_.values():
            del result["pipeline"]  # unfitted templates: not worth pickling
        self.inner_folds_ = n_inner
        return self

    def predict_proba(self, X):
        with threadpool_limits(limits=1):
            return self.best_estimator_.predict_proba(np.asarray(X, dtype=float))

    def predict(self, X):
        return self.classes_[(self.predict_proba(X)[:, 1] >= 0.5).astype(int)]
