"""The Dagster code location: thin assets over the domain modules, a sensor, a schedule and two jobs."""


from pathlib import Path

import dagster as dg

from radiomics_assets import cohort, quality
from radiomics_assets.features import configured_params_dir, params_by_modality, params_version
from radiomics_assets.paths import DataRoot, default_data_dir
from radiomics_assets.patient_pipeline import build_masks, extract_features, inbox_patient_keys, ingest_studies, store
from radiomics_assets.warehouse import Warehouse

patients = dg.DynamicPartitionsDefinition(name="patients")


class RadiomicsConfig(dg.ConfigurableResource):
    """Where the data lives and how to process it. Defaults come from ``RADIOMICS_DATA_DIR``."""

    data_dir: str = ""
    roi_pattern: str = "GTV.*"
    params_dir: str = ""
    params_file: str = ""
    label_column: str = "label"
    min_roi_voxels: int = 64
    """Below this many voxels texture features are unreliable; the check warns."""
    seed: int = 0
    candidate_models: list[str] = ["logreg", "random_forest", "svm", "gradient_boosting"]
    """Compared by nested CV; the best CV AUC becomes the model."""
    selection_method: str = "anova"
    """anova | mannwhitney | mutual_info (filters, + correlation filter) | rfe | l1 | tree."""
    cv_folds: int = 5
    cv_repeats: int = 2
    file_modality: str = "CT"
    """Modality of NIfTI/NRRD image files without a ``<id>.json`` sidecar (PNG images are ``US``)."""
    resample_masks_to_image: bool = False
    """Resample a NIfTI/NRRD mask on another grid than its image (nearest neighbour) instead of failing."""

    def root(self) -> DataRoot:
        return DataRoot(Path(self.data_dir).resolve() if self.data_dir else default_data_dir())

    def params(self) -> dict[str, Path]:
        """Parameter file per modality: ``params_file`` for all if set, else ``<params_dir>/{ct,mr,pt}.yaml``."""
        return params_by_modality(
            Path(self.params_dir) if self.params_dir else configured_params_dir(),
            Path(self.params_file) if self.params_file else None,
        )

    def warehouse(self) -> Warehouse:
        return Warehouse(self.root().warehouse)


def _patient_rows(radiomics: RadiomicsConfig, table: str, key: str):
    return radiomics.warehouse().query(f"SELECT * FROM {table} WHERE patient_id = ?", [key])


@dg.asset(partitions_def=patients, group_name="ingest", kinds={"dicom", "duckdb"})
def studies(context: dg.AssetExecutionContext, radiomics: RadiomicsConfig) -> dg.MaterializeResult:
    """The patient's DICOM image series, validated and stored as canonical volumes; rows in ``series``."""
    series = ingest_studies(radiomics.root(), context.partition_key, radiomics.file_modality)
    store(radiomics.root(), context.partition_key, series=series)
    return dg.MaterializeResult(metadata={
        "series": len(series),
        "modalities": ", ".join(sorted(series.modality.unique())),
        "slices": int(series.n_slices.sum()),
    })  # fmt: skip


@dg.asset(partitions_def=patients, group_name="ingest", kinds={"dicom", "duckdb"}, deps=[studies])
def roi_masks(context: dg.AssetExecutionContext, radiomics: RadiomicsConfig) -> dg.MaterializeResult:
    """Voxel masks of the matching RTSTRUCT ROIs on their image grids; rows in ``masks``."""
    series = _patient_rows(radiomics, "series", context.partition_key)
    if radiomics.resample_masks_to_image:
        context.log.warning("resample_masks_to_image is on: file masks on another grid are resampled (nearest)")
    masks = build_masks(
        radiomics.root(), context.partition_key, series, radiomics.roi_pattern, radiomics.resample_masks_to_image
    )
    store(radiomics.root(), context.partition_key, masks=masks)
    return dg.MaterializeResult(metadata={
        "rois": len(masks),
        "roi_names": ", ".join(sorted(masks.roi.unique())),
        "voxels": int(masks.voxel_count.sum()),
        "volume_ml": float(masks.volume_ml.sum()),
    })  # fmt: skip


FEATURE_CHECKS = [
    dg.AssetCheckSpec("all_values_finite", asset="features", description="No NaN or infinite feature value"),
    dg.AssetCheckSpec(
        "feature_count_matches_parameter_set", asset="features",
        description="Each (series, ROI) has as many features as other patients extracted with the same parameters",
    ),
    dg.AssetCheckSpec(
        "roi_large_enough", asset="features",
        description="Every ROI has at least `min_roi_voxels` voxels, enough for texture features",
    ),
]  # fmt: skip


def _usual_feature_counts(radiomics: RadiomicsConfig, key: str) -> dict[str, int]:
    counts = radiomics.warehouse().query(
        "SELECT params_hash, mode(n) AS n FROM (SELECT params_hash, count(*) AS n FROM features "
        "WHERE patient_id <> ? GROUP BY patient_id, series_uid, roi, params_hash) GROUP BY params_hash",
        [key],
    )
    return dict(zip(counts.params_hash, counts.n.astype(int), strict=True))


def _check(name: str, problems: list[str], severity=dg.AssetCheckSeverity.ERROR) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        check_name=name, passed=not problems, severity=severity,
        metadata={"problems": len(problems), "details": dg.MetadataValue.json(problems[:50])},
    )  # fmt: skip


@dg.asset(
    partitions_def=patients, group_name="features", kinds={"python", "duckdb"}, deps=[roi_masks],
    check_specs=FEATURE_CHECKS,
    # Editing a parameter file changes the code version, so the UI marks every partition stale.
    code_version=params_version(RadiomicsConfig().params()),
)  # fmt: skip
def features(context: dg.AssetExecutionContext, radiomics: RadiomicsConfig) -> dg.MaterializeResult:
    """PyRadiomics features per (series, ROI) in the long ``features`` table; a re-run replaces the rows."""
    key = context.partition_key
    series = _patient_rows(radiomics, "series", key)
    masks = _patient_rows(radiomics, "masks", key)
    rows, diagnostics = extract_features(key, series, masks, radiomics.params())
    usual = _usual_feature_counts(radiomics, key)
    store(radiomics.root(), key, features=rows, diagnostics=diagnostics)
    preview = rows.head(8)[["modality", "roi", "image_type", "feature_class", "feature", "value"]]
    checks = [
        _check("all_values_finite", quality.non_finite_features(rows)),
        _check("feature_count_matches_parameter_set", quality.feature_count_mismatches(rows, usual)),
        _check("roi_large_enough", quality.small_rois(masks, radiomics.min_roi_voxels), dg.AssetCheckSeverity.WARN),
    ]
    return dg.MaterializeResult(check_results=checks, metadata={
        "features": len(rows),
        "series": int(rows.series_uid.nunique()),
        "rois": int(rows.roi.nunique()),
        "params_hash": ", ".join(sorted(rows.params_hash.unique())),
        "preview": dg.MetadataValue.md(preview.to_markdown(index=False)),
    })  # fmt: skip


@dg.asset(group_name="modelling", kinds={"csv", "duckdb"})
def labels(radiomics: RadiomicsConfig) -> dg.MaterializeResult:
    """Clinical outcome per patient from ``labels.csv``; rows in ``labels``."""
    table = cohort.load_labels(radiomics.root(), radiomics.label_column)
    cohort.store_labels(radiomics.warehouse(), table)
    return dg.MaterializeResult(metadata={"patients": len(table), "positives": int(table.label.sum()),
                                          "test_patients": int((table.cohort == "test").sum())})  # fmt: skip


@dg.asset(group_name="modelling", kinds={"pandas", "duckdb"}, deps=[features, labels])
def feature_matrix(radiomics: RadiomicsConfig) -> dg.MaterializeResult:
    """Patients x features (wide), joined with labels; table ``feature_matrix``."""
    matrix = cohort.build_feature_matrix(radiomics.warehouse())
    return dg.MaterializeResult(metadata={
        "patients": len(matrix),
        "labelled": int(matrix.label.notna().sum()),
        "features": matrix.shape[1] - 1,
        "missing_values_imputed": int(matrix.drop(columns="label").isna().sum().sum()),
        "patients_with_missing_values": int(matrix.drop(columns="label").isna().any(axis=1).sum()),
    })  # fmt: skip


@dg.asset(group_name="modelling", kinds={"scikitlearn"}, deps=[feature_matrix])
def model(radiomics: RadiomicsConfig) -> dg.MaterializeResult:
    """Candidate pipelines compared by nested CV; the best is refitted on the training patients (+ model card)."""
    path, card = cohort.train_model(radiomics.root(), radiomics.seed, radiomics.candidate_models,
                                    radiomics.selection_method, radiomics.cv_folds, radiomics.cv_repeats)  # fmt: skip
    return dg.MaterializeResult(metadata={"path": dg.MetadataValue.path(str(path)), **{
        k: dg.MetadataValue.json(v) if isinstance(v, dict | list) else v for k, v in card.items()}})  # fmt: skip


@dg.asset(group_name="modelling", kinds={"scikitlearn", "duckdb"}, deps=[model])
def selected_features(radiomics: RadiomicsConfig) -> dg.MaterializeResult:
    """Final model's features with selection scores and outer-fold selection frequency; table ``selected_features``."""
    ranked = cohort.select_features(radiomics.warehouse(), radiomics.root())
    top = ranked[ranked.selected][["feature", "selection_score", "selection_frequency", "p_value", "auc"]]
    return dg.MaterializeResult(metadata={
        "selected": int(ranked.selected.sum()),
        "selection_method": str(ranked.selection_method.iloc[0]) if len(ranked) else "",
        "selected_features": dg.MetadataValue.md(top.to_markdown(index=False)),
    })  # fmt: skip


@dg.asset(group_name="modelling", kinds={"duckdb"}, deps=[model, feature_matrix])
def predictions(radiomics: RadiomicsConfig) -> dg.MaterializeResult:
    """Saved model's scores for patients with features but no label; table ``predictions``."""
    table = cohort.predict(radiomics.root())
    positive = int(table.predicted_label.sum())
    return dg.MaterializeResult(metadata={"patients": len(table), "predicted_positive": positive})


@dg.asset(group_name="modelling", kinds={"html"}, deps=[model, selected_features])
def validation_report(radiomics: RadiomicsConfig) -> dg.MaterializeResult:
    """Nested cross-validated metrics: ``reports/metrics.json`` and ``reports/report.html``."""
    result = cohort.validate(radiomics.root(), radiomics.seed)
    return dg.MaterializeResult(metadata={
        **{k: float(result[k]) for k in ("auc", "auc_ci_low", "auc_ci_high", "accuracy", "precision", "recall", "f1")},
        "n_patients": result["n_patients"],
        "model": result["model"],
        "brier": float(result["brier"]),
        **({"external_auc": float(result["external"]["auc"])} if "external" in result else {}),
        "report": dg.MetadataValue.path(str(result["report_path"])),
        "roc": dg.MetadataValue.md(f"![ROC](data:image/png;base64,{result['roc_png']})"),
    })  # fmt: skip


PATIENT_ASSETS = [studies, roi_masks, features]
COHORT_ASSETS = [labels, feature_matrix, model, selected_features, validation_report, predictions]

ingest_patient_job = dg.define_asset_job("ingest_patient", selection=dg.AssetSelection.assets(*PATIENT_ASSETS))
retrain_cohort_job = dg.define_asset_job("retrain_cohort", selection=dg.AssetSelection.assets(*COHORT_ASSETS))


@dg.sensor(job=ingest_patient_job, minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING)
def inbox_sensor(context: dg.SensorEvaluationContext, radiomics: RadiomicsConfig) -> dg.SensorResult:
    """Registers each patient found in the inbox as a partition once, and requests its ingest run."""
    found = inbox_patient_keys(radiomics.root().inbox)
    known = set(context.instance.get_dynamic_partitions(patients.name))
    new = sorted(found - known)
    if not new:
        return dg.SensorResult(skip_reason=f"no new patients ({len(found)} in the inbox, all registered)")
    return dg.SensorResult(
        dynamic_partitions_requests=[patients.build_add_request(new)],
        run_requests=[dg.RunRequest(partition_key=key, run_key=f"ingest-{key}") for key in new],
    )


weekly_retrain = dg.ScheduleDefinition(
    name="weekly_retrain",
    job=retrain_cohort_job,
    cron_schedule="0 3 * * 1",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)

defs = dg.Definitions(
    assets=PATIENT_ASSETS + COHORT_ASSETS,
    jobs=[ingest_patient_job, retrain_cohort_job],
    sensors=[inbox_sensor],
    schedules=[weekly_retrain],
    resources={"radiomics": RadiomicsConfig()},
)
