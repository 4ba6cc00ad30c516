"""Cohort-level steps over the warehouse: labels, feature matrix, selection, model, validation report."""

from __future__ import annotations

import hashlib
import json
import pickle
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pandas as pd

from radiomics_assets.modelling.matrix import MIN_BLOCK_COVERAGE, labelled_training_set, unlabelled_set
from radiomics_assets.modelling.selection import rank_features, selected_columns, selection_scores
from radiomics_assets.modelling.settings import ModellingSettings
from radiomics_assets.modelling.validation import best_model, compare_models, fit_final, metrics
from radiomics_assets.paths import DataRoot
from radiomics_assets.warehouse import Warehouse, write_derived_table

THRESHOLD = 0.5
"""Probability at or above which a patient is called positive, fixed in advance (never tuned on the data):
the classifiers are class-balanced, so 0.5 is their natural operating point."""


def load_model(root: DataRoot) -> dict:
    with open(root.models / "model.pkl", "rb") as fh:
        return pickle.load(fh)


def train_model(root: DataRoot, settings: ModellingSettings) -> tuple[Path, dict]:
    """Nested-CV comparison of the candidate models on the training cohort; the best is refitted on all of it.

    Writes ``models/model.pkl``, ``models/model_card.json`` and ``models/cv_results.pkl`` (for the report).
    """
    selection, standardise = settings.selection, settings.standardise
    X, y = labelled_training_set(Warehouse(root.warehouse))
    results = compare_models(X, y, settings)
    best = best_model(results)
    search = fit_final(X, y, settings, best)
    root.models.mkdir(parents=True, exist_ok=True)
    path = root.models / "model.pkl"
    trained_at = datetime.now(UTC).isoformat(timespec="seconds")
    saved = {
        "pipeline": search.best_estimator_,
        "features": list(X.columns),
        "model": best,
        "selection": selection,
        "standardise": standardise,
        "trained_at": trained_at,
    }
    model_id = hashlib.sha256(pickle.dumps(saved)).hexdigest()[:12]
    path.write_bytes(pickle.dumps({**saved, "model_id": model_id}))
    with open(root.models / "cv_results.pkl", "wb") as fh:
        pickle.dump({"results": results, "best": best}, fh)
    comparison = {m: metrics(cv, n_bootstrap=0) for m, cv in results.items()}
    features_used = selected_columns(search.best_estimator_, list(X.columns))
    card = {
        "model_id": model_id,
        "trained_at": trained_at,
        "model": best,
        "selection": selection,
        "standardise": standardise,
        "threshold": THRESHOLD,
        "training_cohort": {"n_patients": len(y), "n_positive": int(y.sum()), "n_negative": int((y == 0).sum())},
        "n_features_in": int(X.shape[1]),
        "features_used": features_used,
        "selection_frequency": {f: results[best].selection_frequency.get(f, 0.0) for f in features_used},
        "missing_data": f"median imputation inside the Pipeline; blocks below {MIN_BLOCK_COVERAGE:.0%} coverage "
        "excluded (table missing_blocks)",
        "best_params": {k: v for k, v in search.best_params_.items()},
        "inner_cv_auc": float(search.best_score_),
        "cv_estimate": {
            "auc": comparison[best]["auc"],
            "auc_per_repeat": comparison[best].get("auc_per_repeat"),
            "scheme": results[best].scheme,
        },
        "candidates": {
            m: {"auc": c["auc"], "auc_repeat_sd": c.get("auc_repeat_sd"), "brier": c["brier"]}
            for m, c in comparison.items()
        },
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


def select_features(warehouse: Warehouse, root: DataRoot) -> pd.DataFrame:
    """Univariate ranking (reference) plus the final model's selection scores and outer-fold stability."""
    X, y = labelled_training_set(warehouse)
    ranked = rank_features(X, y)
    saved = load_model(root)
    with open(root.models / "cv_results.pkl", "rb") as fh:
        cv = pickle.load(fh)["results"][saved["model"]]
    chosen = set(selected_columns(saved["pipeline"], saved["features"]))
    scores = selection_scores(saved["pipeline"], saved["features"])
    ranked["selected"] = ranked.feature.isin(chosen)
    ranked["selection_method"] = saved["selection"]
    ranked["selection_score"] = ranked.feature.map(scores).astype(float)
    ranked["selection_frequency"] = ranked.feature.map(cv.selection_frequency).fillna(0.0).astype(float)
    ranked = ranked.sort_values(["selected", "selection_frequency", "p_value"], ascending=[False, False, True])
    ranked = ranked.reset_index(drop=True)
    write_derived_table(warehouse, "selected_features", ranked)
    return ranked


def predict(root: DataRoot, threshold: float = THRESHOLD) -> pd.DataFrame:
    """Scores of the saved model for patients with features but no label; table ``predictions``."""
    warehouse = Warehouse(root.warehouse)
    X = unlabelled_set(warehouse)
    saved = load_model(root)
    p = saved["pipeline"].predict_proba(X.reindex(columns=saved["features"]).to_numpy(float))[:, 1] if len(X) else []
    table = pd.DataFrame(
        {
            "patient_id": pd.Series(list(X.index), dtype=str),
            "probability": np.asarray(p, dtype=float),
            "predicted_label": (np.asarray(p, dtype=float) >= threshold).astype(int),
            "threshold": threshold,
            "model": saved.get("model", "logreg"),
            "model_id": saved.get("model_id", ""),
            "model_trained_at": saved.get("trained_at", ""),
            "predicted_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
    )
    write_derived_table(warehouse, "predictions", table)
    return table
