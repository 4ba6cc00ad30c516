"""Cohort-level modelling: feature matrix, feature selection, a scikit-learn Pipeline and honest validation.

Everything learned from data (imputation, scaling, feature selection, the classifier) lives in one
Pipeline, and its hyperparameters are tuned inside each outer cross-validation fold (nested CV), so the
cross-validated estimate never sees the patients it is scored on.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.stats import rankdata
from sklearn.base import clone
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
from sklearn.model_selection import GridSearchCV, RepeatedStratifiedKFold
from threadpoolctl import threadpool_limits

from radiomics_assets.modelling.estimators import PARAM_GRIDS, tuned_model
from radiomics_assets.modelling.selection import selected_columns
from radiomics_assets.modelling.settings import DEFAULT_SETTINGS, ModellingSettings


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


def cross_validate(
    X: pd.DataFrame, y: pd.Series, settings: ModellingSettings = DEFAULT_SETTINGS, model: str = "logreg"
) -> CrossValidation:
    """Nested CV: outer repeated stratified k-fold, grid search inside every outer training set.

    A patient's probability is the mean of its out-of-fold probabilities over the repeats; the AUC of each
    repeat is kept to show the spread. Also counts how often each feature is selected across outer fits.
    """
    seed, repeats, selection, standardise = settings.seed, settings.repeats, settings.selection, settings.standardise
    require_class_sizes(y)
    folds = int(min(settings.folds, np.bincount(y.to_numpy()).min()))
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
    scheme = (
        f"nested CV: outer repeated stratified {folds}-fold x {repeats} (probabilities averaged over repeats), "
        f"inner {search.cv.n_splits}-fold grid search over {PARAM_GRIDS[model]}; model {model}, "
        f"selection {selection}, {'standardised' if standardise else 'unscaled'} features"
    )
    frequency = (counts / (folds * repeats)).sort_values(ascending=False)
    return CrossValidation(
        scheme,
        per_repeat.mean(axis=0),
        y_arr,
        list(X.index),
        model,
        repeat_aucs,
        {k: float(v) for k, v in frequency[frequency > 0].items()},
        fold_params,
    )


def compare_models(X: pd.DataFrame, y: pd.Series, settings: ModellingSettings) -> dict[str, CrossValidation]:
    """Nested CV of every candidate on the same splits; ``best_model`` picks the highest mean AUC."""
    # One thread per fit: on tiny cohorts OpenMP/BLAS threads (gradient boosting) cost more than they gain.
    with threadpool_limits(limits=1):
        return {m: cross_validate(X, y, settings, m) for m in settings.models}


def best_model(results: dict[str, CrossValidation]) -> str:
    return max(results, key=lambda m: roc_auc_score(results[m].y, results[m].probabilities))  # ties: the first


def fit_final(
    X: pd.DataFrame, y: pd.Series, settings: ModellingSettings = DEFAULT_SETTINGS, model: str = "logreg"
) -> GridSearchCV:
    require_class_sizes(y)
    smallest_class = int(np.bincount(y.to_numpy()).min())
    search = tuned_model(
        len(y) * 2 // 3, settings.seed, smallest_class, model, settings.selection, settings.standardise
    )
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


def binary_metrics(
    y: np.ndarray, p: np.ndarray, threshold: float = 0.5, n_bootstrap: int = 1000, seed: int = 0
) -> dict:
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
