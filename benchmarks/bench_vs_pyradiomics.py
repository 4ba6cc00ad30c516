"""Benchmark: PyRadiomics' own batch CLI versus the radiomics_assets pipeline, on the same cases.

What is measured
----------------
(a) ``pyradiomics batch.csv --jobs N --param ct.yaml -o out.csv -f csv`` on NIfTI image/mask pairs.
    The DICOM -> NIfTI conversion that produces those pairs (done with the project's own readers:
    ``scan_inbox``, ``read_series``, ``read_structure_set``, ``select_rois("GTV.*")``, ``rasterise``)
    is NOT part of (a)'s timing.
(b) ``radiomics-assets --data-dir DIR run``: the whole pipeline headless, from DICOM in the inbox to the
    DuckDB ``features`` table (it also materialises the cohort assets: labels, matrix, model, report).
    It runs the partitions one after another in one process (no ``--jobs``).

Both use ``radiomics_assets/params/ct.yaml``. For each run the script reports wall time, CPU time
(user + system) of the child process tree as the delta of ``getrusage(RUSAGE_CHILDREN)`` around the run,
and peak RSS. Peak RSS is ``ru_maxrss`` of the rusage that ``wait4`` returns for that one child, i.e. the
largest resident set of any single process in its tree (not a sum over concurrent workers);
``RUSAGE_CHILDREN``'s own ``ru_maxrss`` is a maximum over every child ever waited for, so it cannot tell
two runs apart.

It also times pure extraction: ``radiomics_assets.features.extract`` called in this process, sequentially,
on the same NIfTI pairs (images loaded beforehand). Orchestration overhead per partition is
``(pipeline wall - pure extraction) / K``: DICOM reading, mask rasterising, NIfTI and DuckDB writes,
Dagster bookkeeping, interpreter start-up and the cohort job, spread over the K patients.

Finally it checks that (a) and (b) agree: the maximum relative difference over the features both produced.

How to run
----------
    .venv/bin/python benchmarks/bench_vs_pyradiomics.py --patients 6
    .venv/bin/python benchmarks/bench_vs_pyradiomics.py --patients 20 --jobs 2 --data-dir /tmp/bench20
    .venv/bin/python benchmarks/bench_vs_pyradiomics.py --inbox-from /path/to/dicom --data-dir /tmp/bench_real

``--data-dir`` must be empty or absent (default: a new temporary folder); everything is written under it.
``--inbox-from`` benchmarks a DICOM folder of your own instead of a synthetic cohort (it is symlinked as the
pipeline's inbox; without a ``labels.csv`` the pipeline's cohort job fails, which is reported but tolerated).
"""

from __future__ import annotations

import argparse
import csv
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pandas as pd
import SimpleITK as sitk

from radiomics_assets.dicom_series import read_series, scan_inbox
from radiomics_assets.features import PARAMS_DIR, ExtractionTarget, extract
from radiomics_assets.paths import patient_key
from radiomics_assets.rtstruct import rasterise, read_structure_set, select_rois
from radiomics_assets.synth import SynthConfig, write_cohort

PARAMS = PARAMS_DIR / "ct.yaml"
ROI_PATTERN = "GTV.*"
BIN = Path(sys.executable).parent  # the virtualenv's bin folder, holding both console scripts
KEY_COLUMNS = ["patient_id", "series_uid", "roi"]


@dataclass
class Case:
    patient_id: str  # the partition key, as the pipeline stores it
    series_uid: str
    modality: str
    roi: str
    image_path: Path
    mask_path: Path


@dataclass
class RunStats:
    wall_s: float
    cpu_s: float
    peak_rss_mib: float
    returncode: int


def _safe(text: str) -> str:
    return patient_key(text)


def convert_inbox(inbox: Path, out_dir: Path) -> list[Case]:
    """DICOM series + RTSTRUCT ROIs -> NIfTI image/mask pairs, with the project's own readers."""
    cases = []
    for key, patient in sorted(scan_inbox(inbox).patients.items()):
        images = {uid: read_series(files) for uid, files in patient.image_series.items()}
        modality = {uid: files[0].modality for uid, files in patient.image_series.items()}
        folder = out_dir / key
        folder.mkdir(parents=True, exist_ok=True)
        for rt in patient.rtstructs:
            structure_set = read_structure_set(rt.path)
            rois = select_rois(structure_set, ROI_PATTERN)
            uids = [u for u in images if u in structure_set.referenced_series_uids] or [
                u for u, files in patient.image_series.items()
                if files[0].frame_of_reference_uid == rt.frame_of_reference_uid
            ]  # fmt: skip
            if not rois or len(uids) != 1:
                print(f"  skip {rt.path}: {len(rois)} ROI(s) matching {ROI_PATTERN!r}, {len(uids)} paired series")
                continue
            uid = uids[0]
            image_path = folder / f"{_safe(uid)}.nii.gz"
            if not image_path.exists():
                sitk.WriteImage(images[uid], str(image_path), useCompression=True)
            for roi in rois:
                mask_path = folder / f"{_safe(uid)}__{_safe(roi.name)}.nii.gz"
                sitk.WriteImage(rasterise(roi, images[uid], source=rt.path), str(mask_path), useCompression=True)
                cases.append(Case(key, uid, modality[uid], roi.name, image_path, mask_path))
    return cases


def measure(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> RunStats:
    """Run ``cmd`` to completion; wall time, CPU of its process tree and its peak RSS."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)  # reaps it, so RUSAGE_CHILDREN now includes its tree
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return RunStats(wall, cpu, usage.ru_maxrss / 1024, proc.returncode)


def run_pyradiomics_cli(cases: list[Case], work: Path, jobs: int) -> tuple[RunStats, Path]:
    batch, out = work / "batch.csv", work / "out.csv"
    with open(batch, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["Image", "Mask", *KEY_COLUMNS])  # extra columns are copied to the output
        writer.writerows([c.image_path, c.mask_path, c.patient_id, c.series_uid, c.roi] for c in cases)
    cmd = [str(BIN / "pyradiomics"), str(batch), "--jobs", str(jobs), "--param", str(PARAMS),
           "-o", str(out), "-f", "csv"]  # fmt: skip
    return measure(cmd, work / "pyradiomics.log"), out


def run_pipeline(data_root: Path, work: Path) -> tuple[RunStats, Path]:
    env = {**os.environ, "DAGSTER_HOME": str(work / "dagster_home")}
    env.pop("RADIOMICS_DATA_DIR", None)
    cmd = [str(BIN / "radiomics-assets"), "--data-dir", str(data_root), "run"]
    return measure(cmd, work / "pipeline.log", env), data_root / "radiomics.duckdb"


def time_pure_extraction(cases: list[Case]) -> float:
    targets = [
        ExtractionTarget(c.patient_id, c.series_uid, c.modality, c.roi,
                         sitk.ReadImage(str(c.image_path)), sitk.ReadImage(str(c.mask_path)))
        for c in cases
    ]  # fmt: skip
    start = time.perf_counter()
    for target in targets:
        extract(target, PARAMS)
    return time.perf_counter() - start


def max_relative_difference(cli_csv: Path, warehouse: Path) -> tuple[float, str, int, int]:
    """(max relative difference, where, common features compared, features only one side has)."""
    theirs = pd.read_csv(cli_csv, dtype={c: str for c in KEY_COLUMNS})
    with duckdb.connect(str(warehouse), read_only=True) as con:
        ours = con.execute(
            "SELECT patient_id, series_uid, roi, image_type, feature_class, feature, value FROM features"
        ).df()
    ours["name"] = ours.image_type + "_" + ours.feature_class + "_" + ours.feature
    names = [c for c in theirs.columns if not c.startswith("diagnostics_") and c not in ("Image", "Mask", *KEY_COLUMNS)]
    theirs = theirs.melt(id_vars=KEY_COLUMNS, value_vars=names, var_name="name", value_name="theirs")
    both = ours.merge(theirs, on=[*KEY_COLUMNS, "name"], how="outer", indicator=True)
    common = both[both["_merge"] == "both"].copy()
    a, b = common["value"].astype(float), common["theirs"].astype(float)
    scale = pd.concat([a.abs(), b.abs()], axis=1).max(axis=1).where(lambda s: s > 0, 1.0)
    common["rel"] = (a - b).abs() / scale
    if common.empty:
        return float("nan"), "no common features", 0, len(both)
    worst = common.loc[common["rel"].idxmax()]
    unmatched = int((both["_merge"] != "both").sum())
    return float(worst["rel"]), f"{worst['name']} ({worst['patient_id']})", len(common), unmatched


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patients", type=int, default=6, help="synthetic cohort size K (default 6)")
    parser.add_argument("--data-dir", type=Path, help="empty working folder (default: a new temporary folder)")
    parser.add_argument("--jobs", type=int, default=2, help="parallel jobs for the PyRadiomics CLI (default 2)")
    parser.add_argument("--seed", type=int, default=7, help="seed of the synthetic cohort")
    parser.add_argument("--inbox-from", type=Path, help="benchmark this DICOM folder instead of a synthetic cohort")
    args = parser.parse_args(argv)

    work = (args.data_dir or Path(tempfile.mkdtemp(prefix="bench_radiomics_"))).resolve()
    if work.exists() and any(work.iterdir()):
        parser.error(f"{work} is not empty; give a new or empty --data-dir")
    data_root = work / "pipeline_data"
    data_root.mkdir(parents=True)

    if args.inbox_from:
        (data_root / "inbox").symlink_to(args.inbox_from.resolve(), target_is_directory=True)
        print(f"inbox: {args.inbox_from.resolve()} (linked)")
    else:
        write_cohort(SynthConfig(n_patients=args.patients, seed=args.seed), data_root)
        print(f"inbox: synthetic cohort, {args.patients} patients, seed {args.seed}")

    start = time.perf_counter()
    cases = convert_inbox(data_root / "inbox", work / "nifti")
    convert_s = time.perf_counter() - start
    k = len({c.patient_id for c in cases})
    if not cases:
        print("no image/mask pairs found; nothing to benchmark", file=sys.stderr)
        return 1
    if any(c.modality != "CT" for c in cases):
        print("note: non-CT series present; the pipeline uses its per-modality parameter file for them")
    print(f"work dir: {work}\nparams: {PARAMS}")
    print(f"converted {len(cases)} image/mask pair(s) of {k} patient(s) to NIfTI in {convert_s:.1f} s "
          "(excluded from (a)'s timing)")  # fmt: skip

    print(f"(a) PyRadiomics CLI, --jobs {args.jobs} ...", flush=True)
    cli, cli_csv = run_pyradiomics_cli(cases, work, args.jobs)
    print("(b) radiomics-assets run ...", flush=True)
    ours, warehouse = run_pipeline(data_root, work)
    print("pure extraction in-process ...", flush=True)
    pure_s = time_pure_extraction(cases)

    if cli.returncode != 0:
        print(f"PyRadiomics CLI exited {cli.returncode}; see {work / 'pyradiomics.log'}", file=sys.stderr)
        return 1
    if ours.returncode != 0:
        print(f"note: radiomics-assets exited {ours.returncode} (see {work / 'pipeline.log'}); "
              "comparing the features it stored")  # fmt: skip

    rows = [("(a) pyradiomics CLI, NIfTI", cli, f"--jobs {args.jobs}"), ("(b) radiomics-assets run, DICOM", ours, "1")]
    print(f"\nK = {k} patients, {len(cases)} image/mask pairs")
    print(f"{'run':<34}{'procs':>8}{'wall s':>9}{'CPU s':>9}{'peak RSS MiB':>14}")
    for name, s, procs in rows:
        print(f"{name:<34}{procs:>8}{s.wall_s:>9.1f}{s.cpu_s:>9.1f}{s.peak_rss_mib:>14.0f}")
    print(f"ratio ours/theirs: wall {ours.wall_s / cli.wall_s:.2f}x, CPU {ours.cpu_s / cli.cpu_s:.2f}x")
    print("(CPU = user+sys of the child process tree; peak RSS = largest single process in the tree)")
    print(f"pure extraction (extract() in-process, sequential): {pure_s:.1f} s, {pure_s / k:.2f} s/patient")
    print(f"orchestration overhead: ({ours.wall_s:.1f} - {pure_s:.1f}) / {k} = {(ours.wall_s - pure_s) / k:.2f} s "
          "per partition (DICOM read, masks, NIfTI/DuckDB writes, Dagster, start-up, cohort job)")  # fmt: skip

    rel, where, n_common, n_unmatched = max_relative_difference(cli_csv, warehouse)
    print(f"agreement: max relative difference {rel:.3g} over {n_common} common (case, feature) values "
          f"[worst: {where}]; {n_unmatched} value(s) only on one side")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
