"""Binary outcome (e.g. benign vs malignant): class-balanced classifiers, AUC, threshold metrics, calibration and
the decision curve.

The positive class (1) is explicit (``study.yaml`` ``positive:`` or a recognised name), never a sort order.
Primary metric: the mean AUC over the outer test folds of all repeats, with a percentile bootstrap CI of patients
(fold models held fixed). Pooling the out-of-fold probabilities of different fold models into one ROC is biased
below 0.5 under the null in small samples, so the pooled AUC is information only (``auc_pooled``).
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit, logit
from scipy.stats import rankdata
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.calibration import CalibratedClassifierCV, calibration_curve
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    brier_score_loss,
    confusion_matrix,
    f1_score,
    precision_recall_curve,
    precision_score,
    recall_score,
    roc_auc_score,
    roc_curve,
)
from sklearn.model_selection import StratifiedKFold
from sklearn.svm import SVC

from radiomics_assets.modelling.choices import ModelFamily
from radiomics_assets.modelling.consensus import ConsensusClassifier
from radiomics_assets.modelling.fast_forest import FastRandomForestClassifier
from radiomics_assets.modelling.plots import figure, fmt, img, png, table
from radiomics_assets.modelling.study import OutcomeType
from radiomics_assets.modelling.tasks.base import PrimaryMetric, Task

THRESHOLD = 0.5
"""Probability at or above which a patient is called positive, fixed in advance (never tuned on the data):
the classifiers are class-balanced, so 0.5 is their natural operating point."""

MODEL_FAMILIES = (
    ModelFamily.consensus,
    ModelFamily.logreg,
    ModelFamily.random_forest,
    ModelFamily.svm,
    ModelFamily.gradient_boosting,
)
"""The binary (and multiclass) families, the default first."""
INNER_CV_FAMILIES = MODEL_FAMILIES[1:]
"""The default candidates of a study with clinical covariates (the consensus selects among all of its inputs, and
covariates are never subject to selection)."""


def fold_aucs(y: np.ndarray, repeat_probabilities: np.ndarray, fold_of: np.ndarray) -> np.ndarray:
    """AUC of every outer test fold (repeat-major); NaN for a fold that holds one class only."""
    out = []
    for probabilities, folds in zip(repeat_probabilities, fold_of, strict=True):
        for f in np.unique(folds):
            members = folds == f
            both = len(np.unique(y[members])) == 2
            out.append(float(roc_auc_score(y[members], probabilities[members])) if both else np.nan)
    return np.asarray(out, dtype=float)


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
    keys = ("calibration_slope", "calibration_intercept")
    if len(np.unique(y)) < 2 or np.ptp(x) == 0:
        return {f"{k}{s}": float("nan") for k in keys for s in ("", "_ci_low", "_ci_high")}
    slope_fit, slope_cov = _logistic_fit(np.column_stack([np.ones_like(x), x]), y, np.zeros_like(x))
    intercept_fit, intercept_cov = _logistic_fit(np.ones((len(x), 1)), y, x)
    out = {}
    # Wald intervals from the observed information: the recalibration model is a two-parameter GLM, for which
    # they are the usual reported CIs (and cheap, unlike a bootstrap of every outer fit).
    for key, value, variance in (
        ("calibration_slope", slope_fit[1], slope_cov[1, 1]),
        ("calibration_intercept", intercept_fit[0], intercept_cov[0, 0]),
    ):
        half = 1.959964 * float(np.sqrt(variance)) if np.isfinite(variance) and variance >= 0 else float("nan")
        out |= {key: float(value), f"{key}_ci_low": float(value) - half, f"{key}_ci_high": float(value) + half}
    return out


def _logistic(design: np.ndarray, y: np.ndarray, offset: np.ndarray, iterations: int = 100) -> np.ndarray:
    """Maximum-likelihood logistic regression by Newton-Raphson (unpenalised, with an offset)."""
    return _logistic_fit(design, y, offset, iterations)[0]


def _logistic_fit(design: np.ndarray, y: np.ndarray, offset: np.ndarray, iterations: int = 100):
    """:func:`_logistic` and the covariance of its coefficients (inverse observed information)."""
    beta = np.zeros(design.shape[1])
    for _ in range(iterations):
        mu = expit(design @ beta + offset)
        gradient = design.T @ (y - mu)
        hessian = design.T @ (design * (mu * (1 - mu))[:, None]) + 1e-9 * np.eye(len(beta))
        step = np.linalg.solve(hessian, gradient)
        beta += step
        if np.max(np.abs(step)) < 1e-10:
            break
    mu = expit(design @ beta + offset)
    information = design.T @ (design * (mu * (1 - mu))[:, None])
    try:
        covariance = np.linalg.inv(information)
    except np.linalg.LinAlgError:
        covariance = np.full_like(information, np.nan)
    return beta, covariance


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


def metrics(cv, threshold: float = 0.5, n_bootstrap: int = 1000, seed: int = 0) -> dict:
    """Headline figures of the procedure: fold-mean AUC with its bootstrap CI, pooled threshold metrics."""
    figures = binary_metrics(cv.y, cv.probabilities, threshold, 0, seed)
    boot = bootstrap_fold_mean_aucs(cv.y, cv.repeat_predictions, cv.fold_of, n_bootstrap, seed)
    per_fold = fold_aucs(cv.y, cv.repeat_predictions, cv.fold_of)
    folds = per_fold.reshape(len(cv.repeat_predictions), -1)
    figures.update(
        {
            "auc": float(np.nanmean(fold_aucs(cv.y, cv.repeat_predictions, cv.fold_of))),
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


def expected_null_sd(y: np.ndarray, fold_of: np.ndarray) -> float:
    """SD chance predicts for the fold-mean AUC of one repeat: Mann-Whitney null variance (n1 + n0 + 1) /
    (12 n1 n0) per fold, folds independent. Repeats reuse the patients, so R repeats shrink it less than sqrt(R)."""
    variances = []
    for f in np.unique(fold_of[0]):
        n1 = int(((fold_of[0] == f) & (y == 1)).sum())
        n0 = int(((fold_of[0] == f) & (y == 0)).sum())
        variances.append((n1 + n0 + 1) / (12 * n1 * n0))
    return float(np.sqrt(np.sum(variances)) / len(variances))


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


def roc_png(
    y: np.ndarray, p: np.ndarray, auc: float, ci: tuple[float, float] | None = None, title: str = "ROC (out-of-fold)"
) -> str:
    fpr, tpr, _ = roc_curve(y, p)
    fig, ax = figure(4, 4)
    ax.plot(fpr, tpr, label=f"AUC {auc:.3f}" + (f" (95% CI {ci[0]:.2f} to {ci[1]:.2f})" if ci else ""))
    ax.plot([0, 1], [0, 1], "--", color="grey", label="chance")
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", title=title)
    ax.legend(loc="lower right")
    return png(fig)


def pr_png(y: np.ndarray, p: np.ndarray, average_precision: float) -> str:
    precision, recall, _ = precision_recall_curve(y, p)
    fig, ax = figure(4, 4)
    ax.plot(recall, precision, label=f"average precision {average_precision:.3f}")
    ax.axhline(float(np.mean(y)), ls="--", color="grey", label="prevalence")
    ax.set(xlabel="recall", ylabel="precision", title="Precision-recall", ylim=(0, 1.05))
    ax.legend(loc="lower left")
    return png(fig)


def calibration_png(y: np.ndarray, p: np.ndarray, brier: float) -> str:
    observed, predicted = calibration_curve(y, p, n_bins=5, strategy="quantile")
    fig, ax = figure(4, 4)
    ax.plot(predicted, observed, "o-", label=f"Brier score {brier:.3f}")
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
    ax.set(xlabel="mean predicted probability", ylabel="observed fraction positive", title="Calibration")
    ax.legend(loc="upper left")
    return png(fig)


def confusion_png(cm: dict, threshold: float) -> str:
    matrix = np.array([[cm["tn"], cm["fp"]], [cm["fn"], cm["tp"]]])
    fig, ax = figure(3.5, 3.5)
    ax.imshow(matrix, cmap="Blues")
    for (i, j), v in np.ndenumerate(matrix):
        ax.text(j, i, str(v), ha="center", va="center", fontsize=14)
    ax.set(
        xticks=[0, 1],
        yticks=[0, 1],
        xticklabels=["pred 0", "pred 1"],
        yticklabels=["true 0", "true 1"],
        title=f"Confusion matrix (threshold {threshold})",
    )
    return png(fig)


def plots(y: np.ndarray, p: np.ndarray, m: dict, what: str, roc: str | None = None) -> str:
    """The four plots of one set of predictions; ``roc``: the ROC image when it is already drawn."""
    roc = roc or roc_png(y, p, m["auc"], (m["auc_ci_low"], m["auc_ci_high"]), f"ROC ({what})")
    return (
        '<div class="plots">'
        + img(f"ROC curve ({what})", roc)
        + img(f"precision-recall curve ({what})", pr_png(y, p, m["average_precision"]))
        + img(f"calibration curve ({what})", calibration_png(y, p, m["brier"]))
        + img(f"confusion matrix ({what})", confusion_png(m["confusion_matrix"], m["threshold"]))
        + "</div>"
    )


def headline_table(m: dict) -> str:
    cm = m["confusion_matrix"]
    rows = [
        ("Patients", f"{m['n_patients']} ({m['n_positive']} positive, {m['n_negative']} negative)"),
        (
            f"AUC (95 % CI, {m.get('n_bootstrap', 'n/a')} bootstrap resamples of patients)",
            f"{fmt(m['auc'])} ({fmt(m['auc_ci_low'])} to {fmt(m['auc_ci_high'])})",
        ),
        ("Average precision (area under the PR curve)", fmt(m["average_precision"])),
        ("Brier score (0 is perfect; always 0.5 scores 0.25)", fmt(m["brier"])),
        (
            "Calibration slope (1 ideal) / intercept (0 ideal)",
            f"{fmt(m.get('calibration_slope'))} / {fmt(m.get('calibration_intercept'))}",
        ),
        (f"Accuracy at threshold {m['threshold']}", fmt(m["accuracy"])),
        ("Precision (positive predictive value)", fmt(m["precision"])),
        ("Recall (sensitivity)", fmt(m["recall"])),
        ("Specificity", fmt(m["specificity"])),
        ("F1", fmt(m["f1"])),
        ("Confusion matrix", f"TN {cm['tn']}, FP {cm['fp']}, FN {cm['fn']}, TP {cm['tp']}"),
    ]
    if m.get("auc_per_repeat"):
        spread = ", ".join(fmt(a) for a in m["auc_per_repeat"])
        rows.insert(2, ("AUC of each CV repeat (mean of its folds)", f"{spread}"))
        rows.insert(3, ("SD of the AUC over the outer test folds", fmt(m.get("auc_fold_sd"))))
        rows.insert(
            4, ("Pooled out-of-fold AUC (information only: biased below 0.5 under the null)", fmt(m.get("auc_pooled")))
        )
    if m.get("permutation_p_value") is not None:
        rows.insert(2, ("Permutation p-value of the AUC (whole procedure)", fmt(m["permutation_p_value"])))
    return table(rows)


def decision_curve_png(curve: dict) -> str:
    fig, ax = figure(4.5, 4)
    t = np.asarray(curve["threshold"])
    ax.plot(t, curve["model"], label="model (out-of-fold)")
    ax.plot(t, curve["treat_all"], "--", color="grey", label="treat all")
    ax.plot(t, curve["treat_none"], ":", color="black", label="treat none")
    top = max(max(curve["model"]), max(curve["treat_all"]), 0.01)
    ax.set(xlabel="threshold probability", ylabel="net benefit", title="Decision curve", ylim=(-0.05, top * 1.1))
    ax.legend(loc="upper right")
    return png(fig)


def calibration_text(m: dict) -> str:
    slope, intercept = m.get("calibration_slope"), m.get("calibration_intercept")
    return (
        f"Calibration slope {fmt(slope)} (95 % CI {fmt(m.get('calibration_slope_ci_low'))} to "
        f"{fmt(m.get('calibration_slope_ci_high'))}; 1 is ideal), calibration intercept {fmt(intercept)} (95 % CI "
        f"{fmt(m.get('calibration_intercept_ci_low'))} to {fmt(m.get('calibration_intercept_ci_high'))}; 0 is "
        "ideal), by logistic recalibration of the out-of-fold probabilities. "
        + calibration_meaning(
            slope,
            intercept,
            (m.get("calibration_slope_ci_low"), m.get("calibration_slope_ci_high")),
            (m.get("calibration_intercept_ci_low"), m.get("calibration_intercept_ci_high")),
        )
    )


def _includes(interval, value: float) -> bool:
    low, high = interval
    return low is not None and high is not None and np.isfinite(low) and np.isfinite(high) and low <= value <= high


def calibration_meaning(slope, intercept, slope_ci=(None, None), intercept_ci=(None, None)) -> str:
    """The plain sentence a reader needs: what the slope and intercept say about the predicted risks, and whether
    their 95 % CIs (when given) let the data tell that apart from ideal calibration."""
    if slope is None or intercept is None or not (np.isfinite(slope) and np.isfinite(intercept)):
        return "Calibration could not be estimated (one class only, or constant predictions)."
    text = _calibration_estimate_meaning(slope, intercept)
    off = [
        name
        for name, interval, ideal, estimate, near in (
            ("slope", slope_ci, 1.0, slope, 0.1),
            ("intercept", intercept_ci, 0.0, intercept, 0.1),
        )
        if abs(estimate - ideal) > near and _includes(interval, ideal)
    ]
    if off:
        text += (
            f" But the 95 % CI of the {' and of the '.join(off)} includes the ideal value, so with this many patients "
            "the data do not show miscalibration: the estimate above is a direction, not a finding."
        )
    return text


def _calibration_estimate_meaning(slope, intercept) -> str:
    if slope < 0.9:
        spread = (
            f"A slope of {fmt(slope)} means the predicted risks are too extreme: high risks are too high and low "
            "risks too low (the usual sign of overfitting); they would need shrinking towards the average."
        )
    elif slope > 1.1:
        spread = (
            f"A slope of {fmt(slope)} means the predicted risks are too moderate: they spread less than the "
            "observed risks (typical of strongly regularised or class-balanced models), so true high-risk "
            "patients get risks that are too low and low-risk patients risks that are too high; the ranking "
            "(AUC) is unaffected."
        )
    else:
        spread = f"A slope of {fmt(slope)} means the spread of the predicted risks is about right."
    if intercept > 0.1:
        level = f" An intercept of {fmt(intercept)} means the predicted risks are too low on average."
    elif intercept < -0.1:
        level = f" An intercept of {fmt(intercept)} means the predicted risks are too high on average."
    else:
        level = f" An intercept of {fmt(intercept)} means the average predicted risk matches the observed rate."
    return spread + level


def classifier(family: str, seed: int):
    """A class-balanced classifier of ``family`` (binary and multiclass)."""
    if family == "consensus":
        return ConsensusClassifier(random_state=seed)
    if family == "logreg":
        return LogisticRegression(class_weight="balanced", max_iter=5000, random_state=seed)
    if family == "random_forest":
        return FastRandomForestClassifier(n_estimators=100, class_weight="balanced", random_state=seed)
    if family == "svm":
        return CalibratedSVC(class_weight="balanced", random_state=seed)
    if family == "gradient_boosting":
        return HistGradientBoostingClassifier(
            max_iter=50, learning_rate=0.1, max_bins=32, class_weight="balanced", min_samples_leaf=3, random_state=seed
        )
    raise ValueError(f"unknown classifier family {family!r}; choose from {list(MODEL_FAMILIES)}")


PARAM_GRIDS: dict[str, dict[str, list]] = {
    "consensus": {},  # fixed members and an equal vote (modelling.consensus): nothing to tune
    "logreg": {"select__k": [5, 10], "model__C": [0.1, 1.0]},
    "random_forest": {"select__k": [5, 20], "model__max_depth": [3]},
    "svm": {"select__k": [5, 10], "model__C": [0.5, 5.0]},
    "gradient_boosting": {"select__k": [5, 20], "model__max_depth": [2]},
}
"""Small on purpose: the outer CV and every permutation refit the whole search, 12 points x inner folds each
(the default procedure on 600 patients must finish in minutes on 2 cores)."""


class BinaryTask(Task):
    kind = OutcomeType.binary
    primary_metric = "auc"
    metric_label = "AUC"
    chance_level = 0.5
    model_families = MODEL_FAMILIES
    selection_methods = ("anova", "mannwhitney", "mutual_info", "rfe", "l1", "tree")

    def estimator(self, family: str, seed: int):
        return classifier(family, seed)

    def default_models(self, with_covariates: bool = False) -> tuple[str, ...]:
        return INNER_CV_FAMILIES if with_covariates else ("consensus",)

    def param_grid(self, family: str) -> dict[str, list]:
        return PARAM_GRIDS[family]

    def target(self, table) -> np.ndarray:
        return np.asarray(table["label"], dtype=int)

    def strata(self, y: np.ndarray) -> np.ndarray:
        return np.asarray(y, dtype=int)

    def stratum_name(self, stratum: int) -> str:
        return f"class {stratum}"

    def digest(self, y: np.ndarray) -> bytes:
        return np.asarray(y, dtype=np.int8).tobytes()  # the split seeds of earlier releases: same cohort, same splits

    def predict(self, estimator, X: np.ndarray) -> np.ndarray:
        return estimator.predict_proba(X)[:, 1]

    def score(self, y: np.ndarray, prediction: np.ndarray) -> float:
        y = np.asarray(y, dtype=int)
        return float(roc_auc_score(y, prediction)) if len(np.unique(y)) == 2 else float("nan")

    def fold_scores(self, y, repeat_predictions, fold_of) -> np.ndarray:
        return fold_aucs(np.asarray(y, dtype=int), repeat_predictions, fold_of)

    def bootstrap(self, y, repeat_predictions, fold_of, n_bootstrap: int, seed: int = 0) -> np.ndarray:
        return bootstrap_fold_mean_aucs(np.asarray(y, dtype=int), repeat_predictions, fold_of, n_bootstrap, seed)

    def candidate_extras(self, y: np.ndarray, repeat_predictions: np.ndarray) -> dict:
        pooled = np.asarray(repeat_predictions, dtype=float).mean(axis=0)
        y = np.asarray(y, dtype=int)
        return {
            "average_precision": float(average_precision_score(y, pooled)),
            "brier": float(brier_score_loss(y, pooled)),
        }

    def metrics(self, cv, n_bootstrap: int = 1000, seed: int = 0) -> dict:
        figures = metrics(cv, THRESHOLD, n_bootstrap, seed)
        primary = PrimaryMetric("auc", figures["auc"], figures["auc_ci_low"], figures["auc_ci_high"], 0.5)
        return {"primary_metric": primary.as_dict(), **figures}

    def external_metrics(self, y: np.ndarray, prediction: np.ndarray, seed: int = 0) -> dict:
        figures = binary_metrics(y, prediction, THRESHOLD, seed=seed)
        primary = PrimaryMetric("auc", figures["auc"], figures["auc_ci_low"], figures["auc_ci_high"], 0.5)
        return {"primary_metric": primary.as_dict(), **figures}

    def cohort_summary(self, y: np.ndarray) -> dict:
        y = np.asarray(y, dtype=int)
        return {"n_patients": int(len(y)), "n_positive": int(y.sum()), "n_negative": int((y == 0).sum())}

    def headline(self, metrics: dict) -> dict[str, float]:
        return {k: metrics[k] for k in ("auc", "auc_ci_low", "auc_ci_high", "accuracy", "precision", "recall", "f1")}

    def prediction_table(self, prediction: np.ndarray, saved) -> dict[str, np.ndarray]:
        p = np.asarray(prediction, dtype=float)
        return {"probability": p, "predicted_label": (p >= saved.threshold).astype(int)}

    def report_html(self, metrics: dict, cv) -> str:
        p = np.asarray(cv.repeat_predictions, dtype=float).mean(axis=0)
        return (
            "<p>Threshold metrics, calibration and the decision curve use each patient's out-of-fold probability "
            "averaged over the repeats. Threshold: a patient is called positive when the predicted probability is "
            f"&ge; {metrics['threshold']}, fixed in advance (not tuned); it sets accuracy, precision, recall, "
            "specificity, F1 and the confusion matrix.</p>"
            + headline_table(metrics)
            + plots(cv.y, p, metrics, "out-of-fold")
            + f"<p>{calibration_text(metrics)}</p>"
            + img("decision curve (out-of-fold)", decision_curve_png(metrics["decision_curve"]))
        )

    def external_html(self, metrics: dict, y: np.ndarray, prediction: np.ndarray) -> str:
        return headline_table(metrics) + (plots(y, prediction, metrics, "external test") if len(set(y)) == 2 else "")
