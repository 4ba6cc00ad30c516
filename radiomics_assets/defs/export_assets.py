"""The per-patient DICOM exports: a SEG per automated mask and a TID 1500 SR per series, when configured."""

import dagster as dg

from radiomics_assets.defs.partitions import MAX_PATIENTS_PER_RUN, patients
from radiomics_assets.defs.resources import RadiomicsConfig
from radiomics_assets.errors import InputError


def _export_specs() -> list[dg.AssetSpec]:
    return [
        dg.AssetSpec(
            "dicom_exports",
            group_name="exports",
            kinds={"dicom"},
            partitions_def=patients,
            skippable=True,
            deps=["features"],
            description="DICOM-SEG of each automated mask and a TID 1500 SR of each series' features under "
            "`exports/<patient>/` (off unless `export_dicom`; de-identified copies with `export_deidentified`).",
        )
    ]


@dg.multi_asset(
    name="dicom_exports_batch",
    specs=_export_specs(),
    can_subset=True,
    backfill_policy=dg.BackfillPolicy.multi_run(max_partitions_per_run=MAX_PATIENTS_PER_RUN),
)
def dicom_exports_batch(context: dg.AssetExecutionContext, radiomics: RadiomicsConfig):
    """Export every patient partition of the run; a patient that fails fails alone."""
    from radiomics_assets.exports import export_patient

    keys = context.partition_keys
    if not radiomics.export_dicom:
        for key in keys:
            yield dg.AssetMaterialization("dicom_exports", partition=key, metadata={"exports": "off"})
        return
    settings = radiomics.export_settings()
    failures = []
    for key in keys:
        try:
            outcome = export_patient(radiomics.data_root(), key, settings)
        except Exception as exc:  # noqa: BLE001 - one patient's failure must not stop the others
            why = str(exc) if isinstance(exc, InputError) else f"{type(exc).__name__}: {exc}"
            failures.append(f"{key} dicom_exports: {why}")
            context.log.error(failures[-1])
            continue
        metadata = {"exports": "skipped: " + outcome.skipped} if outcome.skipped else {}
        if not outcome.skipped:
            metadata = {
                "exports": "written",
                "segmentations": outcome.segmentations,
                "reports": outcome.reports,
                "measurements": outcome.measurements,
                "non_finite_left_out": len(outcome.non_finite),
                "folder": f"exports/{key}",
                "deidentified_copies": len(outcome.deidentified),
            }
        yield dg.AssetMaterialization("dicom_exports", partition=key, metadata=metadata)
    if failures:
        raise dg.Failure(description="\n".join(failures), metadata={"failed": len(failures), "of_patients": len(keys)})
