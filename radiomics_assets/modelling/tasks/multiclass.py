"""Multiclass outcome (e.g. tumour grade G1/G2/G3): class-balanced classifiers, macro one-vs-rest AUC, per-class
figures and the confusion matrix.

``y`` holds class codes 0..K-1 in the order of :attr:`MulticlassTask.classes` (``study.yaml`` ``classes`` or
sorted names). A prediction is an (n, K) matrix of class probabilities, columns in code order; a fold model that
never saw a class (its training set lacked it) gives that class probability 0.

Primary metric: the macro one-vs-rest AUC (the mean over classes of the AUC of P(class k) for class k against the
rest) of every outer test fold, averaged over the folds of all repeats, with a percentile bootstrap CI of patients
(fold models held fixed), the estimator of the binary AUC. A fold scores only the classes it holds with both
positives and negatives (NaN with fewer than two classes); with every class present it equals
``roc_auc_score(y, P, multi_class="ovr", average="macro")``. The AUCs are Mann-Whitney statistics in numpy and the
bootstrap weights every (positive, negative) pair by how often its two patients were drawn, so 1000 resamples cost
one matrix product per fold and class.

Threshold figures (accuracy, balanced accuracy, precision, recall, F1, the confusion matrix) call each patient the
class of highest probability, averaged over the repeats (the classifiers are class-balanced, so the argmax is their
natural operating point; nothing is tuned).
"""

from __future__ import annotations

import html

import numpy as np
from scipy.stats import rankdata
from sklearn.metrics import roc_curve

from radiomics_assets.modelling.plots import figure, fmt, img, png, table
from radiomics_assets.modelling.study import OutcomeType
from radiomics_assets.modelling.tasks.base import PrimaryMetric, Task, bootstrap_weights, interval, jsonable
from radiomics_assets.modelling.tasks.binary import INNER_CV_FAMILIES, MODEL_FAMILIES, classifier
from radiomics_assets.modelling.tasks.binary import PARAM_GRIDS as BINARY_GRIDS

PARAM_GRIDS: dict[str, dict[str, list]] = {
    family: {key: list(values) for key, values in grid.items()} for family, grid in BINARY_GRIDS.items()
}
"""The binary grids (copied): 2 x 2 points for logreg and the SVM, 2 for the forest and boosting. Multiclass fits
cost more (boosting grows one tree per class per iteration). One inner search (3 folds, anova selection, one thread)
on 480 patients x 100 features, 3 classes: logreg 0.44 s, random forest 2.4 s, SVM 1.2 s, gradient boosting 2.0 s
(binary: 0.24, 1.8, 0.75, 1.45 s); the whole default procedure (5 x 2 outer folds, 9 permutations, 2 processes) on
600 x 100: 281 s."""


# --- scores ----------------------------------------------------------------------------------------------------


def class_aucs(y: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """One-vs-rest AUC of every column k (P(class k) for ``y == k`` against the rest); NaN for a class without
    positives or without negatives in ``y``. Mann-Whitney U / (n1 n0) with average ranks: ``roc_auc_score``'s value."""
    y = np.asarray(y, dtype=int)
    probabilities = np.asarray(probabilities, dtype=float)
    out = np.full(probabilities.shape[1], np.nan)
    for k in range(probabilities.shape[1]):
        positive = y == k
        n1 = int(positive.sum())
        n0 = len(y) - n1
        if n1 and n0:
            ranks = rankdata(probabilities[:, k])
            out[k] = (ranks[positive].sum() - n1 * (n1 + 1) / 2) / (n1 * n0)
    return out


def macro_auc(y: np.ndarray, probabilities: np.ndarray) -> float:
    """Mean one-vs-rest AUC over the classes ``y`` holds with positives and negatives (NaN below two classes)."""
    aucs = class_aucs(y, probabilities)
    return float(np.mean(aucs[np.isfinite(aucs)])) if np.isfinite(aucs).any() else float("nan")


def fold_class_aucs(y: np.ndarray, repeat_probabilities: np.ndarray, fold_of: np.ndarray) -> np.ndarray:
    """(folds, K) one-vs-rest AUCs of every outer test fold (repeat-major), NaN where a fold cannot define one."""
    rows = []
    for probabilities, folds in zip(repeat_probabilities, fold_of, strict=True):
        for f in np.unique(folds):
            members = folds == f
            rows.append(class_aucs(y[members], probabilities[members]))
    return np.asarray(rows, dtype=float).reshape(len(rows), -1)


def _row_mean(values: np.ndarray) -> np.ndarray:
    """Mean of each row over its finite entries; NaN for a row without any (no warning)."""
    finite = np.isfinite(values)
    counts = finite.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, np.where(finite, values, 0.0).sum(axis=1) / counts, np.nan)


def weighted_class_auc(score: np.ndarray, positive: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUC of ``score`` for ``positive`` against the rest under each row of patient ``weights`` (B, n): the
    Mann-Whitney statistic with every (positive, negative) pair counted w_i w_j times; NaN where a side weighs 0."""
    pos, neg = np.flatnonzero(positive), np.flatnonzero(~positive)
    if not len(pos) or not len(neg):
        return np.full(len(weights), np.nan)
    diff = score[pos][:, None] - score[neg][None, :]
    wins = (diff > 0) + 0.5 * (diff == 0)
    wp, wn = weights[:, pos], weights[:, neg]
    pairs = wp.sum(axis=1) * wn.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(pairs > 0, ((wp @ wins) * wn).sum(axis=1) / pairs, np.nan)


def bootstrap_fold_macro_aucs(
    y: np.ndarray, repeat_probabilities: np.ndarray, fold_of: np.ndarray, n_bootstrap: int, seed: int = 0
) -> np.ndarray:
    """The fold-mean macro AUC of patient resamples with the fold models held fixed (its percentile CI is the
    headline CI): the value ``Task.bootstrap`` gives for the same seed, vectorised over the resamples.

    A resample with no scorable fold is dropped (as ``Task.bootstrap`` drops non-finite values).
    """
    if n_bootstrap <= 0:
        return np.empty(0)
    y = np.asarray(y, dtype=int)
    repeat_probabilities = np.asarray(repeat_probabilities, dtype=float)
    weights = bootstrap_weights(len(y), n_bootstrap, seed)
    per_fold = []
    for probabilities, folds in zip(repeat_probabilities, fold_of, strict=True):
        for f in np.unique(folds):
            members = np.flatnonzero(folds == f)
            w, labels, p = weights[:, members], y[members], probabilities[members]
            per_class = np.column_stack(
                [weighted_class_auc(p[:, k], labels == k, w) for k in range(probabilities.shape[1])]
            )
            per_fold.append(_row_mean(per_class))
    values = _row_mean(np.column_stack(per_fold))
    return values[np.isfinite(values)]


# --- threshold figures -----------------------------------------------------------------------------------------


def class_figures(y: np.ndarray, probabilities: np.ndarray, names: tuple[str, ...]) -> dict:
    """Accuracy, balanced accuracy, per-class precision / recall / F1 / support, macro F1 and the confusion matrix
    (rows: true class, columns: predicted) of the most probable class. Balanced accuracy and macro F1 average over
    the classes ``y`` holds (``balanced_accuracy_score``'s rule); a class never predicted has precision 0."""
    y = np.asarray(y, dtype=int)
    k = len(names)
    probabilities = np.asarray(probabilities, dtype=float).reshape(len(y), k)
    predicted = np.argmax(probabilities, axis=1) if len(y) else np.empty(0, dtype=int)
    matrix = np.zeros((k, k), dtype=int)
    np.add.at(matrix, (y, predicted), 1)
    hits = np.diag(matrix).astype(float)
    support, called = matrix.sum(axis=1), matrix.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(called > 0, hits / called, 0.0)
        recall = np.where(support > 0, hits / support, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    present = support > 0
    return {
        "accuracy": float(hits.sum() / len(y)) if len(y) else float("nan"),
        "balanced_accuracy": float(np.mean(recall[present])) if present.any() else float("nan"),
        "precision": {n: float(v) for n, v in zip(names, precision, strict=True)},
        "recall": {n: float(v) for n, v in zip(names, recall, strict=True)},
        "f1": {n: float(v) for n, v in zip(names, f1, strict=True)},
        "support": {n: int(v) for n, v in zip(names, support, strict=True)},
        "macro_f1": float(np.mean(f1[present])) if present.any() else float("nan"),
        "confusion_matrix": {"labels": list(names), "matrix": matrix.tolist()},
    }


# --- figures ---------------------------------------------------------------------------------------------------


def confusion_png(cm: dict, title: str) -> str:
    matrix = np.asarray(cm["matrix"], dtype=int)
    labels = cm["labels"]
    size = 2.5 + 0.6 * len(labels)
    fig, ax = figure(size, size)
    ax.imshow(matrix, cmap="Blues")
    top = matrix.max() if matrix.size else 0
    for (i, j), v in np.ndenumerate(matrix):
        ax.text(j, i, str(v), ha="center", va="center", fontsize=12, color="white" if v > top / 2 else "black")
    ticks = list(range(len(labels)))
    ax.set(
        xticks=ticks,
        yticks=ticks,
        xticklabels=[f"pred {n}" for n in labels],
        yticklabels=[f"true {n}" for n in labels],
        title=title,
    )
    ax.tick_params(axis="x", labelrotation=45)
    return png(fig)


def roc_png(y: np.ndarray, probabilities: np.ndarray, names: tuple[str, ...], aucs: dict, title: str) -> str:
    """One-vs-rest ROC curve of every class that has positives and negatives in ``y``."""
    y = np.asarray(y, dtype=int)
    fig, ax = figure(4.5, 4.5)
    for k, name in enumerate(names):
        positive = y == k
        if not positive.any() or positive.all():
            continue
        fpr, tpr, _ = roc_curve(positive.astype(int), probabilities[:, k])
        ax.plot(fpr, tpr, label=f"{name} vs rest (AUC {fmt(aucs.get(name))})")
    ax.plot([0, 1], [0, 1], "--", color="grey", label="chance")
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", title=title)
    ax.legend(loc="lower right", fontsize=8)
    return png(fig)


def _class_table(m: dict) -> str:
    head = "".join(f"<th>{h}</th>" for h in ("class", "AUC (one vs rest)", "precision", "recall", "F1", "patients"))
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{fmt(m['auc_per_class'].get(name))}</td>"
        f"<td>{fmt(m['precision'][name])}</td><td>{fmt(m['recall'][name])}</td><td>{fmt(m['f1'][name])}</td>"
        f"<td>{m['support'][name]}</td></tr>"
        for name in m["classes"]
    )
    return f"<table><tr>{head}</tr>{rows}</table>"


def figures_table(m: dict, *, external: bool = False) -> str:
    counts = ", ".join(f"{name}: {n}" for name, n in m["n_per_class"].items())
    rows = [
        ("Patients", f"{m['n_patients']} ({counts})"),
        (
            f"Macro one-vs-rest AUC (95 % CI, {m.get('n_bootstrap', 'n/a')} bootstrap resamples of patients)",
            f"{fmt(m['macro_auc'])} ({fmt(m['macro_auc_ci_low'])} to {fmt(m['macro_auc_ci_high'])})",
        ),
    ]
    if not external:
        if m.get("macro_auc_per_repeat"):
            rows.append(
                (
                    "Macro AUC of each CV repeat (mean of its folds)",
                    ", ".join(fmt(a) for a in m["macro_auc_per_repeat"]),
                )
            )
        rows.append(("SD of the macro AUC over the outer test folds", fmt(m.get("macro_auc_fold_sd"))))
        rows.append(("Pooled out-of-fold macro AUC (information only)", fmt(m.get("macro_auc_pooled"))))
    if m.get("permutation_p_value") is not None:
        rows.insert(2, ("Permutation p-value of the macro AUC (whole procedure)", fmt(m["permutation_p_value"])))
    rows += [
        ("Balanced accuracy (mean recall over classes; chance 1/K)", fmt(m["balanced_accuracy"])),
        ("Accuracy (most probable class)", fmt(m["accuracy"])),
        ("Macro F1", fmt(m["macro_f1"])),
    ]
    return table(rows)


def _plots(y, probabilities, m: dict, what: str) -> str:
    names = tuple(m["classes"])
    return (
        '<div class="plots">'
        + img(f"confusion matrix ({what})", confusion_png(m["confusion_matrix"], f"Confusion matrix ({what})"))
        + img(
            f"one-vs-rest ROC curves ({what})",
            roc_png(y, probabilities, names, m["auc_per_class"], f"One-vs-rest ROC ({what})"),
        )
        + "</div>"
    )


# --- the task --------------------------------------------------------------------------------------------------


class MulticlassTask(Task):
    kind = OutcomeType.multiclass
    primary_metric = "macro_auc"
    metric_label = "macro one-vs-rest AUC"
    chance_level = 0.5
    model_families = MODEL_FAMILIES
    selection_methods = ("anova", "mutual_info", "rfe", "l1", "tree")
    min_per_stratum = 4
    classes: tuple[str, ...] = ()
    """Class names in code order (set by training from ``study.yaml`` or the outcome table); empty: ``class <k>``."""

    def __init__(self, study=None):
        super().__init__(study)
        self.classes = tuple(self.study.outcome.classes)
        self.n_classes: int | None = None
        """K, the columns of a prediction: fixed by :meth:`prepare` (or the number of :attr:`classes`)."""

    # --- classes ---------------------------------------------------------------------------------------------
    def _k(self) -> int | None:
        return max(self.n_classes or 0, len(self.classes)) or None

    def class_names(self, k: int | None = None) -> tuple[str, ...]:
        """Names of codes 0..k-1 (default: K): :attr:`classes`, ``class <code>`` beyond them."""
        k = self._k() if k is None else k
        return tuple(self.classes[c] if c < len(self.classes) else f"class {c}" for c in range(k or 0))

    # --- models ----------------------------------------------------------------------------------------------
    def estimator(self, family: str, seed: int):
        return classifier(family, seed)

    def default_models(self, with_covariates: bool = False) -> tuple[str, ...]:
        return INNER_CV_FAMILIES if with_covariates else ("consensus",)

    def param_grid(self, family: str) -> dict[str, list]:
        if family not in PARAM_GRIDS:
            raise ValueError(f"unknown multiclass model family {family!r}; choose from {list(MODEL_FAMILIES)}")
        return {k: list(v) for k, v in PARAM_GRIDS[family].items()}

    # --- data ------------------------------------------------------------------------------------------------
    def target(self, table) -> np.ndarray:
        return np.asarray(table["label"], dtype=int)

    def strata(self, y: np.ndarray) -> np.ndarray:
        return np.asarray(y, dtype=int)

    def stratum_name(self, stratum: int) -> str:
        names = self.class_names(max(self._k() or 0, int(stratum) + 1))
        return names[int(stratum)]

    def prepare(self, y: np.ndarray) -> None:
        """Fix K (the prediction's columns): the named classes, or the highest code of the cohort + 1."""
        y = np.asarray(y, dtype=int)
        if len(y) and (y.min() < 0 or (self.classes and y.max() >= len(self.classes))):
            raise ValueError(
                f"multiclass codes must lie in 0..{len(self.classes) - 1} (classes {list(self.classes)}), "
                f"got {sorted(set(y.tolist()))}"
            )
        self.n_classes = max(len(self.classes), int(y.max()) + 1 if len(y) else 0)

    def check_size(self, y: np.ndarray) -> None:
        """Every class (named ones included, even when absent) needs :attr:`min_per_stratum` patients."""
        y = np.asarray(y, dtype=int)
        k = max(self._k() or 0, int(y.max()) + 1 if len(y) else 0)
        counts = np.bincount(y, minlength=k) if len(y) else np.zeros(k, dtype=int)
        if k < 2 or (counts > 0).sum() < 2 or counts.min() < self.min_per_stratum:
            described = ", ".join(f"{n}: {c}" for n, c in zip(self.class_names(k), counts, strict=True))
            raise ValueError(
                f"the multiclass cohort has {described or 'no patients'}; nested cross-validation needs at least "
                f"{self.min_per_stratum} patients in each class"
            )

    # --- predictions and scores ------------------------------------------------------------------------------
    def predict(self, estimator, X: np.ndarray) -> np.ndarray:
        """(n, K) class probabilities in code order; a class the model never saw has probability 0."""
        probabilities = np.asarray(estimator.predict_proba(X), dtype=float)
        seen = np.asarray(estimator.classes_).astype(int)
        k = self._k() or int(seen.max()) + 1
        out = np.zeros((len(probabilities), k))
        out[:, seen] = probabilities
        return out

    def score(self, y: np.ndarray, prediction: np.ndarray) -> float:
        return macro_auc(y, prediction)

    def estimate_description(self) -> str:
        return "macro one-vs-rest AUC of each outer test fold, averaged over the folds of all repeats"

    def bootstrap(self, y, repeat_predictions, fold_of, n_bootstrap: int, seed: int = 0) -> np.ndarray:
        return bootstrap_fold_macro_aucs(y, repeat_predictions, fold_of, n_bootstrap, seed)

    def candidate_extras(self, y: np.ndarray, repeat_predictions: np.ndarray) -> dict:
        pooled = np.asarray(repeat_predictions, dtype=float).mean(axis=0)
        figures = class_figures(y, pooled, self.class_names(pooled.shape[1]))
        return {"balanced_accuracy": figures["balanced_accuracy"], "macro_f1": figures["macro_f1"]}

    # --- figures ---------------------------------------------------------------------------------------------
    def _common(self, y: np.ndarray, names: tuple[str, ...]) -> dict:
        counts = np.bincount(np.asarray(y, dtype=int), minlength=len(names))
        return {
            "n_patients": int(len(y)),
            "n_per_class": {n: int(c) for n, c in zip(names, counts, strict=True)},
            "classes": list(names),
        }

    def metrics(self, cv, n_bootstrap: int = 1000, seed: int = 0) -> dict:
        y = np.asarray(cv.y, dtype=int)
        predictions = np.asarray(cv.repeat_predictions, dtype=float)
        fold_of = np.asarray(cv.fold_of)
        names = self.class_names(predictions.shape[-1])
        per_fold_class = fold_class_aucs(y, predictions, fold_of)
        per_fold = _row_mean(per_fold_class)
        value = float(np.nanmean(per_fold)) if np.isfinite(per_fold).any() else float("nan")
        boot = self.bootstrap(y, predictions, fold_of, n_bootstrap, seed)
        low, high = interval(boot)
        folds = per_fold.reshape(len(predictions), -1)
        pooled = predictions.mean(axis=0)
        with np.errstate(all="ignore"):
            per_class = [float(np.nanmean(c)) if np.isfinite(c).any() else float("nan") for c in per_fold_class.T]
        figures = {
            "primary_metric": PrimaryMetric(self.primary_metric, value, low, high, self.chance_level).as_dict(),
            "macro_auc": value,
            "macro_auc_ci_low": low,
            "macro_auc_ci_high": high,
            "n_bootstrap": int(len(boot)),
            "macro_auc_per_fold": per_fold,
            "macro_auc_fold_sd": float(np.nanstd(per_fold, ddof=1)) if np.isfinite(per_fold).sum() > 1 else np.nan,
            "macro_auc_per_repeat": [float(np.nanmean(row)) if np.isfinite(row).any() else np.nan for row in folds],
            "macro_auc_pooled": macro_auc(y, pooled),
            "auc_per_class": dict(zip(names, per_class, strict=True)),
            **class_figures(y, pooled, names),
            **self._common(y, names),
            "cv_scheme": cv.scheme,
            "estimator_note": (
                "Macro one-vs-rest AUC of each outer test fold against the model fitted without it, averaged over "
                "the folds of all repeats; 95 % CI: percentile bootstrap of patients with the fold models held "
                "fixed. The per-class AUCs are the same fold means per class. Accuracy, balanced accuracy, "
                "precision, recall, F1 and the confusion matrix call each patient the class of highest out-of-fold "
                "probability averaged over the repeats; the pooled macro AUC mixes fold models (information only)."
            ),
        }
        return jsonable(figures)

    def external_metrics(self, y: np.ndarray, prediction: np.ndarray, seed: int = 0, n_bootstrap: int = 1000) -> dict:
        y = np.asarray(y, dtype=int)
        prediction = np.asarray(prediction, dtype=float)
        names = self.class_names(prediction.shape[1] if prediction.ndim == 2 else None)
        if prediction.ndim != 2:
            prediction = prediction.reshape(len(y), len(names))
        value = macro_auc(y, prediction) if len(y) else float("nan")
        single = np.zeros((1, len(y)), dtype=int)
        boot = bootstrap_fold_macro_aucs(y, prediction[None], single, n_bootstrap, seed) if len(y) else np.empty(0)
        low, high = interval(boot)
        figures = {
            "primary_metric": PrimaryMetric(self.primary_metric, value, low, high, self.chance_level).as_dict(),
            "macro_auc": value,
            "macro_auc_ci_low": low,
            "macro_auc_ci_high": high,
            "n_bootstrap": int(len(boot)),
            "auc_per_class": dict(zip(names, class_aucs(y, prediction), strict=True)),
            **class_figures(y, prediction, names),
            **self._common(y, names),
            "estimator_note": (
                "Macro one-vs-rest AUC of the final model on the held-out cohort, scored once (over the classes it "
                "holds); 95 % CI: percentile bootstrap of its patients. Threshold figures call each patient the "
                "class of highest predicted probability."
            ),
        }
        return jsonable(figures)

    def report_html(self, metrics: dict, cv) -> str:
        pooled = np.asarray(cv.repeat_predictions, dtype=float).mean(axis=0)
        return (
            f"<p>{html.escape(metrics.get('estimator_note', ''))}</p>"
            + figures_table(metrics)
            + _class_table(metrics)
            + _plots(np.asarray(cv.y, dtype=int), pooled, metrics, "out-of-fold")
            + "<p>ROC curves: each patient's out-of-fold probability averaged over the repeats; the AUCs in the "
            "legend are the fold means.</p>"
        )

    def external_html(self, metrics: dict, y: np.ndarray, prediction: np.ndarray) -> str:
        y = np.asarray(y, dtype=int)
        plots = _plots(y, np.asarray(prediction, dtype=float), metrics, "external test") if len(y) else ""
        return figures_table(metrics, external=True) + _class_table(metrics) + plots

    def cohort_summary(self, y: np.ndarray) -> dict:
        y = np.asarray(y, dtype=int)
        k = max(self._k() or 0, int(y.max()) + 1 if len(y) else 0)
        common = self._common(y, self.class_names(k))
        return {"n_patients": common["n_patients"], "n_per_class": common["n_per_class"]}

    def headline(self, metrics: dict) -> dict[str, float]:
        keys = ("macro_auc", "macro_auc_ci_low", "macro_auc_ci_high", "balanced_accuracy", "accuracy", "macro_f1")
        return {k: metrics.get(k) for k in keys}

    def prediction_table(self, prediction: np.ndarray, saved) -> dict[str, np.ndarray]:
        """``predicted_class`` (the name of the most probable class) and ``probability_<class name>`` per class."""
        prediction = np.asarray(prediction, dtype=float)
        if prediction.ndim == 1:  # no rows
            prediction = prediction.reshape(0, len(self.class_names()))
        names = self.class_names(prediction.shape[1])
        columns = {"predicted_class": np.asarray([names[k] for k in np.argmax(prediction, axis=1)], dtype=object)}
        for k, name in enumerate(names):
            columns[f"probability_{name}"] = prediction[:, k]
        return columns
