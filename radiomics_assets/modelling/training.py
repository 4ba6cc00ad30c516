"""The model fitted and saved with its card; the selection table; the one scoring path for new patients.

``train_model`` validates the whole procedure (outer CV, permutation test), then fits the same procedure on all
training patients: that fit is the saved model. ``score`` is the only place a saved model turns features into
probabilities (the ``predictions`` asset, external validation and the ``predict`` CLI all call it).
"""

from __future__ import annotations

import hashlib
import json
import pickle
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline

from radiomics_assets.modelling.duplicates import Groups, patient_groups
from radiomics_assets.modelling.matrix import MIN_BLOCK_COVERAGE, label_groups, training_set, unlabelled_set
from radiomics_assets.modelling.robustness import robustness_table
from radiomics_assets.modelling.selection import rank_features, selected_columns, selection_scores
from radiomics_assets.modelling.settings import ModellingSettings
from radiomics_assets.modelling.spacing import TrainingSpacing, training_spacing
from radiomics_assets.modelling.validation import (
    CrossValidation,
    compare_candidates,
    cross_validate,
    fit_final,
    metrics,
    permutation_test,
)
from radiomics_assets.paths import DataRoot
from radiomics_assets.warehouse import Warehouse, write_derived_table

THRESHOLD = 0.5
"""Probability at or above which a patient is called positive, fixed in advance (never tuned on the data):
the classifiers are class-balanced, so 0.5 is their natural operating point."""

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
    inner_auc: float = float("nan")
    pixel_spacing: dict[str, TrainingSpacing] = field(default_factory=dict)
    """Modality -> spacing kind and in-plane spacing range of the training series (``predict`` checks a new image
    against it). Models saved before it existed lack the attribute: read it with ``getattr``."""


@dataclass
class ValidationResult:
    """What ``models/cv_results.pkl`` holds: the procedure's CV, permutation test and groups (for the report)."""

    cv: CrossValidation
    permutation: dict
    groups: Groups
    settings: ModellingSettings


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
    """Probability of class 1 per row of ``X``; columns reindexed to ``saved.feature_columns`` (absent = missing,
    imputed by the Pipeline with the training median; extra columns are ignored)."""
    if len(X) == 0:
        return np.empty(0)
    return saved.pipeline.predict_proba(X.reindex(columns=saved.feature_columns).to_numpy(dtype=float))[:, 1]


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


def _training_data(root: DataRoot, settings: ModellingSettings):
    warehouse = Warehouse(root.warehouse)
    X, y = training_set(warehouse)
    groups = patient_groups(warehouse, list(X.index), y, label_groups(warehouse), settings.duplicate_max_distance)
    keep = ~X.index.isin(groups.excluded)
    kept_groups = groups.group[keep]
    perturbations = load_perturbations(warehouse) if settings.robustness_icc_threshold > 0 else None
    return warehouse, X[keep], y[keep], kept_groups, groups, perturbations


def train_model(root: DataRoot, settings: ModellingSettings) -> tuple[Path, dict]:
    """Validate the whole procedure on the training cohort, then fit it on all of it.

    Writes ``models/model.pkl`` (a :class:`SavedModel`), ``models/model_card.json`` and ``models/cv_results.pkl``
    (a :class:`ValidationResult`, for the report).
    """
    started = time.perf_counter()
    warehouse, X, y, groups, group_info, perturbations = _training_data(root, settings)
    timings = {"groups": time.perf_counter() - started}
    cv = cross_validate(X, y, settings, groups, perturbations)
    timings["outer_cv"] = time.perf_counter() - started - sum(timings.values())
    permutation = permutation_test(cv, X, settings, groups, perturbations)
    timings["permutation_test"] = time.perf_counter() - started - sum(timings.values())
    final = fit_final(X, y, settings, groups, perturbations)
    timings["final_fit"] = time.perf_counter() - started - sum(timings.values())
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
        inner_auc=float(final.best_score_),
        pixel_spacing=series_spacing(warehouse, list(X.index)),
    )
    saved.model_id = hashlib.sha256(pickle.dumps(saved)).hexdigest()[:12]
    path.write_bytes(pickle.dumps(saved))
    with open(root.models / "cv_results.pkl", "wb") as fh:
        pickle.dump(ValidationResult(cv, permutation, group_info, settings), fh)
    headline = metrics(cv, n_bootstrap=0)
    comparison = compare_candidates(cv, n_bootstrap=0)
    features_used = selected_columns(final.best_estimator_, list(X.columns))
    card = {
        "model_id": saved.model_id,
        "trained_at": trained_at,
        "model": final.best_,
        "selection": chosen["selection"],
        "standardise": settings.standardise,
        "threshold": THRESHOLD,
        "training_cohort": {"n_patients": len(y), "n_positive": int(y.sum()), "n_negative": int((y == 0).sum())},
        "excluded_conflicting_labels": group_info.excluded,
        "n_features_in": int(X.shape[1]),
        "features_used": features_used,
        "selection_frequency": {f: cv.selection_frequency.get(f, 0.0) for f in features_used},
        "missing_data": f"median imputation inside the Pipeline; blocks below {MIN_BLOCK_COVERAGE:.0%} coverage "
        "excluded (table missing_blocks)",
        "best_params": dict(final.best_params_),
        "inner_cv_auc": float(final.best_score_),
        "params_hashes": saved.params_hashes,
        "pixel_spacing": {m: asdict(s) for m, s in saved.pixel_spacing.items()},
        "cv_estimate": {
            "auc": headline["auc"],
            "auc_per_repeat": headline["auc_per_repeat"],
            "auc_fold_sd": headline["auc_fold_sd"],
            "auc_pooled": headline["auc_pooled"],
            "permutation_p_value": permutation["p_value"],
            "scheme": cv.scheme,
            "chosen_per_outer_fold": cv.chosen,
        },
        "candidates": {
            name: {"auc": c["auc"], "auc_fold_sd": c["auc_fold_sd"], "brier": c["brier"]}
            for name, c in comparison.items()
        },
        "seconds": {k: round(v, 1) for k, v in timings.items()},
        "library_versions": {
            lib: version(lib)
            for lib in (
                "scikit-learn",
                "numpy",
                "pandas",
                "scipy",
                "pyradiomics",
                "pyradiomics-bhklab",
                "SimpleITK",
                "duckdb",
            )
            if _installed(lib)
        },
    }
    (root.models / "model_card.json").write_text(json.dumps(card, indent=2, default=str))
    return path, card


def _installed(lib: str) -> bool:
    try:
        version(lib)
    except Exception:
        return False
    return True


def feature_selection_table(warehouse: Warehouse, root: DataRoot) -> pd.DataFrame:
    """Table ``selected_features``: the univariate reference ranking of every feature, with the final model's
    selection (and score) and how often the outer-fold fits selected each feature."""
    X, y = training_set(warehouse)
    ranked = rank_features(X, y)
    saved = load_model(root)
    cv = load_validation(root).cv
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
    X = unlabelled_set(warehouse)
    saved = load_model(root)
    p = score(saved, X)
    table = pd.DataFrame(
        {
            "patient_id": pd.Series(list(X.index), dtype=str),
            "probability": np.asarray(p, dtype=float),
            "predicted_label": (np.asarray(p, dtype=float) >= saved.threshold).astype(int),
            "threshold": saved.threshold,
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
