"""Sensors: new studies in the inbox become patient partitions and runs; every failed run gets a log line."""

import dagster as dg

from radiomics_assets import failure_log
from radiomics_assets.defs.partitions import (
    MAX_PATIENTS_PER_RUN,
    PARTITION_RANGE_END,
    PARTITION_RANGE_START,
    partition_range,
    patients,
)
from radiomics_assets.defs.resources import RadiomicsConfig
from radiomics_assets.ingest import InboxIndex
from radiomics_assets.ingest.inbox_tick import IngestRun, plan_tick


def _run_request(run: IngestRun) -> dg.RunRequest:
    """One patient: its partition, tagged with its file set's fingerprint; several: a partition range."""
    if run.fingerprint is not None:
        return dg.RunRequest(
            partition_key=run.keys[0], run_key=run.run_key, tags={"radiomics/inbox_fingerprint": run.fingerprint}
        )
    tags = {PARTITION_RANGE_START: run.keys[0], PARTITION_RANGE_END: run.keys[-1]}
    return dg.RunRequest(run_key=run.run_key, tags=tags)


@dg.sensor(
    job_name="ingest_patient",
    minimum_interval_seconds=15,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Watches inbox/: each new patient becomes a partition of the patient assets and an `ingest_patient` "
    "run once its files stopped changing (inbox_settle_seconds); a patient whose files changed runs again.",
)
def inbox_sensor(context: dg.SensorEvaluationContext, radiomics: RadiomicsConfig) -> dg.SensorResult:
    """Registers each patient of the inbox as a partition and requests its ingest run once its files are stable
    (the same on two ticks and older than ``inbox_settle_seconds``); re-runs a registered patient whose files
    changed (e.g. a series that arrived later). Reads only new or changed headers, a bounded number per tick."""
    root = radiomics.data_root()
    snapshot = InboxIndex(root, accept_maskless=radiomics.accept_maskless()).update()
    known = set(context.instance.get_dynamic_partitions(patients.name))
    tick = plan_tick(root, snapshot, context.cursor, known, radiomics.inbox_settle_seconds, MAX_PATIENTS_PER_RUN)
    for level, message in tick.log:
        getattr(context.log, level)(message)
    if not tick.runs:
        return dg.SensorResult(skip_reason=tick.summary, cursor=tick.cursor)
    return dg.SensorResult(
        dynamic_partitions_requests=[patients.build_add_request(tick.new_partitions)] if tick.new_partitions else [],
        run_requests=[_run_request(run) for run in tick.runs],
        cursor=tick.cursor,
    )


@dg.run_failure_sensor(
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=15,
    description="Writes one JSON line per failed run (patients, problems and fixes) to logs/failures.log and runs "
    "RADIOMICS_FAILURE_NOTIFY_COMMAND with it, if set.",
)
def run_failure_log(context: dg.RunFailureSensorContext, radiomics: RadiomicsConfig) -> None:
    """Appends one JSON line per failed run to ``<data root>/logs/failures.log`` (and runs the notify command)."""
    run = context.dagster_run
    if run.tags.get(failure_log.LOGGED_BY_TAG):  # a headless run logged its own failure
        return
    failures = context.get_step_failure_events()
    errors = failure_log.run_errors(
        (event.step_key, event.event_specific_data.error) for event in failures if event.event_specific_data
    )
    record = failure_log.run_record(
        run.run_id,
        run.job_name,
        partition_range(run.tags),
        [event.step_key for event in failures],
        errors or [context.failure_event.message],
    )
    line = failure_log.append(radiomics.data_root().path / "logs" / "failures.log", record)
    if radiomics.failure_notify_command:
        problem = failure_log.notify(radiomics.failure_notify_command, line)
        if problem:
            context.log.warning(problem)
