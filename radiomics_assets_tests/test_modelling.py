"""Modelling is honest: no leakage with shuffled labels, and a planted signal is found."""

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import StandardScaler

from radiomics_assets import modelling


def _cohort(seed: int, n: int = 60, p: int = 150, planted=("f007", "f042", "f099")):
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(
        rng.standard_normal((n, p)), columns=[f"f{i:03d}" for i in range(p)], index=[f"P{i:03d}" for i in range(n)]
    )
    y = pd.Series(np.arange(n) % 2, index=X.index)
    for name in planted:
        X[name] += 1.5 * y
    return X, y


def test_shuffled_labels_give_chance_auc():
    aucs = []
    for repeat in range(5):
        X, y = _cohort(seed=repeat)
        shuffled = pd.Series(np.random.default_rng(100 + repeat).permutation(y.to_numpy()), index=y.index)
        cv = modelling.cross_validate(X, shuffled, modelling.ModellingSettings(seed=repeat, folds=3, repeats=2))
        aucs.append(modelling.metrics(cv, n_bootstrap=50)["auc"])
    # Selection inside the folds: with 150 noise features, selecting on the whole cohort would give ~0.8+.
    assert abs(np.mean(aucs) - 0.5) < 0.1, aucs


def test_planted_signal_is_recovered():
    X, y = _cohort(seed=1)
    ranked = modelling.rank_features(X, y)
    assert set(ranked.feature.head(3)) == {"f007", "f042", "f099"}
    cv = modelling.cross_validate(X, y, modelling.ModellingSettings(seed=1, folds=3, repeats=2))
    figures = modelling.metrics(cv, n_bootstrap=200)
    assert figures["auc"] > 0.85 and figures["auc_ci_low"] < figures["auc"] < figures["auc_ci_high"]
    search = modelling.fit_final(X, y, modelling.ModellingSettings(seed=1))
    chosen = set(modelling.selected_columns(search.best_estimator_, list(X.columns)))
    assert {"f007", "f042", "f099"} <= chosen


def _warehouse_cohort(tmp_path, n: int = 40, test: int = 0, unlabelled: int = 0):
    """A DataRoot whose warehouse holds a feature matrix and labels (optionally a test cohort / unlabelled rows)."""

    from radiomics_assets.paths import DataRoot
    from radiomics_assets.warehouse import Warehouse, write_derived_table

    X, y = _cohort(seed=3, n=n + unlabelled, p=30, planted=("f007", "f012", "f021"))
    root = DataRoot(tmp_path)
    warehouse = Warehouse(root.warehouse)
    matrix = X.assign(label=y.astype(float))
    matrix.iloc[n:, matrix.columns.get_loc("label")] = np.nan
    matrix.iloc[0, 0] = np.nan  # a missing value: imputed inside the pipeline
    write_derived_table(warehouse, "feature_matrix", matrix.rename_axis("patient_id").reset_index())
    labels = pd.DataFrame(
        {
            "patient_id": X.index[:n],
            "label": y.iloc[:n].to_numpy(),
            "label_name": y.iloc[:n].astype(str).to_numpy(),
            "cohort": ["test" if i >= n - test else "train" for i in range(n)],
        }
    )
    modelling.store_labels(warehouse, labels)
    return root, warehouse


def test_model_comparison_picks_a_model_and_writes_a_card(tmp_path):
    import json

    root, warehouse = _warehouse_cohort(tmp_path)
    path, card = modelling.train_model(
        root, modelling.ModellingSettings(seed=0, models=("logreg", "svm"), folds=3, repeats=2)
    )
    assert path.exists() and card["model"] in {"logreg", "svm"}
    written = json.loads((root.models / "model_card.json").read_text())
    assert written["training_cohort"] == {"n_patients": 40, "n_positive": 20, "n_negative": 20}
    assert set(written["candidates"]) == {"logreg", "svm"} and written["features_used"]
    assert "scikit-learn" in written["library_versions"] and len(written["cv_estimate"]["auc_per_repeat"]) == 2
    assert written["cv_estimate"]["auc"] == max(c["auc"] for c in written["candidates"].values())
    ranked = modelling.select_features(warehouse, root)
    chosen = ranked[ranked.selected]
    assert set(chosen.feature) == set(written["features_used"])
    assert ((chosen.selection_frequency > 0) & (chosen.selection_frequency <= 1)).all()
    assert {"f007", "f012", "f021"} & set(chosen.feature)


def test_external_test_cohort_is_held_out_and_reported(tmp_path):
    import json

    root, _ = _warehouse_cohort(tmp_path, n=40, test=12)
    _, card = modelling.train_model(root, modelling.ModellingSettings(seed=0, models=("logreg",), folds=3, repeats=1))
    assert card["training_cohort"]["n_patients"] == 28
    result = modelling.validate(root, seed=0)
    metrics = json.loads((root.reports / "metrics.json").read_text())
    assert metrics["n_patients"] == 28 and metrics["external"]["n_patients"] == 12
    assert {"auc", "auc_ci_low", "brier", "average_precision", "confusion_matrix"} <= set(metrics["external"])
    assert {
        "auc",
        "auc_ci_low",
        "auc_ci_high",
        "accuracy",
        "precision",
        "recall",
        "f1",
        "n_patients",
        "n_features_selected",
        "cv_scheme",
        "brier",
        "model_comparison",
    } <= set(metrics)
    html_text = result["report_path"].read_text()
    assert "held-out test cohort" in html_text and html_text.count("data:image/png;base64,") >= 8


def test_predictions_for_unlabelled_patients(tmp_path):

    root, warehouse = _warehouse_cohort(tmp_path, n=40, unlabelled=5)
    modelling.train_model(root, modelling.ModellingSettings(seed=0, models=("logreg",), folds=3, repeats=1))
    table = modelling.predict(root)
    stored = warehouse.query("SELECT * FROM predictions ORDER BY patient_id")
    assert list(stored.patient_id) == [f"P{i:03d}" for i in range(40, 45)]
    assert stored.probability.between(0, 1).all() and set(stored.predicted_label) <= {0, 1}
    assert (stored.model_id == modelling.load_model(root)["model_id"]).all() and len(table) == 5


def test_every_selection_method_finds_the_planted_features():
    X, y = _cohort(seed=2, n=60, p=40, planted=("f007", "f021", "f033"))
    scaled = (X - X.mean()) / X.std()
    for method in modelling.SELECTION_METHODS:
        selector = modelling.Selector(method, k=5, random_state=0).fit(scaled, y)
        chosen = set(X.columns[selector.get_support()])
        assert len(chosen) == 5 and {"f007", "f021", "f033"} <= chosen, (method, chosen)


def test_correlation_filter_skips_a_redundant_copy():
    X, y = _cohort(seed=2, n=60, p=20, planted=("f007", "f012"))
    X["f019"] = X["f007"] * 2.0 + 1.0  # same ranks as f007: |Spearman| = 1
    chosen = set(X.columns[modelling.Selector("anova", k=2).fit(X, y).get_support()])
    assert len(chosen & {"f007", "f019"}) == 1 and "f012" in chosen
    unfiltered = modelling.Selector("anova", k=3, max_correlation=1.0).fit(X, y)
    assert set(X.columns[unfiltered.get_support()]) == {"f007", "f012", "f019"}


def test_near_zero_variance_drops_constant_and_rare_value_features():
    rng = np.random.default_rng(0)
    n = 40
    X = np.column_stack(
        [
            rng.standard_normal(n),  # continuous
            np.ones(n),  # constant
            np.r_[np.zeros(n - 1), 1.0],  # one patient differs: ratio 39, 5 % distinct values
            np.r_[np.zeros(n - 4), np.ones(4)],  # ratio 9: a real (if unbalanced) binary feature
            rng.integers(0, 3, n).astype(float),  # three balanced levels
        ]
    )
    assert list(modelling.NearZeroVariance().fit(X).get_support()) == [True, False, False, True, True]


def test_svm_probabilities_are_calibrated_without_deprecated_options():
    import warnings

    X, y = _cohort(seed=5, n=40, p=5, planted=("f001", "f002"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no FutureWarning from SVC(probability=True) or anything else
        svm = modelling.CalibratedSVC(C=1.0).fit(X.to_numpy(), y.to_numpy())
        p = svm.predict_proba(X.to_numpy())[:, 1]
        # The smallest inner-CV training sets hold 2 patients per class: calibration must still fit.
        tiny = modelling.CalibratedSVC().fit(X.to_numpy()[:4], np.array([0, 1, 0, 1]))
    assert ((p > 0) & (p < 1)).all() and roc_auc_score(y, p) > 0.8
    assert tiny.predict_proba(X.to_numpy()[:4]).shape == (4, 2)


def test_bootstrap_aucs_match_roc_auc_score_with_ties():
    rng = np.random.default_rng(0)
    y, p = rng.integers(0, 2, 30), np.round(rng.random(30), 1)
    idx = np.random.default_rng(3).integers(0, 30, (300, 30))
    expected = [roc_auc_score(y[i], p[i]) for i in idx if len(set(y[i])) == 2]
    np.testing.assert_allclose(modelling.bootstrap_aucs(y, p, 300, seed=3), expected)


def test_standardisation_is_optional():
    X, y = _cohort(seed=1, n=40, p=30, planted=("f007", "f012", "f021"))
    X = X * np.logspace(-3, 3, X.shape[1])  # features on wildly different scales, as radiomics features are
    search = modelling.tuned_model(30, seed=0, model="random_forest", standardise=False)
    assert search.estimator.named_steps["scale"] == "passthrough"
    assert isinstance(modelling.make_pipeline(0).named_steps["scale"], StandardScaler)
    unscaled = search.estimator.set_params(select__k=5).fit(X.iloc[:20], y.iloc[:20])
    held_out = unscaled.predict_proba(X.iloc[20:])[:, 1]
    assert roc_auc_score(y.iloc[20:], held_out) > 0.75


def test_a_feature_missing_for_every_training_patient_keeps_names_aligned():
    X, y = _cohort(seed=1, n=40, p=30, planted=("f007", "f012", "f021"))
    X["f000"] = np.nan  # e.g. a modality no training patient has: imputed as 0, then dropped as constant
    pipeline = modelling.make_pipeline(0).set_params(select__k=3).fit(X.to_numpy(), y.to_numpy())
    assert modelling.selected_columns(pipeline, list(X.columns)) == ["f007", "f012", "f021"]
