"""The per-patient assets: studies, ROI masks and features, run for every partition of a run in one batch step."""

import base64

import dagster as dg

from radiomics_assets import failure_log
from radiomics_assets.batch import STAGES, PatientOutcome, run_patients
from radiomics_assets.defs.checks import FEATURE_CHECKS, feature_check_evaluations
from radiomics_assets.defs.partitions import MAX_PATIENTS_PER_RUN, patients
from radiomics_assets.defs.resources import DUCKDB_WRITES, RadiomicsConfig
from radiomics_assets.features import params_version

# No hand-set code version on `features`: without data versions Dagster showed every partition "Unsynced" (issue 25).
# The parameter set a partition was extracted with is in its metadata (`params_version`) and in every row.


def _patient_specs() -> list[dg.AssetSpec]:
    """The three per-patient assets (a function: a module-level list of specs would be loaded as assets too)."""
    return [
        dg.AssetSpec(
            "studies",
            group_name="ingest",
            kinds={"dicom", "duckdb"},
            partitions_def=patients,
            skippable=True,
            description="The patient's image series (DICOM, NIfTI/NRRD, PNG), validated and stored as canonical "
            "volumes under `volumes/`; rows in `series`.",
        ),
        dg.AssetSpec(
            "roi_masks",
            group_name="ingest",
            kinds={"dicom", "duckdb"},
            partitions_def=patients,
            skippable=True,
            deps=["studies"],
            description="Voxel masks of the matching ROIs (RTSTRUCT, DICOM-SEG, mask files, or automated "
            "segmentation) on their image grids, under `masks/`; rows in `masks`.",
        ),
        dg.AssetSpec(
            "features",
            group_name="features",
            kinds={"python", "duckdb"},
            partitions_def=patients,
            skippable=True,
            deps=["roi_masks"],
            description="PyRadiomics features per (series, ROI) in the long `features` table (diagnostics in "
            "`diagnostics`); a re-run replaces exactly that patient's rows.",
        ),
    ]


def _usual_feature_counts(radiomics: RadiomicsConfig, keys: list[str]) -> dict[str, int]:
    """Usual feature count per parameter set among the patients stored before this run (one query per run)."""
    counts = radiomics.warehouse().query(
        "SELECT params_hash, mode(n) AS n FROM (SELECT params_hash, count(*) AS n FROM features "
        "WHERE NOT list_contains(?, patient_id) GROUP BY patient_id, series_uid, roi, params_hash) "
        "GROUP BY params_hash",
        [keys],
    )
    return dict(zip(counts.params_hash, counts.n.astype(int), strict=True))


def _mask_pictures_markdown(outcome: PatientOutcome) -> str:
    """One captioned picture per series: modality, ROIs (outline colours in name order) and volume (ml)."""
    modality = dict(zip(outcome.series.series_uid, outcome.series.modality, strict=True))
    parts = []
    for series_uid, rows in outcome.masks.groupby("series_uid", sort=True):
        rois = ", ".join(f"{row.roi} {row.volume_ml:.1f} ml" for row in rows.sort_values("roi").itertuples())
        caption = f"**{modality.get(series_uid, '?')}** {rois} (series {series_uid})"
        if series_uid in outcome.pictures:
            encoded = base64.b64encode(outcome.pictures[series_uid]).decode()
            parts.append(
                f"{caption}\n\n![mask outline {modality.get(series_uid, '')}](data:image/png;base64,{encoded})"
            )
        else:
            parts.append(f"{caption}: no picture ({outcome.picture_problems.get(series_uid, 'not drawn')})")
    return "\n\n".join(parts)


def _patient_events(outcome: PatientOutcome, radiomics: RadiomicsConfig, usual: dict[str, int], params: str):
    """The UI's view of one patient: a materialisation (with metadata) per stage that succeeded, and checks."""
    key = outcome.key
    if "studies" in outcome.done_stages:
        series = outcome.series
        metadata = {
            "series": len(series),
            "modalities": ", ".join(sorted(series.modality.unique())),
            "slices": int(series.n_slices.sum()),
        }
        yield dg.AssetMaterialization("studies", partition=key, metadata=metadata)
    if "roi_masks" in outcome.done_stages:
        masks = outcome.masks
        metadata = {
            "rois": len(masks),
            "roi_names": ", ".join(sorted(masks.roi.unique())),
            "sources": ", ".join(sorted(masks.source_kind.unique())),
            "voxels": int(masks.voxel_count.sum()),
            "volume_ml": round(float(masks.volume_ml.sum()), 1),
        }
        if outcome.series is not None:
            # A series without any ROI gets no features: say so instead of leaving it to be noticed (issue 24).
            bare = outcome.series[~outcome.series.series_uid.isin(set(masks.series_uid))]
            metadata["series_without_roi"] = (
                ", ".join(f"{r.modality} {r.series_uid}" for r in bare.itertuples()) or "none"
            )
        if outcome.pictures or outcome.picture_problems:
            metadata["mask_outlines"] = dg.MetadataValue.md(_mask_pictures_markdown(outcome))
        yield dg.AssetMaterialization("roi_masks", partition=key, metadata=metadata)
    if "features" in outcome.done_stages:
        rows = outcome.features
        preview = rows.head(8)[["modality", "roi", "image_type", "feature_class", "feature", "value"]]
        metadata = {
            "features": len(rows),
            "series": int(rows.series_uid.nunique()),
            "rois": int(rows.roi.nunique()),
            "params_hash": ", ".join(sorted(rows.params_hash.unique())),
            "params_version": params,
            "preview": dg.MetadataValue.md(preview.to_markdown(index=False, floatfmt=".4g")),
        }
        yield dg.AssetMaterialization("features", partition=key, metadata=metadata)
        yield from feature_check_evaluations(key, rows, outcome.masks, usual, radiomics.min_roi_voxels)


def _failure_line(outcome: PatientOutcome) -> str:
    """``<patient> <stage>: <problem naming the file>[; fix: <hint>]``, one line (the CLI and the log read it)."""
    return failure_log.with_fix(f"{outcome.key} {outcome.failed_stage}: {outcome.error}".replace("\n", " "))


def _failure_observations(outcome: PatientOutcome, stages: set[str]):
    """The failed stage's problem and fix as an observation of each selected asset the patient did not reach, so the
    partition's own page and the asset's Events tab show them (the UI shows a step failure only under its logs)."""
    fix = failure_log.fix_hint(outcome.error) or "no known fix: the message names the file and the problem"
    metadata = {
        "failed": dg.MetadataValue.md(f"**{outcome.failed_stage}**: {outcome.error}"),
        "fix": fix,
        "stage": outcome.failed_stage,
    }
    for stage in STAGES[STAGES.index(outcome.failed_stage) :]:
        if stage in stages:
            description = f"failed at {outcome.failed_stage}: {outcome.error}{failure_log.FIX_SEPARATOR}{fix}"
            yield dg.AssetObservation(stage, partition=outcome.key, description=description, metadata=metadata)


def _failure_table(failures: list[PatientOutcome]) -> str:
    rows = ["| patient | stage | problem | fix |", "|---|---|---|---|"]
    for outcome in failures:
        problem = outcome.error.replace("|", "\\|").replace("\n", " ")
        fix = (failure_log.fix_hint(outcome.error) or "").replace("|", "\\|")
        rows.append(f"| {outcome.key} | {outcome.failed_stage} | {problem} | {fix} |")
    return "\n".join(rows)


@dg.multi_asset(
    name="patient_batch",
    specs=_patient_specs(),
    check_specs=FEATURE_CHECKS,
    can_subset=True,
    # A backfill puts up to 25 patients in one run (one process start-up, both cores busy) instead of one
    # run per patient; the step fails only the partitions of the patients that failed.
    backfill_policy=dg.BackfillPolicy.multi_run(max_partitions_per_run=MAX_PATIENTS_PER_RUN),
    pool=DUCKDB_WRITES,
)
def patient_batch(context: dg.AssetExecutionContext, radiomics: RadiomicsConfig):
    """Ingest, masks and features for every patient partition of the run, in parallel worker processes."""
    stages = {key.to_user_string() for key in context.selected_asset_keys}
    if "roi_masks" in stages and radiomics.resample_masks_to_image:
        context.log.warning("resample_masks_to_image is on: file masks on another grid are resampled (nearest)")
    failures = []
    usual = _usual_feature_counts(radiomics, context.partition_keys) if "features" in stages else {}
    params = params_version(radiomics.params())
    settings = radiomics.patient_settings()
    batch = run_patients(
        context.partition_keys, stages, settings, radiomics.workers, dask_scheduler=radiomics.dask_scheduler
    )
    for outcome in batch:
        yield from _patient_events(outcome, radiomics, usual, params)
        if outcome.error:
            failures.append(outcome)
            context.log.error(_failure_line(outcome))
            yield from _failure_observations(outcome, stages)
    # The checks were reported per partition above (evaluations); their op outputs are closed here, else Dagster
    # logs "did not yield or return expected outputs" on every run.
    selected = context.op_execution_context.selected_output_names
    for name in context.assets_def.check_specs_by_output_name:
        if name in selected:
            yield dg.Output(None, output_name=name)
    if failures:
        # Patients that succeeded are already materialised; only the failed ones are marked failed.
        raise dg.Failure(
            description="\n".join(_failure_line(outcome) for outcome in failures),
            metadata={
                "failed": len(failures),
                "of_patients": len(context.partition_keys),
                "failures": dg.MetadataValue.md(_failure_table(failures)),
            },
        )
