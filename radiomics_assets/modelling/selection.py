"""Feature selection inside the Pipeline (filter, wrapper, embedded) and the reporting-only univariate ranking."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import chi2, kruskal, mannwhitneyu, rankdata, spearmanr
from sklearn.base import BaseEstimator
from sklearn.ensemble import ExtraTreesClassifier, ExtraTreesRegressor
from sklearn.feature_selection import (
    RFE,
    SelectorMixin,
    f_classif,
    f_regression,
    mutual_info_classif,
    mutual_info_regression,
)
from sklearn.linear_model import LassoCV, LogisticRegression
from sklearn.pipeline import Pipeline

from radiomics_assets.modelling.choices import SelectionMethod


def _univariate(values: np.ndarray, y: np.ndarray, outcome: str) -> tuple[float, float]:
    """(p-value, effect) of one feature against the outcome: binary Mann-Whitney p and AUC; multiclass
    Kruskal-Wallis p (no single effect); continuous Spearman p and rho; survival Cox score-test p and Harrell's C."""
    if outcome == "survival":
        from radiomics_assets.modelling.tasks.survival import cox_score_statistics, feature_concordance

        column = values[:, None]
        return float(chi2.sf(cox_score_statistics(column, y)[0], 1)), float(feature_concordance(column, y)[0])
    if outcome == "continuous":
        rho, p = spearmanr(values, y)
        return float(p), float(rho)
    if outcome == "multiclass":
        groups = [values[y == c] for c in np.unique(y)]
        return float(kruskal(*groups).pvalue), float("nan")
    a, b = values[y == 1], values[y == 0]
    u, p = mannwhitneyu(a, b, alternative="two-sided")
    return float(p), float(u / (len(a) * len(b)))


def rank_features(X: pd.DataFrame, y, outcome: str = "binary", max_correlation: float = 0.95) -> pd.DataFrame:
    """Filter selection on the whole labelled cohort, for reporting only (the model selects inside CV).

    Drops near-constant features, then ranks by a univariate p-value (binary Mann-Whitney, multiclass
    Kruskal-Wallis, continuous Spearman, survival Cox score test) and drops any feature correlated above
    ``max_correlation`` with a better-ranked one. Column ``auc`` is the univariate effect: AUC (binary),
    Spearman rho (continuous), Harrell's C (survival), empty (multiclass).
    """
    y = np.asarray(y)
    rows = []
    for name in X.columns:
        values = X[name].to_numpy(dtype=float)
        present = ~np.isnan(values)
        if len(np.unique(values[present])) <= 1:
            rows.append({"feature": name, "p_value": np.nan, "auc": np.nan, "status": "constant"})
            continue
        p, effect = _univariate(values[present], y[present], outcome)
        rows.append({"feature": name, "p_value": p, "auc": effect, "status": "kept"})
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


FILTER_METHODS = (
    SelectionMethod.anova,
    SelectionMethod.mannwhitney,
    SelectionMethod.mutual_info,
    SelectionMethod.cox,
    SelectionMethod.concordance,
)
"""Univariate rankings, each followed by the |Spearman| redundancy filter."""

SELECTION_METHODS_BY_OUTCOME = {
    "binary": (
        SelectionMethod.anova,
        SelectionMethod.mannwhitney,
        SelectionMethod.mutual_info,
        SelectionMethod.rfe,
        SelectionMethod.l1,
        SelectionMethod.tree,
    ),
    "multiclass": (
        SelectionMethod.anova,
        SelectionMethod.mutual_info,
        SelectionMethod.rfe,
        SelectionMethod.l1,
        SelectionMethod.tree,
    ),
    "continuous": (SelectionMethod.anova, SelectionMethod.mutual_info, SelectionMethod.l1, SelectionMethod.tree),
    "survival": (SelectionMethod.cox, SelectionMethod.concordance),
}
"""Selection methods per outcome type; the first is the default. ``anova`` is the F test of a class difference
(binary, multiclass) or of a linear relation (continuous); ``cox`` the univariate Cox score test and
``concordance`` |Harrell's C - 0.5| of each feature alone (survival)."""


class Selector(SelectorMixin, BaseEstimator):
    """Keeps the ``k`` best features by one configurable method; a Pipeline step, so it is refitted per fold.

    Filter methods (``anova`` F, ``mannwhitney`` |AUC - 0.5|, ``mutual_info``; survival ``cox`` and
    ``concordance``) walk the ranking and skip any feature whose |Spearman| correlation with an already kept one
    exceeds ``max_correlation``. ``rfe`` is recursive feature elimination with a balanced logistic regression
    (wrapper); ``l1`` ranks by the coefficients of an L1 model and ``tree`` by extra-trees importances (embedded).
    ``outcome`` (an ``OutcomeType`` value) picks the classification, regression or survival form of a method.
    ``k = 0`` keeps none: the inner CV may choose a clinical-only model inside a combined one.
    """

    def __init__(
        self,
        method: str = "anova",
        k: int = 10,
        max_correlation: float = 0.95,
        random_state: int = 0,
        outcome: str = "binary",
    ):
        self.method = method
        self.k = k
        self.max_correlation = max_correlation
        self.random_state = random_state
        self.outcome = outcome

    def _scores(self, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        outcome = getattr(self, "outcome", "binary")  # models pickled before outcome types were binary
        allowed = SELECTION_METHODS_BY_OUTCOME.get(outcome, ())
        if self.method not in allowed:
            raise ValueError(
                f"selection method {self.method!r} does not apply to a {outcome} outcome; choose one of {list(allowed)}"
            )
        if outcome == "survival":
            from radiomics_assets.modelling.tasks.survival import cox_score_statistics, feature_concordance

            scores = cox_score_statistics(X, y) if self.method == "cox" else np.abs(feature_concordance(X, y) - 0.5)
            return np.nan_to_num(scores)
        regression = outcome == "continuous"
        if self.method == "anova":
            return np.nan_to_num((f_regression if regression else f_classif)(X, y)[0])
        if self.method == "mannwhitney":
            ranks = rankdata(X, axis=0)
            n1, n0 = int((y == 1).sum()), int((y == 0).sum())
            auc = (ranks[y == 1].sum(axis=0) - n1 * (n1 + 1) / 2) / (n1 * n0)
            return np.abs(auc - 0.5)
        if self.method == "mutual_info":
            info = mutual_info_regression if regression else mutual_info_classif
            return info(X, y, random_state=self.random_state)
        if self.method == "rfe":
            estimator = LogisticRegression(class_weight="balanced", C=0.5, max_iter=5000)
            rfe = RFE(estimator, n_features_to_select=min(self.k, X.shape[1]), step=0.2).fit(X, y)
            return 1.0 / rfe.ranking_
        if self.method == "l1":
            if regression:
                return np.abs(LassoCV(cv=3, random_state=self.random_state).fit(X, y).coef_)
            l1 = LogisticRegression(
                l1_ratio=1.0,
                solver="liblinear" if len(np.unique(y)) == 2 else "saga",
                C=0.5,
                class_weight="balanced",
                max_iter=5000,
                random_state=self.random_state,
            ).fit(X, y)
            return np.abs(l1.coef_).max(axis=0)
        if self.method == "tree":
            if regression:
                trees = ExtraTreesRegressor(n_estimators=100, random_state=self.random_state)
            else:
                trees = ExtraTreesClassifier(n_estimators=100, class_weight="balanced", random_state=self.random_state)
            return trees.fit(X, y).feature_importances_
        raise ValueError(f"unknown selection method {self.method!r}; choose one of {list(allowed)}")

    def fit(self, X, y):
        X, y = np.asarray(X, dtype=float), np.asarray(y)
        k = max(0, min(self.k, X.shape[1]))
        self.scores_ = self._scores(X, y) if k else np.zeros(X.shape[1])
        order = np.argsort(-self.scores_, kind="stable")
        kept: list[int] = []
        if k == 0:
            pass
        elif self.method in FILTER_METHODS and self.max_correlation < 1:
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

    def transform(self, X):
        return np.asarray(X)[:, self.support_]  # also when nothing is kept (k = 0), without a warning


def _radiomics_part(pipeline: Pipeline, columns: list[str]) -> tuple[Pipeline | None, np.ndarray, list[str]]:
    """The radiomics steps and the names of their input columns, and the covariate columns (always used).

    A radiomics-only Pipeline is flat; with covariates its ``prepare`` step holds a ``radiomics`` branch (absent
    for a clinical-only model) beside the clinical ones."""
    names = np.asarray(columns)
    prepare = pipeline.named_steps.get("prepare")
    if prepare is None:
        return pipeline, names, []
    branches = {name: (transformer, cols) for name, transformer, cols in prepare.transformers_}
    clinical = [
        str(names[i])
        for name, (_, cols) in branches.items()
        if name.startswith("clinical")
        for i in np.atleast_1d(cols)
    ]
    if "radiomics" not in branches:
        return None, np.asarray([], dtype=str), clinical
    transformer, cols = branches["radiomics"]
    return transformer, names[cols], clinical


def _variable_columns(pipeline: Pipeline, names: np.ndarray) -> np.ndarray:
    """Input names that reach ``select``: through the robustness subset (if any) and the near-zero-variance filter."""
    robust = pipeline.named_steps.get("robust")
    if robust is not None and robust != "passthrough":
        names = names[robust.get_support()]
    # Models pickled before the near-zero-variance step named it "drop_constant"; kept versions still load.
    step = pipeline.named_steps.get("near_zero_variance") or pipeline.named_steps["drop_constant"]
    return names[step.get_support()]


def selected_columns(pipeline: Pipeline, columns: list[str]) -> list[str]:
    """Input feature names the model uses: radiomics features that survive the robustness subset,
    ``near_zero_variance`` and ``select``, then every covariate column."""
    return _chosen_columns(pipeline, columns, inside_consensus=False)


def filtered_columns(pipeline: Pipeline, columns: list[str]) -> list[str]:
    """Input feature names a selection filter chose: :func:`selected_columns`, except for the consensus, whose
    forest uses every feature: there, the features its linear member's filter chose (then every covariate).

    These are what the stability across folds is counted on: for the consensus, "used by the model" is every
    feature in every fold and says nothing about which features the data point to."""
    return _chosen_columns(pipeline, columns, inside_consensus=True)


def _chosen_columns(pipeline: Pipeline, columns: list[str], inside_consensus: bool) -> list[str]:
    radiomics, names, clinical = _radiomics_part(pipeline, columns)
    if radiomics is None:
        return clinical
    kept = _variable_columns(radiomics, names)
    select = radiomics.named_steps["select"]
    if select == "passthrough" and inside_consensus:
        linear = getattr(pipeline.named_steps["model"], "linear_", None)
        select = "passthrough" if linear is None else linear.named_steps["select"]
    if select != "passthrough":  # passthrough: the model uses every feature (the consensus' forest does)
        kept = kept[select.get_support()]
    return [str(c) for c in kept] + clinical


def selection_scores(pipeline: Pipeline, columns: list[str]) -> dict[str, float]:
    """Selection score of every radiomics feature that reached ``select`` (covariates are not selected)."""
    radiomics, names, _ = _radiomics_part(pipeline, columns)
    if radiomics is None:
        return {}
    kept = _variable_columns(radiomics, names)
    select = radiomics.named_steps["select"]
    if select == "passthrough":  # the consensus: its linear member's selection scores, when it has one
        linear = getattr(pipeline.named_steps["model"], "linear_", None)
        if linear is None:
            return {}
        select = linear.named_steps["select"]
    return {str(f): float(s) for f, s in zip(kept, select.scores_, strict=True)}
