"""The cohort assets: labels, feature matrix, model, selected features, validation report and predictions.

``radiomics_assets.modelling`` loads scikit-learn, SciPy and matplotlib (~3 s) only when one of these runs:
patient runs and sensor ticks load this code location too and never need them.
"""

import dagster as dg

from radiomics_assets import modelling
from radiomics_assets.defs.checks import PRIMARY_METRIC_NOT_REGRESSED, primary_metric_not_regressed
from radiomics_assets.defs.display import metadata_value
from radiomics_assets.defs.resources import DUCKDB_WRITES, RadiomicsConfig
from radiomics_assets.modelling import registry


@dg.asset(group_name="modelling", kinds={"csv", "duckdb"}, pool=DUCKDB_WRITES)
def labels(radiomics: RadiomicsConfig) -> dg.MaterializeResult:
    """Outcome and covariates per patient from ``labels.csv``, typed by ``study.yaml``; rows in ``labels``."""
    study = radiomics.study()
    outcomes = modelling.load_outcomes(radiomics.data_root(), study, radiomics.group_column)
    table = outcomes.table
    modelling.store_labels(radiomics.warehouse(), table)
    with_outcome = table[table.label.notna()]
    metadata = {
        "outcome": study.task.value,
        "study": study.source,
        "patients": len(table),
        "patients_with_outcome": len(with_outcome),
        "excluded_no_outcome": len(outcomes.excluded),
        "covariates": ", ".join(study.covariates.columns) or "none",
        "predictors": study.predictors.value,
        "test_patients": int((with_outcome.cohort == "test").sum()),
        "patients_in_a_labels_csv_group": int((table.group != "").sum()),
        "notes": "; ".join(outcomes.notes) or "none",  # e.g. duplicate rows merged (issue 24)
        "batch": study.batch.describe(),  # issue 27: the scanner / site of each patient
        "harmonise": study.harmonise.value,
        "validation": study.validation.value,
    }
    if "batch" in table:
        metadata["patients_per_batch"] = ", ".join(f"{k}: {n}" for k, n in table.batch.value_counts().items())
    if study.task.value in ("binary", "multiclass"):
        counts = with_outcome.label_name.value_counts().sort_index()
        metadata["per_class"] = ", ".join(f"{name}: {n}" for name, n in counts.items())
    if study.task.value == "binary":
        metadata["positives"] = int(with_outcome.label.sum())
        metadata["positive_class"] = outcomes.classes[1]
    if study.task.value == "survival":
        metadata["events"] = int(with_outcome.event.sum())
        metadata["censored"] = int((with_outcome.event == 0).sum())
    return dg.MaterializeResult(metadata=metadata)


@dg.asset(
    group_name="modelling",
    kinds={"pandas", "duckdb"},
    deps=["features", "imported_features", labels],
    pool=DUCKDB_WRITES,
)
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
        # baseline and follow-up studies: how many patients had several, and which the timepoint rule used
        "patients_with_several_timepoints": int(
            radiomics.warehouse().query("SELECT count(DISTINCT patient_id) AS n FROM timepoints").n.iloc[0]
        ),
        "missing_blocks": dg.MetadataValue.md(
            gap_table.to_markdown(index=False) if len(gaps) else "every patient has every modality/ROI block"
        ),
    }
    return dg.MaterializeResult(metadata=metadata)


@dg.asset(
    group_name="modelling", kinds={"scikitlearn"}, deps=[feature_matrix], check_specs=[PRIMARY_METRIC_NOT_REGRESSED]
)
def model(radiomics: RadiomicsConfig) -> dg.MaterializeResult:
    """The whole procedure (inner-CV choice among candidates) validated by outer CV and a permutation test, then
    fitted on all training patients (+ model card)."""
    root = radiomics.data_root()
    path, card = modelling.train_model(root, radiomics.modelling_settings(), radiomics.study())
    # Keeps every model under models/<version>/; the top-level files stay the promoted (current) model's.
    card_json = card.as_json()
    decision = registry.register(root.models, card_json, radiomics.auc_regression_margin, radiomics.on_auc_regression)
    card_metadata = {key: metadata_value(value) for key, value in card_json.items()}
    metadata = {
        "path": dg.MetadataValue.path(str(path.parent / decision.version / path.name)),
        **card_metadata,
        f"cv_{decision.metric}": round(float(decision.cv_value), 3),
        "model_version": decision.version,
        "promoted": decision.promoted,
    }
    return dg.MaterializeResult(check_results=[primary_metric_not_regressed(decision)], metadata=metadata)


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
    shown = [c for c in table.columns if c not in ("model", "model_id", "model_trained_at", "predicted_at", "task")]
    preview = table.head(20)[shown]
    metadata = {
        "patients": len(table),
        "task": str(table.task.iloc[0]) if len(table) else "",
        "preview": dg.MetadataValue.md(preview.to_markdown(index=False, floatfmt=".3f")),
    }
    if "predicted_label" in table:
        metadata["predicted_positive"] = int(table.predicted_label.sum())
        metadata["threshold"] = modelling.THRESHOLD
    return dg.MaterializeResult(metadata=metadata)


def _rounded(value) -> float:
    return round(float(value), 3) if value is not None else float("nan")


@dg.asset(group_name="modelling", kinds={"html"}, deps=[model, selected_features])
def validation_report(radiomics: RadiomicsConfig) -> dg.MaterializeResult:
    """Outer-CV metrics of the whole procedure, permutation test, decision curve, calibration, duplicate groups:
    ``reports/metrics.json`` and ``reports/report.html``."""
    report = modelling.build_validation_report(radiomics.data_root(), radiomics.seed)
    primary, performance = report.primary, report.performance
    metadata = {
        "task": report.task,
        "primary_metric": primary.name,
        # Rounded to what a cohort of this size can tell apart (the CI is wider than 0.001).
        primary.name: _rounded(primary.value),
        f"{primary.name}_ci": f"{primary.ci_low:.3f} to {primary.ci_high:.3f}",
        **{k: _rounded(v) for k, v in modelling.task_for(radiomics.study()).headline(performance).items()},
        **report.cohort,
        "cv_scheme": report.cv_scheme,
        "n_features_selected": report.n_features_selected,
        "model": report.model,
        "duplicate_groups": len(report.groups.groups),
        "excluded_conflicting_labels": len(report.groups.excluded),
        "excluded_no_outcome": report.excluded_no_outcome,
    }
    if report.task == "binary":
        for key in ("threshold", "brier", "auc_fold_sd", "calibration_slope", "calibration_intercept"):
            metadata[key] = performance[key] if key == "threshold" else _rounded(performance[key])
    if report.comparison is not None:
        gain = report.comparison.gain
        metadata["radiomics_gain_over_clinical"] = (
            f"{gain['value']:+.3f} (95% CI {gain['ci_low']:+.3f} to {gain['ci_high']:+.3f})"
        )
        for key in ("clinical", "radiomics", "both"):
            metadata[f"{primary.name}_{key}"] = _rounded(getattr(report.comparison, key)["value"])
    if report.permutation_p_value is not None:
        metadata["permutation_p_value"] = _rounded(report.permutation_p_value)
    if report.external is not None:
        external = report.external["primary_metric"]
        metadata[f"external_{external['name']}"] = _rounded(external["value"])
        metadata[f"external_{external['name']}_ci"] = f"{external['ci_low']:.3f} to {external['ci_high']:.3f}"
        metadata["external_n_patients"] = report.external["n_patients"]
    metadata["report"] = dg.MetadataValue.path(str(report.files.report_path))
    if report.files.pdf_path is not None:
        metadata["report_pdf"] = dg.MetadataValue.path(str(report.files.pdf_path))
    else:
        metadata["report_pdf"] = report.files.pdf_note
    if report.files.plot_png:  # binary: the ROC; survival: Kaplan-Meier of the risk groups; ...
        key, title = ("roc", "ROC") if report.task == "binary" else ("plot", primary.name)
        metadata[key] = dg.MetadataValue.md(f"![{title}](data:image/png;base64,{report.files.plot_png})")
    return dg.MaterializeResult(metadata=metadata)


COHORT_ASSETS = [labels, feature_matrix, model, selected_features, validation_report, predictions]


# --- feature robustness (issue 14): appended, so that it merges apart from the assets above ---------------


@dg.asset(group_name="modelling", kinds={"pyradiomics", "duckdb"}, deps=["features"])
def feature_robustness(radiomics: RadiomicsConfig) -> dg.MaterializeResult:
    """Features re-extracted under mask and noise perturbations (table ``feature_perturbations``) and their ICC
    over all patients (table ``feature_robustness``: feature, icc, n_perturbations). Off while
    ``robustness_perturbations`` is 0. Reporting only: the model's filter recomputes ICC inside each CV fold.
    The work is ``batch.robustness_run.run_feature_robustness``.

    No ``duckdb_writes`` pool: the perturbations take minutes and would hold it; its two writes go through the
    file-locked warehouse like every other."""
    if radiomics.robustness_perturbations <= 0:
        return dg.MaterializeResult(metadata={"status": "off (robustness_perturbations = 0): nothing written"})
    from radiomics_assets.batch.robustness_run import run_feature_robustness

    run = run_feature_robustness(
        radiomics.warehouse(),
        radiomics.params(),
        repetitions=radiomics.robustness_perturbations,
        seed=radiomics.seed,
        workers=radiomics.workers,
    )
    metadata = {
        "status": "on",
        "patients": run.patients,
        "failed_patients": run.failed_patients,
        "features": run.features,
        "features_without_icc": run.features_without_icc,
        "perturbations_per_roi": run.perturbations_per_roi,
        **{f"features_icc_at_least_{level}": count for level, count in run.features_icc_at_least.items()},
        "icc_quartiles": ", ".join(f"{q:.3f}" for q in run.icc_quartiles),
        "seconds_per_patient": run.seconds_per_patient,
        "least_robust": dg.MetadataValue.md(run.least_robust.to_markdown(index=False, floatfmt=".3f")),
    }
    if len(run.failures):
        metadata["failures"] = dg.MetadataValue.md(run.failures.head(20).to_markdown(index=False))
    return dg.MaterializeResult(metadata=metadata)


COHORT_ASSETS.append(feature_robustness)
