"""``radiomics-assets``: synthesise a cohort, run the whole graph headless, or do both as a demo."""

from __future__ import annotations

import argparse
import dataclasses
import functools
import logging
import os
import shutil
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from radiomics_assets import environment
from radiomics_assets.paths import DATA_DIR_ENV, data_root
from radiomics_assets.terminal import PatientFailure, RunDisplay, headline_metrics


def _data_dir(args) -> Path:
    return data_root(args.data_dir).path


def _run_config(defs, root: Path) -> dict:
    """The ``radiomics`` resource of a run, passed explicitly: the one the code location built from the environment
    (``RadiomicsConfig.from_env``) with this data root. The whole config, because a partial one would reset the
    fields it leaves out to their defaults rather than to the environment's values."""
    config = defs.resources["radiomics"].model_copy(update={"data_dir": str(root)})
    return {"resources": {"radiomics": {"config": config.model_dump(mode="json")}}}


def step_failure_messages(result) -> list[str]:
    """The domain error of each failed step (Dagster wraps it in errors of its own).

    The patient step fails with one line per failed patient (``<key> <stage>: <problem>``); those lines
    are returned one by one. Other steps give ``<step>: <problem>``.
    """
    from radiomics_assets.failure_log import domain_error_message, innermost_error

    messages = []
    for event in result.all_events:
        if event.is_step_failure:
            error = innermost_error(event.event_specific_data.error)
            text = domain_error_message(error)
            if error.cls_name == "Failure":
                messages += text.splitlines()
            else:
                messages.append(f"{event.step_key}: {text}")
    return messages


def log_failed_run(root: Path, result) -> None:
    """The failed run's line in ``<data root>/logs/failures.log`` (as the run-failure sensor writes for runs the
    daemon launches; the run carries :data:`failure_log.LOGGED_BY_TAG`, so the sensor skips it), and the notify
    command of ``$RADIOMICS_FAILURE_NOTIFY_COMMAND`` if set."""
    from radiomics_assets import failure_log
    from radiomics_assets.defs.partitions import partition_range

    failures = [event for event in result.all_events if event.is_step_failure]
    errors = failure_log.run_errors((event.step_key, event.event_specific_data.error) for event in failures)
    run = result.dagster_run
    record = failure_log.run_record(
        run.run_id,
        run.job_name,
        partition_range(run.tags),
        [event.step_key for event in failures],
        errors or ["run failed"],
    )
    line = failure_log.append(root / "logs" / "failures.log", record)
    command = environment.read(environment.FAILURE_NOTIFY_COMMAND)
    if command:
        problem = failure_log.notify(command, line)
        if problem:
            print(f"warning: {problem}", file=sys.stderr)


class RunEventLog:
    """Follows the runs the CLI executes in process: every event to a log file, progress to the display.

    A listener on the instance (``add_event_listener``) sees each event of the run as it is stored, in the run's
    own thread: the materialisation of a patient's ``features`` partition marks the patient done, the batch step's
    error line (``<patient> <stage>: <problem>``) marks it failed, an unpartitioned materialisation a cohort asset
    done. Dagster's console output is silenced unless ``verbose``.
    """

    def __init__(self, path: Path, display: RunDisplay, *, verbose: bool = False):
        self.path, self.display, self.verbose = path, display, verbose
        path.parent.mkdir(parents=True, exist_ok=True)

    def follow(self, instance, run_config: dict) -> dict:
        """Keyword arguments for ``execute_in_process``: a fresh run id whose events this object follows, and
        ``run_config`` with the console logger quiet unless verbose (this object shows the run instead)."""
        run_id = str(uuid.uuid4())
        instance.add_event_listener(run_id, self.on_event)
        quiet = {} if self.verbose else {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
        return {"run_id": run_id, "run_config": {**run_config, **quiet}}

    def on_event(self, entry) -> None:
        """Called by the instance for each stored event of a followed run; never lets the run fail."""
        try:
            detail = self._show(entry)
        except Exception as exc:  # noqa: BLE001 - the display is for people; the run and its results matter more
            detail = f"(progress display failed on this event: {type(exc).__name__}: {exc})"
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(entry.timestamp))
        kind = entry.dagster_event.event_type_value if entry.is_dagster_event else "LOG"
        line = f"{stamp} {logging.getLevelName(entry.level)} {entry.step_key or '-'} {kind} {entry.message}"
        with open(self.path, "a") as log:
            log.write(f"{line}{' ' + detail if detail else ''}\n")

    def _show(self, entry) -> str:
        """Update the display from one event; returns details worth adding to its log line."""
        from dagster import DagsterEventType

        if not entry.is_dagster_event:
            if entry.level >= logging.ERROR and entry.step_key == "patient_batch":
                patient, _, rest = entry.user_message.partition(" ")
                stage, _, message = rest.partition(": ")
                self.display.patient_failed(PatientFailure(patient, stage, message))
            return ""
        event = entry.get_dagster_event()
        if event.event_type == DagsterEventType.ASSET_MATERIALIZATION:
            materialisation = event.step_materialization_data.materialization
            asset = materialisation.asset_key.to_user_string()
            if materialisation.partition is None:
                self.display.asset_done(asset)
                return ""
            if asset == "features":
                self.display.patient_done(materialisation.partition, int(materialisation.metadata["features"].value))
            return f"(partition {materialisation.partition})"
        if event.event_type == DagsterEventType.STEP_FAILURE:
            from radiomics_assets.failure_log import domain_error_message, innermost_error, with_fix

            error = event.step_failure_data.error
            message = with_fix(domain_error_message(error).replace("\n", " | "))
            if event.step_key != "patient_batch" or innermost_error(error).cls_name != "Failure":
                # (a Failure of the batch step: its failed patients were each reported by their error line)
                self.display.asset_failed(event.step_key, message, counted=event.step_key != "patient_batch")
            return message
        return ""


def partition_ranges(registered: list[str], wanted: list[str]) -> list[tuple[str, str]]:
    """(first, last) of each run of consecutive ``wanted`` keys in the instance's partition order."""
    wanted_set, ranges, start, previous = set(wanted), [], None, None
    for key in registered:
        if key in wanted_set:
            start, previous = start or key, key
        elif start is not None:
            ranges.append((start, previous))
            start = None
    if start is not None:
        ranges.append((start, previous))
    return ranges


def cmd_synth(args) -> int:
    from radiomics_assets.synth import SynthConfig, write_cohort

    root = _data_dir(args)
    config = SynthConfig(n_patients=args.patients, seed=args.seed, effect_size=args.effect_size, noise=args.noise)
    ids = write_cohort(config, root)
    print(f"wrote {len(ids)} synthetic patients to {root / 'inbox'} and labels to {root / 'labels.csv'}")
    return 0


def cmd_synth_study(args) -> int:
    """A synthetic feature study with a known signal (``synth_tables``): feature table, labels.csv, study.yaml."""
    from radiomics_assets.synth_tables import FEATURE_TABLE, SyntheticStudy, oracle_metric, write_study

    root = _data_dir(args)
    try:
        spec = SyntheticStudy(
            outcome=args.outcome,
            n_patients=args.patients,
            n_features=args.features,
            n_informative=min(3, args.features),
            effect=args.effect,
            covariates=not args.no_covariates,
            seed=args.seed,
        )
        write_study(spec, root, overwrite=args.overwrite)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    table = root / "feature_tables" / FEATURE_TABLE
    clinical = "" if args.no_covariates else " + clinical age, sex, stage (predictors: compare)"
    print(f"wrote a synthetic {args.outcome} study: {spec.n_patients} patients, {spec.n_features} features")
    print(f"  features: {table} (informative: the first {spec.n_informative}, effect {spec.effect:g})")
    print(f"  labels:   {root / 'labels.csv'}{clinical}")
    print(f"  study:    {root / 'study.yaml'}")
    print(f"{oracle_metric(spec)}")
    print(f"next:\n  radiomics-assets --data-dir {root} import-features {table}")
    print(f"  radiomics-assets --data-dir {root} run")
    return 0


def _accept_maskless(root: Path):
    """Mask-less images are patients when seeded or with automated segmentation on (as the resource decides)."""
    from radiomics_assets.masks.autoseg import maskless_images_accepted

    return maskless_images_accepted(root, environment.read(environment.AUTO_SEGMENTATION))


def cmd_run(args) -> int:
    from radiomics_assets.batch.workers import start_workers_early, worker_pool
    from radiomics_assets.dagster_home import prepare_dagster_home

    root = _data_dir(args)
    prepare_dagster_home(Path(os.environ.setdefault("DAGSTER_HOME", str(root / ".dagster"))))  # SQLite or PostgreSQL
    # After the environment is final (workers inherit it) and before any heavy import: the fork server's own imports
    # (SimpleITK, PyRadiomics, the compiled kernels) then run on the other core while this process imports.
    start_workers_early()
    from radiomics_assets.failure_log import LOGGED_BY_TAG
    from radiomics_assets.ingest.manifests import write_manifests
    from radiomics_assets.paths import DataRoot

    # The sensor's index (each header read once and cached: a second `run` reads only what is new) and a
    # manifest per patient, so each partition reads only its own files, as after the sensor. A fresh inbox
    # has thousands of headers: the workers read them while this process imports Dagster and the definitions.
    with worker_pool() as pool, ThreadPoolExecutor(1) as background:
        read_map = functools.partial(pool.map, chunksize=32)
        scanning = background.submit(
            write_manifests, DataRoot(root), read_map=read_map, accept_maskless=_accept_maskless(root)
        )
        from dagster import AssetKey, DagsterInstance

        from radiomics_assets.definitions import defs
        from radiomics_assets.defs.partitions import PARTITION_RANGE_END, PARTITION_RANGE_START, patients

        instance = DagsterInstance.get()
        snapshot = scanning.result()
    for rel, why in snapshot.ignored.items():
        print(f"note: ignored inbox/{rel}: {why.split(': ', 1)[-1]}")
    keys = sorted(snapshot.patients)
    run_config = _run_config(defs, root)
    instance.add_dynamic_partitions(patients.name, keys)
    todo = keys
    if getattr(args, "new_only", False):
        done = instance.get_materialized_partitions(AssetKey("features"))
        todo = [key for key in keys if key not in done]
    print(f"{len(keys)} patients registered; materialising {len(todo)} of them")
    display = RunDisplay()
    events = RunEventLog(root / "logs" / f"run-{time.strftime('%Y%m%d-%H%M%S')}.log", display, verbose=args.verbose)
    ingest = defs.resolve_job_def("ingest_patient")
    failed = []
    display.start_stage("patient assets", len(todo))
    # One run per contiguous range of partitions (normally one run for the whole inbox), not one per patient.
    for first, last in partition_ranges(instance.get_dynamic_partitions(patients.name), todo):
        result = ingest.execute_in_process(
            instance=instance,
            raise_on_error=False,
            tags={PARTITION_RANGE_START: first, PARTITION_RANGE_END: last, LOGGED_BY_TAG: "radiomics-assets run"},
            **events.follow(instance, run_config),
        )
        if not result.success:
            failed += step_failure_messages(result)
            log_failed_run(root, result)
    display.finish_stage()
    notes = _series_without_roi_note(root, todo)
    locations = {
        "features": f"{root / 'radiomics.duckdb'} (table 'features')",
        "Dagster event log": str(events.path),
    }
    if getattr(args, "no_cohort", False):
        display.summary(n_patients=len(todo), locations=locations, metrics=None, notes=notes)
        return 1 if failed else 0
    cohort_job = defs.resolve_job_def("retrain_cohort")
    display.start_stage("cohort assets", len(cohort_job.asset_layer.executable_asset_keys))
    cohort = cohort_job.execute_in_process(
        instance=instance,
        raise_on_error=False,
        tags={LOGGED_BY_TAG: "radiomics-assets run"},
        **events.follow(instance, run_config),
    )
    if not cohort.success:
        log_failed_run(root, cohort)
    display.finish_stage()
    metrics = None
    if cohort.success:
        locations = {
            "report": str(root / "reports" / "report.html"),
            **({"report (PDF)": str(pdf)} if (pdf := root / "reports" / "report.pdf").exists() else {}),
            "metrics": str(root / "reports" / "metrics.json"),
            **locations,
        }
        metrics = headline_metrics(root / "reports" / "metrics.json")
    display.summary(n_patients=len(todo), locations=locations, metrics=metrics, notes=notes)
    return 1 if failed or not cohort.success else 0


def _series_without_roi_note(root, patients: list[str]) -> dict[str, str]:
    """The run summary's line for stored series that got no ROI (and so no features); empty when there are none."""
    from radiomics_assets.paths import DataRoot
    from radiomics_assets.status import series_without_roi

    bare = series_without_roi(DataRoot(root), patients)
    if bare.empty:
        return {}
    shown = ", ".join(f"{r.patient_id} {r.modality}" for r in bare.head(5).itertuples())
    more = f" and {len(bare) - 5} more" if len(bare) > 5 else ""
    return {"series without an ROI (no features)": f"{len(bare)}: {shown}{more}"}


def cmd_demo(args) -> int:
    root = _data_dir(args)
    if (root / "inbox").exists() and any((root / "inbox").iterdir()):
        print(f"{root / 'inbox'} already holds studies: running on them without synthesising again")
    else:
        cmd_synth(args)
    code = cmd_run(args)
    print(f"\nOpen the UI on the same data:\n  RADIOMICS_DATA_DIR={root} ./dev ui\nthen browse http://127.0.0.1:3000")
    return code


def cmd_labels_from_folders(args) -> int:
    """Write labels.csv from the class folder (benign/malignant) of each PNG image/mask pair in the inbox."""
    from radiomics_assets.ingest.file_pairs import labels_from_folders
    from radiomics_assets.paths import DataRoot

    root = DataRoot(_data_dir(args))
    table, notes = labels_from_folders(root.inbox, tuple(args.classes), accept_maskless=_accept_maskless(root.path))
    for note in notes:
        print(f"note: {note}")
    if table.empty:
        print(f"no image in a class folder {args.classes} under {root.inbox}", file=sys.stderr)
        return 1
    out = Path(args.output) if args.output else root.labels_csv
    table.to_csv(out, index=False)
    print(f"wrote {len(table)} labels ({table.label.value_counts().to_dict()}) to {out}")
    from radiomics_assets.modelling.study import STUDY_FILE, write_study_file

    positive = args.positive or ("malignant" if "malignant" in args.classes else args.classes[-1])
    if positive not in args.classes:
        print(f"--positive {positive!r} is not one of the classes {args.classes}", file=sys.stderr)
        return 2
    study = out.parent / STUDY_FILE
    document = {"outcome": {"type": "binary", "column": "label", "positive": positive}}
    write_study_file(study, document, comment=f"written by radiomics-assets labels-from-folders: {positive} is class 1")
    print(f"wrote {study}: binary outcome, positive class {positive!r}")
    return 0


def cmd_ibsi(args) -> int:
    """IBSI-1 conformance report of PyRadiomics on the IBSI phantoms (docs/ibsi.md)."""
    from radiomics_assets.features.ibsi import PhantomDataError, default_phantom_dir, run_conformance
    from radiomics_assets.paths import DataRoot

    phantom_dir = Path(args.phantom_dir) if args.phantom_dir else default_phantom_dir()
    output = Path(args.output) if args.output else DataRoot(_data_dir(args)).reports / "ibsi_conformance.csv"
    try:
        _, summary = run_conformance(phantom_dir, output, args.configs)
    except (PhantomDataError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(summary.to_string(index=False))
    print(f"table: {output}\nrendering: {output.with_suffix('.md')}")
    return 0


def cmd_models(args) -> int:
    """Kept model versions (``list``), or make one current (``promote``: rollback or accept a blocked candidate)."""
    from radiomics_assets.modelling import registry
    from radiomics_assets.paths import DataRoot

    models_dir = DataRoot(_data_dir(args)).models
    if args.action == "promote":
        if not args.version:
            print("error: promote needs a version (see `radiomics-assets models list`)", file=sys.stderr)
            return 2
        try:
            registry.promote(models_dir, args.version)
        except ValueError as error:
            print(error, file=sys.stderr)
            return 1
    current = registry.current_version(models_dir)
    for version in registry.versions(models_dir):
        card = registry.load_card(models_dir, version)
        mark = "*" if version == current else " "
        metric, value = registry.card_metric(card)
        print(f"{mark} {version}  {card.get('model', '?'):<18} CV {metric} {value:.3f}")
    return 0


def cmd_send_exports(args) -> int:
    """C-STORE the DICOM exports (``exports/<patient>/*.dcm``) to a DICOM node."""
    from radiomics_assets.exports import send_files, stored_exports
    from radiomics_assets.paths import DataRoot

    files = stored_exports(DataRoot(_data_dir(args)), [args.patient] if args.patient else None)
    if not files:
        print("no exports to send (materialise dicom_exports with export_dicom on first)", file=sys.stderr)
        return 1
    try:
        result = send_files(files, host=args.host, port=args.port, ae_title=args.ae_title)
    except ConnectionError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for path, why in result.failed.items():
        print(f"FAILED {path.parent.name}/{path.name}: {why}", file=sys.stderr)
    print(f"sent {len(result.sent)} of {len(files)} files to {args.ae_title}@{args.host}:{args.port}")
    return 1 if result.failed else 0


def cmd_export(args) -> int:
    """The patients' DICOM-SEG and SR, written as the UI's ``dicom_exports`` does (``exports/<patient>/``, the
    same code and settings), then copied to ``--out DIR/<patient>/``."""
    from radiomics_assets.defs.resources import RadiomicsConfig
    from radiomics_assets.errors import InputError
    from radiomics_assets.exports import export_patient, exports_dir
    from radiomics_assets.failure_log import with_fix
    from radiomics_assets.paths import DataRoot, patient_key

    root = DataRoot(_data_dir(args))
    radiomics = RadiomicsConfig.from_env()
    settings = radiomics.export_settings()
    if args.deidentified:
        settings = dataclasses.replace(settings, deidentify=True)
    out = Path(args.out).resolve()
    problems = 0
    for given in args.patients:
        key = patient_key(given)
        try:
            outcome = export_patient(root, key, settings)
        except Exception as exc:  # noqa: BLE001 - one patient's failure must not stop the others
            why = str(exc) if isinstance(exc, InputError) else f"{type(exc).__name__}: {exc}"
            print(f"FAILED {with_fix(f'{key} dicom_exports: {why}')}")
            problems += 1
            continue
        if outcome.skipped:
            print(f"{key}: nothing exported: {outcome.skipped}")
            problems += 1
            continue
        target = out / key
        if target != exports_dir(root, key).resolve():
            shutil.rmtree(target, ignore_errors=True)  # a re-export replaces the patient's earlier files
            target.mkdir(parents=True)
            for path in outcome.files:
                shutil.copy2(path, target / path.name)
            if outcome.deidentified:
                (target / "deidentified").mkdir()
                for path in outcome.deidentified:
                    shutil.copy2(path, target / "deidentified" / path.name)
        left_out = f", {len(outcome.non_finite)} non-finite values left out" if outcome.non_finite else ""
        copies = f", {len(outcome.deidentified)} de-identified copies" if outcome.deidentified else ""
        print(
            f"{key}: {outcome.segmentations} SEG, {outcome.reports} SR ({outcome.measurements} measurements"
            f"{left_out}){copies} -> {target}"
        )
    return 1 if problems else 0


def cmd_status(args) -> int:
    """Each patient ok / failed (problem and fix) / no mask, the last run and the model in service."""
    from radiomics_assets.paths import DataRoot
    from radiomics_assets.status import last_run_line, patient_statuses, status_lines

    root = DataRoot(_data_dir(args))
    print("\n".join(status_lines(root, last_run_line(_recent_runs(root.path)))))
    return 1 if any(status.state == "failed" for status in patient_statuses(root)) else 0


def _recent_runs(root: Path) -> list[tuple[str, str, str, float | None]]:
    """(job, status, run id, start time) of the newest run in the data root's Dagster instance, if it has one."""
    home = Path(environment.read(environment.DAGSTER_HOME) or root / ".dagster")
    if not (home / "dagster.yaml").exists():  # no run was ever made here: do not create an instance to say so
        return []
    os.environ["DAGSTER_HOME"] = str(home)
    from dagster import DagsterInstance

    from radiomics_assets.dagster_home import PG_URL_ENV, postgres_url

    try:
        if postgres_url(os.environ):  # a PostgreSQL instance file reads the composed URL, as `run` puts it
            os.environ[PG_URL_ENV] = postgres_url(os.environ)
        with DagsterInstance.get() as instance:
            records = instance.get_run_records(limit=1)
    except Exception as exc:  # noqa: BLE001 - the patients' status does not depend on the instance being reachable
        print(f"note: the Dagster instance in {home} cannot be read ({type(exc).__name__}: {exc})", file=sys.stderr)
        return []
    return [(r.dagster_run.job_name, r.dagster_run.status.value, r.dagster_run.run_id, r.start_time) for r in records]


def _pixel_pair(text: str) -> tuple[int, int]:
    column, row = (int(v) for v in text.split(","))
    return column, row


def cmd_predict(args) -> int:
    """Score one PNG or DICOM US image with the promoted model (docs/tutorials/ultrasound.md)."""
    import json

    from radiomics_assets.errors import InputError
    from radiomics_assets.paths import DataRoot
    from radiomics_assets.predict_ultrasound import predict_image

    root = DataRoot(_data_dir(args))
    params_file = (
        args.params or environment.read(environment.PARAMS_FILE) or environment.configured_params_dir() / "us.yaml"
    )
    picture_dir = Path(args.picture_dir) if args.picture_dir else root.reports / "predictions"
    try:
        result = predict_image(
            root,
            Path(args.image),
            params_path=Path(params_file),
            seed=args.seed,
            mask_path=Path(args.mask) if args.mask else None,
            frame=args.frame,
            picture_dir=picture_dir,
        )
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result.as_dict()))
    elif result.task == "binary":
        print(
            f"probability {result.probability:.3f}, predicted label {result.predicted_label} "
            f"(threshold {result.threshold}), model version {result.model_version}\n"
            f"mask: {result.mask_source}\npicture: {result.picture}"
        )
    else:
        shown = ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in result.outputs.items())
        print(
            f"{result.task}: {shown}, model version {result.model_version}\n"
            f"mask: {result.mask_source}\npicture: {result.picture}"
        )
    return 0


def _previous_copy(path: Path) -> Path | None:
    """A hidden copy of ``path`` (mtime kept, so the folder's fingerprint is the same once it is put back)."""
    if not path.is_file():
        return None
    kept = path.with_name(f".{path.name}.previous")
    shutil.copy2(path, kept)
    return kept


def _same_file(a: Path, b: Path) -> bool:
    from radiomics_assets.ingest.feature_tables import file_sha256

    return a.resolve() == b.resolve() or file_sha256(a) == file_sha256(b)


def cmd_import_features(args) -> int:
    """Copy a feature table made elsewhere into ``<data root>/feature_tables/`` and import it as a feature source
    (docs/how-to/bring-your-own-features.md); on a refused table the folder is left as it was."""
    from radiomics_assets.errors import FileInputError
    from radiomics_assets.ingest.feature_tables import (
        ImportOptions,
        import_feature_table,
        outcome_columns,
        read_feature_table,
        sidecar_path,
        write_import_options,
    )
    from radiomics_assets.paths import DataRoot

    root = DataRoot(_data_dir(args))
    source = Path(args.file)
    destination = root.feature_tables / source.name
    # Outcome columns go to labels.csv, never into the features (also when the folder is imported again: sidecar).
    exclude = tuple(dict.fromkeys([*args.exclude, *args.outcome]))
    options = ImportOptions(id_column=args.id_column, exclude=exclude, source=args.name)
    try:
        # Validated before it is copied: a table the import refuses must not land in the folder the sensor watches.
        labels = outcome_columns(source, id_column=options.id_column, columns=args.outcome) if args.outcome else None
        read_feature_table(source, id_column=options.id_column, exclude=options.exclude)
        if labels is not None:
            _check_labels_csv(root, labels, source)
        if destination.exists() and not _same_file(source, destination) and not args.replace:
            raise FileInputError(
                f"{destination} exists and differs from {source}; fix: add --replace to import the new file in its "
                "place, or rename the file"
            )
    except FileInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    destination.parent.mkdir(parents=True, exist_ok=True)
    kept = [_previous_copy(destination), _previous_copy(sidecar_path(destination))]
    try:
        if not destination.exists() or not _same_file(source, destination):
            partial = destination.with_name(f".{destination.name}.partial")  # hidden: the sensor ignores it
            shutil.copyfile(source, partial)
            partial.replace(destination)  # whole, at once
        write_import_options(destination, options)  # the folder import (asset, sensor) reads it the same way
        result = import_feature_table(
            root, destination, id_column=options.id_column, exclude=options.exclude, source=options.source
        )
    except FileInputError as error:
        for path, previous in zip((destination, sidecar_path(destination)), kept, strict=True):
            if previous is None:
                path.unlink(missing_ok=True)
            else:
                previous.replace(path)
        print(f"error: {error}", file=sys.stderr)
        return 2
    for previous in kept:
        if previous is not None:
            previous.unlink()
    print(
        f"imported {result.source}: {result.n_patients} patients, {result.n_features} features, "
        f"{result.n_missing_values} missing values, sha256 {result.sha256[:12]} ({destination})"
    )
    for note in result.notes:
        print(f"note: {note}")
    if labels is not None:
        _write_outcome_labels(root, labels, args.outcome)
    return 0


def _outcome_by_patient(table):
    """Outcome cells by patient key, as text without surrounding spaces ("" when empty), sorted."""
    from radiomics_assets.paths import patient_key

    keyed = table.assign(patient_id=table.patient_id.map(patient_key)).set_index("patient_id").sort_index()
    return keyed.fillna("").astype(str).apply(lambda column: column.str.strip())


def _check_labels_csv(root, labels, source: Path) -> None:
    """An existing labels.csv must already hold the table's outcome for every patient of the table (other patients and
    columns may be there too); else the import is refused, since labels.csv is never overwritten."""
    from radiomics_assets.errors import FileInputError
    from radiomics_assets.modelling.study import read_table_csv

    if not root.labels_csv.is_file():
        return
    columns = [c for c in labels.columns if c != "patient_id"]
    fix = (
        f"fix: remove it to have it written from the table, or import with --exclude {' '.join(columns)} instead of "
        "--outcome and keep it as it is"
    )
    try:
        present = read_table_csv(root.labels_csv)
    except ValueError as error:  # StudyError: not readable as CSV
        raise FileInputError(f"{error}; {fix}") from None
    mine = _outcome_by_patient(labels)
    if {"patient_id", *columns} <= set(present.columns):
        theirs = _outcome_by_patient(present[["patient_id", *columns]].dropna(subset=["patient_id"]))
        if mine.index.isin(theirs.index).all() and theirs.loc[mine.index].equals(mine):
            return
    raise FileInputError(
        f"{root.labels_csv} exists and does not hold the outcome {', '.join(columns)} of {source} for every patient "
        f"as the table does; {fix}"
    )


def _write_outcome_labels(root, labels, columns: list[str]) -> None:
    """labels.csv from the table (unless it already holds the same outcome), and for one two-valued column without a
    study.yaml, the binary study naming it when the study rules tell which value is class 1 (0/1, yes/no, ...)."""
    from radiomics_assets.modelling.study import (
        STUDY_FILE,
        StudyError,
        load_outcomes,
        load_study,
        parse_study,
        write_study_file,
    )

    columns = list(dict.fromkeys(columns))
    if not root.labels_csv.is_file():
        labels.to_csv(root.labels_csv, index=False)
        empty = int(labels[columns].isna().any(axis=1).sum())
        print(
            f"wrote {root.labels_csv}: {', '.join(columns)} of {len(labels)} patients"
            + (f" ({empty} with an empty outcome: not analysed)" if empty else "")
        )
    study = root.path / STUDY_FILE
    values = labels[columns[0]].dropna()
    if not study.exists() and len(columns) == 1 and values[values != ""].nunique() == 2:
        document = {"outcome": {"type": "binary", "column": columns[0]}}
        try:
            load_outcomes(root, parse_study(document, study))
        except StudyError as error:  # e.g. 1.0/0.0: which value is class 1 is not explicit
            print(f"note: no {study} written: {error}")
            return
        write_study_file(study, document, comment=f"written by radiomics-assets import-features: {columns[0]}")
        print(f"wrote {study}: binary outcome {columns[0]!r}")
        return
    try:
        load_outcomes(root, load_study(root))
    except StudyError as error:
        print(f"note: the study does not read {', '.join(columns)} yet: {error} (docs/reference/study-yaml.md)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="radiomics-assets", description=__doc__)
    parser.add_argument("--data-dir", help=f"data root (default ${DATA_DIR_ENV} or ./data)")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, func, help_ in (
        ("synth", cmd_synth, "write a synthetic DICOM cohort into the inbox"),
        ("run", cmd_run, "materialise every patient in the inbox and the cohort assets"),
        ("demo", cmd_demo, "synth + run on a fresh data directory"),
    ):
        p = sub.add_parser(name, help=help_)
        p.set_defaults(func=func)
        if name != "run":
            p.add_argument("--patients", type=int, default=30)
            p.add_argument("--seed", type=int, default=7)
            p.add_argument("--effect-size", type=float, default=1.0)
            p.add_argument("--noise", type=float, default=1.0)
    run_parser = sub.choices["run"]
    run_parser.add_argument("--new-only", action="store_true", help="only patients whose features are not yet stored")
    run_parser.add_argument("--no-cohort", action="store_true", help="patient assets only, not the cohort assets")
    for name in ("run", "demo"):
        sub.choices[name].add_argument(
            "--verbose", action="store_true", help="Dagster's event log on the terminal too (always in logs/run-*.log)"
        )
    p = sub.add_parser(
        "synth-study",
        help="write a synthetic feature study with a known signal (feature table, labels.csv, study.yaml)",
        description="Write <data root>/feature_tables/synthetic.csv, labels.csv and study.yaml: features feat_000.. "
        "of which the first 3 carry the signal, an outcome of the chosen type and (by default) clinical columns.",
    )
    p.set_defaults(func=cmd_synth_study)
    p.add_argument("--outcome", required=True, choices=["binary", "multiclass", "continuous", "survival"])
    p.add_argument("--patients", type=int, default=200)
    p.add_argument("--features", type=int, default=100)
    p.add_argument(
        "--effect",
        type=float,
        default=1.0,
        help="radiomics signal strength (0: none; with --no-covariates a null study)",
    )
    p.add_argument("--no-covariates", action="store_true", help="no clinical columns (age, sex, stage)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace an existing labels.csv, study.yaml, feature table")
    p.add_argument("--data-dir", default=argparse.SUPPRESS, help="data root (also accepted before the command)")
    p = sub.add_parser("labels-from-folders", help="write labels.csv from class folder names (BUSI layout)")
    p.set_defaults(func=cmd_labels_from_folders)
    p.add_argument("--classes", nargs=2, default=["benign", "malignant"], help="the two class folder names")
    p.add_argument("--positive", help="the class that is 1 (default: malignant if a class, else the second class)")
    p.add_argument("--output", help="where to write (default <data root>/labels.csv; study.yaml beside it)")
    p = sub.add_parser("ibsi", help="IBSI-1 conformance table of PyRadiomics on the IBSI phantoms")
    p.set_defaults(func=cmd_ibsi)
    p.add_argument("--phantom-dir", help="the ibsi_phantom folder (default $IBSI_PHANTOM_DIR or ../shared/data/...)")
    p.add_argument("--output", help="CSV to write, .md beside it (default <data root>/reports/ibsi_conformance.csv)")
    p.add_argument("--configs", nargs="+", help="digital, A-E, B-ibsi-interp ... E-ibsi-interp (default all)")
    p = sub.add_parser("models", help="kept model versions (* marks the current one); promote one to current")
    p.set_defaults(func=cmd_models)
    p.add_argument("action", choices=["list", "promote"])
    p.add_argument("version", nargs="?", help="the version to promote (a folder name under <data root>/models/)")
    p = sub.add_parser("send-exports", help="send the DICOM exports (SEG, SR) to a DICOM node with C-STORE")
    p.set_defaults(func=cmd_send_exports)
    p.add_argument("--patient", help="one patient key (default: every patient's exports)")
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--ae-title", required=True, help="the called AE title of the node")
    p = sub.add_parser("export", help="write the patients' DICOM-SEG and SR (as the UI's dicom_exports) to a folder")
    p.set_defaults(func=cmd_export)
    p.add_argument("patients", nargs="+", metavar="PATIENT", help="patient keys (or PatientIDs)")
    p.add_argument("--out", required=True, help="folder to copy them to, one subfolder per patient")
    p.add_argument("--deidentified", action="store_true", help="also de-identified copies (as export_deidentified)")
    p.add_argument("--data-dir", default=argparse.SUPPRESS, help="data root (also accepted before the command)")
    p = sub.add_parser("status", help="each patient ok / failed (problem and fix) / no mask; last run; model")
    p.set_defaults(func=cmd_status)
    p.add_argument("--data-dir", default=argparse.SUPPRESS, help="data root (also accepted before the command)")
    p = sub.add_parser("predict", help="score one PNG or DICOM US image with the promoted model")
    p.set_defaults(func=cmd_predict)
    p.add_argument("image", help="a PNG or single-frame DICOM US image")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--seed", type=_pixel_pair, help="COLUMN,ROW of a pixel inside the lesion (0-based)")
    where.add_argument("--mask", help="a mask file on the image's grid (e.g. <id>_mask.png)")
    p.add_argument("--frame", type=int, help="frame (0-based) of a multi-frame DICOM US cine loop")
    p.add_argument("--params", help="US parameter file (default $RADIOMICS_PARAMS_FILE or <params dir>/us.yaml)")
    p.add_argument("--picture-dir", help="where <image stem>_mask.png goes (default <data root>/reports/predictions)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p = sub.add_parser(
        "import-features",
        help="import a feature table made elsewhere (CSV, .csv.gz/.gz or Parquet: an id column + numeric columns)",
        description="Copy FILE into <data root>/feature_tables/ (options in FILE.import.yaml beside it) and import it "
        "as a feature source: its columns enter the feature matrix as block TABLE__<source>.",
    )
    p.set_defaults(func=cmd_import_features)
    p.add_argument(
        "file", metavar="FILE", help="the feature table (.csv, .csv.gz, .gz or .parquet), one row per patient"
    )
    p.add_argument("--id-column", default="patient_id", help="the column of patient IDs (default patient_id)")
    p.add_argument(
        "--exclude",
        nargs="+",
        action="extend",
        default=[],
        metavar="COL",
        help="columns to leave out: names or shell patterns, e.g. Image Mask 'diagnostics_*'",
    )
    p.add_argument(
        "--outcome",
        nargs="+",
        default=[],
        metavar="COL",
        help="outcome column(s) of the table (e.g. Target): written to labels.csv with the IDs instead of being "
        "imported as features; for one two-valued column, also a binary study.yaml when there is none",
    )
    p.add_argument("--name", help="the source name (default: the file name without suffix, reduced to A-Za-z0-9_-)")
    p.add_argument("--replace", action="store_true", help="overwrite a different file of the same name in the folder")
    p.add_argument("--data-dir", default=argparse.SUPPRESS, help="data root (also accepted before the command)")
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
