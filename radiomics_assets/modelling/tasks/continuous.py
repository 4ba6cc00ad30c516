"""Continuous outcome (e.g. a lab value, a tumour's Ki-67 index): ridge, forest, SVR and boosting regressors, the
cross-validated R², errors, correlations and calibration.

``y`` holds the values (float). A prediction is the predicted value per patient.

Primary metric: the cross-validated R² (Q²) of each outer repeat, 1 - Σ(y - ŷ)² / Σ(y - ȳ)² over all patients,
each predicted out of fold by the model fitted without it, averaged over the repeats, with a percentile bootstrap
CI of patients (fold models held fixed). The R² of each small test fold against its own mean is biased downward
(its denominator is small and noisy), so the per-fold R² is information only (``r2_fold_mean``).

Chance level 0. Under the null the estimate sits slightly below 0: even the best uninformed model, the training
mean, scores about -(1/n_train + 1/(n - 1)) ≈ -(2 - 1/k) / n_train with k outer folds (its out-of-fold error
carries the training mean's variance, σ²/n_train, and the total sum of squares has n - 1 degrees of freedom):
-0.023 for 100 patients in 5 folds. Models that fit noise score lower still.

Outer and inner splits are stratified by value bin: the quintiles of the whole analysed cohort, fixed once by
:meth:`ContinuousTask.prepare` (they only balance the splits; no model sees them).
"""

from __future__ import annotations

import html

import numpy as np
from scipy.stats import pearsonr, spearmanr
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.linear_model import Ridge
from sklearn.svm import SVR

from radiomics_assets.modelling.choices import ModelFamily
from radiomics_assets.modelling.fast_forest import FastRandomForestRegressor
from radiomics_assets.modelling.plots import figure, fmt, img, png, table
from radiomics_assets.modelling.study import OutcomeType
from radiomics_assets.modelling.tasks.base import PrimaryMetric, Task, bootstrap_weights, interval, jsonable

MODEL_FAMILIES = (ModelFamily.linear, ModelFamily.random_forest, ModelFamily.svm, ModelFamily.gradient_boosting)

PARAM_GRIDS: dict[str, dict[str, list]] = {
    "linear": {"select__k": [5, 10], "model__alpha": [1.0, 10.0, 100.0]},
    "random_forest": {"select__k": [5, 20], "model__max_depth": [3, 6]},
    "svm": {"select__k": [5, 10], "model__C": [0.5, 5.0]},
    "gradient_boosting": {"select__k": [5, 20], "model__max_depth": [2]},
}
"""Small on purpose, like the binary grids: the outer CV and every permutation refit the whole search. Ridge is
cheap (a closed form), so it gets 2 x 3 points; ``alpha`` is scale-free in y (the penalty and the residual sum of
squares scale together). One inner search (3 folds, anova selection, one thread) on 480 patients x 100 features:
linear 0.46 s, random forest 3.5 s, SVM 0.37 s, gradient boosting 0.35 s; the whole default procedure (5 x 2 outer
folds, 9 permutations, 2 processes) on 600 x 100: 177 s."""

MIN_PATIENTS = 20
"""Fewest patients a continuous outcome is cross-validated with (5 value bins of 4 for 5 x 3 nested folds)."""

MIN_BIN = 5
"""A value bin (stratum) smaller than this, possible only with tied values, merges with its smaller neighbour, so
no tiny stratum cuts the number of outer folds (at most the patients of the smallest stratum)."""


class ScaledSVR(RegressorMixin, BaseEstimator):
    """RBF support vector regression on the standardised outcome, back-transformed.

    ``C`` and ``epsilon`` (0.1) are in units of y's SD, so one grid serves outcomes of any scale (SVR on raw
    values of, say, 1000 ± 200 would be all but flat)."""

    def __init__(self, C: float = 1.0, epsilon: float = 0.1, gamma="scale"):
        self.C = C
        self.epsilon = epsilon
        self.gamma = gamma

    def fit(self, X, y):
        y = np.asarray(y, dtype=float)
        self.y_mean_ = float(y.mean())
        self.y_scale_ = float(y.std()) or 1.0
        self.svr_ = SVR(kernel="rbf", C=self.C, epsilon=self.epsilon, gamma=self.gamma)
        self.svr_.fit(X, (y - self.y_mean_) / self.y_scale_)
        self.n_features_in_ = self.svr_.n_features_in_
        return self

    def predict(self, X):
        return self.y_mean_ + self.y_scale_ * self.svr_.predict(X)


def regressor(family: str, seed: int) -> BaseEstimator:
    """A fresh regressor of ``family``."""
    if family == "linear":
        return Ridge(alpha=10.0)
    if family == "random_forest":
        return FastRandomForestRegressor(n_estimators=100, max_features="sqrt", min_samples_leaf=2, random_state=seed)
    if family == "svm":
        return ScaledSVR()
    if family == "gradient_boosting":
        return HistGradientBoostingRegressor(
            max_iter=50, learning_rate=0.1, max_bins=32, min_samples_leaf=3, random_state=seed
        )
    raise ValueError(f"unknown continuous model family {family!r}; choose from {list(MODEL_FAMILIES)}")


# --- scores ----------------------------------------------------------------------------------------------------


def r2(y: np.ndarray, prediction: np.ndarray) -> float:
    """1 - Σ(y - ŷ)² / Σ(y - ȳ)² (``r2_score``); NaN when y is constant or there are fewer than 2 patients."""
    y, prediction = np.asarray(y, dtype=float), np.asarray(prediction, dtype=float)
    total = float(((y - y.mean()) ** 2).sum()) if len(y) > 1 else 0.0
    return float(1 - ((y - prediction) ** 2).sum() / total) if total > 0 else float("nan")


def repeat_r2(y: np.ndarray, repeat_predictions: np.ndarray) -> np.ndarray:
    """Out-of-fold R² (Q²) of every repeat: the R² of all patients' out-of-fold predictions of that repeat."""
    return np.asarray([r2(y, p) for p in np.asarray(repeat_predictions, dtype=float)], dtype=float)


def bootstrap_repeat_r2(y: np.ndarray, repeat_predictions: np.ndarray, n_bootstrap: int, seed: int = 0) -> np.ndarray:
    """The mean over repeats of the out-of-fold R² on patient resamples (fold models held fixed), vectorised: a
    resample's sums of squares are its draw counts times each patient's squared errors. Resamples of one value
    only (total sum of squares 0) are dropped."""
    if n_bootstrap <= 0:
        return np.empty(0)
    y = np.asarray(y, dtype=float)
    predictions = np.asarray(repeat_predictions, dtype=float)
    centre = y.mean()  # centred sums avoid cancellation for values far from 0
    yc, pc = y - centre, predictions - centre
    n = len(y)
    weights = bootstrap_weights(n, n_bootstrap, seed)
    mean = weights @ yc / n
    total = weights @ yc**2 - n * mean**2
    errors = weights @ ((yc[None, :] - pc) ** 2).T  # (B, repeats)
    with np.errstate(invalid="ignore", divide="ignore"):
        scores = 1 - errors / total[:, None]
    keep = total > 1e-12 * max(float((yc**2).sum()), 1e-300)
    values = scores[keep].mean(axis=1)
    return values[np.isfinite(values)]


def _correlation(function, x: np.ndarray, y: np.ndarray) -> float:
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(function(x, y)[0])


def regression_figures(y: np.ndarray, prediction: np.ndarray) -> dict:
    """Errors, correlations and calibration (observed = intercept + slope x predicted, ordinary least squares:
    slope 1 is ideal, below 1 the predictions are too spread, the sign of overfitting)."""
    y, prediction = np.asarray(y, dtype=float), np.asarray(prediction, dtype=float)
    residual = y - prediction
    slope = intercept = float("nan")
    if len(y) > 1 and np.ptp(prediction) > 0:
        centred = prediction - prediction.mean()
        slope = float((centred * (y - y.mean())).sum() / (centred**2).sum())
        intercept = float(y.mean() - slope * prediction.mean())
    return {
        "mae": float(np.mean(np.abs(residual))) if len(y) else float("nan"),
        "rmse": float(np.sqrt(np.mean(residual**2))) if len(y) else float("nan"),
        "pearson_r": _correlation(pearsonr, prediction, y),
        "spearman_r": _correlation(spearmanr, prediction, y),
        "calibration_slope": slope,
        "calibration_intercept": intercept,
    }


def _summary(y: np.ndarray) -> dict:
    y = np.asarray(y, dtype=float)
    return {
        "n_patients": int(len(y)),
        "mean": float(y.mean()) if len(y) else float("nan"),
        "sd": float(y.std(ddof=1)) if len(y) > 1 else float("nan"),
    }


def value_bins(y: np.ndarray, quantiles: int = 5, min_bin: int = MIN_BIN) -> np.ndarray:
    """Interior edges of the value bins of ``y``: its quantiles (quintiles by default); while a bin holds fewer
    than ``min_bin`` patients (only with tied values) the edge between it and its smaller neighbour is dropped.
    A patient's bin is the number of edges <= its value."""
    y = np.asarray(y, dtype=float)
    if not len(y):
        return np.empty(0)
    edges = np.unique(np.quantile(y, np.arange(1, quantiles) / quantiles))
    while len(edges):
        counts = np.bincount(np.searchsorted(edges, y, side="right"), minlength=len(edges) + 1)
        small = int(counts.argmin())
        if counts[small] >= min_bin:
            break
        if small == 0:
            drop = 0
        elif small == len(counts) - 1:
            drop = len(edges) - 1
        else:
            drop = small - 1 if counts[small - 1] <= counts[small + 1] else small
        edges = np.delete(edges, drop)
    return edges


# --- figures ---------------------------------------------------------------------------------------------------


def scatter_png(y: np.ndarray, prediction: np.ndarray, m: dict, title: str) -> str:
    """Observed against predicted value, the identity line and the OLS calibration line; R² in the legend."""
    y, prediction = np.asarray(y, dtype=float), np.asarray(prediction, dtype=float)
    fig, ax = figure(4.5, 4.5)
    ci = ""
    if np.isfinite(m.get("r2_ci_low", np.nan)):
        ci = f" (95% CI {m['r2_ci_low']:.2f} to {m['r2_ci_high']:.2f})"
    ax.scatter(prediction, y, s=12, alpha=0.6, label=f"patients: R² {fmt(m.get('r2'))}{ci}")
    both = np.concatenate([y, prediction])
    lo, hi = (float(both.min()), float(both.max())) if len(both) else (0.0, 1.0)
    ax.plot([lo, hi], [lo, hi], "--", color="grey", label="identity (perfect prediction)")
    slope, intercept = m.get("calibration_slope"), m.get("calibration_intercept")
    if slope is not None and np.isfinite(slope) and len(prediction):
        xs = np.array([float(prediction.min()), float(prediction.max())])
        ax.plot(xs, intercept + slope * xs, color="C1", label=f"calibration: slope {slope:.2f}")
    ax.set(xlabel="predicted value", ylabel="observed value", title=title)
    ax.legend(loc="upper left", fontsize=8)
    return png(fig)


def figures_table(m: dict, *, external: bool = False) -> str:
    rows = [
        ("Patients", f"{m['n_patients']} (mean {fmt(m['mean'])}, SD {fmt(m['sd'])})"),
        (
            ("R²" if external else "Cross-validated R² (Q²)")
            + f" (95 % CI, {m.get('n_bootstrap', 'n/a')} bootstrap resamples of patients)",
            f"{fmt(m['r2'])} ({fmt(m['r2_ci_low'])} to {fmt(m['r2_ci_high'])})",
        ),
    ]
    if not external:
        if m.get("r2_per_repeat"):
            rows.append(
                ("R² of each CV repeat (its out-of-fold predictions)", ", ".join(fmt(v) for v in m["r2_per_repeat"]))
            )
        rows.append(("Mean R² of the outer test folds (information: biased downward)", fmt(m.get("r2_fold_mean"))))
    if m.get("permutation_p_value") is not None:
        rows.insert(2, ("Permutation p-value of the R² (whole procedure)", fmt(m["permutation_p_value"])))
    rows += [
        (
            "MAE (mean absolute error; 95 % CI)",
            f"{fmt(m['mae'])} ({fmt(m.get('mae_ci_low'))} to {fmt(m.get('mae_ci_high'))})",
        ),
        ("RMSE (root mean squared error)", fmt(m["rmse"])),
        ("Pearson r (predicted, observed)", fmt(m["pearson_r"])),
        ("Spearman r (predicted, observed)", fmt(m["spearman_r"])),
        (
            "Calibration slope (1 ideal) / intercept (0 ideal at slope 1)",
            f"{fmt(m['calibration_slope'])} / {fmt(m['calibration_intercept'])}",
        ),
    ]
    return table(rows)


# --- the task --------------------------------------------------------------------------------------------------


class ContinuousTask(Task):
    kind = OutcomeType.continuous
    primary_metric = "r2"
    metric_label = "R²"
    chance_level = 0.0
    """An uninformed model scores slightly below 0 (the module docstring)."""
    model_families = MODEL_FAMILIES
    selection_methods = ("anova", "mutual_info", "l1", "tree")
    min_per_stratum = 2

    def __init__(self, study=None):
        super().__init__(study)
        self.bin_edges: np.ndarray | None = None
        """Interior edges of the value bins that stratify the splits, fixed by :meth:`prepare`."""

    # --- models ----------------------------------------------------------------------------------------------
    def estimator(self, family: str, seed: int) -> BaseEstimator:
        return regressor(family, seed)

    def param_grid(self, family: str) -> dict[str, list]:
        if family not in PARAM_GRIDS:
            raise ValueError(f"unknown continuous model family {family!r}; choose from {list(MODEL_FAMILIES)}")
        return {k: list(v) for k, v in PARAM_GRIDS[family].items()}

    # --- data ------------------------------------------------------------------------------------------------
    def target(self, table) -> np.ndarray:
        return np.asarray(table["label"], dtype=float)

    def prepare(self, y: np.ndarray) -> None:
        """Fix the value bins (quintiles of the whole analysed cohort) that stratify outer and inner splits."""
        self.bin_edges = value_bins(y)

    def strata(self, y: np.ndarray) -> np.ndarray:
        """Value bin per patient: the bins of :meth:`prepare` (or, before it, of ``y`` itself)."""
        y = np.asarray(y, dtype=float)
        edges = self.bin_edges if self.bin_edges is not None else value_bins(y)
        return np.searchsorted(edges, y, side="right").astype(int)

    def stratum_name(self, stratum: int) -> str:
        return f"value bin {int(stratum) + 1}"

    def check_size(self, y: np.ndarray) -> None:
        y = np.asarray(y, dtype=float)
        if not np.isfinite(y).all():
            raise ValueError("the continuous outcome holds a missing or non-finite value")
        if len(y) < MIN_PATIENTS:
            raise ValueError(
                f"the continuous cohort has {len(y)} patients with a value; nested cross-validation (outer and "
                f"inner folds stratified by value quintile) needs at least {MIN_PATIENTS}"
            )
        if np.ptp(y) == 0:
            raise ValueError(
                f"every patient of the continuous cohort has the same value ({y[0]:g}): nothing to predict"
            )

    # --- predictions and scores ------------------------------------------------------------------------------
    def predict(self, estimator, X: np.ndarray) -> np.ndarray:
        return np.asarray(estimator.predict(X), dtype=float).ravel()

    def score(self, y: np.ndarray, prediction: np.ndarray) -> float:
        return r2(y, prediction)

    def cv_estimate(self, y: np.ndarray, repeat_predictions: np.ndarray, fold_of: np.ndarray) -> float:
        """Mean over repeats of each repeat's out-of-fold R² (the per-fold R² of small folds is biased down)."""
        values = repeat_r2(y, repeat_predictions)
        return float(np.mean(values[np.isfinite(values)])) if np.isfinite(values).any() else float("nan")

    def estimate_description(self) -> str:
        return (
            "out-of-fold R² (Q²) of each repeat, 1 - Σ(y - ŷ)² / Σ(y - ȳ)² over all patients each predicted by the "
            "fold model fitted without it, averaged over the repeats"
        )

    def bootstrap(self, y, repeat_predictions, fold_of, n_bootstrap: int, seed: int = 0) -> np.ndarray:
        return bootstrap_repeat_r2(y, repeat_predictions, n_bootstrap, seed)

    def candidate_extras(self, y: np.ndarray, repeat_predictions: np.ndarray) -> dict:
        figures = regression_figures(y, np.asarray(repeat_predictions, dtype=float).mean(axis=0))
        return {"mae": figures["mae"], "rmse": figures["rmse"]}

    # --- figures ---------------------------------------------------------------------------------------------
    def metrics(self, cv, n_bootstrap: int = 1000, seed: int = 0) -> dict:
        y = np.asarray(cv.y, dtype=float)
        predictions = np.asarray(cv.repeat_predictions, dtype=float)
        fold_of = np.asarray(cv.fold_of)
        per_repeat = repeat_r2(y, predictions)
        value = self.cv_estimate(y, predictions, fold_of)
        boot = self.bootstrap(y, predictions, fold_of, n_bootstrap, seed)
        low, high = interval(boot)
        per_fold = self.fold_scores(y, predictions, fold_of)
        mean_prediction = predictions.mean(axis=0)
        mae_low, mae_high = interval(_bootstrap_mae(y, mean_prediction, n_bootstrap, seed))
        figures = {
            "primary_metric": PrimaryMetric(self.primary_metric, value, low, high, self.chance_level).as_dict(),
            "r2": value,
            "r2_ci_low": low,
            "r2_ci_high": high,
            "n_bootstrap": int(len(boot)),
            "r2_per_repeat": per_repeat,
            "r2_per_fold": per_fold,
            "r2_fold_mean": float(np.nanmean(per_fold)) if np.isfinite(per_fold).any() else float("nan"),
            "r2_fold_sd": float(np.nanstd(per_fold, ddof=1)) if np.isfinite(per_fold).sum() > 1 else float("nan"),
            "r2_of_mean_prediction": r2(y, mean_prediction),
            **regression_figures(y, mean_prediction),
            "mae_ci_low": mae_low,
            "mae_ci_high": mae_high,
            **_summary(y),
            "cv_scheme": cv.scheme,
            "estimator_note": (
                "R²: the out-of-fold R² (Q²) of each repeat, 1 - Σ(y - ŷ)² / Σ(y - ȳ)² over all patients each "
                "predicted by the fold model fitted without it, averaged over the repeats; 95 % CI: percentile "
                "bootstrap of patients with the fold models held fixed. Chance is 0 (an uninformed model scores "
                "slightly below). The mean R² of the outer test folds is biased downward (small folds) and is "
                "information only. MAE, RMSE, the correlations and the calibration use each patient's out-of-fold "
                "prediction averaged over the repeats."
            ),
        }
        return jsonable(figures)

    def external_metrics(self, y: np.ndarray, prediction: np.ndarray, seed: int = 0, n_bootstrap: int = 1000) -> dict:
        y = np.asarray(y, dtype=float)
        prediction = np.asarray(prediction, dtype=float).ravel()
        value = r2(y, prediction)
        boot = bootstrap_repeat_r2(y, prediction[None], n_bootstrap, seed) if len(y) else np.empty(0)
        low, high = interval(boot)
        mae_low, mae_high = interval(_bootstrap_mae(y, prediction, n_bootstrap, seed))
        figures = {
            "primary_metric": PrimaryMetric(self.primary_metric, value, low, high, self.chance_level).as_dict(),
            "r2": value,
            "r2_ci_low": low,
            "r2_ci_high": high,
            "n_bootstrap": int(len(boot)),
            **regression_figures(y, prediction),
            "mae_ci_low": mae_low,
            "mae_ci_high": mae_high,
            **_summary(y),
            "estimator_note": (
                "R² of the final model on the held-out cohort (against that cohort's own mean), scored once; 95 % "
                "CI: percentile bootstrap of its patients."
            ),
        }
        return jsonable(figures)

    def report_html(self, metrics: dict, cv) -> str:
        mean_prediction = np.asarray(cv.repeat_predictions, dtype=float).mean(axis=0)
        return (
            f"<p>{html.escape(metrics.get('estimator_note', ''))}</p>"
            + figures_table(metrics)
            + '<div class="plots">'
            + img(
                "predicted against observed value (out-of-fold)",
                scatter_png(cv.y, mean_prediction, metrics, "Observed vs predicted (out-of-fold, repeat mean)"),
            )
            + "</div>"
        )

    def external_html(self, metrics: dict, y: np.ndarray, prediction: np.ndarray) -> str:
        plot = ""
        if len(y):
            plot = (
                '<div class="plots">'
                + img(
                    "predicted against observed value (external test)",
                    scatter_png(y, prediction, metrics, "Observed vs predicted (external test)"),
                )
                + "</div>"
            )
        return figures_table(metrics, external=True) + plot

    def cohort_summary(self, y: np.ndarray) -> dict:
        return _summary(y)

    def headline(self, metrics: dict) -> dict[str, float]:
        return {k: metrics.get(k) for k in ("r2", "r2_ci_low", "r2_ci_high", "mae", "rmse")}

    def prediction_table(self, prediction: np.ndarray, saved) -> dict[str, np.ndarray]:
        return {"predicted_value": np.asarray(prediction, dtype=float).ravel()}


def _bootstrap_mae(y: np.ndarray, prediction: np.ndarray, n_bootstrap: int, seed: int) -> np.ndarray:
    if n_bootstrap <= 0 or not len(y):
        return np.empty(0)
    weights = bootstrap_weights(len(y), n_bootstrap, seed)
    return weights @ np.abs(np.asarray(y, dtype=float) - prediction) / len(y)
