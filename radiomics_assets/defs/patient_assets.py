"""The Dagster code location: thin assets over the domain modules, a sensor, a schedule and two jobs."""

import json
import os
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg

from radiomics_assets import failure_log, model_registry, quality
from radiomics_assets.autoseg import AutoSegmentation
from radiomics_assets.batch import PatientOutcome, PatientSettings, run_patients, workers_from_env
from radiomics_assets.features import configured_params_dir, params_by_modality, params_version
from radiomics_assets.inbox_index import InboxIndex, plan_registrations, write_manifest
from radiomics_assets.paths import DataRoot, default_data_dir
from radiomics_assets.patient_pipeline import MaskOptions
from radiomics_assets.warehouse import Warehouse

patients = dg.DynamicPartitionsDefinition(name="patients")


def _cohort():
    """The cohort module, imported on first use: it pulls in scikit-learn, SciPy and matplotlib (~3 s) that
    patient runs and sensor ticks, which load this code location too, never need."""
    from radiomics_assets import cohort

    return cohort

OWNERS = ["team:radiomics"]
DUCKDB_WRITES = "duckdb_writes"
"""Concurrency pool of the assets that write DuckDB; its limit is set in dagster_instance.yaml."""


class RadiomicsConfig(dg.ConfigurableResource):
    """Where the data lives and how to process it. Defaults come from ``RADIOMICS_DATA_DIR``."""

    data_dir: str = ""
    roi_pattern: str = "GTV.*"
    params_dir: str = ""
    params_file: str = os.environ.get("RADIOMICS_PARAMS_FILE", "")
    """One PyRadiomics parameter file for every modality, instead of ``params_dir``'s per-modality files."""
    label_column: str = "label"
    min_roi_voxels: int = 64
    """Below this many voxels texture features are unreliable; the check warns."""
    seed: int = 0
    workers: int = workers_from_env()
    """Worker processes for a run's patients (0 = one per usable core); each pins SimpleITK to its share."""
    candidate_models: list[str] = ["logreg", "random_forest", "svm", "gradient_boosting"]
    """Compared by nested CV; the best CV AUC becomes the model."""
    selection_method: str = "anova"
    """anova | mannwhitney | mutual_info (filters, + correlation filter) | rfe | l1 | tree."""
    cv_folds: int = 5
    cv_repeats: int = 2
    standardise: bool = True
    """Z-score each feature inside the Pipeline (fitted on the training folds); off suits tree models only."""
    file_modality: str = "CT"
    """Modality of NIfTI/NRRD image files without a ``<id>.json`` sidecar (PNG images are ``US``)."""
    resample_masks_to_image: bool = False
    """Resample a NIfTI/NRRD mask on another grid than its image (nearest neighbour) instead of failing."""
    inbox_settle_seconds: int = round(float(os.environ.get("RADIOMICS_INBOX_SETTLE_SECONDS", "30")))
    """The inbox sensor registers a patient only when none of its files changed for this long (copy finished);
    default from ``RADIOMICS_INBOX_SETTLE_SECONDS``."""
    auto_segmentation: str = ""
    """Segment series that have no RTSTRUCT/SEG: threshold | otsu | connected_threshold | confidence_connected.
    Empty = off (such a patient fails). Seeded methods read ``<data root>/seeds.csv`` (patient_id,x,y,z[,modality])."""
    auto_threshold_lower: float = -100.0
    """Lower bound (image units, e.g. HU) of ``threshold`` and ``connected_threshold``."""
    auto_threshold_upper: float = 300.0
    """Upper bound (image units, e.g. HU) of ``threshold`` and ``connected_threshold``."""
    auto_confidence_multiplier: float = 2.5
    """``confidence_connected`` grows within region mean +/- this many standard deviations."""
    auto_roi_name: str = "auto"
    """ROI name of automated masks (name it like your contoured ROIs to pool them in one feature column)."""
    auc_regression_margin: float = float(os.environ.get("RADIOMICS_AUC_REGRESSION_MARGIN", "0.05"))
    """``auc_not_regressed`` fails when a new model's CV AUC is more than this below the current model's."""
    on_auc_regression: str = os.environ.get("RADIOMICS_ON_AUC_REGRESSION", "warn")
    """warn: promote the regressed model anyway (the check warns); block: keep it as a candidate, current stays."""
    failure_notify_command: str = os.environ.get("RADIOMICS_FAILURE_NOTIFY_COMMAND", "")
    """Run for each failed run with its JSON line on stdin, e.g. ``mail -s ...`` or ``curl ... --data-binary @-``."""

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

    def mask_options(self) -> MaskOptions:
        auto = AutoSegmentation(
            method=self.auto_segmentation.strip().lower(), lower=self.auto_threshold_lower,
            upper=self.auto_threshold_upper, confidence_multiplier=self.auto_confidence_multiplier,
            roi_name=self.auto_roi_name,
        )  # fmt: skip
        return MaskOptions(self.roi_pattern, self.resample_masks_to_image, auto)

    def patient_settings(self) -> PatientSettings:
        return PatientSettings(
            data_dir=self.root().root, params=self.params(), file_modality=self.file_modality,
            mask_options=self.mask_options(),
        )  # fmt: skip


MAX_PATIENTS_PER_RUN = 25
"""Patient partitions per run (backfills, the sensor's new patients): one run start-up for many patients."""
PARTITION_RANGE_START, PARTITION_RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"
"""Run tags that make one run cover a range of partitions."""

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

PATIENT_SPECS = [
    dg.AssetSpec(
        "studies", group_name="ingest", kinds={"dicom", "duckdb"}, owners=OWNERS, partitions_def=patients,
        skippable=True,
        description="The patient's image series (DICOM, NIfTI/NRRD, PNG), validated and stored as canonical "
                    "volumes under `volumes/`; rows in `series`.",
    ),
    dg.AssetSpec(
        "roi_masks", group_name="ingest", kinds={"dicom", "duckdb"}, owners=OWNERS, partitions_def=patients,
        skippable=True, deps=["studies"],
        description="Voxel masks of the matching ROIs (RTSTRUCT, DICOM-SEG, mask files, or automated "
                    "segmentation) on their image grids, under `masks/`; rows in `masks`.",
    ),
    dg.AssetSpec(
        "features", group_name="features", kinds={"python", "duckdb"}, owners=OWNERS, partitions_def=patients,
        skippable=True, deps=["roi_masks"],
        # Editing a parameter file changes the code version, so the UI marks every partition stale.
        code_version=params_version(RadiomicsConfig().params()),
        description="PyRadiomics features per (series, ROI) in the long `features` table (diagnostics in "
                    "`diagnostics`); a re-run replaces exactly that patient's rows.",
    ),
]  # fmt: skip


def _usual_feature_counts(radiomics: RadiomicsConfig, keys: list[str]) -> dict[str, int]:
    """Usual feature count per parameter set among the patients stored before this run (one query per run)."""
    counts = radiomics.warehouse().query(
        "SELECT params_hash, mode(n) AS n FROM (SELECT params_hash, count(*) AS n FROM features "
        "WHERE NOT list_contains(?, patient_id) GROUP BY patient_id, series_uid, roi, params_hash) "
        "GROUP BY params_hash",
        [keys],
    )
    return dict(zip(counts.params_hash, counts.n.astype(int), strict=True))


def _check(key: str, name: str, problems: list[str], severity=dg.AssetCheckSeverity.ERROR) -> dg.AssetCheckEvaluation:
    return dg.AssetCheckEvaluation(
        asset_key=dg.AssetKey("features"), check_name=name, partition=key, passed=not problems, severity=severity,
        metadata={"problems": len(problems), "details": dg.MetadataValue.json(problems[:50])},
    )  # fmt: skip


def _patient_events(outcome: PatientOutcome, radiomics: RadiomicsConfig, usual: dict[str, int]):
    """The UI's view of one patient: a materialisation (with metadata) per stage that succeeded, and checks."""
    key = outcome.key
    if "studies" in outcome.done_stages:
        series = outcome.series
        yield dg.AssetMaterialization("studies", partition=key, metadata={
            "series": len(series), "modalities": ", ".join(sorted(series.modality.unique())),
            "slices": int(series.n_slices.sum()),
        })  # fmt: skip
    if "roi_masks" in outcome.done_stages:
        masks = outcome.masks
        yield dg.AssetMaterialization("roi_masks", partition=key, metadata={
            "rois": len(masks), "roi_names": ", ".join(sorted(masks.roi.unique())),
            "sources": ", ".join(sorted(masks.source_kind.unique())),
            "voxels": int(masks.voxel_count.sum()), "volume_ml": float(masks.volume_ml.sum()),
        })  # fmt: skip
    if "features" in outcome.done_stages:
        rows = outcome.features
        preview = rows.head(8)[["modality", "roi", "image_type", "feature_class", "feature", "value"]]
        yield dg.AssetMaterialization("features", partition=key, metadata={
            "features": len(rows), "series": int(rows.series_uid.nunique()), "rois": int(rows.roi.nunique()),
            "params_hash": ", ".join(sorted(rows.params_hash.unique())),
            "preview": dg.MetadataValue.md(preview.to_markdown(index=False)),
        })  # fmt: skip
        yield _check(key, "all_values_finite", quality.non_finite_features(rows))
        yield _check(key, "feature_count_matches_parameter_set", quality.feature_count_mismatches(rows, usual))
        small = quality.small_rois(outcome.masks, radiomics.min_roi_voxels)
        yield _check(key, "roi_large_enough", small, dg.AssetCheckSeverity.WARN)


@dg.multi_asset(
    name="patient_batch", specs=PATIENT_SPECS, check_specs=FEATURE_CHECKS, can_subset=True,
    # A backfill puts up to 25 patients in one run (one process start-up, both cores busy) instead of one
    # run per patient; the step fails only the partitions of the patients that failed.
    backfill_policy=dg.BackfillPolicy.multi_run(max_partitions_per_run=MAX_PATIENTS_PER_RUN),
    pool=DUCKDB_WRITES,
)  # fmt: skip
def patient_batch(context: dg.AssetExecutionContext, radiomics: RadiomicsConfig):
    """Ingest, masks and features for every patient partition of the run, in parallel worker processes."""
    stages = {key.to_user_string() for key in context.selected_asset_keys}
    if "roi_masks" in stages and radiomics.resample_masks_to_image:
        context.log.warning("resample_masks_to_image is on: file masks on another grid are resampled (nearest)")
    failures = []
    usual = _usual_feature_counts(radiomics, context.partition_keys) if "features" in stages else {}
    for outcome in run_patients(context.partition_keys, stages, radiomics.patient_settings(), radiomics.workers):
        yield from _patient_events(outcome, radiomics, usual)
        if outcome.error:
            failures.append(f"{outcome.key} {outcome.failed_stage}: {outcome.error}")
            context.log.error(failures[-1])
    if failures:
        # Patients that succeeded are already materialised; only the failed ones are marked failed.
        raise dg.Failure(
            description="\n".join(failures),
            metadata={"failed": len(failures), "of_patients": len(context.partition_keys)},
        )


@dg.asset(group_name="modelling", kinds={"csv", "duckdb"}, owners=OWNERS, pool=DUCKDB_WRITES)
def labels(radiomics: RadiomicsConfig) -> dg.MaterializeResult:
    """Clinical outcome per patient from ``labels.csv``; rows in ``labels``."""
    table = _cohort().load_labels(radiomics.root(), radiomics.label_column)
    _cohort().store_labels(radiomics.warehouse(), table)
    return dg.MaterializeResult(metadata={"patients": len(table), "positives": int(table.label.sum()),
                                          "test_patients": int((table.cohort == "test").sum())})  # fmt: skip


@dg.asset(group_name="modelling", kinds={"pandas", "duckdb"}, deps=["features", labels], owners=OWNERS,
          pool=DUCKDB_WRITES)  # fmt: skip
def feature_matrix(radiomics: RadiomicsConfig) -> dg.MaterializeResult:
    """Patients x features (wide), joined with labels; table ``feature_matrix``."""
    matrix, gaps = _cohort().build_feature_matrix(radiomics.warehouse())
    gap_counts = gaps.groupby(["block", "handling"]).patient_id.agg(["count", lambda k: ", ".join(k[:20])])
    return dg.MaterializeResult(metadata={
        "patients": len(matrix),
        "labelled": int(matrix.label.notna().sum()),
        "features": matrix.shape[1] - 1,
        "missing_values_imputed": int(matrix.drop(columns="label").isna().sum().sum()),
        "patients_with_missing_values": int(matrix.drop(columns="label").isna().any(axis=1).sum()),
        "patients_missing_a_block": int(gaps.patient_id.nunique()),
        "missing_blocks": dg.MetadataValue.md(
            gap_counts.set_axis(["patients", "patient keys (first 20)"], axis=1).reset_index().to_markdown(index=False)
            if len(gaps) else "every patient has every modality/ROI block"),
    })  # fmt: skip


def _auc_not_regressed(decision: model_registry.Decision) -> dg.AssetCheckResult:
    """Check result of the registry's promotion decision; ERROR severity when the policy blocks promotion."""
    blocking = decision.policy == "block"
    return dg.AssetCheckResult(
        check_name="auc_not_regressed", passed=not decision.regressed,
        severity=dg.AssetCheckSeverity.ERROR if blocking else dg.AssetCheckSeverity.WARN,
        description=decision.summary(),
        metadata={"new_auc": decision.cv_auc, "previous_auc": decision.previous_auc,
                  "previous_version": decision.previous_version or "", "margin": decision.margin,
                  "policy": decision.policy, "promoted": decision.promoted,
                  "current_version": decision.current_version},
    )  # fmt: skip


@dg.asset(group_name="modelling", kinds={"scikitlearn"}, deps=[feature_matrix], owners=OWNERS,
          check_specs=[dg.AssetCheckSpec("auc_not_regressed", asset="model", description=(
              "The new model's CV AUC is not more than `auc_regression_margin` below the current model's"))])
def model(radiomics: RadiomicsConfig) -> dg.MaterializeResult:
    """Candidate pipelines compared by nested CV; the best is refitted on the training patients (+ model card)."""
    path, card = _cohort().train_model(radiomics.root(), radiomics.seed, radiomics.candidate_models,
                                    radiomics.selection_method, radiomics.cv_folds, radiomics.cv_repeats,
                                    radiomics.standardise)  # fmt: skip
    # Keeps every model under models/<version>/; the top-level files stay the promoted (current) model's.
    decision = model_registry.register(radiomics.root().models, card, radiomics.auc_regression_margin,
                                       radiomics.on_auc_regression)  # fmt: skip
    return dg.MaterializeResult(check_results=[_auc_not_regressed(decision)], metadata={
        "path": dg.MetadataValue.path(str(path.parent / decision.version / path.name)), **{
        k: dg.MetadataValue.json(v) if isinstance(v, dict | list) else v for k, v in card.items()},
        "cv_auc": decision.cv_auc, "model_version": decision.version, "promoted": decision.promoted})  # fmt: skip


@dg.asset(group_name="modelling", kinds={"scikitlearn", "duckdb"}, deps=[model], owners=OWNERS,
          pool=DUCKDB_WRITES)  # fmt: skip
def selected_features(radiomics: RadiomicsConfig) -> dg.MaterializeResult:
    """Final model's features with selection scores and outer-fold selection frequency; table ``selected_features``."""
    ranked = _cohort().select_features(radiomics.warehouse(), radiomics.root())
    top = ranked[ranked.selected][["feature", "selection_score", "selection_frequency", "p_value", "auc"]]
    return dg.MaterializeResult(metadata={
        "selected": int(ranked.selected.sum()),
        "selection_method": str(ranked.selection_method.iloc[0]) if len(ranked) else "",
        "selected_features": dg.MetadataValue.md(top.to_markdown(index=False)),
    })  # fmt: skip


@dg.asset(group_name="modelling", kinds={"duckdb"}, deps=[model, feature_matrix], owners=OWNERS,
          pool=DUCKDB_WRITES)  # fmt: skip
def predictions(radiomics: RadiomicsConfig) -> dg.MaterializeResult:
    """Saved model's scores for patients with features but no label; table ``predictions``."""
    table = _cohort().predict(radiomics.root())
    preview = table.head(20)[["patient_id", "probability", "predicted_label"]]
    return dg.MaterializeResult(metadata={
        "patients": len(table), "predicted_positive": int(table.predicted_label.sum()),
        "threshold": _cohort().THRESHOLD, "preview": dg.MetadataValue.md(preview.to_markdown(index=False)),
    })  # fmt: skip


@dg.asset(group_name="modelling", kinds={"html"}, deps=[model, selected_features], owners=OWNERS)
def validation_report(radiomics: RadiomicsConfig) -> dg.MaterializeResult:
    """Nested cross-validated metrics: ``reports/metrics.json`` and ``reports/report.html``."""
    result = _cohort().validate(radiomics.root(), radiomics.seed)
    return dg.MaterializeResult(metadata={
        **{k: float(result[k]) for k in ("auc", "auc_ci_low", "auc_ci_high", "accuracy", "precision", "recall", "f1")},
        "n_patients": result["n_patients"],
        "n_positive": result["n_positive"],
        "n_negative": result["n_negative"],
        "threshold": result["threshold"],
        "cv_scheme": result["cv_scheme"],
        "n_features_selected": result["n_features_selected"],
        "model": result["model"],
        "brier": float(result["brier"]),
        **({"external_auc": float(result["external"]["auc"]),
            "external_auc_ci": f"{result['external']['auc_ci_low']:.3f} to {result['external']['auc_ci_high']:.3f}",
            "external_n_patients": result["external"]["n_patients"]} if "external" in result else {}),
        "report": dg.MetadataValue.path(str(result["report_path"])),
        "roc": dg.MetadataValue.md(f"![ROC](data:image/png;base64,{result['roc_png']})"),
    })  # fmt: skip


PATIENT_ASSETS = [patient_batch]
COHORT_ASSETS = [labels, feature_matrix, model, selected_features, validation_report, predictions]

ingest_patient_job = dg.define_asset_job("ingest_patient", selection=dg.AssetSelection.assets(*PATIENT_ASSETS))
retrain_cohort_job = dg.define_asset_job("retrain_cohort", selection=dg.AssetSelection.assets(*COHORT_ASSETS))


def _few(label: str, items: list[str], limit: int = 5) -> str:
    if not items:
        return ""
    return f"{label} {len(items)}: {', '.join(items[:limit])}{' ...' if len(items) > limit else ''}"


def _ingest_request(key: str, fingerprint: str, first: bool) -> dg.RunRequest:
    """A re-run's key names its file set, so each new file set runs once; the tag ties the run to its manifest."""
    return dg.RunRequest(
        partition_key=key,
        run_key=f"ingest-{key}" if first else f"ingest-{key}-{fingerprint[:12]}",
        tags={"radiomics/inbox_fingerprint": fingerprint},
    )


def _new_patient_requests(keys: list[str], snapshot) -> list[dg.RunRequest]:
    """New patients in runs of up to MAX_PATIENTS_PER_RUN: one run start-up for many studies arriving together.

    The keys are added as partitions in this order in the same tick, so each chunk is a contiguous range.
    """
    runs = []
    for start in range(0, len(keys), MAX_PATIENTS_PER_RUN):
        chunk = keys[start : start + MAX_PATIENTS_PER_RUN]
        if len(chunk) == 1:
            runs.append(_ingest_request(chunk[0], snapshot.patients[chunk[0]].fingerprint, first=True))
        else:
            runs.append(dg.RunRequest(run_key=f"ingest-{chunk[0]}...{chunk[-1]}", tags={
                PARTITION_RANGE_START: chunk[0], PARTITION_RANGE_END: chunk[-1]}))  # fmt: skip
    return runs


def _seen_fingerprints(cursor: str | None) -> dict[str, str]:
    try:
        return dict(json.loads(cursor)["seen"]) if cursor else {}
    except (ValueError, KeyError, TypeError):  # a cursor from the sensor version without one
        return {}


@dg.sensor(job=ingest_patient_job, minimum_interval_seconds=15, default_status=dg.DefaultSensorStatus.RUNNING)
def inbox_sensor(context: dg.SensorEvaluationContext, radiomics: RadiomicsConfig) -> dg.SensorResult:
    """Registers each patient of the inbox as a partition and requests its ingest run once its files are stable
    (the same on two ticks and older than ``inbox_settle_seconds``); re-runs a registered patient whose files
    changed (e.g. a series that arrived later). Reads only new or changed headers, a bounded number per tick."""
    root = radiomics.root()
    snapshot = InboxIndex(root).update()
    known = set(context.instance.get_dynamic_partitions(patients.name))
    seen = _seen_fingerprints(context.cursor)
    plan = plan_registrations(root, snapshot, seen, known, radiomics.inbox_settle_seconds)
    for rel, why in snapshot.new_ignored.items():
        context.log.warning(f"inbox file {rel} belongs to no patient and is not used: {why}")
    for key in plan.register + plan.rerun + plan.adopt:
        entry = snapshot.patients[key]
        write_manifest(root, entry)
        if entry.unreadable:
            context.log.warning(f"{key}: unreadable files beside its series (its run fails if a series needs them): "
                                + "; ".join(entry.unreadable.values()))  # fmt: skip
    runs = _new_patient_requests(plan.register, snapshot) + [
        _ingest_request(key, snapshot.patients[key].fingerprint, first=False) for key in plan.rerun
    ]
    summary = "; ".join(part for part in (
        f"{snapshot.n_files} files, {len(snapshot.patients)} patients, {snapshot.header_reads} headers read"
        + (f", {len(snapshot.pending)} left for the next ticks" if snapshot.pending else ""),
        _few("new", plan.register), _few("re-run", plan.rerun), _few("manifest only (registered before)", plan.adopt),
        _few("waiting", [f"{key} ({why})" for key, why in plan.waiting.items()]),
    ) if part)  # fmt: skip
    context.log.info(summary)
    cursor = json.dumps({"seen": plan.seen}, sort_keys=True)
    if not runs:
        return dg.SensorResult(skip_reason=summary, cursor=cursor)
    return dg.SensorResult(
        dynamic_partitions_requests=[patients.build_add_request(plan.register)] if plan.register else [],
        run_requests=runs,
        cursor=cursor,
    )


RETRAIN_CRON_ENV = "RADIOMICS_RETRAIN_CRON"

weekly_retrain = dg.ScheduleDefinition(
    name="weekly_retrain",
    job=retrain_cohort_job,
    # Read when the code location loads (restart `./dev ui` after changing it); default Monday 03:00 UTC.
    cron_schedule=os.environ.get(RETRAIN_CRON_ENV) or "0 3 * * 1",
    description=f"Rebuilds the cohort assets (labels to model and report); cron from ${RETRAIN_CRON_ENV}.",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)


def _partition_range(tags) -> str | None:
    """A backfill run covers a range of patient partitions (tags of its first and last key)."""
    first, last = tags.get(PARTITION_RANGE_START), tags.get(PARTITION_RANGE_END)
    return None if first is None else first if first == last else f"{first}...{last}"


@dg.run_failure_sensor(default_status=dg.DefaultSensorStatus.RUNNING, minimum_interval_seconds=15)
def run_failure_log(context: dg.RunFailureSensorContext, radiomics: RadiomicsConfig) -> None:
    """Appends one JSON line per failed run to ``<data root>/logs/failures.log`` (and runs the notify command)."""
    run = context.dagster_run
    failures = context.get_step_failure_events()
    errors = [f"{event.step_key}: {failure_log.domain_error_message(event.event_specific_data.error)}"
              for event in failures if event.event_specific_data and event.event_specific_data.error]  # fmt: skip
    line = failure_log.append(radiomics.root().root / "logs" / "failures.log", {
        "logged_at": datetime.now(UTC).isoformat(timespec="seconds"), "run_id": run.run_id, "job": run.job_name,
        "partition": run.tags.get("dagster/partition") or _partition_range(run.tags),
        "failed_steps": [event.step_key for event in failures],
        "errors": errors or [context.failure_event.message],
    })  # fmt: skip
    if radiomics.failure_notify_command:
        problem = failure_log.notify(radiomics.failure_notify_command, line)
        if problem:
            context.log.warning(problem)


defs = dg.Definitions(
    assets=PATIENT_ASSETS + COHORT_ASSETS,
    jobs=[ingest_patient_job, retrain_cohort_job],
    sensors=[inbox_sensor, run_failure_log],
    schedules=[weekly_retrain],
    resources={"radiomics": RadiomicsConfig()},
)
