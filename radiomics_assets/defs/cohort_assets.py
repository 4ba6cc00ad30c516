"""The cohort assets: labels, feature matrix, model, selected features, validation report and predictions.

``radiomics_assets.modelling`` loads scikit-learn, SciPy and matplotlib (~3 s) only when one of these runs:
patient runs and sensor ticks load this code location too and never need them.
"""

import dagster as dg

from radiomics_assets import modelling
from radiomics_assets.defs.checks import AUC_NOT_REGRESSED, auc_not_regressed
from radiomics_assets.defs.resources import DUCKDB_WRITES, RadiomicsConfig
from radiomics_assets.modelling import registry


@dg.asset(group_name="modelling", kinds={"csv", "duckdb"}, pool=DUCKDB_WRITES)
def labels(radiomics: RadiomicsConfig) -> dg.MaterializeResult:
    """Clinical outcome per patient from ``labels.csv``; rows in ``labels``."""
    table = modelling.load_labels(radiomics.data_root(), radiomics.label_column, radiomics.group_column)
    modelling.store_labels(radiomics.warehouse(), table)
    metadata = {
        "patients": len(table),
        "positives": int(table.label.sum()),
        "test_patients": int((table.cohort == "test").sum()),
        "patients_in_a_labels_csv_group": int((table.group != "").sum()),
    }
    return dg.MaterializeResult(metadata=metadata)


@dg.asset(group_name="modelling", kinds={"pandas", "duckdb"}, deps=["features", labels], pool=DUCKDB_WRITES)
def feature_matrix(radiomics: RadiomicsConfig) -> dg.MaterializeResult:
    """Patients x features (wide), joined with labels; table ``feature_matrix``."""
    matrix, gaps = modelling.build_feature_matrix(radiomics.warehouse())
    gap_counts = gaps.groupby(["block", "handling"]).patient_id.agg(["count", lambda k: ", ".join(k[:20])])
    gap_table = gap_counts.set_axis(["patients", "patient keys (first 20)"], axis=1).reset_index()
    values = matrix.drop(columns="label")
    metadata = {
        "patients": len(matrix),
        "labelled": int(matrix.label.notna().sum()),
        "features": matrix.shape[1] - 1,
        "missing_values_imputed": int(values.isna().sum().sum()),
        "patients_with_missing_values": int(values.isna().any(axis=1).sum()),
        "patients_missing_a_block": int(gaps.patient_id.nunique()),
        "missing_blocks": dg.MetadataValue.md(
            gap_table.to_markdown(index=False) if len(gaps) else "every patient has every modality/ROI block"
        ),
    }
    return dg.MaterializeResult(metadata=metadata)


@dg.asset(group_name="modelling", kinds={"scikitlearn"}, deps=[feature_matrix], check_specs=[AUC_NOT_REGRESSED])
def model(radiomics: RadiomicsConfig) -> dg.MaterializeResult:
    """The whole procedure (inner-CV choice among candidates) validated by outer CV and a permutation test, then
    fitted on all training patients (+ model card)."""
    root = radiomics.data_root()
    path, card = modelling.train_model(root, radiomics.modelling_settings())
    # Keeps every model under models/<version>/; the top-level files stay the promoted (current) model's.
    decision = registry.register(root.models, card, radiomics.auc_regression_margin, radiomics.on_auc_regression)
    card_metadata = {k: dg.MetadataValue.json(v) if isinstance(v, dict | list) else v for k, v in card.items()}
    metadata = {
        "path": dg.MetadataValue.path(str(path.parent / decision.version / path.name)),
        **card_metadata,
        "cv_auc": round(float(decision.cv_auc), 3),
        "model_version": decision.version,
        "promoted": decision.promoted,
    }
    return dg.MaterializeResult(check_results=[auc_not_regressed(decision)], metadata=metadata)


@dg.asset(group_name="modelling", kinds={"scikitlearn", "duckdb"}, deps=[model], pool=DUCKDB_WRITES)
def selected_features(radiomics: RadiomicsConfig) -> dg.MaterializeResult:
    """Final model's features with selection scores and outer-fold selection frequency; table ``selected_features``."""
    ranked = modelling.feature_selection_table(radiomics.warehouse(), radiomics.data_root())
    top = ranked[ranked.selected][["feature", "selection_score", "selection_frequency", "p_value", "auc"]]
    metadata = {
        "selected": int(ranked.selected.sum()),
        "selection_method": str(ranked.selection_method.iloc[0]) if len(ranked) else "",
        "selected_features": dg.MetadataValue.md(top.to_markdown(index=False, floatfmt=".3g")),
    }
    return dg.MaterializeResult(metadata=metadata)


@dg.asset(group_name="modelling", kinds={"duckdb"}, deps=[model, feature_matrix], pool=DUCKDB_WRITES)
def predictions(radiomics: RadiomicsConfig) -> dg.MaterializeResult:
    """Saved model's scores for patients with features but no label; table ``predictions``."""
    table = modelling.predict_unlabelled(radiomics.data_root())
    preview = table.head(20)[["patient_id", "probability", "predicted_label"]]
    metadata = {
        "patients": len(table),
        "predicted_positive": int(table.predicted_label.sum()),
        "threshold": modelling.THRESHOLD,
        "preview": dg.MetadataValue.md(preview.to_markdown(index=False, floatfmt=".3f")),
    }
    return dg.MaterializeResult(metadata=metadata)


HEADLINE = ("auc", "auc_ci_low", "auc_ci_high", "accuracy", "precision", "recall", "f1")


@dg.asset(group_name="modelling", kinds={"html"}, deps=[model, selected_features])
def validation_report(radiomics: RadiomicsConfig) -> dg.MaterializeResult:
    """Outer-CV metrics of the whole procedure, permutation test, decision curve, calibration, duplicate groups:
    ``reports/metrics.json`` and ``reports/report.html``."""
    result = modelling.validate(radiomics.data_root(), radiomics.seed)
    metadata = {
        # Rounded to what a cohort of this size can tell apart (the CI is wider than 0.001).
        **{k: round(float(result[k]), 3) for k in HEADLINE},
        "n_patients": result["n_patients"],
        "n_positive": result["n_positive"],
        "n_negative": result["n_negative"],
        "threshold": result["threshold"],
        "cv_scheme": result["cv_scheme"],
        "n_features_selected": result["n_features_selected"],
        "model": result["model"],
        "brier": round(float(result["brier"]), 3),
        "auc_fold_sd": round(float(result["auc_fold_sd"]), 3),
        "calibration_slope": round(float(result["calibration_slope"]), 3),
        "calibration_intercept": round(float(result["calibration_intercept"]), 3),
        "duplicate_groups": len(result["groups"]["groups"]),
        "excluded_conflicting_labels": len(result["groups"]["excluded"]),
    }
    if result["permutation_p_value"] is not None:
        metadata["permutation_p_value"] = round(float(result["permutation_p_value"]), 3)
    if "external" in result:
        external = result["external"]
        metadata["external_auc"] = round(float(external["auc"]), 3)
        metadata["external_auc_ci"] = f"{external['auc_ci_low']:.3f} to {external['auc_ci_high']:.3f}"
        metadata["external_n_patients"] = external["n_patients"]
    metadata["report"] = dg.MetadataValue.path(str(result["report_path"]))
    metadata["roc"] = dg.MetadataValue.md(f"![ROC](data:image/png;base64,{result['roc_png']})")
    return dg.MaterializeResult(metadata=metadata)


COHORT_ASSETS = [labels, feature_matrix, model, selected_features, validation_report, predictions]


# --- feature robustness (issue 14): appended, so that it merges apart from the assets above ---------------

ICC_LEVELS = (0.75, 0.9)
"""Reported in ``feature_robustness``'s metadata: how many features reach each ICC (Koo & Li: good, excellent)."""


@dg.asset(group_name="modelling", kinds={"pyradiomics", "duckdb"}, deps=["features"])
def feature_robustness(radiomics: RadiomicsConfig) -> dg.MaterializeResult:
    """Features re-extracted under mask and noise perturbations (table ``feature_perturbations``) and their ICC
    over all patients (table ``feature_robustness``: feature, icc, n_perturbations). Off while
    ``robustness_perturbations`` is 0. Reporting only: the model's filter recomputes ICC inside each CV fold.

    No ``duckdb_writes`` pool: the perturbations take minutes and would hold it; its two writes go through the
    file-locked warehouse like every other."""
    if radiomics.robustness_perturbations <= 0:
        return dg.MaterializeResult(metadata={"status": "off (robustness_perturbations = 0): nothing written"})
    import time

    from radiomics_assets.batch.workers import executor, resolve_workers
    from radiomics_assets.errors import InputError
    from radiomics_assets.features import robustness
    from radiomics_assets.modelling.robustness import robustness_table
    from radiomics_assets.warehouse import write_derived_table

    warehouse = radiomics.warehouse()
    settings = robustness.PerturbationSettings(repetitions=radiomics.robustness_perturbations, seed=radiomics.seed)
    series, masks = warehouse.query("SELECT * FROM series"), warehouse.query("SELECT * FROM masks")
    tasks = robustness.cohort_tasks(series, masks, radiomics.params())
    started = time.perf_counter()
    with executor(min(resolve_workers(radiomics.workers), max(len(tasks), 1))) as pool:
        rows, failures = robustness.perturb_cohort(tasks, settings, pool)
    seconds = time.perf_counter() - started
    if rows.empty:
        first = failures.error.iloc[0] if len(failures) else "no stored ROI masks"
        raise InputError(f"feature_robustness: no patient could be perturbed; {first}")
    table = robustness_table(rows)
    write_derived_table(warehouse, "feature_perturbations", rows)
    write_derived_table(warehouse, "feature_robustness", table)
    patients = rows.patient_id.nunique()
    metadata = {
        "status": "on",
        "patients": patients,
        "failed_patients": failures.patient_id.nunique(),
        "features": len(table),
        "features_without_icc": int(table.icc.isna().sum()),
        "perturbations_per_roi": len(settings.names()) - 1,
        **{f"features_icc_at_least_{level}": int((table.icc >= level).sum()) for level in ICC_LEVELS},
        "icc_quartiles": ", ".join(f"{q:.3f}" for q in table.icc.quantile([0.25, 0.5, 0.75])),
        "seconds_per_patient": round(seconds / (patients + failures.patient_id.nunique()), 2),
        "least_robust": dg.MetadataValue.md(table.sort_values("icc").head(10).to_markdown(index=False, floatfmt=".3f")),
    }
    if len(failures):
        metadata["failures"] = dg.MetadataValue.md(failures.head(20).to_markdown(index=False))
    return dg.MaterializeResult(metadata=metadata)


COHORT_ASSETS.append(feature_robustness)
