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

from radiomics_assets import modelling, report
from radiomics_assets.paths import DataRoot, patient_key
from radiomics_assets.warehouse import Warehouse, write_derived_table


def load_labels(root: DataRoot, label_column: str = "label") -> pd.DataFrame:
    """``labels.csv`` -> (patient_id, label 0/1, label_name). Two class names map to 0/1 in sorted order."""
    if not root.labels_csv.exists():
        raise FileNotFoundError(f"{root.labels_csv}: labels file not found")
    raw = pd.read_csv(root.labels_csv, dtype=str)
    if "patient_id" not in raw or label_column not in raw:
        raise ValueError(f"{root.labels_csv}: needs columns 'patient_id' and {label_column!r}, has {list(raw)}")
    raw = raw.dropna(subset=[label_column])
    names = sorted(raw[label_column].str.strip().unique())
    if len(names) != 2:
        raise ValueError(f"{root.labels_csv}: column {label_column!r} must hold two classes, found {names}")
    split = raw["cohort"].fillna("train").str.strip().str.lower() if "cohort" in raw else "train"
    table = pd.DataFrame({
        "patient_id": raw.patient_id.map(patient_key),
        "label": raw[label_column].str.strip().map({names[0]: 0, names[1]: 1}).astype(int),
        "label_name": raw[label_column].str.strip(),
        "cohort": split,
    })  # fmt: skip
    bad = sorted(set(table.cohort) - {"train", "test"})
    if bad:
        raise ValueError(f"{root.labels_csv}: column 'cohort' must hold train or test, found {bad}")
    return table


def store_labels(warehouse: Warehouse, table: pd.DataFrame) -> None:
    write_derived_table(warehouse, "labels", table)


def build_feature_matrix(warehouse: Warehouse) -> pd.DataFrame:
    """Wide patients x features joined with labels (``label`` is NaN for unlabelled patients)."""
    wide = modelling.wide_matrix(warehouse.query("SELECT * FROM features"))
    labels = warehouse.query("SELECT patient_id, label FROM labels").set_index("patient_id")
    matrix = wide.join(labels, how="left")
    matrix.index.name = "patient_id"
    write_derived_table(warehouse, "feature_matrix", matrix.reset_index())
    return matrix


def labelled_training_set(warehouse: Warehouse, cohort: str = "train") -> tuple[pd.DataFrame, pd.Series]:
    """Labelled patients of one cohort (``train`` or ``test``; without a ``cohort`` column all are train)."""
    matrix = warehouse.query("SELECT * FROM feature_matrix").set_index("patient_id")
    labels = warehouse.query("SELECT * FROM labels").set_index("patient_id")
    split = labels["cohort"] if "cohort" in labels else pd.Series("train", index=labels.index)
    in_cohort = matrix.index.isin(split[split == cohort].index)
    labelled = matrix[matrix.label.notna() & in_cohort]
    return labelled.drop(columns="label"), labelled.label.astype(int)


def unlabelled_set(warehouse: Warehouse) -> pd.DataFrame:
    matrix = warehouse.query("SELECT * FROM feature_matrix").set_index("patient_id")
    return matrix[matrix.label.isna()].drop(columns="label")


def load_model(root: DataRoot) -> dict:
    with open(root.models / "model.pkl", "rb") as fh:
        return pickle.load(fh)


def train_model(root: DataRoot, seed: int = 0, models=modelling.MODELS, selection: str = "anova",
                folds: int = 5, repeats: int = 2) -> tuple[Path, dict]:  # fmt: skip
    """Nested-CV comparison of the candidate models on the training cohort; the best is refitted on all of it.

    Writes ``models/model.pkl``, ``models/model_card.json`` and ``models/cv_results.pkl`` (for the report).
    """
    X, y = labelled_training_set(Warehouse(root.warehouse))
    results = modelling.compare_models(X, y, seed, models, selection, folds, repeats)
    best = modelling.best_model(results)
    search = modelling.fit_final(X, y, seed, best, selection)
    root.models.mkdir(parents=True, exist_ok=True)
    path = root.models / "model.pkl"
    trained_at = datetime.now(UTC).isoformat(timespec="seconds")
    blob = pickle.dumps({"pipeline": search.best_estimator_, "features": list(X.columns), "model": best,
                         "selection": selection, "trained_at": trained_at})  # fmt: skip
    model_id = hashlib.sha256(blob).hexdigest()[:12]
    path.write_bytes(pickle.dumps({**pickle.loads(blob), "model_id": model_id}))
    with open(root.models / "cv_results.pkl", "wb") as fh:
        pickle.dump({"results": results, "best": best}, fh)
    comparison = {m: modelling.metrics(cv, n_bootstrap=0) for m, cv in results.items()}
    card = {
        "model_id": model_id,
        "trained_at": trained_at,
        "model": best,
        "selection": selection,
        "training_cohort": {"n_patients": len(y), "n_positive": int(y.sum()), "n_negative": int((y == 0).sum())},
        "n_features_in": int(X.shape[1]),
        "features_used": modelling.selected_columns(search.best_estimator_, list(X.columns)),
        "best_params": {k: v for k, v in search.best_params_.items()},
        "inner_cv_auc": float(search.best_score_),
        "cv_estimate": {
            "auc": comparison[best]["auc"],
            "auc_per_repeat": comparison[best].get("auc_per_repeat"),
            "scheme": results[best].scheme,
        },  # fmt: skip
        "candidates": {
            m: {"auc": c["auc"], "auc_repeat_sd": c.get("auc_repeat_sd"), "brier": c["brier"]}
            for m, c in comparison.items()
        },  # fmt: skip
        "library_versions": {
            lib: version(lib) for lib in ("scikit-learn", "numpy", "pandas", "pyradiomics") if _installed(lib)
        },  # fmt: skip
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
    ranked = modelling.rank_features(X, y)
    saved = load_model(root)
    with open(root.models / "cv_results.pkl", "rb") as fh:
        cv = pickle.load(fh)["results"][saved["model"]]
    chosen = set(modelling.selected_columns(saved["pipeline"], saved["features"]))
    scores = modelling.selection_scores(saved["pipeline"], saved["features"])
    ranked["selected"] = ranked.feature.isin(chosen)
    ranked["selection_method"] = saved["selection"]
    ranked["selection_score"] = ranked.feature.map(scores).astype(float)
    ranked["selection_frequency"] = ranked.feature.map(cv.selection_frequency).fillna(0.0).astype(float)
    ranked = ranked.sort_values(["selected", "selection_frequency", "p_value"], ascending=[False, False, True])
    ranked = ranked.reset_index(drop=True)
    write_derived_table(warehouse, "selected_features", ranked)
    return ranked


def chosen_features(model_path: Path) -> list[str]:
    with open(model_path, "rb") as fh:
        saved = pickle.load(fh)
    return modelling.selected_columns(saved["pipeline"], saved["features"])


def validate(root: DataRoot, seed: int = 0) -> dict:
    """Report of the chosen model's nested CV, the model comparison and, if any, the external test cohort."""
    warehouse = Warehouse(root.warehouse)
    X, _ = labelled_training_set(warehouse)
    with open(root.models / "cv_results.pkl", "rb") as fh:
        stored = pickle.load(fh)
    cv = stored["results"][stored["best"]]
    figures = modelling.metrics(cv, seed=seed)
    selected = chosen_features(root.models / "model.pkl")
    figures["model"] = stored["best"]
    figures["n_features_selected"] = len(selected)
    figures["n_features_available"] = int(X.shape[1])
    figures["model_comparison"] = {
        m: {k: v for k, v in modelling.metrics(r, n_bootstrap=200, seed=seed).items()
            if k in ("auc", "auc_ci_low", "auc_ci_high", "auc_repeat_sd", "brier", "average_precision")}
        for m, r in stored["results"].items()
    }  # fmt: skip
    X_test, y_test = labelled_training_set(warehouse, "test")
    external = None
    if len(y_test):
        saved = load_model(root)
        p_test = saved["pipeline"].predict_proba(X_test.reindex(columns=saved["features"]).to_numpy(float))[:, 1]
        figures["external"] = modelling.binary_metrics(y_test.to_numpy(), p_test, seed=seed)
        external = (y_test.to_numpy(), p_test)
    written = report.write_report(root.reports, figures, cv.y, cv.probabilities, selected, external)
    return {**figures, **written}


def predict(root: DataRoot, threshold: float = 0.5) -> pd.DataFrame:
    """Scores of the saved model for patients with features but no label; table ``predictions``."""
    warehouse = Warehouse(root.warehouse)
    X = unlabelled_set(warehouse)
    saved = load_model(root)
    p = saved["pipeline"].predict_proba(X.reindex(columns=saved["features"]).to_numpy(float))[:, 1] if len(X) else []
    table = pd.DataFrame({
        "patient_id": pd.Series(list(X.index), dtype=str),
        "probability": np.asarray(p, dtype=float),
        "predicted_label": (np.asarray(p, dtype=float) >= threshold).astype(int),
        "threshold": threshold,
        "model": saved.get("model", "logreg"),
        "model_id": saved.get("model_id", ""),
        "model_trained_at": saved.get("trained_at", ""),
        "predicted_at": datetime.now(UTC).isoformat(timespec="seconds"),
    })  # fmt: skip
    write_derived_table(warehouse, "predictions", table)
    return table
