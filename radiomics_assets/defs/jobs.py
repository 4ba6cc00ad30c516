"""Jobs: the patient assets (one run covers many partitions) and the cohort assets (retraining)."""

import dagster as dg

ingest_patient_job = dg.define_asset_job(
    "ingest_patient", selection=dg.AssetSelection.groups("ingest", "features"), description="Patient assets"
)
retrain_cohort_job = dg.define_asset_job(
    "retrain_cohort", selection=dg.AssetSelection.groups("modelling"), description="Cohort assets"
)
