"""The weekly retraining of the cohort assets."""

import os

import dagster as dg

RETRAIN_CRON_ENV = "RADIOMICS_RETRAIN_CRON"

weekly_retrain = dg.ScheduleDefinition(
    name="weekly_retrain",
    job_name="retrain_cohort",
    # Read when the code location loads (restart `./dev ui` after changing it); default Monday 03:00 UTC.
    cron_schedule=os.environ.get(RETRAIN_CRON_ENV) or "0 3 * * 1",
    description=f"Rebuilds the cohort assets (labels to model and report); cron from ${RETRAIN_CRON_ENV}.",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
