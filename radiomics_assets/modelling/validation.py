"""Cohort-level modelling: feature matrix, feature selection, a scikit-learn Pipeline and honest validation.

Everything learned from data (imputation, scaling, feature selection, the classifier) lives in one
Pipeline, and its hyperparameters are tuned inside each outer cross-validation fold (nested CV), so the
cross-validated estimate never sees the patients it is scored on.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.stats import mannwhitneyu, rankdata
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import ExtraTreesClassifier, HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.feature_selection import RFE, SelectorMixin, f_classif, mutual_info_classif
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    brier_score_loss,
    confusion_matrix,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)
from sklearn.model_selection import GridSearchCV, RepeatedStratifiedKFold, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from threadpoolctl import threadpool_limits


def wide_matrix(features_long: pd.DataFrame) -> pd.DataFrame:
    """Patients x features; columns ``<modality>__<roi>__<image_type>__<class>__<feature>``."""
    if features_long.empty:
        return pd.DataFrame()
    column = (
        features_long.modality + "__" + features_long.roi + "__" + features_long.image_type + "__"
        + features_long.feature_class + "__" + features_long.feature
    )  # fmt: skip
    return (
        features_long.assign(column=column)
        .pivot_table(index="patient_id", columns="column", values="value", aggfunc="first")
        .sort_index(axis=0)
        .sort_index(axis=1)
    )


def rank_features(X: pd.DataFrame, y: pd.Series, max_correlation: float = 0.95) -> pd.DataFrame:
    """Filter selection on the whole labelled cohort, for reporting only (the model selects inside CV).

    Drops near-constant features, then ranks by Mann-Whitney U p-value and drops any feature correlated
    above ``max_correlation`` with a better-ranked one.
    """
    rows = []
    for name in X.columns:
        values = X[name]
        if values.nunique(dropna=True) <= 1:
            rows.append({"feature": name, "p_value": np.nan, "auc": np.nan, "status": "constant"})
            continue
        a, b = values[y == 1].dropna(), values[y == 0].dropna()
        u, p = mannwhitneyu(a, b, alternative="two-sided")
        rows.append({"feature": name, "p_value": float(p), "auc": float(u / (len(a) * len(b))), "status": "kept"})
    ranked = pd.DataFrame(rows).sort_values("p_value", na_position="last").reset_index(drop=True)
    kept: list[str] = []
    corr = X.corr(method="spearman").abs()
    for i, row in ranked.iterrows():
        if row.status != "kept":
            continue
        if any(corr.loc[row.feature, k] > max_correlation for k in kept):
            ranked.loc[i, "status"] = "redundant"
        else:
            kept.append(row.feature)
    return ranked


class NearZeroVariance(SelectorMixin, BaseEstimator):
    """Drops constant and near-zero-variance features (the rule of caret's ``nearZeroVar``), scale-free.

    A feature is near-zero-variance when its most common value is more than ``freq_ratio`` times as frequent
    as the second most common one *and* it has fewer than ``unique_percent`` % distinct values. A variance
    threshold would depend on each feature's unit, and radiomics features span many orders of magnitude.
    """

    def __init__(self, freq_ratio: float = 95 / 5, unique_percent: float = 10.0):
        self.freq_ratio = freq_ratio
        self.unique_percent = unique_percent

    def fit(self, X, y=None):
        X = np.asarray(X, dtype=float)
        ordered = np.sort(X, axis=0)
        n_unique = 1 + (ordered[1:] != ordered[:-1]).sum(axis=0)
        keep = 100 * n_unique / len(X) >= self.unique_percent
        # Only the few columns with few distinct values need their value frequencies counted.
        for j in np.flatnonzero(~keep):
            counts = np.sort(np.unique(X[:, j], return_counts=True)[1])[::-1]
            keep[j] = len(counts) > 1 and counts[0] / counts[1] <= self.freq_ratio
        self.support_ = keep
        return self

    def _get_support_mask(self):
        return self.support_


SELECTION_METHODS = ("anova", "mannwhitney", "mutual_info", "rfe", "l1", "tree")
FILTER_METHODS = ("anova", "mannwhitney", "mutual_info")


class Selector(SelectorMixin, BaseEstimator):
    """Keeps the ``k`` best features by one configurable method; a Pipeline step, so it is refitted per fold.

    Filter methods (``anova`` F, ``mannwhitney`` |AUC - 0.5|, ``mutual_info``) walk the ranking and skip any
    feature whose |Spearman| correlation with an already kept one exceeds ``max_correlation``. ``rfe`` is
    recursive feature elimination with a balanced logistic regression (wrapper); ``l1`` ranks by the
    coefficients of an L1 logistic regression and ``tree`` by extra-trees importances (embedded).
    """

    def __init__(self, method: str = "anova", k: int = 10, max_correlation: float = 0.95, random_state: int = 0):
        self.method = method
        self.k = k
        self.max_correlation = max_correlation
        self.random_state = random_state

    def _scores(self, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        if self.method == "anova":
            return np.nan_to_num(f_classif(X, y)[0])
        if self.method == "mannwhitney":
            ranks = rankdata(X, axis=0)
            n1, n0 = int((y == 1).sum()), int((y == 0).sum())
            auc = (ranks[y == 1].sum(axis=0) - n1 * (n1 + 1) / 2) / (n1 * n0)
            return np.abs(auc - 0.5)
        if self.method == "mutual_info":
            return mutual_info_classif(X, y, random_state=self.random_state)
        if self.method == "rfe":
            estimator = LogisticRegression(class_weight="balanced", C=0.5, max_iter=5000)
            rfe = RFE(estimator, n_features_to_select=min(self.k, X.shape[1]), step=0.2).fit(X, y)
            return 1.0 / rfe.ranking_
        if self.method == "l1":
            l1 = LogisticRegression(l1_ratio=1.0, solver="liblinear", C=0.5, class_weight="balanced",
                                    random_state=self.random_state).fit(X, y)  # fmt: skip
            return np.abs(l1.coef_[0])
        if self.method == "tree":
            trees = ExtraTreesClassifier(n_estimators=100, class_weight="balanced", random_state=self.random_state)
            return trees.fit(X, y).feature_importances_
        raise ValueError(f"unknown selection method {self.method!r}; choose one of {SELECTION_METHODS}")

    def fit(self, X, y):
        X, y = np.asarray(X, dtype=float), np.asarray(y)
        self.scores_ = self._scores(X, y)
        order = np.argsort(-self.scores_, kind="stable")
        k = max(1, min(self.k, X.shape[1]))
        kept: list[int] = []
        if self.method in FILTER_METHODS and self.max_correlation < 1:
            ranks = rankdata(X, axis=0)
            for j in order:
                if kept:
                    corr = np.abs(np.corrcoef(ranks[:, [j] + kept], rowvar=False)[0, 1:])
                    if np.nanmax(corr) > self.max_correlation:
                        continue
                kept.append(int(j))
                if len(kept) == k:
                    break
        else:
            kept = [int(j) for j in order[:k]]
        self.support_ = np.zeros(X.shape[1], dtype=bool)
        self.support_[kept] = True
        return self

    def _get_support_mask(self):
        return self.support_


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
            svm, method="sigmoid", ensemble=False,
            cv=StratifiedKFold(folds, shuffle=True, random_state=self.random_state),
        ).fit(X, y)  # fmt: skip
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
        return HistGradientBoostingClassifier(max_iter=50, learning_rate=0.1, class_weight="balanced",
                                              min_samples_leaf=3, random_state=seed)  # fmt: skip
    raise ValueError(f"unknown model {name!r}; choose from {list(PARAM_GRIDS)}")


PARAM_GRIDS: dict[str, dict[str, list]] = {
    "logreg": {"select__k": [5, 10, 20], "classify__C": [0.05, 0.5, 5.0]},
    "random_forest": {"select__k": [5, 20], "classify__max_depth": [3, None]},
    "svm": {"select__k": [5, 10, 20], "classify__C": [0.5, 5.0]},
    "gradient_boosting": {"select__k": [5, 20], "classify__max_depth": [2, 3]},
}
MODELS = tuple(PARAM_GRIDS)


def make_pipeline(
    seed: int, model: str = "logreg", selection: str = "anova", max_correlation: float = 0.95,
    standardise: bool = True,
) -> Pipeline:  # fmt: skip
    """impute (median) -> drop near-zero variance -> scale (optional) -> select (configurable) -> classifier.

    ``keep_empty_features`` keeps a column that is all missing in a training fold (as zeros, which the
    near-zero-variance step then drops), so column positions, and hence selected feature names, stay aligned.
    """
    if selection not in SELECTION_METHODS:
        raise ValueError(f"unknown selection method {selection!r}; choose one of {SELECTION_METHODS}")
    return Pipeline([
        ("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
        ("near_zero_variance", NearZeroVariance()),
        ("scale", StandardScaler() if standardise else "passthrough"),
        ("select", Selector(selection, k=10, max_correlation=max_correlation, random_state=seed)),
        ("classify", _estimator(model, seed)),
    ])  # fmt: skip


def tuned_model(n_samples: int, seed: int, smallest_class: int = 3, model: str = "logreg",
                selection: str = "anova", standardise: bool = True) -> GridSearchCV:  # fmt: skip
    inner = StratifiedKFold(n_splits=max(2, min(3, smallest_class)), shuffle=True, random_state=seed)
    grid = {k: [v for v in vs if k != "select__k" or v < n_samples] or vs for k, vs in PARAM_GRIDS[model].items()}
    pipeline = make_pipeline(seed, model, selection, standardise=standardise)
    return GridSearchCV(pipeline, grid, scoring="roc_auc", cv=inner, error_score="raise")


@dataclass
class CrossValidation:
    scheme: str
    probabilities: np.ndarray
    y: np.ndarray
    patient_ids: list[str]
    model: str = "logreg"
    repeat_aucs: list[float] = field(default_factory=list)
    selection_frequency: dict[str, float] = field(default_factory=dict)
    fold_params: list[dict] = field(default_factory=list)


MIN_PER_CLASS = 4  # outer 2-fold with an inner 2-fold still has a patient of each class in every split


def require_class_sizes(y: pd.Series) -> None:
    counts = np.bincount(y.to_numpy(), minlength=2)
    if counts.min() < MIN_PER_CLASS:
        raise ValueError(
            f"the labelled cohort has {counts[0]} patients of class 0 and {counts[1]} of class 1; "
            f"nested cross-validation needs at least {MIN_PER_CLASS} of each"
        )


def _variable_columns(pipeline: Pipeline, columns: list[str]) -> np.ndarray:
    # Models pickled before the near-zero-variance step named it "drop_constant"; kept versions still load.
    step = pipeline.named_steps.get("near_zero_variance") or pipeline.named_steps["drop_constant"]
    return np.asarray(columns)[step.get_support()]


def selected_columns(pipeline: Pipeline, columns: list[str]) -> list[str]:
    """Input feature names that survive ``near_zero_variance`` and ``select`` in a fitted pipeline."""
    return list(_variable_columns(pipeline, columns)[pipeline.named_steps["select"].get_support()])


def selection_scores(pipeline: Pipeline, columns: list[str]) -> dict[str, float]:
    kept = _variable_columns(pipeline, columns)
    return {str(f): float(s) for f, s in zip(kept, pipeline.named_steps["select"].scores_, strict=True)}


def cross_validate(X: pd.DataFrame, y: pd.Series, seed: int = 0, folds: int = 5, repeats: int = 2,
                   model: str = "logreg", selection: str = "anova",
                   standardise: bool = True) -> CrossValidation:  # fmt: skip
    """Nested CV: outer repeated stratified k-fold, grid search inside every outer training set.

    A patient's probability is the mean of its out-of-fold probabilities over the repeats; the AUC of each
    repeat is kept to show the spread. Also counts how often each feature is selected across outer fits.
    """
    require_class_sizes(y)
    folds = int(min(folds, np.bincount(y.to_numpy()).min()))
    outer = RepeatedStratifiedKFold(n_splits=folds, n_repeats=repeats, random_state=seed)
    smallest_train_class = int(np.bincount(y.to_numpy()).min()) * (folds - 1) // folds
    search = tuned_model(len(y) * (folds - 1) // folds, seed, smallest_train_class, model, selection, standardise)
    y_arr, X_arr = y.to_numpy(), X.to_numpy(dtype=float)
    per_repeat = np.full((repeats, len(y)), np.nan)
    counts = pd.Series(0.0, index=X.columns)
    fold_params = []
    for i, (train, test) in enumerate(outer.split(X, y_arr)):
        fitted = clone(search).fit(X_arr[train], y_arr[train])
        per_repeat[i // folds, test] = fitted.predict_proba(X_arr[test])[:, 1]
        counts[selected_columns(fitted.best_estimator_, list(X.columns))] += 1
        fold_params.append(fitted.best_params_)
    repeat_aucs = [float(roc_auc_score(y_arr, row)) for row in per_repeat]
    scheme = (f"nested CV: outer repeated stratified {folds}-fold x {repeats} (probabilities averaged over repeats), "
              f"inner {search.cv.n_splits}-fold grid search over {PARAM_GRIDS[model]}; model {model}, "
              f"selection {selection}, {'standardised' if standardise else 'unscaled'} features")  # fmt: skip
    frequency = (counts / (folds * repeats)).sort_values(ascending=False)
    return CrossValidation(scheme, per_repeat.mean(axis=0), y_arr, list(X.index), model, repeat_aucs,
                           {k: float(v) for k, v in frequency[frequency > 0].items()}, fold_params)  # fmt: skip


def compare_models(X: pd.DataFrame, y: pd.Series, seed: int = 0, models=MODELS, selection: str = "anova",
                   folds: int = 5, repeats: int = 2,
                   standardise: bool = True) -> dict[str, CrossValidation]:  # fmt: skip
    """Nested CV of every candidate on the same splits; ``best_model`` picks the highest mean AUC."""
    # One thread per fit: on tiny cohorts OpenMP/BLAS threads (gradient boosting) cost more than they gain.
    with threadpool_limits(limits=1):
        return {m: cross_validate(X, y, seed, folds, repeats, m, selection, standardise) for m in models}


def best_model(results: dict[str, CrossValidation]) -> str:
    return max(results, key=lambda m: roc_auc_score(results[m].y, results[m].probabilities))  # ties: the first


def fit_final(X: pd.DataFrame, y: pd.Series, seed: int = 0, model: str = "logreg",
              selection: str = "anova", standardise: bool = True) -> GridSearchCV:  # fmt: skip
    require_class_sizes(y)
    smallest_class = int(np.bincount(y.to_numpy()).min())
    search = tuned_model(len(y) * 2 // 3, seed, smallest_class, model, selection, standardise)
    with threadpool_limits(limits=1):
        return search.fit(np.asarray(X, dtype=float), y.to_numpy())


def bootstrap_aucs(y: np.ndarray, p: np.ndarray, n_bootstrap: int, seed: int = 0) -> np.ndarray:
    """AUCs of patient resamples (with replacement) that hold both classes, all at once.

    AUC = Mann-Whitney U / (n1 n0) with average ranks for ties, the same value ``roc_auc_score`` gives,
    vectorised over the resamples (a loop of ``roc_auc_score`` calls took seconds per report).
    """
    if n_bootstrap <= 0:
        return np.empty(0)
    idx = np.random.default_rng(seed).integers(0, len(y), (n_bootstrap, len(y)))
    yb, pb = y[idx], p[idx]
    n1 = yb.sum(axis=1)
    n0 = len(y) - n1
    both = (n1 > 0) & (n0 > 0)
    ranks = rankdata(pb, axis=1)
    u = (ranks * yb).sum(axis=1) - n1 * (n1 + 1) / 2
    return (u[both] / (n1[both] * n0[both])).astype(float)


def binary_metrics(y: np.ndarray, p: np.ndarray, threshold: float = 0.5, n_bootstrap: int = 1000,
                   seed: int = 0) -> dict:  # fmt: skip
    """Discrimination (AUC + bootstrap CI, average precision), calibration (Brier) and threshold metrics."""
    y, p = np.asarray(y).astype(int), np.asarray(p, dtype=float)
    predicted = (p >= threshold).astype(int)
    boot = bootstrap_aucs(y, p, n_bootstrap, seed)
    both = len(np.unique(y)) == 2
    tn, fp, fn, tp = confusion_matrix(y, predicted, labels=[0, 1]).ravel()
    return {
        "auc": float(roc_auc_score(y, p)) if both else float("nan"),
        "auc_ci_low": float(np.percentile(boot, 2.5)) if len(boot) else float("nan"),
        "auc_ci_high": float(np.percentile(boot, 97.5)) if len(boot) else float("nan"),
        "n_bootstrap": int(len(boot)),
        "average_precision": float(average_precision_score(y, p)) if both else float("nan"),
        "brier": float(brier_score_loss(y, p)),
        "accuracy": float(accuracy_score(y, predicted)),
        "precision": float(precision_score(y, predicted, zero_division=0)),
        "recall": float(recall_score(y, predicted, zero_division=0)),
        "specificity": float(tn / (tn + fp)) if tn + fp else float("nan"),
        "f1": float(f1_score(y, predicted, zero_division=0)),
        "threshold": threshold,
        "confusion_matrix": {"tn": int(tn), "fp": int(fp), "fn": int(fn), "tp": int(tp)},
        "n_patients": int(len(y)),
        "n_positive": int(y.sum()),
        "n_negative": int(len(y) - y.sum()),
    }


def metrics(cv: CrossValidation, threshold: float = 0.5, n_bootstrap: int = 1000, seed: int = 0) -> dict:
    figures = binary_metrics(cv.y, cv.probabilities, threshold, n_bootstrap, seed)
    figures["cv_scheme"] = cv.scheme
    if cv.repeat_aucs:
        figures["auc_per_repeat"] = cv.repeat_aucs
        figures["auc_repeat_sd"] = float(np.std(cv.repeat_aucs))
    return figures
