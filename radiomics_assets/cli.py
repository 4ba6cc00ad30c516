"""``radiomics-assets``: synthesise a cohort, run the whole graph headless, or do both as a demo."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from radiomics_assets.paths import DATA_DIR_ENV, default_data_dir


def _data_dir(args) -> Path:
    path = Path(args.data_dir).resolve() if args.data_dir else default_data_dir()
    os.environ[DATA_DIR_ENV] = str(path)  # the code location reads the same root
    return path


def step_failure_messages(result) -> list[str]:
    """The domain error of each failed step (Dagster wraps it in errors of its own)."""
    messages = []
    for event in result.all_events:
        if event.is_step_failure:
            error = event.event_specific_data.error
            while error.cause is not None and error.cls_name.startswith("Dagster"):
                error = error.cause
            messages.append(f"{event.step_key}: {error.message.strip()}")
    return messages


def cmd_synth(args) -> int:
    from radiomics_assets.synth import SynthConfig, write_cohort

    root = _data_dir(args)
    config = SynthConfig(n_patients=args.patients, seed=args.seed, effect_size=args.effect_size, noise=args.noise)
    ids = write_cohort(config, root)
    print(f"wrote {len(ids)} synthetic patients to {root / 'inbox'} and labels to {root / 'labels.csv'}")
    return 0


def cmd_run(args) -> int:
    root = _data_dir(args)
    home = Path(os.environ.setdefault("DAGSTER_HOME", str(root / ".dagster")))
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "dagster.yaml").exists():
        shutil.copy(Path(__file__).with_name("dagster_instance.yaml"), home / "dagster.yaml")
    from dagster import DagsterInstance

    from radiomics_assets.definitions import defs, patients
    from radiomics_assets.dicom_series import scan_inbox
    from radiomics_assets.file_inputs import scan_file_pairs
    from radiomics_assets.paths import DataRoot

    instance = DagsterInstance.get()
    scan = scan_inbox(DataRoot(root).inbox)
    pairs, incomplete = scan_file_pairs(DataRoot(root).inbox)
    used = {path for pair in pairs.values() for path in pair.paths}
    for path, why in {**scan.ignored, **incomplete}.items():
        if path not in used:
            print(f"note: ignored {path.relative_to(root)}: {why.split(': ', 1)[-1]}")
    keys = sorted(set(scan.patients) | set(pairs))
    instance.add_dynamic_partitions(patients.name, keys)
    print(f"{len(keys)} patients registered; materialising their partitions")
    ingest = defs.resolve_job_def("ingest_patient")
    failed = []
    for key in keys:
        result = ingest.execute_in_process(partition_key=key, instance=instance, raise_on_error=False)
        if not result.success:
            failed.append(key)
            print(f"FAILED {key}: {' | '.join(step_failure_messages(result))}", file=sys.stderr)
    cohort = defs.resolve_job_def("retrain_cohort").execute_in_process(instance=instance, raise_on_error=False)
    if not cohort.success:
        print(f"FAILED cohort assets: {' | '.join(step_failure_messages(cohort))}", file=sys.stderr)
    else:
        print(f"report: {root / 'reports' / 'report.html'}\nmetrics: {root / 'reports' / 'metrics.json'}")
    print(f"features: {root / 'radiomics.duckdb'} (table 'features')")
    return 1 if failed or not cohort.success else 0


def cmd_demo(args) -> int:
    root = _data_dir(args)
    if (root / "inbox").exists() and any((root / "inbox").iterdir()):
        print(f"{root / 'inbox'} already holds studies: running on them without synthesising again")
    else:
        cmd_synth(args)
    code = cmd_run(args)
    print(
        "\nOpen the UI on the same data:\n"
        f"  RADIOMICS_DATA_DIR={root} ./dev ui\n"
        "then browse http://127.0.0.1:3000"
    )
    return code


def cmd_labels_from_folders(args) -> int:
    """Write labels.csv from the class folder (benign/malignant) of each PNG image/mask pair in the inbox."""
    from radiomics_assets.file_inputs import labels_from_folders
    from radiomics_assets.paths import DataRoot

    root = DataRoot(_data_dir(args))
    table, notes = labels_from_folders(root.inbox, tuple(args.classes))
    for note in notes:
        print(f"note: {note}")
    if table.empty:
        print(f"no image in a class folder {args.classes} under {root.inbox}", file=sys.stderr)
        return 1
    out = Path(args.output) if args.output else root.labels_csv
    table.to_csv(out, index=False)
    print(f"wrote {len(table)} labels ({table.label.value_counts().to_dict()}) to {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="radiomics-assets", description=__doc__)
    parser.add_argument("--data-dir", help=f"data root (default ${DATA_DIR_ENV} or ./data)")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, func, help_ in (("synth", cmd_synth, "write a synthetic DICOM cohort into the inbox"),
                              ("run", cmd_run, "materialise every patient in the inbox and the cohort assets"),
                              ("demo", cmd_demo, "synth + run on a fresh data directory")):  # fmt: skip
        p = sub.add_parser(name, help=help_)
        p.set_defaults(func=func)
        if name != "run":
            p.add_argument("--patients", type=int, default=30)
            p.add_argument("--seed", type=int, default=7)
            p.add_argument("--effect-size", type=float, default=1.0)
            p.add_argument("--noise", type=float, default=1.0)
    p = sub.add_parser("labels-from-folders", help="write labels.csv from class folder names (BUSI layout)")
    p.set_defaults(func=cmd_labels_from_folders)
    p.add_argument("--classes", nargs=2, default=["benign", "malignant"], help="the two class folder names")
    p.add_argument("--output", help="where to write (default <data root>/labels.csv)")
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
