"""The one Pipeline that holds all that is learned from data, and the search that chooses among candidates.

The models, grids and scores of each outcome type come from its task (``modelling/tasks/``); this file only
assembles them. Clinical covariates (``clinical__<name>`` columns) get their own branch: numeric ones are imputed
(training median) and standardised, categorical ones (integer codes) imputed (most frequent) and one-hot encoded,
all inside the Pipeline, so every CV fold learns them from its own training patients; they are never subject to
feature selection. Radiomics columns go through the robustness subset, imputation, the near-zero-variance filter,
scaling and selection as before.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, clone
from sklearn.compose import ColumnTransformer
from sklearn.feature_selection import SelectorMixin
from sklearn.impute import SimpleImputer
from sklearn.model_selection import GridSearchCV, StratifiedGroupKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from threadpoolctl import threadpool_limits

from radiomics_assets.modelling.consensus import ConsensusClassifier
from radiomics_assets.modelling.feature_icc import robust_features
from radiomics_assets.modelling.harmonise import BATCH_PREFIX, Harmoniser, batch_method
from radiomics_assets.modelling.selection import NearZeroVariance, Selector
from radiomics_assets.modelling.settings import DEFAULT_SETTINGS, ModellingSettings
from radiomics_assets.modelling.study import CLINICAL_PREFIX
from radiomics_assets.modelling.tasks import Task, task_for
from radiomics_assets.modelling.tasks.binary import PARAM_GRIDS, CalibratedSVC

__all__ = [
    "CalibratedSVC",
    "CandidateSearch",
    "ColumnRoles",
    "KeepColumns",
    "PARAM_GRIDS",
    "candidate_name",
    "group_folds",
    "make_pipeline",
]


@dataclass(frozen=True)
class ColumnRoles:
    """Which input columns (by position) are radiomics features and which are numeric or categorical covariates."""

    radiomics: tuple[int, ...]
    numeric: tuple[int, ...] = ()
    categorical: tuple[int, ...] = ()
    batch: int | None = None
    """The ``batch__<method>`` column (issue 27): never a predictor; read by the harmonise step."""
    harmonise: str = "none"

    @property
    def clinical(self) -> tuple[int, ...]:
        return self.numeric + self.categorical

    @classmethod
    def of(cls, columns, categorical: tuple[str, ...] = ()) -> ColumnRoles:
        """Roles from column names: ``clinical__<name>`` are covariates, categorical when ``<name>`` is listed;
        ``batch__<method>`` is the batch column (its name says the harmonise method)."""
        columns = [str(c) for c in columns]
        clinical = [i for i, c in enumerate(columns) if c.startswith(CLINICAL_PREFIX)]
        batches = [i for i, c in enumerate(columns) if c.startswith(BATCH_PREFIX)]
        if len(batches) > 1:
            raise ValueError(f"one batch column expected, got {[columns[i] for i in batches]}")
        is_categorical = {i for i in clinical if columns[i][len(CLINICAL_PREFIX) :] in set(categorical)}
        return cls(
            radiomics=tuple(i for i in range(len(columns)) if i not in set(clinical) | set(batches)),
            numeric=tuple(i for i in clinical if i not in is_categorical),
            categorical=tuple(sorted(is_categorical)),
            batch=batches[0] if batches else None,
            harmonise=batch_method(columns[batches[0]]) if batches else "none",
        )

    @property
    def nested(self) -> bool:
        """Whether the Pipeline routes columns through a ``prepare`` ColumnTransformer (covariates or a batch)."""
        return bool(self.clinical) or self.batch is not None


def _radiomics_steps(seed, selection, max_correlation, standardise, keep, outcome) -> list:
    return [
        ("robust", "passthrough" if keep is None else KeepColumns(keep)),
        ("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
        ("near_zero_variance", NearZeroVariance()),
        ("scale", StandardScaler() if standardise else "passthrough"),
        ("select", Selector(selection, k=10, max_correlation=max_correlation, random_state=seed, outcome=outcome)),
    ]


def make_pipeline(
    seed: int,
    model: str = "logreg",
    selection: str = "anova",
    max_correlation: float = 0.95,
    standardise: bool = True,
    keep: np.ndarray | None = None,
    *,
    task: Task | None = None,
    roles: ColumnRoles | None = None,
) -> Pipeline:
    """Radiomics only: keep (robust columns) -> impute (median) -> drop near-zero variance -> scale (optional) ->
    select -> model. With covariates in ``roles``: a ``prepare`` ColumnTransformer (the radiomics steps on the
    radiomics columns, the clinical branch on the covariates), then the model.

    ``keep``: boolean mask of the radiomics columns that passed the robustness filter (learned from the training
    patients before this Pipeline is built); ``None`` keeps every column. ``keep_empty_features`` keeps a column
    that is all missing in a training fold (as zeros, which the near-zero-variance step then drops), so column
    positions, and hence selected feature names, stay aligned.
    """
    task = task or task_for()
    if selection not in task.selection_methods:
        raise ValueError(
            f"unknown selection method {selection!r} for a {task.kind} outcome; choose one of {task.selection_methods}"
        )
    radiomics = _radiomics_steps(seed, selection, max_correlation, standardise, keep, task.kind.value)
    estimator = task.estimator(model, seed)
    if isinstance(estimator, ConsensusClassifier):
        if roles is not None and roles.clinical:
            raise ValueError(
                "the consensus model selects among all of its inputs, and clinical covariates are never selected: "
                "with covariates choose among logreg, random_forest, svm, gradient_boosting (the default)"
            )
        # Its linear member selects for itself; the forest member sees every feature.
        estimator.set_params(selection=selection, max_correlation=max_correlation, outcome=task.kind.value)
        radiomics[-1] = ("select", "passthrough")
    if roles is None or not roles.nested:
        return Pipeline([*radiomics, ("model", estimator)])
    branches = []
    if roles.radiomics:
        branches.append(("radiomics", Pipeline(radiomics), list(roles.radiomics)))
    if roles.numeric:
        numeric = Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())])
        branches.append(("clinical_numeric", numeric, list(roles.numeric)))
    if roles.categorical:
        categorical = Pipeline(
            [
                ("impute", SimpleImputer(strategy="most_frequent")),
                ("encode", OneHotEncoder(handle_unknown="ignore", sparse_output=False)),
            ]
        )
        branches.append(("clinical_categorical", categorical, list(roles.categorical)))
    # The batch column is in no branch: ``remainder="drop"`` keeps it out of the model.
    steps = [("prepare", ColumnTransformer(branches, remainder="drop")), ("model", estimator)]
    if roles.batch is not None and roles.harmonise != "none" and roles.radiomics:
        # First, on the raw columns, so its fit sees only this fold's training patients (harmonise.py).
        steps.insert(0, ("harmonise", Harmoniser(roles.batch, roles.radiomics, roles.harmonise)))
    return Pipeline(steps)


def _grid(task: Task, model: str, n_samples: int, roles: ColumnRoles | None) -> dict[str, list]:
    """The model's grid without ``k`` values the training set cannot support; nested keys when there are
    covariates; with covariates and radiomics, ``k = 0`` (the clinical model alone) is one more choice of the
    inner CV, so adding radiomics features to the clinical ones can never be forced on a model."""
    grid = {}
    for key, values in task.param_grid(model).items():
        if key.startswith("select__"):
            if roles is not None and roles.clinical and not roles.radiomics:
                continue  # clinical only: no selection step
            if key == "select__k":
                values = [v for v in values if v < n_samples] or values
                if roles is not None and roles.clinical:
                    values = [0, *values]
            if roles is not None and roles.nested:
                key = "prepare__radiomics__" + key
        grid[key] = list(values)
    return grid


class KeepColumns(SelectorMixin, BaseEstimator):
    """A fixed column subset (the features that passed the robustness filter); ``fit`` learns nothing."""

    def __init__(self, keep: np.ndarray):
        self.keep = keep

    def fit(self, X, y=None):
        if np.asarray(X).shape[1] != len(self.keep):
            raise ValueError(f"KeepColumns expects {len(self.keep)} columns, got {np.asarray(X).shape[1]}")
        return self

    def _get_support_mask(self):
        return np.asarray(self.keep, dtype=bool)


def candidate_name(model: str, selection: str, settings: ModellingSettings, task: Task | None = None) -> str:
    """``logreg``, or ``logreg+anova`` when several selection methods are candidates."""
    methods = settings.selection_methods or (task or task_for()).selection_methods[:1]
    return model if len(methods) == 1 else f"{model}+{selection}"


def group_folds(strata: np.ndarray, groups: np.ndarray, wanted: int) -> int:
    """Folds a grouped stratified split can make: at most the number of groups of the smallest stratum."""
    strata = np.asarray(strata)
    per_stratum = [len(np.unique(groups[strata == s])) for s in np.unique(strata)]
    return int(max(2, min(wanted, *per_stratum)))


class CandidateSearch(BaseEstimator):
    """The whole model-building procedure as one estimator, so an outer CV evaluates the choice it makes.

    ``fit`` (on one training set): robustness filter on these patients (when configured), then for every
    candidate (model family x selection method) a grid search over its hyperparameters, all scored by the task's
    primary metric on the same inner grouped stratified k-fold; the best candidate and parameters (highest mean
    inner score, ties: the first) are refitted on the whole training set. ``refit_candidates`` also refits every
    candidate's best parameters, so the outer CV can report each candidate's figures (information, not an
    estimate of the chosen model).

    ``X`` is a DataFrame indexed by patient id (the robustness filter needs the ids); ``groups`` keeps
    duplicate images or lesions of one patient on one side of every inner split. ``task`` (binary when None)
    gives the models, grids, strata and score; ``roles`` says which columns are covariates.
    """

    def __init__(
        self,
        settings: ModellingSettings = DEFAULT_SETTINGS,
        perturbations: pd.DataFrame | None = None,
        refit_candidates: bool = False,
        task: Task | None = None,
        roles: ColumnRoles | None = None,
    ):
        self.settings = settings
        self.perturbations = perturbations
        self.refit_candidates = refit_candidates
        self.task = task
        self.roles = roles

    def _robust_mask(self, X: pd.DataFrame, radiomics: list[int]) -> np.ndarray | None:
        threshold = self.settings.robustness_icc_threshold
        if threshold <= 0 or not radiomics:
            return None
        if self.perturbations is None:
            raise ValueError(
                f"robustness_icc_threshold is {threshold} but there is no perturbation table: materialise the "
                "asset feature_robustness first (table feature_perturbations), or set the threshold to 0"
            )
        columns = X.columns[radiomics]
        kept = set(robust_features(self.perturbations, columns, threshold, patient_ids=X.index))
        if not kept:
            raise ValueError(f"no feature has ICC >= {threshold} on these training patients (table feature_robustness)")
        return np.array([c in kept for c in columns])

    def fit(self, X: pd.DataFrame, y, groups=None):
        settings = self.settings
        task = self.task or task_for()
        if not isinstance(X, pd.DataFrame):
            X = pd.DataFrame(X)
        y_arr = np.asarray(y)
        groups = np.arange(len(y_arr)) if groups is None else np.asarray(groups)
        X_arr = X.to_numpy(dtype=float)
        if task.kind.value in ("binary", "multiclass"):
            self.classes_ = np.unique(y_arr)
        self.n_features_in_ = X.shape[1]
        roles = self.roles
        self.robust_mask_ = self._robust_mask(X, list(roles.radiomics) if roles else list(range(X.shape[1])))
        strata = task.strata(y_arr)
        n_inner = group_folds(strata, groups, settings.inner_folds)
        splitter = StratifiedGroupKFold(n_splits=n_inner, shuffle=True, random_state=settings.seed)
        inner = list(splitter.split(X_arr, strata, groups))
        smallest_train = min(len(train) for train, _ in inner)
        clinical_only = roles is not None and roles.clinical and not roles.radiomics
        candidates = settings.candidates_for(task, with_covariates=bool(roles is not None and roles.clinical))
        if clinical_only:  # selection does not apply: one candidate per family
            candidates = list(dict.fromkeys((m, candidates[0][1]) for m, _ in candidates))
        self.candidate_results_: dict[str, dict] = {}
        with threadpool_limits(limits=1):  # on small cohorts BLAS/OpenMP threads cost more than they gain
            for model, selection in candidates:
                pipeline = make_pipeline(
                    settings.seed,
                    model,
                    selection,
                    standardise=settings.standardise,
                    keep=self.robust_mask_,
                    task=task,
                    roles=roles,
                )
                grid = _grid(task, model, smallest_train, roles)
                if _tunes_itself(pipeline):  # inside the grid search it splits each inner training set afresh
                    pipeline.set_params(model__cv=n_inner)
                if len(candidates) == 1 and not grid:
                    inner_score, params = float("nan"), {}  # nothing to choose: no inner search
                else:
                    search = GridSearchCV(
                        pipeline, grid, scoring=task.scorer(), cv=inner, refit=False, error_score="raise"
                    )
                    search.fit(X_arr, y_arr)
                    inner_score, params = float(search.best_score_), dict(search.best_params_)
                name = model if clinical_only else candidate_name(model, selection, settings, task)
                self.candidate_results_[name] = {
                    "model": model,
                    "selection": "none" if clinical_only else selection,
                    "inner_score": inner_score,
                    "params": params,
                    "pipeline": pipeline,
                }
            self.best_ = max(self.candidate_results_, key=lambda c: _finite(self.candidate_results_[c]["inner_score"]))
            best = self.candidate_results_[self.best_]
            self.best_params_ = best["params"]
            self.best_score_ = best["inner_score"]
            self.best_estimator_ = self._refit(best, inner, X_arr, y_arr)
            chosen_model = self.best_estimator_.named_steps["model"]
            if hasattr(chosen_model, "weight_"):  # the consensus: its vote's weight is what it chose inside
                self.best_params_ = {**self.best_params_, "model__linear_weight": chosen_model.weight_}
                if not np.isfinite(self.best_score_):
                    self.best_score_ = float(chosen_model.inner_score_)
            self.candidate_estimators_ = {self.best_: self.best_estimator_}
            if self.refit_candidates:
                for name, result in self.candidate_results_.items():
                    if name != self.best_:
                        self.candidate_estimators_[name] = self._refit(result, inner, X_arr, y_arr)
        for result in self.candidate_results_.values():
            del result["pipeline"]  # unfitted templates: not worth pickling
        self.inner_folds_ = n_inner
        return self

    @staticmethod
    def _refit(result: dict, inner: list, X: np.ndarray, y: np.ndarray) -> Pipeline:
        """A candidate's Pipeline with its best parameters fitted on the whole training set; a model that tunes
        itself (the consensus) does so on the same grouped inner folds the candidates were scored on."""
        pipeline = clone(result["pipeline"]).set_params(**result["params"])
        if _tunes_itself(pipeline):
            pipeline.set_params(model__cv=inner)
        return pipeline.fit(X, y)

    def predict_outcome(self, X) -> np.ndarray:
        """The task's prediction (binary: P(class 1); multiclass: class probabilities; continuous: the value;
        survival: risk and survival probabilities)."""
        with threadpool_limits(limits=1):
            return (self.task or task_for()).predict(self.best_estimator_, np.asarray(X, dtype=float))

    def predict_proba(self, X):
        with threadpool_limits(limits=1):
            return self.best_estimator_.predict_proba(np.asarray(X, dtype=float))

    def predict(self, X):
        with threadpool_limits(limits=1):
            return self.best_estimator_.predict(np.asarray(X, dtype=float))


def _tunes_itself(pipeline: Pipeline) -> bool:
    """A model that chooses part of itself on inner folds (the consensus with ``linear_weight=None``)."""
    params = pipeline.named_steps["model"].get_params(deep=False)
    return "cv" in params and params.get("linear_weight", 0.0) is None


def _finite(value: float) -> float:
    return value if np.isfinite(value) else -np.inf
