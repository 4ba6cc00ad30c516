"""Feature selection inside the Pipeline (filter, wrapper, embedded) and the reporting-only univariate ranking."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import mannwhitneyu, rankdata
from sklearn.base import BaseEstimator
from sklearn.ensemble import ExtraTreesClassifier
from sklearn.feature_selection import RFE, SelectorMixin, f_classif, mutual_info_classif
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline


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


from radiomics_assets.modelling.settings import SELECTION_METHODS  # noqa: E402 - beside its users below

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
            l1 = LogisticRegression(
                l1_ratio=1.0, solver="liblinear", C=0.5, class_weight="balanced", random_state=self.random_state
            ).fit(X, y)
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


def _variable_columns(pipeline: Pipeline, columns: list[str]) -> np.ndarray:
    """Input names that reach ``select``: through the robustness subset (if any) and the near-zero-variance filter."""
    names = np.asarray(columns)
    robust = pipeline.named_steps.get("robust")
    if robust is not None and robust != "passthrough":
        names = names[robust.get_support()]
    # Models pickled before the near-zero-variance step named it "drop_constant"; kept versions still load.
    step = pipeline.named_steps.get("near_zero_variance") or pipeline.named_steps["drop_constant"]
    return names[step.get_support()]


def selected_columns(pipeline: Pipeline, columns: list[str]) -> list[str]:
    """Input feature names that survive the robustness subset, ``near_zero_variance`` and ``select``."""
    return list(_variable_columns(pipeline, columns)[pipeline.named_steps["select"].get_support()])


def selection_scores(pipeline: Pipeline, columns: list[str]) -> dict[str, float]:
    kept = _variable_columns(pipeline, columns)
    return {str(f): float(s) for f, s in zip(kept, pipeline.named_steps["select"].scores_, strict=True)}
