"""ICC(1,1) per feature over perturbations: the published reference values, and the training-patient restriction."""

import numpy as np
import pandas as pd
import pytest

from radiomics_assets import modelling

# Shrout and Fleiss (1979), Table 2: 6 targets rated by 4 judges; ICC(1,1) = 0.17 (ICC(3,1) would be 0.71).
SHROUT_FLEISS = np.array([[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]])


def _long(values: np.ndarray, feature: str, names=None) -> pd.DataFrame:
    names = names or ["original"] + [f"p{j}" for j in range(1, values.shape[1])]
    return pd.DataFrame(
        [
            {"patient_id": f"P{i:02d}", "feature": feature, "perturbation": names[j], "value": float(values[i, j])}
            for i in range(values.shape[0])
            for j in range(values.shape[1])
        ]
    )


def test_icc_matches_shrout_and_fleiss():
    icc = modelling.icc_by_feature(_long(SHROUT_FLEISS, "CT__GTV__original__firstorder__Mean"))
    assert icc.index.tolist() == ["CT__GTV__original__firstorder__Mean"]
    assert icc.iloc[0] == pytest.approx(0.1657, abs=5e-4)


def test_stable_feature_passes_and_noisy_one_fails_on_training_patients_only():
    rng = np.random.default_rng(0)
    truth = rng.standard_normal(20)
    stable = truth[:, None] + 0.05 * rng.standard_normal((20, 4))
    noisy = rng.standard_normal((20, 4))
    table = pd.concat([_long(stable, "stable"), _long(noisy, "noisy")])
    icc = modelling.icc_by_feature(table)
    assert icc["stable"] > 0.95 and abs(icc["noisy"]) < 0.3
    # Restricted to 10 patients, the ICC is that of those patients' rows alone.
    train = [f"P{i:02d}" for i in range(10)]
    expected = modelling.icc_by_feature(_long(stable[:10], "stable"))["stable"]
    assert modelling.icc_by_feature(table, train)["stable"] == pytest.approx(expected)
    assert modelling.robust_features(table, ["stable", "noisy", "absent"], 0.75) == ["stable"]
    robust = modelling.robustness_table(table).set_index("feature")
    assert robust.loc["stable", "n_perturbations"] == 4 and robust.loc["noisy", "icc"] == icc["noisy"]


def test_constant_feature_has_no_icc_and_missing_columns_are_named():
    icc = modelling.icc_by_feature(_long(np.ones((5, 3)), "flat"))
    assert np.isnan(icc["flat"])
    with pytest.raises(ValueError, match="perturbation"):
        modelling.icc_by_feature(pd.DataFrame({"patient_id": ["a"], "feature": ["f"], "value": [1.0]}))


def _perturbed_cohort(n: int = 40):
    """Three informative features: f0 robust, f1 and f2 fall apart under perturbation; f3..f9 robust noise."""
    rng = np.random.default_rng(3)
    ids = [f"P{i:03d}" for i in range(n)]
    y = pd.Series(np.arange(n) % 2, index=ids)
    X = pd.DataFrame(rng.standard_normal((n, 10)), index=ids, columns=[f"f{j}" for j in range(10)])
    X[["f0", "f1", "f2"]] += 1.5 * y.to_numpy()[:, None]
    rows = []
    for name in X.columns:
        spread = 3.0 if name in ("f1", "f2") else 0.05
        values = X[name].to_numpy()[:, None] + spread * rng.standard_normal((n, 3))
        values[:, 0] = X[name].to_numpy()
        rows.append(_long(values, name).assign(patient_id=lambda t, ids=ids: [ids[int(p[1:])] for p in t.patient_id]))
    return X, y, pd.concat(rows)


def test_robustness_filter_inside_the_procedure_uses_training_patients_only():
    X, y, perturbations = _perturbed_cohort()
    settings = modelling.ModellingSettings(
        models=("logreg",), inner_folds=2, folds=3, repeats=1, permutations=0, robustness_icc_threshold=0.75
    )
    train = X.index[:30]
    search = modelling.CandidateSearch(settings, perturbations).fit(X.loc[train], y.loc[train])
    expected = modelling.robust_features(perturbations, X.columns, 0.75, patient_ids=train)
    assert list(X.columns[search.robust_mask_]) == expected and "f1" not in expected and "f0" in expected
    chosen = modelling.selected_columns(search.best_estimator_, list(X.columns))
    assert chosen and not {"f1", "f2"} & set(chosen) and "f0" in chosen
    with pytest.raises(ValueError, match="feature_robustness"):
        modelling.CandidateSearch(settings, None).fit(X, y)


def test_missing_perturbation_table_names_the_asset(tmp_path):
    from radiomics_assets.paths import DataRoot
    from radiomics_assets.warehouse import Warehouse, write_derived_table

    X, y, _ = _perturbed_cohort()
    root = DataRoot(tmp_path)
    warehouse = Warehouse(root.warehouse)
    write_derived_table(
        warehouse, "feature_matrix", X.assign(label=y.astype(float)).rename_axis("patient_id").reset_index()
    )
    labels = pd.DataFrame(
        {"patient_id": X.index, "label": y.to_numpy(), "label_name": y.astype(str), "cohort": "train"}
    )
    modelling.store_labels(warehouse, labels)
    settings = modelling.ModellingSettings(models=("logreg",), permutations=0, robustness_icc_threshold=0.5)
    with pytest.raises(ValueError, match="asset feature_robustness"):
        modelling.train_model(root, settings)


def test_report_shows_feature_robustness_from_the_warehouse(tmp_path):
    from radiomics_assets.modelling.report import _robustness_html
    from radiomics_assets.modelling.training import robustness_report
    from radiomics_assets.warehouse import Warehouse, write_derived_table

    warehouse = Warehouse(tmp_path / "radiomics.duckdb")
    assert robustness_report(warehouse) is None
    _, _, perturbations = _perturbed_cohort(n=12)
    write_derived_table(warehouse, "feature_perturbations", perturbations)
    table = robustness_report(warehouse).set_index("feature")  # computed from the perturbations
    assert table.loc["f1", "icc"] < 0.5 < table.loc["f0", "icc"] and table.loc["f0", "n_perturbations"] == 3
    write_derived_table(warehouse, "feature_robustness", table.reset_index())  # the asset's table wins
    rows = robustness_report(warehouse).to_dict(orient="records")
    html_text = _robustness_html(rows, 0.75)
    assert "<code>f1</code>" in html_text and "ICC(1,1)" in html_text and "dropped inside every outer" in html_text
