"""Cohort-level modelling: feature matrix, feature selection, a scikit-learn Pipeline and honest validation.

Everything learned from data (imputation, scaling, feature selection, the classifier) lives in one
Pipeline, and its hyperparameters are tuned inside each outer cross-validation fold (nested CV), so the
cross-validated estimate never sees the patients it is scored on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import mannwhitneyu
from sklearn.feature_selection import SelectKBest, VarianceThreshold, f_classif
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_score, recall_score, roc_auc_score
from sklearn.model_selection import GridSearchCV, StratifiedKFold, cross_val_predict
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler


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


def make_pipeline(seed: int) -> Pipeline:
    return Pipeline([
        ("impute", SimpleImputer(strategy="median")),
        ("drop_constant", VarianceThreshold(0.0)),
        ("scale", StandardScaler()),
        ("select", SelectKBest(f_classif, k=10)),
        ("classify", LogisticRegression(class_weight="balanced", max_iter=5000, random_state=seed)),
    ])  # fmt: skip


PARAM_GRID = {"select__k": [5, 10, 20], "classify__C": [0.05, 0.5, 5.0]}


def tuned_model(n_samples: int, seed: int, smallest_class: int = 3) -> GridSearchCV:
    inner = StratifiedKFold(n_splits=max(2, min(3, smallest_class)), shuffle=True, random_state=seed)
    grid = {k: [v for v in vs if k != "select__k" or v < n_samples] or vs for k, vs in PARAM_GRID.items()}
    return GridSearchCV(make_pipeline(seed), grid, scoring="roc_auc", cv=inner, error_score="raise")


@dataclass
class CrossValidation:
    scheme: str
    probabilities: np.ndarray
    y: np.ndarray
    patient_ids: list[str]


MIN_PER_CLASS = 4  # outer 2-fold with an inner 2-fold still has a patient of each class in every split


def require_class_sizes(y: pd.Series) -> None:
    counts = np.bincount(y.to_numpy(), minlength=2)
    if counts.min() < MIN_PER_CLASS:
        raise ValueError(
            f"the labelled cohort has {counts[0]} patients of class 0 and {counts[1]} of class 1; "
            f"nested cross-validation needs at least {MIN_PER_CLASS} of each"
        )


def cross_validate(X: pd.DataFrame, y: pd.Series, seed: int = 0, folds: int = 5) -> CrossValidation:
    """Out-of-fold probabilities from nested CV (outer stratified k-fold, grid search inside)."""
    require_class_sizes(y)
    folds = int(min(folds, np.bincount(y.to_numpy()).min()))
    outer = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    smallest_train_class = int(np.bincount(y.to_numpy()).min()) * (folds - 1) // folds
    search = tuned_model(len(y) * (folds - 1) // folds, seed, smallest_train_class)
    probabilities = cross_val_predict(search, X, y, cv=outer, method="predict_proba")[:, 1]
    scheme = f"nested CV: outer stratified {folds}-fold, inner 3-fold grid search over {PARAM_GRID}"
    return CrossValidation(scheme, probabilities, y.to_numpy(), list(X.index))


def fit_final(X: pd.DataFrame, y: pd.Series, seed: int = 0) -> GridSearchCV:
    require_class_sizes(y)
    return tuned_model(len(y) * 2 // 3, seed, int(np.bincount(y.to_numpy()).min())).fit(X, y)


def metrics(cv: CrossValidation, threshold: float = 0.5, n_bootstrap: int = 1000, seed: int = 0) -> dict:
    y, p = cv.y, cv.probabilities
    predicted = (p >= threshold).astype(int)
    rng = np.random.default_rng(seed)
    boot = []
    for _ in range(n_bootstrap):
        idx = rng.integers(0, len(y), len(y))
        if len(np.unique(y[idx])) == 2:
            boot.append(roc_auc_score(y[idx], p[idx]))
    tn, fp, fn, tp = confusion_matrix(y, predicted, labels=[0, 1]).ravel()
    return {
        "auc": float(roc_auc_score(y, p)),
        "auc_ci_low": float(np.percentile(boot, 2.5)),
        "auc_ci_high": float(np.percentile(boot, 97.5)),
        "accuracy": float(accuracy_score(y, predicted)),
        "precision": float(precision_score(y, predicted, zero_division=0)),
        "recall": float(recall_score(y, predicted, zero_division=0)),
        "f1": float(f1_score(y, predicted, zero_division=0)),
        "threshold": threshold,
        "confusion_matrix": {"tn": int(tn), "fp": int(fp), "fn": int(fn), "tp": int(tp)},
        "n_patients": int(len(y)),
        "n_positive": int(y.sum()),
        "cv_scheme": cv.scheme,
    }
