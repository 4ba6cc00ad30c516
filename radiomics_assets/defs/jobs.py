"""Jobs: the patient assets (one run covers many partitions) and the cohort assets (retraining)."""

import dagster as dg

ingest_patient_job = dg.define_asset_job(
    "ingest_patient",
    selection=dg.AssetSelection.groups("ingest", "features"),
    description="Patient assets (studies, roi_masks, features) of the run's patient partitions, in one batch step; "
    "launched by inbox_sensor and `radiomics-assets run`",
)
retrain_cohort_job = dg.define_asset_job(
    "retrain_cohort",
    selection=dg.AssetSelection.groups("modelling"),
    description="Cohort assets: labels, feature matrix, model (nested CV, registry), report, predictions; "
    "launched by weekly_retrain and `radiomics-assets run`",
)
export_dicom_job = dg.define_asset_job(
    "export_dicom",
    selection=dg.AssetSelection.groups("exports"),
    description="DICOM exports (SEG, SR) of the patients' stored results; writes nothing unless export_dicom is on",
)
