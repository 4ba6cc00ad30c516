"""Cohort-level steps over the warehouse: labels, feature matrix, selection, model, validation report."""

from __future__ import annotations

import hashlib
import json
import pickle
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from radiomics_assets import modelling, report
from radiomics_assets.paths import DataRoot, patient_key
from radiomics_assets.warehouse import Warehouse, write_derived_table

THRESHOLD = 0.5
"""Probability at or above which a patient is called positive, fixed in advance (never tuned on the data):
the classifiers are class-balanced, so 0.5 is their natural operating point."""


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


MIN_BLOCK_COVERAGE = 0.5
"""A (modality, ROI) block that fewer than this share of patients have is left out of the matrix for everyone;
a block most patients have is kept, and a patient without it gets the training-fold median (in the Pipeline)."""
IMPUTED = "imputed: median of the training patients (inside each CV fold and the final fit)"
NO_FEATURES = "(no features)"


def _blocks(features_long: pd.DataFrame) -> pd.DataFrame:
    """Patients x ``<modality>__<roi>`` blocks: True where the patient has features of that block."""
    block = features_long.modality + "__" + features_long.roi
    return pd.crosstab(features_long.patient_id, block) > 0


def build_feature_matrix(warehouse: Warehouse) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Wide patients x features joined with labels (``label`` is NaN for unlabelled patients), and its gaps.

    A patient missing a whole modality or ROI is never dropped silently: each gap is a row of table
    ``missing_blocks`` (patient_id, block, handling) saying whether it is imputed or the block is excluded
    (see ``MIN_BLOCK_COVERAGE``); labelled patients without any features are listed there too.
    """
    features_long = warehouse.query("SELECT * FROM features")
    wide = modelling.wide_matrix(features_long)
    labels = warehouse.query("SELECT patient_id, label FROM labels").set_index("patient_id")
    gaps = []
    if len(features_long):
        present = _blocks(features_long)
        for block in present.columns:
            have = int(present[block].sum())
            if have < MIN_BLOCK_COVERAGE * len(present):
                handling = (f"block excluded for every patient: only {have} of {len(present)} patients have it "
                            f"(< {MIN_BLOCK_COVERAGE:.0%})")  # fmt: skip
                wide = wide.drop(columns=[c for c in wide.columns if c.startswith(block + "__")])
            else:
                handling = IMPUTED
            gaps += [{"patient_id": key, "block": block, "handling": handling}
                     for key in present.index[~present[block]]]  # fmt: skip
    gaps += [{"patient_id": key, "block": NO_FEATURES, "handling": "excluded: labelled but has no features"}
             for key in sorted(set(labels.index) - set(wide.index))]  # fmt: skip
    matrix = wide.join(labels, how="left")
    matrix.index.name = "patient_id"
    write_derived_table(warehouse, "feature_matrix", matrix.reset_index())
    gaps_table = pd.DataFrame(gaps, columns=["patient_id", "block", "handling"]).astype(str)
    write_derived_table(warehouse, "missing_blocks", gaps_table)
    return matrix, gaps_table


def missing_data_summary(warehouse: Warehouse, max_listed: int = 30) -> dict:
    """Per (block, handling): how many patients and which (patient keys, at most ``max_listed``)."""
    try:
        gaps = warehouse.query("SELECT * FROM missing_blocks ORDER BY block, patient_id")
    except duckdb.CatalogException:  # feature matrix written without gap tracking (older warehouses)
        gaps = pd.DataFrame(columns=["patient_id", "block", "handling"])
    groups = [
        {"block": block, "handling": handling, "n_patients": len(rows),
         "patients": list(rows.patient_id[:max_listed]) + (["..."] if len(rows) > max_listed else [])}
        for (block, handling), rows in gaps.groupby(["block", "handling"], sort=True)
    ]  # fmt: skip
    policy = (f"a patient without a modality/ROI block gets the training-fold median of its features; a block "
              f"fewer than {MIN_BLOCK_COVERAGE:.0%} of patients have is excluded for every patient")  # fmt: skip
    return {"policy": policy, "gaps": groups}


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
                folds: int = 5, repeats: int = 2, standardise: bool = True) -> tuple[Path, dict]:  # fmt: skip
    """Nested-CV comparison of the candidate models on the training cohort; the best is refitted on all of it.

    Writes ``models/model.pkl``, ``models/model_card.json`` and ``models/cv_results.pkl`` (for the report).
    """
    X, y = labelled_training_set(Warehouse(root.warehouse))
    results = modelling.compare_models(X, y, seed, models, selection, folds, repeats, standardise)
    best = modelling.best_model(results)
    search = modelling.fit_final(X, y, seed, best, selection, standardise)
    root.models.mkdir(parents=True, exist_ok=True)
    path = root.models / "model.pkl"
    trained_at = datetime.now(UTC).isoformat(timespec="seconds")
    saved = {"pipeline": search.best_estimator_, "features": list(X.columns), "model": best,
             "selection": selection, "standardise": standardise, "trained_at": trained_at}  # fmt: skip
    model_id = hashlib.sha256(pickle.dumps(saved)).hexdigest()[:12]
    path.write_bytes(pickle.dumps({**saved, "model_id": model_id}))
    with open(root.models / "cv_results.pkl", "wb") as fh:
        pickle.dump({"results": results, "best": best}, fh)
    comparison = {m: modelling.metrics(cv, n_bootstrap=0) for m, cv in results.items()}
    features_used = modelling.selected_columns(search.best_estimator_, list(X.columns))
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
        },  # fmt: skip
        "candidates": {
            m: {"auc": c["auc"], "auc_repeat_sd": c.get("auc_repeat_sd"), "brier": c["brier"]}
            for m, c in comparison.items()
        },  # fmt: skip
        "library_versions": {
            lib: version(lib) for lib in ("scikit-learn", "numpy", "pandas", "scipy", "pyradiomics",
                                          "pyradiomics-bhklab", "SimpleITK", "duckdb") if _installed(lib)
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


def validate(root: DataRoot, seed: int = 0) -> dict:
    """Report of the chosen model's nested CV, the model comparison and, if any, the external test cohort."""
    warehouse = Warehouse(root.warehouse)
    X, _ = labelled_training_set(warehouse)
    with open(root.models / "cv_results.pkl", "rb") as fh:
        stored = pickle.load(fh)
    cv = stored["results"][stored["best"]]
    figures = modelling.metrics(cv, threshold=THRESHOLD, seed=seed)
    saved = load_model(root)
    selected = modelling.selected_columns(saved["pipeline"], saved["features"])
    scores = modelling.selection_scores(saved["pipeline"], saved["features"])
    card_path = root.models / "model_card.json"
    card = json.loads(card_path.read_text()) if card_path.exists() else {}
    figures["model"] = stored["best"]
    figures["model_id"] = saved.get("model_id", "")
    figures["selection_method"] = saved.get("selection", "")
    figures["best_params"] = card.get("best_params", {})
    figures["n_features_selected"] = len(selected)
    figures["n_features_available"] = int(X.shape[1])
    figures["selected_features"] = [
        {"feature": f, "selection_frequency": cv.selection_frequency.get(f, 0.0), "selection_score": scores[f]}
        for f in selected
    ]  # fmt: skip
    figures["missing_data"] = missing_data_summary(warehouse)
    figures["library_versions"] = card.get("library_versions", {})
    figures["model_comparison"] = {
        m: {k: v for k, v in modelling.metrics(r, n_bootstrap=200, seed=seed).items()
            if k in ("auc", "auc_ci_low", "auc_ci_high", "auc_repeat_sd", "brier", "average_precision")}
        for m, r in stored["results"].items()
    }  # fmt: skip
    X_test, y_test = labelled_training_set(warehouse, "test")
    external = None
    if len(y_test):
        p_test = saved["pipeline"].predict_proba(X_test.reindex(columns=saved["features"]).to_numpy(float))[:, 1]
        figures["external"] = modelling.binary_metrics(y_test.to_numpy(), p_test, THRESHOLD, seed=seed)
        external = (y_test.to_numpy(), p_test)
    written = report.write_report(root.reports, figures, cv.y, cv.probabilities, external)
    return {**figures, **written}


def predict(root: DataRoot, threshold: float = THRESHOLD) -> pd.DataFrame:
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
