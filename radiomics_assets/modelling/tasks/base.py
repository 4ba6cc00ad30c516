"""What every outcome type gives the one honest procedure: models, grids, selection, splits, scores and figures.

The procedure (``estimators.CandidateSearch``, ``validation.cross_validate``, the permutation test, the final fit,
the report) is written once against :class:`Task`; each outcome type is one subclass in a file named for it
(``binary.py``, ``multiclass.py``, ``continuous.py``, ``survival.py``). ``y`` is whatever the task's estimators
take: class codes (int), values (float), or scikit-survival's structured ``(event, time)`` array; the procedure
only indexes it.

A *prediction* is what the task stores per patient out of fold: a vector (binary: P(class 1); continuous: the
value; survival column 0: the risk) or a matrix (multiclass: class probabilities; survival: risk, then survival
probabilities at :attr:`Task.times`). ``cv_estimate`` turns the out-of-fold predictions of all repeats into the
primary metric, the same way for the observed labels, every bootstrap resample and every permutation.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass

import numpy as np
from sklearn.base import BaseEstimator

from radiomics_assets.modelling.plots import fmt, table
from radiomics_assets.modelling.study import OutcomeType, Study


@dataclass(frozen=True)
class PrimaryMetric:
    """The task's headline figure: ``metrics.json`` ``primary_metric``."""

    name: str
    value: float
    ci_low: float
    ci_high: float
    chance: float
    """Its value for a model with no information (AUC 0.5, c-index 0.5, R² 0)."""

    def as_dict(self) -> dict:
        return asdict(self)


class Task(ABC):
    """One outcome type. Subclasses set the class attributes and implement the abstract methods."""

    kind: OutcomeType
    primary_metric: str
    """Name of the primary metric in ``metrics.json`` (``auc``, ``macro_auc``, ``r2``, ``harrell_c``)."""
    metric_label: str
    """How the report and the UI name it (``AUC``, ``macro one-vs-rest AUC``, ``R²``, ``Harrell's c-index``)."""
    chance_level: float
    model_families: tuple[str, ...]
    """Every family this task can fit, in the default candidate order."""
    selection_methods: tuple[str, ...]
    """Selection methods (``selection.Selector``) this task accepts; the first is the default."""
    min_per_stratum: int = 4
    """Nested CV needs at least this many patients in every stratum (class, events and censored)."""

    def __init__(self, study: Study | None = None):
        self.study = study or Study()

    # --- models --------------------------------------------------------------------------------------------
    @abstractmethod
    def estimator(self, family: str, seed: int) -> BaseEstimator:
        """A fresh, unfitted estimator of ``family`` (the Pipeline's ``model`` step)."""

    def default_models(self, with_covariates: bool = False) -> tuple[str, ...]:
        """The candidate families when the settings name none (every family unless a type says otherwise)."""
        return self.model_families

    @abstractmethod
    def param_grid(self, family: str) -> dict[str, list]:
        """Hyperparameter grid of ``family``: ``select__k`` and ``model__<parameter>`` keys."""

    # --- data ----------------------------------------------------------------------------------------------
    @abstractmethod
    def target(self, table) -> np.ndarray:
        """``y`` from the rows of an :class:`~radiomics_assets.modelling.study.OutcomeTable` table."""

    @abstractmethod
    def strata(self, y: np.ndarray) -> np.ndarray:
        """Integer stratum per patient that outer and inner splits balance (class, event, value quantile)."""

    def check_size(self, y: np.ndarray) -> None:
        """Raise ``ValueError`` when the cohort is too small for nested cross-validation."""
        strata, counts = np.unique(self.strata(y), return_counts=True)
        if len(strata) < 2 or counts.min() < self.min_per_stratum:
            described = ", ".join(f"{self.stratum_name(s)}: {c}" for s, c in zip(strata, counts, strict=True))
            raise ValueError(
                f"the {self.kind} cohort has {described}; nested cross-validation needs at least "
                f"{self.min_per_stratum} patients in each"
            )

    def stratum_name(self, stratum: int) -> str:
        return str(stratum)

    def prepare(self, y: np.ndarray) -> None:
        """Called once with the whole analysed cohort's ``y`` before cross-validation and the final fit: a task
        may fix evaluation points here (survival: the time grid of survival probabilities); nothing learned
        from ``y`` may reach a model through it."""
        return None

    def fold_extras(self, estimator, X_train: np.ndarray, y_train: np.ndarray) -> dict:
        """What a fold's model says about its own training patients that the figures need (survival: the
        training median risk that splits test patients into risk groups); stored per outer split."""
        return {}

    def permute(self, y: np.ndarray, groups: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Outcomes permuted between groups (a group keeps one outcome; survival keeps (time, event) pairs)."""
        _, first, inverse = np.unique(groups, return_index=True, return_inverse=True)
        return y[first][rng.permutation(len(first))][inverse]

    def digest(self, y: np.ndarray) -> bytes:
        """Bytes of ``y`` that seed the outer splits (``validation.split_seed``): every labelling its own order."""
        return np.ascontiguousarray(y).tobytes()

    # --- predictions and scores ----------------------------------------------------------------------------
    @abstractmethod
    def predict(self, estimator, X: np.ndarray) -> np.ndarray:
        """The stored prediction per row of ``X`` (see the module docstring)."""

    @abstractmethod
    def score(self, y: np.ndarray, prediction: np.ndarray) -> float:
        """The primary metric of ``prediction`` on one set of patients (inner CV and each outer fold); NaN when
        the set cannot define it (e.g. one class only)."""

    def scorer(self):
        """The inner CV's scoring callable (``GridSearchCV(scoring=...)``): the primary metric."""

        def primary(estimator, X, y) -> float:
            return self.score(y, self.predict(estimator, X))

        return primary

    def cv_estimate(self, y: np.ndarray, repeat_predictions: np.ndarray, fold_of: np.ndarray) -> float:
        """The headline estimate from out-of-fold predictions: by default the mean over every outer test fold of
        every repeat (each fold scored only against the model that predicted it)."""
        return float(np.nanmean(self.fold_scores(y, repeat_predictions, fold_of)))

    def estimate_description(self) -> str:
        """How ``cv_estimate`` is computed, for the CV scheme text of the report."""
        return "mean over the outer test folds of all repeats"

    def candidate_extras(self, y: np.ndarray, repeat_predictions: np.ndarray) -> dict:
        """Further figures of one candidate's out-of-fold predictions for the candidates table (binary: average
        precision and Brier score)."""
        return {}

    def fold_scores(self, y: np.ndarray, repeat_predictions: np.ndarray, fold_of: np.ndarray) -> np.ndarray:
        """Primary metric of every outer test fold (repeat-major)."""
        out = []
        for predictions, folds in zip(repeat_predictions, fold_of, strict=True):
            for f in np.unique(folds):
                members = folds == f
                out.append(self.score(y[members], predictions[members]))
        return np.asarray(out, dtype=float)

    def bootstrap(
        self, y: np.ndarray, repeat_predictions: np.ndarray, fold_of: np.ndarray, n_bootstrap: int, seed: int = 0
    ) -> np.ndarray:
        """``cv_estimate`` on patient resamples with the fold models held fixed (its percentile CI is the
        headline CI). The same ``seed`` draws the same patients, so two procedures on the same patients compare
        paired."""
        if n_bootstrap <= 0:
            return np.empty(0)
        draws = np.random.default_rng(seed).integers(0, len(y), (n_bootstrap, len(y)))
        with np.errstate(all="ignore"):
            values = [self.cv_estimate(y[idx], repeat_predictions[:, idx], fold_of[:, idx]) for idx in draws]
        values = np.asarray(values, dtype=float)
        return values[np.isfinite(values)]

    # --- figures -------------------------------------------------------------------------------------------
    @abstractmethod
    def metrics(self, cv, n_bootstrap: int = 1000, seed: int = 0) -> dict:
        """Every figure of the task from a ``validation.CrossValidation`` (``metrics.json``), including
        ``primary_metric`` (:meth:`PrimaryMetric.as_dict`)."""

    @abstractmethod
    def external_metrics(self, y: np.ndarray, prediction: np.ndarray, seed: int = 0) -> dict:
        """The same figures for a held-out cohort scored once by the final model (``metrics.json`` ``external``)."""

    @abstractmethod
    def report_html(self, metrics: dict, cv) -> str:
        """The task's report section(s): its figures, tables and plots (self-contained HTML)."""

    def external_html(self, metrics: dict, y: np.ndarray, prediction: np.ndarray) -> str:
        """The report's section for a held-out cohort (default: its figures as a table)."""
        rows = [
            (k, fmt(v) if isinstance(v, float) else str(v))
            for k, v in metrics.items()
            if not isinstance(v, dict | list)
        ]
        return table(rows)

    @abstractmethod
    def cohort_summary(self, y: np.ndarray) -> dict:
        """Counts for the card, the report and the UI (``n_patients`` and per class or events/censored)."""

    def headline(self, metrics: dict) -> dict[str, float]:
        """The few numbers the UI metadata and the CLI summary show (primary metric and CI first)."""
        primary = metrics["primary_metric"]
        return {
            primary["name"]: primary["value"],
            f"{primary['name']}_ci_low": primary["ci_low"],
            f"{primary['name']}_ci_high": primary["ci_high"],
        }

    def prediction_table(self, prediction: np.ndarray, saved) -> dict[str, np.ndarray]:
        """Columns of table ``predictions`` (and of ``predict``) for new patients, from their predictions."""
        return {"prediction": np.asarray(prediction, dtype=float)}

    def primary(self, cv, n_bootstrap: int, seed: int) -> PrimaryMetric:
        """The primary metric of a cross-validation with its percentile bootstrap CI."""
        value = self.cv_estimate(cv.y, cv.repeat_predictions, cv.fold_of)
        boot = self.bootstrap(cv.y, cv.repeat_predictions, cv.fold_of, n_bootstrap, seed)
        low, high = (float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))) if len(boot) else (np.nan,) * 2
        return PrimaryMetric(self.primary_metric, float(value), float(low), float(high), self.chance_level)


def bootstrap_weights(n: int, n_bootstrap: int, seed: int) -> np.ndarray:
    """(n_bootstrap, n) how often each patient is drawn: the resamples of :meth:`Task.bootstrap` (same seed, same
    draws), so figures of different procedures on the same patients compare paired."""
    draws = np.random.default_rng(seed).integers(0, n, (n_bootstrap, n))
    flat = (draws + np.arange(n_bootstrap)[:, None] * n).ravel()
    return np.bincount(flat, minlength=n_bootstrap * n).reshape(n_bootstrap, n).astype(float)


def jsonable(value):
    """Figures as plain Python (dicts, lists, float, int, bool) for ``metrics.json``."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.bool_ | bool):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating | float):
        return float(value)
    return value


def interval(values: np.ndarray) -> tuple[float, float]:
    """The 95 % percentile interval of bootstrap values (NaN when there are none)."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if not len(values):
        return float("nan"), float("nan")
    return float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))
