"""Where every patient stands, without the UI (``radiomics-assets status``): ok, failed (problem and fix), no mask.

Read from what the pipeline leaves on disk, whoever ran it (the sensor's runs, the UI's, ``radiomics-assets run``):
the published feature store (read-only, so it never waits for a running pipeline), the patient manifests, the
failure log and the model registry.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

import duckdb
import pandas as pd

from radiomics_assets import failure_log
from radiomics_assets.paths import DataRoot

NO_MASK = re.compile(r"no RTSTRUCT or DICOM-SEG|no mask file beside it|needs a seed|no ROI mask")
"""A patient whose masks step failed for want of any mask (not a broken one): shown as ``no mask``."""


@dataclass(frozen=True)
class PatientStatus:
    key: str
    state: str
    """``ok``, ``failed``, ``no mask`` (series stored, no ROI mask) or ``not run`` (registered, nothing stored)."""
    detail: str
    fix: str = ""


@dataclass(frozen=True)
class ModelStatus:
    version: str
    metric: str
    value: float


def _stored(root: DataRoot) -> dict[str, pd.DataFrame]:
    """Per-table row summaries of the published store (empty frames before the first run)."""
    queries = {
        "series": "SELECT patient_id, count(*) AS n FROM series GROUP BY ALL",
        "masks": "SELECT patient_id, count(*) AS n FROM masks GROUP BY ALL",
        "features": "SELECT patient_id, count(*) AS n, max(extracted_at) AS at FROM features GROUP BY ALL",
    }
    empty = {name: pd.DataFrame(columns=["patient_id", "n", "at"]) for name in queries}
    if not root.warehouse.exists():
        return empty
    with duckdb.connect(str(root.warehouse), read_only=True) as con:
        tables = {row[0] for row in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        return {name: con.execute(sql).df() if name in tables else empty[name] for name, sql in queries.items()}


def series_without_roi(root: DataRoot, patients: list[str] | None = None) -> pd.DataFrame:
    """Stored series that no ROI mask lies on (so no features), of ``patients`` (all when None): columns
    patient_id, modality, series_uid. A PET series beside a CT whose RTSTRUCT only references the CT is the usual
    case; it is no failure, but nobody should have to notice it by counting feature rows."""
    columns = ["patient_id", "modality", "series_uid"]
    if not root.warehouse.exists():
        return pd.DataFrame(columns=columns)
    with duckdb.connect(str(root.warehouse), read_only=True) as con:
        tables = {row[0] for row in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        if not {"series", "masks"} <= tables:
            return pd.DataFrame(columns=columns)
        bare = con.execute(
            "SELECT s.patient_id, s.modality, s.series_uid FROM series s ANTI JOIN masks m "
            "ON s.patient_id = m.patient_id AND s.series_uid = m.series_uid ORDER BY ALL"
        ).df()
    return bare if patients is None else bare[bare.patient_id.isin(set(patients))].reset_index(drop=True)


def _parse_time(text: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(text)
    except (TypeError, ValueError):
        return None
    # The store keeps naive UTC times; the failure log ISO times with their offset.
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


def patient_statuses(root: DataRoot) -> list[PatientStatus]:
    """Every known patient (manifests, stored rows, failure log), in key order.

    A patient failed when its latest failure is newer than its stored features (features stored before a later
    failure are kept, and the detail says so).
    """
    stored = _stored(root)
    counts = {name: dict(zip(frame.patient_id, frame.n, strict=True)) for name, frame in stored.items()}
    extracted = dict(zip(stored["features"].patient_id, stored["features"]["at"], strict=True))
    latest_failure = {
        failure.patient: failure for failure in failure_log.patient_failures(root.path / "logs" / "failures.log")
    }
    manifests = {path.stem for path in (root.path / "manifests").glob("*.json")}
    keys = sorted(manifests | set(counts["series"]) | set(counts["features"]) | set(latest_failure))
    statuses = []
    for key in keys:
        n_features, at = counts["features"].get(key, 0), extracted.get(key)
        failure = latest_failure.get(key)
        failed_at = _parse_time(failure.logged_at) if failure else None
        stored_at = pd.Timestamp(at).to_pydatetime() if at is not None and not pd.isna(at) else None
        if failure and (not n_features or failed_at is None or stored_at is None or failed_at > stored_at):
            if failure.stage == "roi_masks" and NO_MASK.search(failure.problem):
                statuses.append(PatientStatus(key, "no mask", failure.problem, failure.fix))
                continue
            kept = f" (features of {stored_at:%Y-%m-%d %H:%M} UTC kept)" if n_features and stored_at else ""
            detail = f"at {failure.stage}: {failure.problem}{kept}"
            statuses.append(PatientStatus(key, "failed", detail, failure.fix or "no known fix: see the message"))
        elif n_features:
            when = f", extracted {stored_at:%Y-%m-%d %H:%M} UTC" if stored_at else ""
            statuses.append(PatientStatus(key, "ok", f"{n_features} features{when}"))
        elif counts["series"].get(key) and not counts["masks"].get(key):
            statuses.append(
                PatientStatus(
                    key,
                    "no mask",
                    f"{counts['series'][key]} series stored, no ROI mask",
                    "add its RTSTRUCT/SEG or mask file to the inbox, or a seed in seeds.csv with auto_segmentation",
                )
            )
        else:
            statuses.append(PatientStatus(key, "not run", "registered; no rows stored yet", "radiomics-assets run"))
    return statuses


def model_status(root: DataRoot) -> ModelStatus | None:
    """The model in service and its cross-validated primary metric, or None before the first training."""
    from radiomics_assets.modelling.registry import card_metric, current_version, load_card

    version = current_version(root.models)
    if version is None:
        return None
    metric, value = card_metric(load_card(root.models, version))
    return ModelStatus(version, metric, value)


def status_lines(root: DataRoot, last_run: str | None) -> list[str]:
    """What ``radiomics-assets status`` prints: one line per patient (and its fix), then counts, run, model."""
    statuses = patient_statuses(root)
    lines = []
    for status in statuses:
        lines.append(f"{status.key}  {status.state}: {status.detail}")
        if status.fix and status.state != "ok":
            lines.append(f"    fix: {status.fix}")
    tally = {}
    for status in statuses:
        tally[status.state] = tally.get(status.state, 0) + 1
    order = ("ok", "failed", "no mask", "not run")
    summary = ", ".join(f"{tally[state]} {state}" for state in order if state in tally) or "none"
    lines.append(f"patients: {len(statuses)} ({summary})")
    lines.append(f"last run: {last_run or 'none recorded'}")
    model = model_status(root)
    if model is None:
        lines.append("model: none trained yet")
    else:
        lines.append(f"model: {model.version} ({model.metric} {model.value:.3f}, cross-validated)")
    lines.append(f"feature store: {root.warehouse}")
    return lines


def last_run_line(runs: list[tuple[str, str, str, float | None]]) -> str | None:
    """``<job> <status> <UTC time> (run <id>)`` of the newest run; ``runs``: (job, status, run id, start time)."""
    if not runs:
        return None
    job, run_status, run_id, started = runs[0]
    when = f" started {datetime.fromtimestamp(started, UTC):%Y-%m-%d %H:%M} UTC" if started else ""
    return f"{job} {run_status.lower()}{when} (run {run_id[:8]})"
