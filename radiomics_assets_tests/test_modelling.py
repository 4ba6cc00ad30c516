"""Modelling is honest: no leakage with shuffled labels, and a planted signal is found."""

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
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


def test_shuffled_labels_give_chance_auc_with_the_default_procedure():
    """The default procedure (the consensus, its vote's weight chosen inside the folds) on shuffled labels scores
    chance."""
    aucs = []
    for repeat in range(2):
        X, y = _cohort(seed=repeat, n=40, p=60, planted=())
        shuffled = pd.Series(np.random.default_rng(100 + repeat).permutation(y.to_numpy()), index=y.index)
        settings = modelling.ModellingSettings(seed=repeat, folds=3, repeats=1)
        assert settings.candidates == [("consensus", "anova")]
        cv = modelling.cross_validate(X, shuffled, settings, with_candidates=False)
        aucs.append(cv.auc)
    # Selection and the choice inside the folds: choosing on the outer folds, or selecting on the whole cohort,
    # would give ~0.65-0.8 here.
    assert abs(np.mean(aucs) - 0.5) < 0.12, aucs


def test_fold_mean_auc_centres_on_chance_under_the_null():
    """Cheap version of benchmarks/bench_null_auc.py: permuted labels, a fast candidate set."""
    X, y = _cohort(seed=7, n=30, p=40, planted=())
    settings = modelling.ModellingSettings(seed=0, models=("logreg",), folds=5, repeats=1, inner_folds=2)
    rng = np.random.default_rng(0)
    null, pooled = [], []
    for _ in range(8):
        cv = modelling.cross_validate(
            X, pd.Series(rng.permutation(y.to_numpy()), index=y.index), settings, None, None, False
        )
        null.append(cv.auc)
        pooled.append(modelling.metrics(cv, n_bootstrap=0)["auc_pooled"])
    expected_sd = modelling.expected_null_sd(cv.y, cv.fold_of)
    assert 0.08 < expected_sd < 0.14  # 5 folds of 6 patients (3 + 3): sqrt(7 / 108 / 5)
    assert abs(np.mean(null) - 0.5) < 2.5 * expected_sd / np.sqrt(len(null)), null
    assert 0.3 * expected_sd < np.std(null, ddof=1) < 2.5 * expected_sd, null


def test_each_labelling_gets_its_own_splits_and_the_same_labels_the_same_splits():
    """Outer splits are seeded by the labels: a fixed shuffle order shared by every relabelling lets a chance
    alignment of that order with the features bias all permutations alike (0.46 on the synthetic demo)."""
    from radiomics_assets.modelling.validation import outer_splits

    y = np.arange(30) % 2
    groups = np.arange(30)
    settings = modelling.ModellingSettings(seed=0, folds=5, repeats=2)

    def test_folds(labels):
        return [tuple(test) for *_, test in outer_splits(labels, groups, settings)[1]]

    assert test_folds(y) == test_folds(y.copy())  # reproducible
    assert test_folds(y)[:5] != test_folds(y)[5:]  # repeats differ
    permuted = [np.random.default_rng(i).permutation(y) for i in range(5)]
    assert len({tuple(test_folds(labels)) for labels in permuted}) == 5
    for labels in [y, *permuted]:
        for test in test_folds(labels):
            assert np.bincount(labels[list(test)], minlength=2).tolist() == [3, 3]  # still stratified


def test_permutation_test_of_the_whole_procedure():
    X, y = _cohort(seed=1, n=40, p=30, planted=("f007", "f012", "f021"))
    settings = modelling.ModellingSettings(
        seed=0, models=("logreg",), folds=4, repeats=1, inner_folds=2, permutations=9
    )
    cv = modelling.cross_validate(X, y, settings)
    result = modelling.permutation_test(cv, X, settings)
    assert result["n_permutations"] == 9 and len(result["null_aucs"]) == 9
    assert result["p_value"] == pytest.approx((1 + sum(a >= result["observed_auc"] for a in result["null_aucs"])) / 10)
    assert result["p_value"] == pytest.approx(0.1)  # strong signal: no permutation reaches it
    assert result["observed_auc"] > 0.8 and abs(result["null_auc_mean"] - 0.5) < 0.15


def test_calibration_and_decision_curve_on_known_values():
    rng = np.random.default_rng(0)
    p = rng.uniform(0.05, 0.95, 4000)
    y = (rng.random(4000) < p).astype(int)  # perfectly calibrated
    assert modelling.calibration(y, p)["calibration_slope"] == pytest.approx(1.0, abs=0.1)
    assert modelling.calibration(y, p)["calibration_intercept"] == pytest.approx(0.0, abs=0.1)
    extreme = 1 / (1 + np.exp(-2 * np.log(p / (1 - p))))  # logits doubled: overconfident, slope 0.5
    assert modelling.calibration(y, extreme)["calibration_slope"] == pytest.approx(0.5, abs=0.05)
    curve = modelling.decision_curve(np.array([1, 1, 0, 0]), np.array([0.9, 0.6, 0.4, 0.1]))
    at = curve["threshold"].index(0.5)
    assert curve["model"][at] == pytest.approx(0.5) and curve["treat_all"][at] == pytest.approx(0.0)
    at = curve["threshold"].index(0.2)  # p >= 0.2 treats 3: TP 2, FP 1 -> 2/4 - 1/4 x 0.25
    assert curve["model"][at] == pytest.approx(0.5 - 0.25 * 0.25) and curve["treat_none"][at] == 0.0


def test_planted_signal_is_recovered():
    X, y = _cohort(seed=1)
    ranked = modelling.rank_features(X, y)
    assert set(ranked.feature.head(3)) == {"f007", "f042", "f099"}
    settings = modelling.ModellingSettings(seed=1, models=("logreg", "svm"), folds=3, repeats=1)
    cv = modelling.cross_validate(X, y, settings)
    figures = modelling.metrics(cv, n_bootstrap=200)
    assert figures["auc"] > 0.85 and figures["auc_ci_low"] < figures["auc"] < figures["auc_ci_high"]
    comparison = modelling.compare_candidates(cv, n_bootstrap=200)
    assert set(comparison) == {"logreg", "svm"} and sum(c["times_chosen"] for c in comparison.values()) == 3
    assert all(c["difference_ci_low"] <= c["auc_minus_procedure"] + 1e-9 for c in comparison.values())
    search = modelling.fit_final(X, y, settings)
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


FAST = {"folds": 3, "inner_folds": 2, "permutations": 3}


def test_procedure_chooses_a_candidate_and_writes_a_card(tmp_path):
    import json

    root, warehouse = _warehouse_cohort(tmp_path)
    settings = modelling.ModellingSettings(seed=0, models=("logreg", "svm"), repeats=2, **FAST)
    path, card = modelling.train_model(root, settings)
    assert path.exists() and card.model in {"logreg", "svm"}
    written = json.loads((root.models / "model_card.json").read_text())
    assert written["training_cohort"] == {"n_patients": 40, "n_positive": 20, "n_negative": 20}
    assert set(written["candidates"]) == {"logreg", "svm"} and written["features_used"]
    assert "scikit-learn" in written["library_versions"] and len(written["cv_estimate"]["auc_per_repeat"]) == 2
    assert len(written["cv_estimate"]["chosen_per_outer_fold"]) == 6
    assert 0 < written["cv_estimate"]["permutation_p_value"] <= 1
    # The headline is the procedure's own outer-CV figure, not the best candidate's (that would be optimistic).
    assert written["cv_estimate"]["auc"] == pytest.approx(np.mean(written["cv_estimate"]["auc_per_repeat"]))
    ranked = modelling.feature_selection_table(warehouse, root)
    chosen = ranked[ranked.selected]
    assert set(chosen.feature) == set(written["features_used"])
    # The final fit may keep a feature no outer-fold model chose (frequency 0); the planted ones hold up in the folds.
    assert ((chosen.selection_frequency >= 0) & (chosen.selection_frequency <= 1)).all()
    assert {"f007", "f012", "f021"} & set(chosen.feature)
    assert (ranked.set_index("feature").loc[["f007", "f012", "f021"], "selection_frequency"] >= 0.5).all()
    saved = modelling.load_model(root)
    assert isinstance(saved, modelling.SavedModel) and saved.model_id == card.model_id and saved.threshold == 0.5
    assert saved.feature_columns == [f"f{i:03d}" for i in range(30)] and saved.trained_at == card.trained_at


def test_external_test_cohort_is_held_out_and_reported(tmp_path):
    import json

    root, warehouse = _warehouse_cohort(tmp_path, n=40, test=12)
    _, card = modelling.train_model(root, modelling.ModellingSettings(seed=0, models=("logreg",), repeats=1, **FAST))
    assert card.training_cohort["n_patients"] == 28
    report = modelling.build_validation_report(root, seed=0)
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
        "permutation_p_value",
        "calibration_slope",
        "calibration_intercept",
        "decision_curve",
        "groups",
    } <= set(metrics)
    assert metrics["permutation"]["n_permutations"] == 3 and len(metrics["decision_curve"]["model"]) == 99
    X_test, y_test = modelling.external_test_set(warehouse)
    p_test = modelling.score(modelling.load_model(root), X_test)
    assert metrics["external"]["auc"] == pytest.approx(roc_auc_score(y_test, p_test))
    html_text = report.files.report_path.read_text()
    assert "held-out test cohort" in html_text and html_text.count("data:image/png;base64,") >= 10
    assert "Permutation p-value" in html_text and 'alt="decision curve (out-of-fold)"' in html_text
    assert "information, not an estimate of the chosen model" in html_text


def test_predictions_for_unlabelled_patients(tmp_path):
    root, warehouse = _warehouse_cohort(tmp_path, n=40, unlabelled=5)
    modelling.train_model(root, modelling.ModellingSettings(seed=0, models=("logreg",), repeats=1, **FAST))
    table = modelling.predict_unlabelled(root)
    stored = warehouse.query("SELECT * FROM predictions ORDER BY patient_id")
    assert list(stored.patient_id) == [f"P{i:03d}" for i in range(40, 45)]
    assert stored.probability.between(0, 1).all() and set(stored.predicted_label) <= {0, 1}
    saved = modelling.load_model(root)
    assert (stored.model_id == saved.model_id).all() and len(table) == 5
    # One scoring path: shuffled and extra columns are reindexed to the training columns.
    X = modelling.unlabelled_set(warehouse)
    jumbled = X[X.columns[::-1]].assign(extra=1.0)
    np.testing.assert_allclose(modelling.score(saved, jumbled), stored.probability.to_numpy())


def test_every_selection_method_finds_the_planted_features():
    X, y = _cohort(seed=2, n=60, p=40, planted=("f007", "f021", "f033"))
    scaled = (X - X.mean()) / X.std()
    from radiomics_assets.modelling.selection import SELECTION_METHODS_BY_OUTCOME

    for method in SELECTION_METHODS_BY_OUTCOME["binary"]:
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
    pipeline = modelling.make_pipeline(0, "random_forest", standardise=False)
    assert pipeline.named_steps["scale"] == "passthrough"
    assert isinstance(modelling.make_pipeline(0).named_steps["scale"], StandardScaler)
    unscaled = pipeline.set_params(select__k=5).fit(X.iloc[:20], y.iloc[:20])
    held_out = unscaled.predict_proba(X.iloc[20:])[:, 1]
    assert roc_auc_score(y.iloc[20:], held_out) > 0.75


def test_a_feature_missing_for_every_training_patient_keeps_names_aligned():
    X, y = _cohort(seed=1, n=40, p=30, planted=("f007", "f012", "f021"))
    X["f000"] = np.nan  # e.g. a modality no training patient has: imputed as 0, then dropped as constant
    pipeline = modelling.make_pipeline(0).set_params(select__k=3).fit(X.to_numpy(), y.to_numpy())
    assert modelling.selected_columns(pipeline, list(X.columns)) == ["f007", "f012", "f021"]


def test_the_permutation_test_stops_at_its_time_budget_and_counts_only_the_permutations_done():
    X, y = _cohort(seed=1, n=40, p=30, planted=("f007", "f012", "f021"))
    settings = modelling.ModellingSettings(
        seed=0, models=("logreg",), folds=4, repeats=1, inner_folds=2, permutations=50, permutation_seconds=1e-6
    )
    cv = modelling.cross_validate(X, y, settings)
    result = modelling.permutation_test(cv, X, settings)
    # One batch (two per process, one process) runs before the clock is read: 2 of the 50 asked for.
    assert result["n_permutations"] == 2 and result["n_permutations_requested"] == 50
    assert result["stopped_by_time_budget"] and len(result["null_aucs"]) == 2
    assert result["p_value"] == pytest.approx((1 + sum(a >= result["observed_auc"] for a in result["null_aucs"])) / 3)
    unlimited = modelling.permutation_test(cv, X, replace(settings, permutations=2, permutation_seconds=0))
    assert unlimited["null_aucs"] == result["null_aucs"]  # the same seeds: the budget only cuts the sequence
    assert not unlimited["stopped_by_time_budget"]
