"""Sensors: new studies in the inbox become patient partitions and runs; every failed run gets a log line."""

import json

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
from radiomics_assets.ingest import InboxIndex, InboxSnapshot, plan_registrations, write_manifest


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


def _new_patient_requests(keys: list[str], snapshot: InboxSnapshot) -> list[dg.RunRequest]:
    """New patients in runs of up to MAX_PATIENTS_PER_RUN: one run start-up for many studies arriving together.

    The keys are added as partitions in this order in the same tick, so each chunk is a contiguous range.
    """
    runs = []
    for start in range(0, len(keys), MAX_PATIENTS_PER_RUN):
        chunk = keys[start : start + MAX_PATIENTS_PER_RUN]
        if len(chunk) == 1:
            runs.append(_ingest_request(chunk[0], snapshot.patients[chunk[0]].fingerprint, first=True))
        else:
            tags = {PARTITION_RANGE_START: chunk[0], PARTITION_RANGE_END: chunk[-1]}
            runs.append(dg.RunRequest(run_key=f"ingest-{chunk[0]}...{chunk[-1]}", tags=tags))
    return runs


def _seen_fingerprints(cursor: str | None) -> dict[str, str]:
    try:
        return dict(json.loads(cursor)["seen"]) if cursor else {}
    except (ValueError, KeyError, TypeError):  # a cursor from the sensor version without one
        return {}


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
    seen = _seen_fingerprints(context.cursor)
    plan = plan_registrations(root, snapshot, seen, known, radiomics.inbox_settle_seconds)
    for rel, why in snapshot.new_ignored.items():
        context.log.warning(f"inbox file {rel} is not used: {why}")
    for key in plan.register + plan.rerun + plan.adopt:
        entry = snapshot.patients[key]
        try:
            write_manifest(root, entry)
        except OSError as exc:  # one patient's manifest (disk, permissions) must not stop the tick for all
            context.log.error(f"{key}: its manifest cannot be written ({exc}); it is not run this tick")
            for chosen in (plan.register, plan.rerun, plan.adopt):
                if key in chosen:
                    chosen.remove(key)
            plan.waiting[key] = "manifest not written"
            continue
        if entry.unreadable:
            beside = "; ".join(entry.unreadable.values())
            context.log.warning(
                f"{key}: unreadable files beside its series (its run fails if a series needs them): {beside}"
            )
    runs = _new_patient_requests(plan.register, snapshot) + [
        _ingest_request(key, snapshot.patients[key].fingerprint, first=False) for key in plan.rerun
    ]
    progress = f"{snapshot.n_files} files, {len(snapshot.patients)} patients, {snapshot.header_reads} headers read"
    if snapshot.pending:
        progress += f", {len(snapshot.pending)} left for the next ticks"
    parts = (
        progress,
        _few("new", plan.register),
        _few("re-run", plan.rerun),
        _few("manifest only (registered before)", plan.adopt),
        _few("waiting", [f"{key} ({why})" for key, why in plan.waiting.items()]),
    )
    summary = "; ".join(part for part in parts if part)
    context.log.info(summary)
    cursor = json.dumps({"seen": plan.seen}, sort_keys=True)
    if not runs:
        return dg.SensorResult(skip_reason=summary, cursor=cursor)
    return dg.SensorResult(
        dynamic_partitions_requests=[patients.build_add_request(plan.register)] if plan.register else [],
        run_requests=runs,
        cursor=cursor,
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
