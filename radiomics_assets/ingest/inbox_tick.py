"""One tick of the inbox sensor without Dagster: the registration plan carried out as far as files go (manifests
written), the ingest runs it asks for, what to log, and the cursor for the next tick.

``defs/sensors.py`` turns a :class:`TickPlan` into Dagster requests (partitions added, run requests, the cursor).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from radiomics_assets.ingest.inbox_index import InboxSnapshot
from radiomics_assets.ingest.manifests import write_manifest
from radiomics_assets.ingest.registration import RegistrationPlan, plan_registrations
from radiomics_assets.paths import DataRoot


@dataclass(frozen=True)
class IngestRun:
    """One requested ingest run: one patient (``keys`` of length 1, with its file set's fingerprint) or a
    contiguous range of new patients (``keys[0]`` .. ``keys[-1]``, added as partitions in this order)."""

    keys: list[str]
    run_key: str
    fingerprint: str | None = None
    """For a one-patient run: the fingerprint of its file set (the run's tag ties it to its manifest)."""


@dataclass
class TickPlan:
    """What the sensor does this tick."""

    registration: RegistrationPlan
    runs: list[IngestRun] = field(default_factory=list)
    log: list[tuple[str, str]] = field(default_factory=list)
    """(level, message) in order: ``warning`` / ``error`` lines, then the ``info`` summary."""
    summary: str = ""
    cursor: str = ""

    @property
    def new_partitions(self) -> list[str]:
        return self.registration.register


def _few(label: str, items: list[str], limit: int = 5) -> str:
    if not items:
        return ""
    return f"{label} {len(items)}: {', '.join(items[:limit])}{' ...' if len(items) > limit else ''}"


def ingest_run(key: str, fingerprint: str, first: bool) -> IngestRun:
    """A re-run's key names its file set, so each new file set runs once."""
    return IngestRun([key], f"ingest-{key}" if first else f"ingest-{key}-{fingerprint[:12]}", fingerprint)


def new_patient_runs(keys: list[str], snapshot: InboxSnapshot, max_per_run: int) -> list[IngestRun]:
    """New patients in runs of up to ``max_per_run``: one run start-up for many studies arriving together.

    The keys are added as partitions in this order in the same tick, so each chunk is a contiguous range.
    """
    runs = []
    for start in range(0, len(keys), max_per_run):
        chunk = keys[start : start + max_per_run]
        if len(chunk) == 1:
            runs.append(ingest_run(chunk[0], snapshot.patients[chunk[0]].fingerprint, first=True))
        else:
            runs.append(IngestRun(chunk, f"ingest-{chunk[0]}...{chunk[-1]}"))
    return runs


def seen_fingerprints(cursor: str | None) -> dict[str, str]:
    try:
        return dict(json.loads(cursor)["seen"]) if cursor else {}
    except (ValueError, KeyError, TypeError):  # a cursor from the sensor version without one
        return {}


def plan_tick(
    root: DataRoot,
    snapshot: InboxSnapshot,
    cursor: str | None,
    known: set[str],
    settle_seconds: float,
    max_per_run: int,
) -> TickPlan:
    """Plan the registrations, write the manifests of the patients to register, re-run or adopt (a patient whose
    manifest cannot be written waits for the next tick), and list the runs, the log lines and the next cursor."""
    plan = plan_registrations(root, snapshot, seen_fingerprints(cursor), known, settle_seconds)
    log = [("warning", f"inbox file {rel} is not used: {why}") for rel, why in snapshot.new_ignored.items()]
    for key in plan.register + plan.rerun + plan.adopt:
        entry = snapshot.patients[key]
        try:
            write_manifest(root, entry)
        except OSError as exc:  # one patient's manifest (disk, permissions) must not stop the tick for all
            log.append(("error", f"{key}: its manifest cannot be written ({exc}); it is not run this tick"))
            for chosen in (plan.register, plan.rerun, plan.adopt):
                if key in chosen:
                    chosen.remove(key)
            plan.waiting[key] = "manifest not written"
            continue
        if entry.unreadable:
            beside = "; ".join(entry.unreadable.values())
            log.append(
                (
                    "warning",
                    f"{key}: unreadable files beside its series (its run fails if a series needs them): {beside}",
                )
            )
    runs = new_patient_runs(plan.register, snapshot, max_per_run) + [
        ingest_run(key, snapshot.patients[key].fingerprint, first=False) for key in plan.rerun
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
    log.append(("info", summary))
    return TickPlan(plan, runs, log, summary, json.dumps({"seen": plan.seen}, sort_keys=True))
