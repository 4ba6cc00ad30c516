"""Modelling is honest: no leakage with shuffled labels, and a planted signal is found."""

import numpy as np
import pandas as pd

from radiomics_assets import modelling


def _cohort(seed: int, n: int = 60, p: int = 150, planted=("f007", "f042", "f099")):
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.standard_normal((n, p)), columns=[f"f{i:03d}" for i in range(p)],
                     index=[f"P{i:03d}" for i in range(n)])  # fmt: skip
    y = pd.Series(np.arange(n) % 2, index=X.index)
    for name in planted:
        X[name] += 1.5 * y
    return X, y


def test_shuffled_labels_give_chance_auc():
    aucs = []
    for repeat in range(5):
        X, y = _cohort(seed=repeat)
        shuffled = pd.Series(np.random.default_rng(100 + repeat).permutation(y.to_numpy()), index=y.index)
        cv = modelling.cross_validate(X, shuffled, seed=repeat)
        aucs.append(modelling.metrics(cv, n_bootstrap=50)["auc"])
    # Selection inside the folds: with 150 noise features, selecting on the whole cohort would give ~0.8+.
    assert abs(np.mean(aucs) - 0.5) < 0.1, aucs


def test_planted_signal_is_recovered():
    X, y = _cohort(seed=1)
    ranked = modelling.rank_features(X, y)
    assert set(ranked.feature.head(3)) == {"f007", "f042", "f099"}
    cv = modelling.cross_validate(X, y, seed=1)
    figures = modelling.metrics(cv, n_bootstrap=200)
    assert figures["auc"] > 0.85 and figures["auc_ci_low"] < figures["auc"] < figures["auc_ci_high"]
    search = modelling.fit_final(X, y, seed=1)
    kept = X.columns[search.best_estimator_.named_steps["drop_constant"].get_support()]
    chosen = set(kept[search.best_estimator_.named_steps["select"].get_support()])
    assert {"f007", "f042", "f099"} <= chosen


def _warehouse_cohort(tmp_path, n: int = 40, test: int = 0, unlabelled: int = 0):
    """A DataRoot whose warehouse holds a feature matrix and labels (optionally a test cohort / unlabelled rows)."""
    from radiomics_assets import cohort
    from radiomics_assets.paths import DataRoot
    from radiomics_assets.warehouse import Warehouse, write_derived_table

    X, y = _cohort(seed=3, n=n + unlabelled, p=30, planted=("f007", "f012", "f021"))
    root = DataRoot(tmp_path)
    warehouse = Warehouse(root.warehouse)
    matrix = X.assign(label=y.astype(float))
    matrix.iloc[n:, matrix.columns.get_loc("label")] = np.nan
    matrix.iloc[0, 0] = np.nan  # a missing value: imputed inside the pipeline
    write_derived_table(warehouse, "feature_matrix", matrix.rename_axis("patient_id").reset_index())
    labels = pd.DataFrame({"patient_id": X.index[:n], "label": y.iloc[:n].to_numpy(),
                           "label_name": y.iloc[:n].astype(str).to_numpy(),
                           "cohort": ["test" if i >= n - test else "train" for i in range(n)]})  # fmt: skip
    cohort.store_labels(warehouse, labels)
    return root, warehouse


def test_model_comparison_picks_a_model_and_writes_a_card(tmp_path):
    import json

    from radiomics_assets import cohort

    root, warehouse = _warehouse_cohort(tmp_path)
    path, card = cohort.train_model(root, seed=0, models=("logreg", "svm"), folds=3, repeats=2)
    assert path.exists() and card["model"] in {"logreg", "svm"}
    written = json.loads((root.models / "model_card.json").read_text())
    assert written["training_cohort"] == {"n_patients": 40, "n_positive": 20, "n_negative": 20}
    assert set(written["candidates"]) == {"logreg", "svm"} and written["features_used"]
    assert "scikit-learn" in written["library_versions"] and len(written["cv_estimate"]["auc_per_repeat"]) == 2
    assert written["cv_estimate"]["auc"] == max(c["auc"] for c in written["candidates"].values())
    ranked = cohort.select_features(warehouse, root)
    chosen = ranked[ranked.selected]
    assert set(chosen.feature) == set(written["features_used"])
    assert ((chosen.selection_frequency > 0) & (chosen.selection_frequency <= 1)).all()
    assert {"f007", "f012", "f021"} & set(chosen.feature)


def test_external_test_cohort_is_held_out_and_reported(tmp_path):
    import json

    from radiomics_assets import cohort

    root, _ = _warehouse_cohort(tmp_path, n=40, test=12)
    _, card = cohort.train_model(root, seed=0, models=("logreg",), folds=3, repeats=1)
    assert card["training_cohort"]["n_patients"] == 28
    result = cohort.validate(root, seed=0)
    metrics = json.loads((root.reports / "metrics.json").read_text())
    assert metrics["n_patients"] == 28 and metrics["external"]["n_patients"] == 12
    assert {"auc", "auc_ci_low", "brier", "average_precision", "confusion_matrix"} <= set(metrics["external"])
    assert {"auc", "auc_ci_low", "auc_ci_high", "accuracy", "precision", "recall", "f1", "n_patients",
            "n_features_selected", "cv_scheme", "brier", "model_comparison"} <= set(metrics)  # fmt: skip
    html_text = result["report_path"].read_text()
    assert "held-out test cohort" in html_text and html_text.count("data:image/png;base64,") >= 8


def test_predictions_for_unlabelled_patients(tmp_path):
    from radiomics_assets import cohort

    root, warehouse = _warehouse_cohort(tmp_path, n=40, unlabelled=5)
    cohort.train_model(root, seed=0, models=("logreg",), folds=3, repeats=1)
    table = cohort.predict(root)
    stored = warehouse.query("SELECT * FROM predictions ORDER BY patient_id")
    assert list(stored.patient_id) == [f"P{i:03d}" for i in range(40, 45)]
    assert stored.probability.between(0, 1).all() and set(stored.predicted_label) <= {0, 1}
    assert (stored.model_id == cohort.load_model(root)["model_id"]).all() and len(table) == 5
