"""The model fitted and saved with its card; the selection table; the one scoring path for new patients.

``train_model`` validates the whole procedure (outer CV, permutation test; with ``predictors: compare`` also the
clinical-only and radiomics-only procedures on the same splits), then fits the same procedure on all training
patients: that fit is the saved model. ``score`` is the only place a saved model turns features into predictions
(the ``predictions`` asset, external validation and the ``predict`` CLI all call it).
"""

from __future__ import annotations

import hashlib
import json
import pickle
import time
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline

from radiomics_assets.modelling.duplicates import Groups, patient_groups
from radiomics_assets.modelling.estimators import ColumnRoles
from radiomics_assets.modelling.feature_icc import robustness_table
from radiomics_assets.modelling.harmonise import BATCH_PREFIX
from radiomics_assets.modelling.matrix import (
    MIN_BLOCK_COVERAGE,
    clinical_codes,
    cohort_data,
    label_groups,
    unlabelled_set,
)
from radiomics_assets.modelling.selection import rank_features, selected_columns, selection_scores
from radiomics_assets.modelling.settings import ModellingSettings
from radiomics_assets.modelling.spacing import TrainingSpacing, training_spacing
from radiomics_assets.modelling.study import CLINICAL_PREFIX, OutcomeType, Predictors, Study, load_study
from radiomics_assets.modelling.tasks import PrimaryMetric, Task, task_for
from radiomics_assets.modelling.tasks.binary import THRESHOLD
from radiomics_assets.modelling.validation import (
    CrossValidation,
    PredictorComparison,
    compare_candidates,
    compare_predictors,
    cross_validate,
    fit_final,
    permutation_test,
)
from radiomics_assets.paths import DataRoot
from radiomics_assets.warehouse import Warehouse, write_derived_table

PERTURBATIONS = "feature_perturbations"
ROBUSTNESS_ASSET = "feature_robustness"


@dataclass
class SavedModel:
    """What ``models/model.pkl`` holds: the fitted Pipeline and what is needed to score with it."""

    pipeline: Pipeline
    feature_columns: list[str]
    """Input columns in the Pipeline's order (``<modality>__<roi>__<image_type>__<class>__<feature>``)."""
    model_id: str
    threshold: float
    trained_at: str
    params_hashes: dict[str, str]
    """Modality -> PyRadiomics parameter-set hash of the training features (table ``features``)."""
    model: str
    """The candidate the procedure chose on all training patients (``logreg``, or ``logreg+anova``...)."""
    selection: str
    standardise: bool
    best_params: dict = field(default_factory=dict)
    inner_score: float = float("nan")
    """The chosen candidate's inner-CV primary metric on all training patients."""
    pixel_spacing: dict[str, TrainingSpacing] = field(default_factory=dict)
    """Modality -> spacing kind and in-plane spacing range of the training series (``predict`` checks a new image
    against it). Models saved before it existed lack the attribute: read it with ``getattr``."""
    task: Task | None = None
    """The outcome task the model predicts (binary for models saved before outcome types: see :func:`task_of`)."""
    study: Study | None = None
    clinical_codes: dict[str, list[str]] = field(default_factory=dict)
    """Categorical covariate -> its categories in code order (new patients are coded the same way)."""
    ultrasound_candidate_features: bool = False
    """The seeded ultrasound masks' features were averaged over the candidate outlines
    (``features.candidate_average``): ``predict`` computes a new image's the same way. Read with ``getattr``."""


def task_of(saved: SavedModel) -> Task:
    """The saved model's task; binary for models pickled before outcome types existed."""
    return getattr(saved, "task", None) or task_for()


@dataclass
class ValidationResult:
    """What ``models/cv_results.pkl`` holds: the procedure's CV, permutation test and groups (for the report)."""

    cv: CrossValidation
    permutation: dict
    groups: Groups
    settings: ModellingSettings
    study: Study = field(default_factory=Study)
    comparison: PredictorComparison | None = None
    """With ``predictors: compare``: clinical-only, radiomics-only and combined on the same splits."""
    comparison_cvs: dict[str, CrossValidation] = field(default_factory=dict)
    excluded_outcomes: list[dict] = field(default_factory=list)
    """Patients of labels.csv without an outcome value (not analysed), with the reason."""


def load_model(root: DataRoot) -> SavedModel:
    """The current saved model (``models/model.pkl``)."""
    path = root.models / "model.pkl"
    with open(path, "rb") as fh:
        saved = pickle.load(fh)
    if not isinstance(saved, SavedModel):
        raise ValueError(f"{path}: written by an older version (not a SavedModel); retrain: radiomics-assets run")
    return saved


def load_validation(root: DataRoot) -> ValidationResult:
    with open(root.models / "cv_results.pkl", "rb") as fh:
        return pickle.load(fh)


def score(saved: SavedModel, X: pd.DataFrame) -> np.ndarray:
    """The task's prediction per row of ``X`` (binary: probability of class 1; multiclass: class probabilities;
    continuous: the value; survival: risk, then survival probabilities); columns reindexed to
    ``saved.feature_columns`` (absent = missing, imputed by the Pipeline with the training median or most frequent
    category; extra columns are ignored)."""
    if len(X) == 0:
        return np.empty(0)
    return task_of(saved).predict(saved.pipeline, X.reindex(columns=saved.feature_columns).to_numpy(dtype=float))


def prediction_columns(saved: SavedModel, X: pd.DataFrame) -> dict[str, np.ndarray]:
    """Columns of table ``predictions`` for the rows of ``X`` (binary: probability and predicted_label;
    multiclass: predicted_class and probability_<class>; continuous: predicted_value; survival: risk and
    survival_at_<horizon>)."""
    return task_of(saved).prediction_table(score(saved, X), saved)


def params_hashes(warehouse: Warehouse, patient_ids: list[str]) -> dict[str, str]:
    """Modality -> parameter-set hash of the training patients' features (several hashes joined by ``,``)."""
    features = warehouse.query("SELECT DISTINCT patient_id, modality, params_hash FROM features")
    features = features[features.patient_id.isin(patient_ids)]
    return {
        str(m): ",".join(sorted(set(rows.params_hash.dropna().astype(str))))
        for m, rows in features.groupby("modality", sort=True)
    }


def series_spacing(warehouse: Warehouse, patient_ids: list[str]) -> dict[str, TrainingSpacing]:
    """Modality -> pixel spacing of the series the training patients' features were extracted from."""
    series = warehouse.query(
        "SELECT DISTINCT s.patient_id, s.modality, s.spacing_x, s.spacing_y, s.source_path FROM series s "
        "JOIN (SELECT DISTINCT patient_id, series_uid FROM features) f USING (patient_id, series_uid)"
    )
    return training_spacing(series[series.patient_id.isin(patient_ids)])


def load_perturbations(warehouse: Warehouse) -> pd.DataFrame:
    try:
        return warehouse.query(f"SELECT patient_id, feature, perturbation, value FROM {PERTURBATIONS}")
    except duckdb.CatalogException as error:
        raise ValueError(
            f"robustness_icc_threshold is set but the warehouse has no table {PERTURBATIONS}: materialise the "
            f"asset {ROBUSTNESS_ASSET} first, or set robustness_icc_threshold to 0"
        ) from error


@dataclass
class TrainingData:
    X: pd.DataFrame
    y: np.ndarray
    groups: np.ndarray
    group_info: Groups
    perturbations: pd.DataFrame | None
    codes: dict[str, list[str]]


def _outcome_keys(task: Task, outcomes: pd.DataFrame) -> pd.Series:
    """patient_id -> the outcome compared within a duplicate group (a class code, a value, or time/event)."""
    if task.kind == OutcomeType.survival:
        return outcomes["time"].astype(str) + "/" + outcomes["event"].astype(int).astype(str)
    if task.kind == OutcomeType.continuous:
        return outcomes["label"].astype(float)
    return outcomes["label"].astype(int)


def training_data(warehouse: Warehouse, study: Study, task: Task, settings: ModellingSettings) -> TrainingData:
    """The training cohort's design matrix (features + coded covariates), outcome and CV groups."""
    data = cohort_data(warehouse, study, task, "train")
    X, y = data.X, data.y
    keys = _outcome_keys(task, data.outcomes)
    groups = patient_groups(warehouse, list(X.index), keys, label_groups(warehouse), settings.duplicate_max_distance)
    keep = ~X.index.isin(groups.excluded)
    perturbations = load_perturbations(warehouse) if settings.robustness_icc_threshold > 0 else None
    labels = warehouse.query("SELECT * FROM labels")
    codes = clinical_codes(labels, study) if study.has_covariates else {}
    return TrainingData(X[keep], y[keep], groups.group[keep], groups, perturbations, codes)


def predictor_columns(X: pd.DataFrame, predictors: Predictors) -> list[str]:
    """The columns a predictor set uses: radiomics features, covariates (``clinical__``) or both."""
    clinical = [c for c in X.columns if str(c).startswith(CLINICAL_PREFIX)]
    radiomics = [c for c in X.columns if c not in set(clinical)]
    if predictors == Predictors.clinical:  # the batch column (issue 27) still splits leave-site-out folds
        return clinical + [c for c in radiomics if str(c).startswith(BATCH_PREFIX)]
    if predictors == Predictors.radiomics:
        return radiomics
    return radiomics + clinical


def _model_predictors(study: Study) -> Predictors:
    """What the kept model uses: ``compare`` keeps the combined model."""
    return Predictors.both if study.predictors == Predictors.compare else study.predictors


def _validate(data: TrainingData, settings: ModellingSettings, study: Study, task: Task, timings: dict):
    """Outer CV of the kept predictor set (and, with ``compare``, of the other two on the same splits)."""
    started = time.perf_counter()
    sets = [_model_predictors(study)]
    if study.predictors == Predictors.compare:
        sets = [Predictors.both, Predictors.clinical, Predictors.radiomics]
    cvs = {}
    for predictors in sets:
        columns = predictor_columns(data.X, predictors)
        if not columns:
            raise ValueError(f"predictors {predictors.value!r}: no such columns in the feature matrix")
        X = data.X[columns]
        roles = ColumnRoles.of(X.columns, study.covariates.categorical)
        cvs[predictors.value] = cross_validate(
            X,
            data.y,
            settings,
            data.groups,
            data.perturbations,
            with_candidates=predictors == sets[0],
            task=task,
            roles=roles,
            predictors=predictors.value,
            validation=study.validation.value,
        )
    timings["outer_cv"] = time.perf_counter() - started
    comparison = compare_predictors(cvs, n_bootstrap=1000, seed=settings.seed) if len(cvs) == 3 else None
    return cvs, comparison


def train_model(root: DataRoot, settings: ModellingSettings, study: Study | None = None) -> tuple[Path, ModelCard]:
    """Validate the whole procedure on the training cohort, then fit it on all of it.

    ``study`` (default: ``study.yaml`` of ``root``) says the outcome type and the predictors. Writes
    ``models/model.pkl`` (a :class:`SavedModel`), ``models/model_card.json`` and ``models/cv_results.pkl`` (a
    :class:`ValidationResult`, for the report).
    """
    from radiomics_assets.features.candidate_average import candidate_averaged_training  # PyRadiomics: loaded late

    study = study or load_study(root)
    task = task_for(study)
    started = time.perf_counter()
    warehouse = Warehouse(root.warehouse)
    data = training_data(warehouse, study, task, settings)
    candidate_averaged = candidate_averaged_training(warehouse, list(data.X.index))  # a mix fails before the CV
    if getattr(task, "classes", None) == ():
        task.classes = _class_names(warehouse, study)
    timings = {"groups": time.perf_counter() - started}
    cvs, comparison = _validate(data, settings, study, task, timings)
    kept = _model_predictors(study)
    cv = cvs[kept.value]
    X = data.X[predictor_columns(data.X, kept)]
    roles = ColumnRoles.of(X.columns, study.covariates.categorical)
    mark = time.perf_counter()
    permutation = permutation_test(cv, X, settings, data.groups, data.perturbations, roles)
    timings["permutation_test"] = time.perf_counter() - mark
    mark = time.perf_counter()
    final = fit_final(X, data.y, settings, data.groups, data.perturbations, task=task, roles=roles)
    timings["final_fit"] = time.perf_counter() - mark
    chosen = final.candidate_results_[final.best_]
    root.models.mkdir(parents=True, exist_ok=True)
    path = root.models / "model.pkl"
    trained_at = datetime.now(UTC).isoformat(timespec="seconds")
    saved = SavedModel(
        pipeline=final.best_estimator_,
        feature_columns=[str(c) for c in X.columns],
        model_id="",
        threshold=THRESHOLD,
        trained_at=trained_at,
        params_hashes=params_hashes(warehouse, list(X.index)),
        model=final.best_,
        selection=chosen["selection"],
        standardise=settings.standardise,
        best_params=dict(final.best_params_),
        inner_score=float(final.best_score_),
        pixel_spacing=series_spacing(warehouse, list(X.index)),
        task=task,
        study=study,
        clinical_codes=data.codes,
        ultrasound_candidate_features=candidate_averaged,
    )
    saved.model_id = hashlib.sha256(pickle.dumps(saved)).hexdigest()[:12]
    path.write_bytes(pickle.dumps(saved))
    excluded = _excluded_outcomes(root, study, settings)
    result = ValidationResult(cv, permutation, data.group_info, settings, study, comparison, cvs, excluded)
    with open(root.models / "cv_results.pkl", "wb") as fh:
        pickle.dump(result, fh)
    card = model_card(saved, result, final, data, timings)
    (root.models / "model_card.json").write_text(json.dumps(card.as_json(), indent=2, default=str))
    return path, card


def _class_names(warehouse: Warehouse, study: Study) -> tuple[str, ...]:
    """Multiclass: the class names in code order (``study.yaml`` ``classes`` or sorted names)."""
    if study.outcome.classes:
        return study.outcome.classes
    labels = warehouse.query("SELECT DISTINCT label, label_name FROM labels WHERE label IS NOT NULL ORDER BY label")
    return tuple(str(n) for n in labels.label_name)


def _excluded_outcomes(root: DataRoot, study: Study, settings: ModellingSettings) -> list[dict]:
    from radiomics_assets.modelling.study import load_outcomes

    try:
        return load_outcomes(root, study, settings.group_column).excluded
    except (OSError, ValueError):
        return []


@dataclass(frozen=True)
class ModelCard:
    """What a model is, what it was trained on and how well it validated; :meth:`as_json` is
    ``models/model_card.json`` (the registry keeps a copy per version, the ``model`` asset shows it in the UI)."""

    model_id: str
    trained_at: str
    task: str
    """Outcome type: ``binary``, ``multiclass``, ``continuous`` or ``survival``."""
    study: dict
    primary_metric: PrimaryMetric
    """The cross-validated headline figure (point estimate; the report adds the bootstrap CI)."""
    model: str
    """The model family the inner CV chose for the final fit."""
    selection: str
    standardise: bool
    predictors: str
    training_cohort: dict
    excluded_conflicting_labels: list[str]
    excluded_no_outcome: int
    n_features_in: int
    features_used: list[str]
    selection_frequency: dict[str, float]
    missing_data: str
    best_params: dict
    inner_cv_score: float
    params_hashes: dict
    pixel_spacing: dict
    ultrasound_candidate_features: bool
    cv_estimate: dict
    """The outer CV's figures: per fold and repeat (keys named by the metric), the permutation p-value, the scheme,
    the family each outer fold chose."""
    candidates: dict
    seconds: dict[str, float]
    """Wall time of each part of training: ``groups``, ``outer_cv``, ``permutation_test``, ``final_fit``."""
    library_versions: dict[str, str]
    threshold: float | None = None
    """Binary only: the probability at or above which a patient is called positive."""
    comparison: PredictorComparison | None = None
    """With ``predictors: compare``: clinical-only, radiomics-only and combined."""

    def as_json(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("threshold", "comparison")}
        out["primary_metric"] = self.primary_metric.as_dict()
        if self.threshold is not None:
            out["threshold"] = self.threshold
        if self.comparison is not None:
            out["comparison"] = self.comparison.as_dict()
        return out


def model_card(saved: SavedModel, result: ValidationResult, final, data: TrainingData, timings: dict) -> ModelCard:
    """``models/model_card.json``: what the model is, what it was trained on and how well it validated."""
    cv, task, study = result.cv, task_of(saved), result.study
    primary = task.primary(cv, n_bootstrap=0, seed=0)
    per_fold = task.fold_scores(cv.y, cv.repeat_predictions, cv.fold_of)
    comparison = compare_candidates(cv, n_bootstrap=0)
    features_used = selected_columns(final.best_estimator_, saved.feature_columns)
    name = task.primary_metric
    cv_estimate = {
        "primary_metric": primary.as_dict(),
        name: primary.value,
        f"{name}_per_fold": [float(v) for v in per_fold],
        f"{name}_fold_sd": float(np.nanstd(per_fold, ddof=1)) if len(per_fold) > 1 else float("nan"),
        "permutation_p_value": result.permutation["p_value"],
        "scheme": cv.scheme,
        "chosen_per_outer_fold": cv.chosen,
    }
    if task.kind == OutcomeType.binary:
        per_repeat = per_fold.reshape(len(cv.repeat_predictions), -1)
        cv_estimate["auc_per_repeat"] = [float(np.nanmean(row)) for row in per_repeat]
        cv_estimate["auc_pooled"] = float(task.score(cv.y, cv.probabilities))
    return ModelCard(
        model_id=saved.model_id,
        trained_at=saved.trained_at,
        task=task.kind.value,
        study=study_summary(study),
        primary_metric=primary,
        model=final.best_,
        selection=saved.selection,
        standardise=saved.standardise,
        predictors=_model_predictors(study).value,
        training_cohort=task.cohort_summary(data.y),
        excluded_conflicting_labels=data.group_info.excluded,
        excluded_no_outcome=len(result.excluded_outcomes),
        n_features_in=len(saved.feature_columns),
        features_used=features_used,
        selection_frequency={f: cv.selection_frequency.get(f, 0.0) for f in features_used},
        missing_data=f"median imputation inside the Pipeline; blocks below {MIN_BLOCK_COVERAGE:.0%} coverage "
        "excluded (table missing_blocks)",
        best_params=dict(final.best_params_),
        inner_cv_score=float(final.best_score_),
        params_hashes=saved.params_hashes,
        pixel_spacing={m: asdict(s) for m, s in saved.pixel_spacing.items()},
        ultrasound_candidate_features=saved.ultrasound_candidate_features,
        cv_estimate=cv_estimate,
        candidates={
            candidate: {k: c[k] for k in (name, f"{name}_fold_sd", "brier") if k in c}
            for candidate, c in comparison.items()
        },
        seconds={k: round(v, 1) for k, v in timings.items()},
        library_versions=library_versions(),
        threshold=saved.threshold if task.kind == OutcomeType.binary else None,
        comparison=result.comparison,
    )


def study_summary(study: Study) -> dict:
    """The study as JSON: outcome, covariates, predictors and where it was read from."""
    return {
        "source": study.source,
        "outcome": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(study.outcome).items()},
        "covariates": {"numeric": list(study.covariates.numeric), "categorical": list(study.covariates.categorical)},
        "predictors": study.predictors.value,
    }


def library_versions() -> dict[str, str]:
    libraries = (
        "scikit-learn",
        "scikit-survival",
        "numpy",
        "pandas",
        "scipy",
        "pyradiomics",
        "pyradiomics-bhklab",
        "SimpleITK",
        "duckdb",
    )
    return {lib: version(lib) for lib in libraries if _installed(lib)}


def _installed(lib: str) -> bool:
    try:
        version(lib)
    except Exception:
        return False
    return True


def feature_selection_table(warehouse: Warehouse, root: DataRoot) -> pd.DataFrame:
    """Table ``selected_features``: the univariate reference ranking of every feature, with the final model's
    selection (and score) and how often the outer-fold fits selected each feature."""
    stored = load_validation(root)
    saved = load_model(root)
    study = getattr(stored, "study", None) or Study()
    data = cohort_data(warehouse, study, task_of(saved), "train")
    radiomics = [c for c in data.X.columns if not str(c).startswith(CLINICAL_PREFIX)]
    ranked = rank_features(data.X[radiomics], data.y, task_of(saved).kind.value)
    cv = stored.cv
    chosen = set(selected_columns(saved.pipeline, saved.feature_columns))
    scores = selection_scores(saved.pipeline, saved.feature_columns)
    ranked["selected"] = ranked.feature.isin(chosen)
    ranked["selection_method"] = saved.selection
    ranked["selection_score"] = ranked.feature.map(scores).astype(float)
    ranked["selection_frequency"] = ranked.feature.map(cv.selection_frequency).fillna(0.0).astype(float)
    ranked = ranked.sort_values(["selected", "selection_frequency", "p_value"], ascending=[False, False, True])
    ranked = ranked.reset_index(drop=True)
    write_derived_table(warehouse, "selected_features", ranked)
    return ranked


def predict_unlabelled(root: DataRoot) -> pd.DataFrame:
    """Scores of the saved model for patients with features but no label; table ``predictions``."""
    warehouse = Warehouse(root.warehouse)
    saved = load_model(root)
    X = unlabelled_set(warehouse, getattr(saved, "study", None))
    columns = prediction_columns(saved, X) if len(X) else {}
    task = task_of(saved)
    table = pd.DataFrame(
        {
            "patient_id": pd.Series(list(X.index), dtype=str),
            "task": task.kind.value,
            **{name: np.asarray(values) for name, values in columns.items()},
            "threshold": saved.threshold if task.kind == OutcomeType.binary else np.nan,
            "model": saved.model,
            "model_id": saved.model_id,
            "model_trained_at": saved.trained_at,
            "predicted_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
    )
    write_derived_table(warehouse, "predictions", table)
    return table


def robustness_report(warehouse: Warehouse) -> pd.DataFrame | None:
    """Table ``feature_robustness`` (feature, icc, n_perturbations) when present, else from the perturbations."""
    for query in (
        f"SELECT feature, icc, n_perturbations FROM {ROBUSTNESS_ASSET} ORDER BY feature",
        f"SELECT patient_id, feature, perturbation, value FROM {PERTURBATIONS}",
    ):
        try:
            table = warehouse.query(query)
        except duckdb.CatalogException:
            continue
        return table if "icc" in table else robustness_table(table)
    return None
