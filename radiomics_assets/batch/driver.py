"""Run the patient-level steps (studies, masks, features) for many patients at once, on all cores.

A backfill of K patients must not pay a process start-up and a run per patient, and must keep both cores
busy. So one call handles a batch of patients, in a pool of worker processes or, when a Dask scheduler is
configured, on the workers of that cluster (``batch.executors`` decides; both are a ``concurrent.futures`` executor,
so the wait loop below is the same). With several patients, one task does a patient's every selected stage (DICOM
reading, masks, then the extraction of each (series, ROI)) on the volumes and masks it has just stored, kept in
memory (extraction sees them with their files' geometry: ``stored_images``); with one patient, or without the
masks stage, extraction runs per (series, ROI) so the patient's series share the workers, each reading its volume
and mask. Each worker holds one task's volumes at a time, which bounds memory per worker.

Only the calling process writes to the warehouse (one writer per batch, one transaction per patient once
its stages have run; a batch that is interrupted first stores what its unfinished patients' ingest and masks
produced, for the patients whose extraction was split into tasks; a whole-patient task whose worker is lost stores
nothing of this run for that patient and says so), so a failing patient leaves its earlier rows and every other
patient's rows intact. The outcome of each patient is yielded as soon as it is known; the caller
(the Dagster layer) turns it into per-partition events.
"""

from __future__ import annotations

import time
import traceback
from collections import deque
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Executor, Future, wait
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd

from radiomics_assets.batch.executors import executor
from radiomics_assets.batch.workers import (
    InProcessExecutor,
    in_flight_limit,
    resolve_dask_scheduler,
    resolve_workers,
)
from radiomics_assets.errors import ExtractionError, InputError, ParameterFileError, WarehouseBusyError
from radiomics_assets.features.parameter_files import DEFAULT_MAX_GREY_LEVELS
from radiomics_assets.masks.build import MaskOptions
from radiomics_assets.paths import DataRoot
from radiomics_assets.stored_images import Volumes, as_read_back, stored_image
from radiomics_assets.warehouse import Warehouse

STAGES = ("studies", "roi_masks", "features")


EXPECTED_ERRORS = (InputError, WarehouseBusyError)
"""Input problems whose message already names the file, and a busy feature store (its message names the holder);
anything else is reported with its type."""


@dataclass(frozen=True)
class PatientSettings:
    """Everything a worker process needs; plain values so it pickles."""

    data_dir: Path
    params: dict[str, Path]
    file_modality: str = "CT"
    mask_options: MaskOptions = field(default_factory=MaskOptions)
    max_grey_levels: int = DEFAULT_MAX_GREY_LEVELS
    """An extraction whose ROI would have more grey levels is refused (units/parameter mismatch)."""
    ultrasound_candidate_features: bool = False
    """Features of ``auto:ultrasound`` masks are the means over the segmentation's candidate outlines
    (``features.candidate_average``)."""

    @property
    def data_root(self) -> DataRoot:
        return DataRoot(self.data_dir)


@dataclass
class PatientOutcome:
    """What happened to one patient; tables are the rows stored for the stages that succeeded."""

    key: str
    series: pd.DataFrame | None = None
    masks: pd.DataFrame | None = None
    features: pd.DataFrame | None = None
    diagnostics: pd.DataFrame | None = None
    failed_stage: str | None = None
    error: str | None = None
    done_stages: list[str] = field(default_factory=list)
    pictures: dict[str, bytes] = field(default_factory=dict)
    """PNG of each series' mask outlines (series UID -> bytes), drawn in the worker that built the masks."""
    picture_problems: dict[str, str] = field(default_factory=dict)
    """Series whose picture could not be drawn, and why (a missing picture never fails the patient)."""

    def fail(self, stage: str, error: str) -> PatientOutcome:
        self.failed_stage, self.error = stage, error
        return self


def _describe(exc: BaseException) -> str:
    if isinstance(exc, EXPECTED_ERRORS):
        return str(exc)
    # An unexpected error is a bug or an input we do not know yet: keep the type and where it happened.
    where = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    place = f" (at {Path(where.filename).name}:{where.lineno})" if where else ""
    return f"{type(exc).__name__}: {exc}{place}"


# --- work done in worker processes (or in-process when there is a single worker) -----------------------


def _prepare(
    settings: PatientSettings, key: str, stages: frozenset[str], volumes: Volumes | None = None
) -> PatientOutcome:
    """Ingest the patient's series and/or build its masks; returns the tables (not stored yet). The volumes and
    masks stored or read on the way are left in ``volumes``, when given."""
    from radiomics_assets.ingest import ingest_studies, patient_inputs
    from radiomics_assets.masks.build import build_masks

    outcome = PatientOutcome(key)
    root = settings.data_root
    try:
        inputs = patient_inputs(root, key)  # looked up once for both stages
    except Exception as exc:  # noqa: BLE001 - reported per patient, never lost
        return outcome.fail("studies" if "studies" in stages else "roi_masks", _describe(exc))
    if volumes is not None:
        inputs = replace(inputs, volumes=volumes)
    if "studies" in stages:
        try:
            outcome.series = ingest_studies(root, key, settings.file_modality, inputs)
        except Exception as exc:  # noqa: BLE001 - reported per patient, never lost
            return outcome.fail("studies", _describe(exc))
    else:
        outcome.series = _stored_rows(root, "series", key)
    if "roi_masks" in stages:
        try:
            outcome.masks = build_masks(root, key, outcome.series, settings.mask_options, inputs=inputs)
        except Exception as exc:  # noqa: BLE001
            return outcome.fail("roi_masks", _describe(exc))
        _draw_pictures(outcome, inputs.volumes)
    return outcome


def _draw_pictures(outcome: PatientOutcome, volumes: Volumes) -> None:
    """One outline picture per series, while its volume is still in memory (the run process reads no volume)."""

    from radiomics_assets.pictures import mask_outline_png

    volume_paths = dict(zip(outcome.series.series_uid, outcome.series.volume_path, strict=True))
    for series_uid, rows in outcome.masks.groupby("series_uid", sort=True):
        try:
            image = stored_image(volume_paths[series_uid], volumes)
            masks = [stored_image(path, volumes) for path in rows.sort_values("roi").mask_path]
            outcome.pictures[series_uid] = mask_outline_png(image, masks)
        except Exception as exc:  # noqa: BLE001 - a picture is for people; the masks themselves are fine
            outcome.picture_problems[series_uid] = _describe(exc)


def _prepare_and_extract(settings: PatientSettings, key: str, stages: frozenset[str]) -> PatientOutcome:
    """The patient's every selected stage in one task: its extractions use the volumes and masks this worker has
    just stored, exactly as stored, instead of reading them back (a full CT is 0.3 s to read)."""
    volumes: Volumes = {}
    outcome = _prepare(settings, key, stages, volumes)
    if outcome.failed_stage:
        return outcome
    try:
        pairs = _pairs_to_extract(settings, outcome)
        extracted = [_extract_one(settings, key, series_row, mask_row, volumes) for series_row, mask_row in pairs]
    except Exception as exc:  # noqa: BLE001 - reported per patient, never lost
        return outcome.fail("features", _describe(exc))
    outcome.features = pd.concat([rows for rows, _ in extracted], ignore_index=True)
    outcome.diagnostics = pd.concat([diagnostics for _, diagnostics in extracted], ignore_index=True)
    return outcome


def _extract_one(
    settings: PatientSettings, key: str, series_row: dict, mask_row: dict, volumes: Volumes | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Features and diagnostics of one (series, ROI); runs in a worker. The volume and mask are the copies in
    ``volumes`` if the worker has them (with their files' geometry), else read from their files."""
    from radiomics_assets.features.candidate_average import extract_candidate_average
    from radiomics_assets.features.extraction import ExtractionTarget, extract
    from radiomics_assets.ingest.file_pairs import png_bits
    from radiomics_assets.masks.sources import SEEDED_ULTRASOUND

    volumes = {} if volumes is None else volumes
    target = ExtractionTarget(
        patient_id=key,
        series_uid=series_row["series_uid"],
        modality=series_row["modality"],
        roi=mask_row["roi"],
        image=as_read_back(series_row["volume_path"], volumes),
        mask=as_read_back(mask_row["mask_path"], volumes),
        data_bits=png_bits(series_row.get("units")) if str(series_row["series_uid"]).startswith("file-") else None,
        source=str(series_row.get("source_path") or ""),
    )
    try:
        if settings.ultrasound_candidate_features and mask_row.get("source_kind") == SEEDED_ULTRASOUND:
            extractor = extract_candidate_average
        else:
            extractor = extract
        rows, diagnostics = extractor(
            target, settings.params[target.modality], max_grey_levels=settings.max_grey_levels
        )
    except Exception as exc:  # noqa: BLE001 - say which volume and mask, the pool loses the traceback
        raise ExtractionError(f"{mask_row['mask_path']} on {series_row['volume_path']}: {_describe(exc)}") from None
    diagnostic_rows = pd.DataFrame(
        [
            {"patient_id": key, "series_uid": target.series_uid, "roi": target.roi, "name": k, "value": str(v)}
            for k, v in diagnostics.items()
        ]
    )
    return rows, diagnostic_rows


# --- the batch driver, in the calling process -----------------------------------------------------------


def _stored_rows(root: DataRoot, table: str, key: str) -> pd.DataFrame:
    return Warehouse(root.warehouse).query(f"SELECT * FROM {table} WHERE patient_id = ?", [key])


def _pairs_to_extract(settings: PatientSettings, outcome: PatientOutcome) -> list[tuple[dict, dict]]:
    """(series row, mask row) of each ROI of the patient, once there is a mask and a parameter file for each."""
    masks = outcome.masks.to_dict("records") if outcome.masks is not None else []
    if not masks:
        raise ExtractionError(f"patient {outcome.key}: no ROI mask to extract features from")
    _check_params(settings, outcome.series, outcome.masks)
    series_rows = {row["series_uid"]: row for row in outcome.series.to_dict("records")}
    return [(series_rows[mask_row["series_uid"]], mask_row) for mask_row in masks]


def _check_params(settings: PatientSettings, series: pd.DataFrame, masks: pd.DataFrame) -> None:
    from radiomics_assets.features.extraction import load_extractor  # PyRadiomics: where the features are extracted

    modality = dict(zip(series.series_uid, series.modality, strict=True))
    for needed in sorted({modality[uid] for uid in masks.series_uid}):
        if needed not in settings.params:
            raise ParameterFileError(f"no parameter file for modality {needed}")
        load_extractor(settings.params[needed])


class _Batch:
    """State of one :func:`run_patients` call: outstanding tasks and the patients waiting on them."""

    def __init__(
        self, stages: frozenset[str], settings: PatientSettings, workers: int, n_patients: int, dask_scheduler: str = ""
    ):
        self.stages, self.settings, self.workers, self.n_patients = stages, settings, workers, n_patients
        self.dask_scheduler = dask_scheduler
        self._pool: Executor | None = None
        self.warehouse = Warehouse(settings.data_root.warehouse)
        self.pending: dict[Future, tuple[str, str]] = {}  # future -> (task kind, patient key)
        self.backlog: deque[tuple[Executor, str, str, tuple]] = deque()  # (executor, kind, key, (fn, *args))
        self.waiting: dict[str, PatientOutcome] = {}  # patients whose extraction tasks are running
        self.extracted: dict[str, list] = {}
        self.remaining: dict[str, int] = {}
        self.in_process_volumes: Volumes = {}  # one patient's, when its tasks run in this process

    def pool(self, tasks: int) -> Executor:
        """The executor, started on first use: the Dask cluster if configured, else a local pool with no more
        workers than tasks (none for a single task)."""
        if self._pool is None:
            self._pool = executor(
                min(self.workers, tasks), dask_scheduler=self.dask_scheduler, data_dir=self.settings.data_dir
            )
            if isinstance(self._pool, InProcessExecutor):
                from radiomics_assets.features.extraction import prepare_pyradiomics

                prepare_pyradiomics()  # the tasks run here: prepared as a worker's initialiser prepares a worker
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)

    def store_unfinished(self) -> None:
        """Interrupted (the step was cancelled, a worker died, a write failed): store the series and masks of
        patients whose extraction had not finished, so no stage that succeeded is lost."""
        for key, outcome in list(self.waiting.items()):
            del self.waiting[key]
            try:
                self.store(outcome.fail("features", "interrupted before extraction finished"))
            except Exception:  # noqa: BLE001, S110 - best effort while already failing; the original error wins
                pass

    def submit_prepare(self, key: str) -> None:
        # One patient, local pool: ingest here and keep the pool for its (series, ROI) extractions, sized to
        # their number. On a cluster every task runs on the workers (this process may not see the cores).
        # Several patients whose masks are made in this run: one task per patient does every selected stage, so its
        # extractions use the volumes and masks its worker has in memory; the patients keep the workers busy.
        if self.n_patients == 1 and not self.dask_scheduler:
            volumes = self.in_process_volumes
            self.submit(InProcessExecutor(), "prepare", key, _prepare, self.settings, key, self.stages, volumes)
        elif self.n_patients > 1 and {"roi_masks", "features"} <= self.stages:
            self.submit(
                self.pool(self.n_patients), "patient", key, _prepare_and_extract, self.settings, key, self.stages
            )
        else:
            self.submit(self.pool(self.n_patients), "prepare", key, _prepare, self.settings, key, self.stages)

    def submit(self, pool: Executor, kind: str, key: str, fn, *args) -> None:
        """Queue a task for ``pool``; it is handed over as soon as the executor has room (:meth:`drain`)."""
        self.backlog.append((pool, kind, key, (fn, *args)))
        self.drain()

    def drain(self) -> None:
        # No more tasks in flight than the executor has workers (unbounded for the local pool): Dask blames every
        # task assigned to a worker that dies (allowed-failures), so a task queued behind one that crashes its
        # worker would be failed with it.
        while self.backlog and len(self.pending) < in_flight_limit(self.backlog[0][0]):
            pool, kind, key, (fn, *args) = self.backlog.popleft()
            self.pending[pool.submit(fn, *args)] = (kind, key)

    def prepared(self, outcome: PatientOutcome) -> PatientOutcome | None:
        """Start the patient's extraction if selected; else (or if it failed) the patient is complete."""
        if outcome.failed_stage or "features" not in self.stages:
            return self.store(outcome)
        return self.start_features(outcome)

    def store(self, outcome: PatientOutcome) -> PatientOutcome:
        """Write every table the patient's successful stages produced, in one transaction (one DuckDB open per
        patient: opening the file costs more than writing a patient's rows)."""
        stop = STAGES.index(outcome.failed_stage) if outcome.failed_stage else len(STAGES)
        done = [stage for stage in STAGES[:stop] if stage in self.stages]
        frames = {}
        if "studies" in done:
            frames["series"] = outcome.series
        if "roi_masks" in done:
            frames["masks"] = outcome.masks
        if "features" in done:
            frames.update(features=outcome.features, diagnostics=outcome.diagnostics)
        if frames:
            try:
                self.warehouse.replace_patient(outcome.key, frames)
            except WarehouseBusyError as exc:  # only this patient's write waited too long; the others go on
                earlier = f" (and {outcome.failed_stage}: {outcome.error})" if outcome.error else ""
                return outcome.fail(done[0], f"{exc}{earlier}")
        outcome.done_stages.extend(done)
        return outcome

    def start_features(self, outcome: PatientOutcome) -> PatientOutcome | None:
        """Submit one extraction task per (series, ROI); returns the outcome only if it already failed.

        Series and masks not made in this run (stages not selected) are the stored ones.
        """
        if outcome.series is None:
            outcome.series = _stored_rows(self.settings.data_root, "series", outcome.key)
        if outcome.masks is None:
            outcome.masks = _stored_rows(self.settings.data_root, "masks", outcome.key)
        try:
            pairs = _pairs_to_extract(self.settings, outcome)
        except Exception as exc:  # noqa: BLE001 - reported per patient
            return self.store(outcome.fail("features", _describe(exc)))
        key = outcome.key
        self.waiting[key], self.extracted[key], self.remaining[key] = outcome, [], len(pairs)
        pool = self.pool(len(pairs) if self.n_patients == 1 else self.workers)
        # The patient's volumes stay in memory only for its extraction in this process, one patient per batch.
        in_process = self.n_patients == 1 and isinstance(pool, InProcessExecutor)
        volumes = self.in_process_volumes if in_process else None
        if not in_process:
            self.in_process_volumes.clear()
        for series_row, mask_row in pairs:
            self.submit(pool, "features", key, _extract_one, self.settings, key, series_row, mask_row, volumes)
        return None

    def features_done(self, key: str, future: Future) -> PatientOutcome | None:
        """Collect one extraction result; when the patient's last one is in, store its rows."""
        outcome = self.waiting[key]
        try:
            self.extracted[key].append(future.result())
        except Exception as exc:  # noqa: BLE001
            if outcome.failed_stage is None:
                outcome.fail("features", _describe(exc))
        self.remaining[key] -= 1
        if self.remaining[key]:
            return None
        if outcome.failed_stage is None:
            outcome.features = pd.concat([rows for rows, _ in self.extracted[key]], ignore_index=True)
            outcome.diagnostics = pd.concat([diagnostics for _, diagnostics in self.extracted[key]], ignore_index=True)
        del self.waiting[key], self.extracted[key], self.remaining[key]
        return self.store(outcome)

    def task_lost(self, kind: str, key: str, exc: Exception) -> PatientOutcome:
        """A patient task that ended without its outcome (its worker died): failed at its first selected stage."""
        first = next(stage for stage in STAGES if stage in self.stages)
        problem = _describe(exc)
        if kind == "patient":  # one task did every stage: which one the worker died in is not known
            problem = (
                f"worker lost during the patient's ingest, masks or extraction; nothing of this run stored: {problem}"
            )
        return PatientOutcome(key).fail(first, problem)

    def finished(self) -> Iterator[PatientOutcome]:
        """Outcomes in the order the patients finish, until no task is left."""
        while self.pending or self.backlog:
            if not self.pending:  # every worker of the cluster is gone (restarting): wait for one to come back
                time.sleep(0.5)
                self.drain()
                continue
            done, _ = wait(self.pending, return_when=FIRST_COMPLETED)
            for future in done:
                kind, key = self.pending.pop(future)
                self.drain()
                if kind == "features":
                    outcome = self.features_done(key, future)
                else:
                    try:
                        result = future.result()
                    except Exception as exc:  # noqa: BLE001 - e.g. a worker killed by the OS
                        outcome = self.task_lost(kind, key, exc)
                    else:
                        outcome = self.store(result) if kind == "patient" else self.prepared(result)
                if outcome is not None:
                    yield outcome


def run_patients(
    keys: list[str],
    stages: set[str],
    settings: PatientSettings,
    workers: int | None = None,
    *,
    dask_scheduler: str = "",
) -> Iterator[PatientOutcome]:
    """Run ``stages`` (a subset of :data:`STAGES`) for every patient in ``keys``; yields each outcome.

    A patient's rows are stored in one transaction once its selected stages have run: those of every stage
    that succeeded (a failed stage stores nothing, the stages before it are stored). ``workers`` defaults to the
    number of usable cores; no worker process is started when there is a single task. ``dask_scheduler``
    (default ``$RADIOMICS_DASK_SCHEDULER``) runs the tasks on that Dask cluster instead of local processes.
    """
    stages = frozenset(stages)
    batch = _Batch(stages, settings, resolve_workers(workers or 0), len(keys), resolve_dask_scheduler(dask_scheduler))
    try:
        for key in keys:
            if stages & {"studies", "roi_masks"}:
                batch.submit_prepare(key)
                continue
            failed = batch.start_features(PatientOutcome(key))
            if failed is not None:
                yield failed
        yield from batch.finished()
    finally:
        batch.store_unfinished()
        batch.close()
