"""The weekly retraining of the cohort assets."""

import dagster as dg

from radiomics_assets import environment

RETRAIN_CRON_ENV = environment.RETRAIN_CRON.name

weekly_retrain = dg.ScheduleDefinition(
    name="weekly_retrain",
    job_name="retrain_cohort",
    # Read when the code location loads (restart `./dev ui` after changing it); default Monday 03:00 UTC.
    cron_schedule=environment.read(environment.RETRAIN_CRON),
    description=f"Rebuilds the cohort assets (labels to model and report); cron from ${RETRAIN_CRON_ENV}.",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
