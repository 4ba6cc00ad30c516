"""Honest validation of the whole model-building procedure: outer repeated grouped CV, permutation test, metrics.

The procedure (:class:`~radiomics_assets.modelling.estimators.CandidateSearch`: robustness filter, every
candidate's grid search, the choice among candidates, the refit) is fitted anew in every outer training set, so
the outer test folds evaluate the choice too. Duplicate images and patients of one group stay in one fold
(``StratifiedGroupKFold``, outer and inner).

Estimator: the AUC of each outer test fold, averaged over folds and repeats (``auc``), with its SD over folds.
Pooling the out-of-fold probabilities of different fold models into one ROC is biased below 0.5 under the null
in small samples (each fold model's training labels are anti-correlated with its test labels, and the fold
models' offsets differ), so the pooled AUC is kept only as ``auc_pooled`` for information.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from scipy.special import expit, logit
from scipy.stats import rankdata
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
from sklearn.model_selection import StratifiedGroupKFold

from radiomics_assets.modelling.estimators import CandidateSearch, group_folds
from radiomics_assets.modelling.selection import selected_columns
from radiomics_assets.modelling.settings import DEFAULT_SETTINGS, ModellingSettings

MIN_PER_CLASS = 4  # outer 2-fold with an inner 2-fold still has a patient of each class in every split


@dataclass
class CrossValidation:
    """Out-of-fold results of the whole procedure (and, for information, of every candidate) on the same splits."""

    scheme: str
    y: np.ndarray
    patient_ids: list[str]
    fold_of: np.ndarray
    """repeats x patients: the outer test fold of each patient in each repeat."""
    repeat_probabilities: np.ndarray
    """repeats x patients: out-of-fold probability of the procedure's model."""
    chosen: list[str]
    """The candidate the procedure chose in each outer training set (repeat-major)."""
    fold_params: list[dict] = field(default_factory=list)
    selection_frequency: dict[str, float] = field(default_factory=dict)
    candidate_probabilities: dict[str, np.ndarray] = field(default_factory=dict)
    """Per candidate: repeats x patients out-of-fold probabilities of its best inner parameters."""

    @property
    def probabilities(self) -> np.ndarray:
        """A patient's out-of-fold probability averaged over the repeats (threshold metrics, calibration, DCA)."""
        return self.repeat_probabilities.mean(axis=0)

    @property
    def fold_aucs(self) -> np.ndarray:
        return fold_aucs(self.y, self.repeat_probabilities, self.fold_of)

    @property
    def auc(self) -> float:
        """Mean AUC over the outer test folds of all repeats: the headline estimate."""
        return float(np.nanmean(self.fold_aucs))


def require_class_sizes(y: pd.Series) -> None:
    counts = np.bincount(np.asarray(y, dtype=int), minlength=2)
    if counts.min() < MIN_PER_CLASS:
        raise ValueError(
            f"the labelled cohort has {counts[0]} patients of class 0 and {counts[1]} of class 1; "
            f"nested cross-validation needs at least {MIN_PER_CLASS} of each"
        )


def fold_aucs(y: np.ndarray, repeat_probabilities: np.ndarray, fold_of: np.ndarray) -> np.ndarray:
    """AUC of every outer test fold (repeat-major); NaN for a fold that holds one class only."""
    out = []
    for probabilities, folds in zip(repeat_probabilities, fold_of, strict=True):
        for f in np.unique(folds):
            members = folds == f
            both = len(np.unique(y[members])) == 2
            out.append(float(roc_auc_score(y[members], probabilities[members])) if both else np.nan)
    return np.asarray(out, dtype=float)


def split_seed(seed: int, repeat: int, y: np.ndarray) -> int:
    """The shuffle seed of one outer repeat: the configured seed, the repeat and the labels themselves.

    A stratified splitter assigns the k-th patient of a class (in its shuffled order) to a fixed fold. With one
    shuffle order for every labelling, any chance alignment of that order with the features favours the same
    patients in every relabelling, and the CV AUC of permuted labels centres off 0.5 (measured: 0.46 for the
    four-candidate procedure on the 30-patient synthetic cohort). Seeding with the labels gives every labelling
    (each permutation of the permutation test, a reviewer's shuffled labels.csv) its own pseudo-random order, so
    the test labels of a fold are exchangeable given its training set and the fold AUC centres on 0.5; the same
    cohort and seed still give the same splits.
    """
    digest = hashlib.sha256(np.asarray(y, dtype=np.int8).tobytes()).digest()
    sequence = np.random.SeedSequence([seed, repeat, int.from_bytes(digest[:8], "little")])
    return int(sequence.generate_state(1)[0])


def outer_splits(y: np.ndarray, groups: np.ndarray, settings: ModellingSettings) -> tuple[int, list]:
    """Grouped stratified splits of every repeat: (folds, [(repeat, fold, train, test), ...])."""
    folds = group_folds(y, groups, settings.folds)
    splits = []
    for repeat in range(settings.repeats):
        seed = split_seed(settings.seed, repeat, y)
        splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
        for fold, (train, test) in enumerate(splitter.split(np.zeros(len(y)), y, groups)):
            splits.append((repeat, fold, train, test))
    return folds, splits


def _fit_fold(X, y, groups, train, test, settings, perturbations, with_candidates):
    search = CandidateSearch(settings, perturbations, refit_candidates=with_candidates)
    search.fit(X.iloc[train], y[train], groups[train])
    X_test = X.iloc[test].to_numpy(dtype=float)
    candidates = {
        name: estimator.predict_proba(X_test)[:, 1] for name, estimator in search.candidate_estimators_.items()
    }
    return {
        "probabilities": search.predict_proba(X_test)[:, 1],
        "chosen": search.best_,
        "params": search.best_params_,
        "selected": selected_columns(search.best_estimator_, list(X.columns)),
        "candidates": candidates if with_candidates else {},
    }


def cross_validate(
    X: pd.DataFrame,
    y: pd.Series,
    settings: ModellingSettings = DEFAULT_SETTINGS,
    groups: np.ndarray | None = None,
    perturbations: pd.DataFrame | None = None,
    with_candidates: bool = True,
) -> CrossValidation:
    """Outer repeated grouped stratified k-fold over the whole procedure (candidate choice included).

    ``with_candidates`` also records every candidate's out-of-fold probabilities (the permutation test skips it).
    """
    require_class_sizes(y)
    y_arr = np.asarray(y, dtype=int)
    groups = np.asarray(X.index if groups is None else groups)
    folds, splits = outer_splits(y_arr, groups, settings)
    results = Parallel(n_jobs=settings.n_jobs)(
        delayed(_fit_fold)(X, y_arr, groups, train, test, settings, perturbations, with_candidates)
        for _, _, train, test in splits
    )
    n = len(y_arr)
    repeat_probabilities = np.full((settings.repeats, n), np.nan)
    fold_of = np.full((settings.repeats, n), -1)
    names = list(results[0]["candidates"])
    candidate_probabilities = {name: np.full((settings.repeats, n), np.nan) for name in names}
    counts = pd.Series(0.0, index=X.columns)
    for (repeat, fold, _, test), result in zip(splits, results, strict=True):
        repeat_probabilities[repeat, test] = result["probabilities"]
        fold_of[repeat, test] = fold
        counts[result["selected"]] += 1
        for name in names:
            candidate_probabilities[name][repeat, test] = result["candidates"][name]
    n_groups = len(np.unique(groups))
    candidates = ", ".join(f"{m}/{s}" for m, s in settings.candidates)
    scheme = (
        f"outer repeated grouped stratified {folds}-fold x {settings.repeats} over the whole procedure "
        f"({n} patients in {n_groups} groups); in each outer training set an inner grouped stratified "
        f"{settings.inner_folds}-fold CV chooses among candidates {candidates} and their hyperparameters, and "
        f"the winner is refitted; AUC = mean over the {folds * settings.repeats} outer test folds; "
        f"{'standardised' if settings.standardise else 'unscaled'} features"
        + (
            f"; robustness filter ICC(1,1) >= {settings.robustness_icc_threshold} on the training patients"
            if settings.robustness_icc_threshold > 0
            else ""
        )
    )
    frequency = (counts / len(splits)).sort_values(ascending=False)
    return CrossValidation(
        scheme=scheme,
        y=y_arr,
        patient_ids=[str(k) for k in X.index],
        fold_of=fold_of,
        repeat_probabilities=repeat_probabilities,
        chosen=[r["chosen"] for r in results],
        fold_params=[r["params"] for r in results],
        selection_frequency={k: float(v) for k, v in frequency[frequency > 0].items()},
        candidate_probabilities=candidate_probabilities,
    )


def permuted_labels(y: np.ndarray, groups: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Labels permuted between groups (a group keeps one label), so duplicates stay alike under the null."""
    keys, first, inverse = np.unique(groups, return_index=True, return_inverse=True)
    return rng.permutation(y[first])[inverse]


def _null_auc(X, y, groups, settings, perturbations, seed) -> float:
    shuffled = permuted_labels(y, groups, np.random.default_rng(seed))
    one_repeat = replace(settings, repeats=1, n_jobs=1)
    return cross_validate(X, pd.Series(shuffled, index=X.index), one_repeat, groups, perturbations, False).auc


def permutation_test(
    cv: CrossValidation,
    X: pd.DataFrame,
    settings: ModellingSettings = DEFAULT_SETTINGS,
    groups: np.ndarray | None = None,
    perturbations: pd.DataFrame | None = None,
) -> dict:
    """The whole procedure re-run on ``settings.permutations`` label permutations (between groups).

    Statistic: the fold-mean AUC of the first outer repeat (the observed value comes from ``cv``; every
    labelling, observed or permuted, is split by the same rule, :func:`split_seed`), so each permutation costs
    one repeat, not all: the repeats only average splits of the same patients. p = (1 + #null >= observed) /
    (1 + N), the permutation p-value that counts the observed labelling.
    """
    n = settings.permutations
    if n == 0:
        return {"n_permutations": 0, "p_value": None, "null_aucs": []}
    folds_in_repeat = len(np.unique(cv.fold_of[0]))
    observed = float(np.nanmean(cv.fold_aucs[:folds_in_repeat]))
    groups = np.asarray(X.index if groups is None else groups)
    seeds = np.random.SeedSequence(settings.seed).generate_state(n)
    null = Parallel(n_jobs=settings.n_jobs)(
        delayed(_null_auc)(X, cv.y, groups, settings, perturbations, int(s)) for s in seeds
    )
    null = np.asarray(null, dtype=float)
    return {
        "n_permutations": n,
        "statistic": "fold-mean AUC of the first outer repeat",
        "observed_auc": observed,
        "p_value": float((1 + np.sum(null >= observed)) / (1 + n)),
        "null_auc_mean": float(null.mean()),
        "null_auc_sd": float(null.std(ddof=1)) if n > 1 else float("nan"),
        "null_aucs": [float(a) for a in null],
    }


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


def bootstrap_fold_mean_aucs(
    y: np.ndarray, repeat_probabilities: np.ndarray, fold_of: np.ndarray, n_bootstrap: int, seed: int = 0
) -> np.ndarray:
    """The fold-mean AUC on patient resamples (fold models held fixed): its percentile CI is the headline CI.

    A resample gives each patient a weight (how often it was drawn); each fold's AUC is the weighted
    Mann-Whitney statistic of its members. The same ``seed`` draws the same resamples, so two sets of
    probabilities on the same patients compare paired.
    """
    if n_bootstrap <= 0:
        return np.empty(0)
    n = len(y)
    draws = np.random.default_rng(seed).integers(0, n, (n_bootstrap, n))
    weights = np.zeros((n_bootstrap, n))
    np.add.at(weights, (np.repeat(np.arange(n_bootstrap), n), draws.ravel()), 1.0)
    per_fold = []
    for probabilities, folds in zip(repeat_probabilities, fold_of, strict=True):
        for f in np.unique(folds):
            pos = np.flatnonzero((folds == f) & (y == 1))
            neg = np.flatnonzero((folds == f) & (y == 0))
            if not len(pos) or not len(neg):
                continue
            diff = probabilities[pos][:, None] - probabilities[neg][None, :]
            wins = (diff > 0) + 0.5 * (diff == 0)
            wp, wn = weights[:, pos], weights[:, neg]
            pairs = wp.sum(axis=1) * wn.sum(axis=1)
            with np.errstate(invalid="ignore", divide="ignore"):
                per_fold.append(np.einsum("bi,ij,bj->b", wp, wins, wn) / pairs)
    with np.errstate(invalid="ignore"):
        stacked = np.vstack(per_fold)
        valid = np.isfinite(stacked).any(axis=0)
        return np.nanmean(stacked[:, valid], axis=0)


def calibration(y: np.ndarray, p: np.ndarray) -> dict:
    """Logistic recalibration of out-of-fold probabilities: logit P(y=1) = a + b logit(p).

    ``calibration_slope`` is b (1 is ideal; < 1 means predictions too extreme, the sign of overfitting);
    ``calibration_intercept`` is calibration-in-the-large, a with b fixed at 1 (0 is ideal; > 0 means the
    predictions are too low on average).
    """
    y = np.asarray(y, dtype=float)
    x = logit(np.clip(np.asarray(p, dtype=float), 1e-6, 1 - 1e-6))
    if len(np.unique(y)) < 2 or np.ptp(x) == 0:
        return {"calibration_slope": float("nan"), "calibration_intercept": float("nan")}
    slope_fit = _logistic(np.column_stack([np.ones_like(x), x]), y, np.zeros_like(x))
    intercept_fit = _logistic(np.ones((len(x), 1)), y, x)
    return {"calibration_slope": float(slope_fit[1]), "calibration_intercept": float(intercept_fit[0])}


def _logistic(design: np.ndarray, y: np.ndarray, offset: np.ndarray, iterations: int = 100) -> np.ndarray:
    """Maximum-likelihood logistic regression by Newton-Raphson (unpenalised, with an offset)."""
    beta = np.zeros(design.shape[1])
    for _ in range(iterations):
        mu = expit(design @ beta + offset)
        gradient = design.T @ (y - mu)
        hessian = design.T @ (design * (mu * (1 - mu))[:, None]) + 1e-9 * np.eye(len(beta))
        step = np.linalg.solve(hessian, gradient)
        beta += step
        if np.max(np.abs(step)) < 1e-10:
            break
    return beta


DCA_THRESHOLDS = np.round(np.arange(0.01, 1.0, 0.01), 2)


def decision_curve(y: np.ndarray, p: np.ndarray, thresholds: np.ndarray = DCA_THRESHOLDS) -> dict:
    """Net benefit of treating patients with p >= t, against treat-all and treat-none (Vickers and Elkin 2006).

    net benefit = TP/n - FP/n x t/(1 - t); treat all = prevalence - (1 - prevalence) x t/(1 - t); treat none = 0.
    """
    y, p = np.asarray(y, dtype=int), np.asarray(p, dtype=float)
    n, prevalence = len(y), float(np.mean(y))
    odds = thresholds / (1 - thresholds)
    treated = p[None, :] >= thresholds[:, None]
    tp = (treated & (y == 1)).sum(axis=1)
    fp = (treated & (y == 0)).sum(axis=1)
    return {
        "threshold": [float(t) for t in thresholds],
        "model": [float(v) for v in tp / n - fp / n * odds],
        "treat_all": [float(v) for v in prevalence - (1 - prevalence) * odds],
        "treat_none": [0.0] * len(thresholds),
    }


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
        **calibration(y, p),
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
    """Headline figures of the procedure: fold-mean AUC with its bootstrap CI, pooled threshold metrics."""
    figures = binary_metrics(cv.y, cv.probabilities, threshold, 0, seed)
    boot = bootstrap_fold_mean_aucs(cv.y, cv.repeat_probabilities, cv.fold_of, n_bootstrap, seed)
    per_fold = cv.fold_aucs
    folds = per_fold.reshape(len(cv.repeat_probabilities), -1)
    figures.update(
        {
            "auc": cv.auc,
            "auc_ci_low": float(np.percentile(boot, 2.5)) if len(boot) else float("nan"),
            "auc_ci_high": float(np.percentile(boot, 97.5)) if len(boot) else float("nan"),
            "n_bootstrap": int(len(boot)),
            "auc_estimator": "mean AUC of the outer test folds over all repeats; CI: percentile bootstrap of "
            "patients with the fold models held fixed",
            "auc_per_fold": [float(a) for a in per_fold],
            "auc_fold_sd": float(np.nanstd(per_fold, ddof=1)) if len(per_fold) > 1 else float("nan"),
            "auc_per_repeat": [float(np.nanmean(row)) for row in folds],
            "auc_repeat_sd": float(np.std([np.nanmean(row) for row in folds])),
            "auc_pooled": float(roc_auc_score(cv.y, cv.probabilities)),
            "cv_scheme": cv.scheme,
            "decision_curve": decision_curve(cv.y, cv.probabilities),
        }
    )
    return figures


def compare_candidates(cv: CrossValidation, n_bootstrap: int = 1000, seed: int = 0) -> dict[str, dict]:
    """Each candidate's outer-fold figures (information, not an estimate of the chosen model) and a paired
    bootstrap of its fold-mean AUC minus the procedure's, on the same patient resamples."""
    procedure = bootstrap_fold_mean_aucs(cv.y, cv.repeat_probabilities, cv.fold_of, n_bootstrap, seed)
    out = {}
    for name, probabilities in cv.candidate_probabilities.items():
        aucs = fold_aucs(cv.y, probabilities, cv.fold_of)
        boot = bootstrap_fold_mean_aucs(cv.y, probabilities, cv.fold_of, n_bootstrap, seed)
        difference = boot - procedure
        pooled = probabilities.mean(axis=0)
        out[name] = {
            "auc": float(np.nanmean(aucs)),
            "auc_ci_low": float(np.percentile(boot, 2.5)) if len(boot) else float("nan"),
            "auc_ci_high": float(np.percentile(boot, 97.5)) if len(boot) else float("nan"),
            "auc_fold_sd": float(np.nanstd(aucs, ddof=1)),
            "average_precision": float(average_precision_score(cv.y, pooled)),
            "brier": float(brier_score_loss(cv.y, pooled)),
            "times_chosen": int(sum(c == name for c in cv.chosen)),
            "auc_minus_procedure": float(np.nanmean(aucs) - cv.auc),
            "difference_ci_low": float(np.percentile(difference, 2.5)) if len(boot) else float("nan"),
            "difference_ci_high": float(np.percentile(difference, 97.5)) if len(boot) else float("nan"),
            "difference_p_value": float(min(1.0, 2 * min(np.mean(difference <= 0), np.mean(difference >= 0))))
            if len(boot)
            else float("nan"),
        }
    return out


def fit_final(
    X: pd.DataFrame,
    y: pd.Series,
    settings: ModellingSettings = DEFAULT_SETTINGS,
    groups: np.ndarray | None = None,
    perturbations: pd.DataFrame | None = None,
) -> CandidateSearch:
    """The same procedure on all training patients: the model that is saved and serves."""
    require_class_sizes(y)
    return CandidateSearch(settings, perturbations).fit(X, np.asarray(y, dtype=int), groups)


def expected_null_sd(y: np.ndarray, fold_of: np.ndarray) -> float:
    """SD chance predicts for the fold-mean AUC of one repeat: Mann-Whitney null variance (n1 + n0 + 1) /
    (12 n1 n0) per fold, folds independent. Repeats reuse the patients, so R repeats shrink it less than sqrt(R)."""
    variances = []
    for f in np.unique(fold_of[0]):
        n1 = int(((fold_of[0] == f) & (y == 1)).sum())
        n0 = int(((fold_of[0] == f) & (y == 0)).sum())
        variances.append((n1 + n0 + 1) / (12 * n1 * n0))
    return float(np.sqrt(np.sum(variances)) / len(variances))
