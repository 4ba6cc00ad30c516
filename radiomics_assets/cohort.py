"""Cohort-level steps over the warehouse: labels, feature matrix, selection, model, validation report."""

from __future__ import annotations

import pickle
from pathlib import Path

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
    return pd.DataFrame({
        "patient_id": raw.patient_id.map(patient_key),
        "label": raw[label_column].str.strip().map({names[0]: 0, names[1]: 1}).astype(int),
        "label_name": raw[label_column].str.strip(),
    })  # fmt: skip


def build_feature_matrix(warehouse: Warehouse) -> pd.DataFrame:
    """Wide patients x features joined with labels (``label`` is NaN for unlabelled patients)."""
    wide = modelling.wide_matrix(warehouse.query("SELECT * FROM features"))
    labels = warehouse.query("SELECT patient_id, label FROM labels").set_index("patient_id")
    matrix = wide.join(labels, how="left")
    matrix.index.name = "patient_id"
    write_derived_table(warehouse, "feature_matrix", matrix.reset_index())
    return matrix


def labelled_training_set(warehouse: Warehouse) -> tuple[pd.DataFrame, pd.Series]:
    matrix = warehouse.query("SELECT * FROM feature_matrix").set_index("patient_id")
    labelled = matrix[matrix.label.notna()]
    return labelled.drop(columns="label"), labelled.label.astype(int)


def select_features(warehouse: Warehouse) -> pd.DataFrame:
    X, y = labelled_training_set(warehouse)
    ranked = modelling.rank_features(X, y)
    write_derived_table(warehouse, "selected_features", ranked)
    return ranked


def train_model(root: DataRoot, seed: int = 0) -> tuple[Path, dict]:
    X, y = labelled_training_set(Warehouse(root.warehouse))
    search = modelling.fit_final(X, y, seed)
    root.models.mkdir(parents=True, exist_ok=True)
    path = root.models / "model.pkl"
    with open(path, "wb") as fh:
        pickle.dump({"pipeline": search.best_estimator_, "features": list(X.columns)}, fh)
    return path, {"best_params": search.best_params_, "inner_cv_auc": float(search.best_score_),
                  "n_patients": len(y), "n_positive": int(y.sum()), "n_features_in": X.shape[1]}  # fmt: skip


def chosen_features(model_path: Path) -> list[str]:
    with open(model_path, "rb") as fh:
        saved = pickle.load(fh)
    support = saved["pipeline"].named_steps["drop_constant"].get_support()
    kept = [f for f, s in zip(saved["features"], support, strict=True) if s]
    chosen = saved["pipeline"].named_steps["select"].get_support()
    return [f for f, s in zip(kept, chosen, strict=True) if s]


def validate(root: DataRoot, seed: int = 0) -> dict:
    X, y = labelled_training_set(Warehouse(root.warehouse))
    cv = modelling.cross_validate(X, y, seed)
    figures = modelling.metrics(cv, seed=seed)
    selected = chosen_features(root.models / "model.pkl")
    figures["n_features_selected"] = len(selected)
    figures["n_features_available"] = int(X.shape[1])
    written = report.write_report(root.reports, figures, cv.y, cv.probabilities, selected)
    return {**figures, **written}
