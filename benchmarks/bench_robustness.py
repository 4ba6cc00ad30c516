"""Benchmark: what the feature robustness stage costs per patient and how its ICCs are distributed.

What is measured
----------------
A cohort is ingested, masked and extracted by the patient pipeline (``batch.run_patients``) into a temporary
data root; then every stored (series, ROI) is perturbed and re-extracted exactly as the ``feature_robustness``
asset does (``features.robustness.perturb_cohort`` on the worker pool), and the ICC of every feature is computed
over all patients with ``modelling.robustness.icc_by_feature``. Printed: the wall time of the perturbation stage
per patient, the ICC quartiles, how many features reach ICC 0.75 and 0.9, the median ICC per feature class and
per perturbation kind (ICC over ``original`` plus that kind's perturbations only), and the least robust features.

Cohorts: the synthetic CT cohort (``radiomics_assets.synth``, real DICOM + RTSTRUCT, CT parameter file), or with
``--busi`` the BUSI ultrasound sample (2D PNG images + masks, linked into the temporary inbox, not copied; the
``normal`` images have no lesion and are skipped by ingest).

How to run
----------
    .venv/bin/python benchmarks/bench_robustness.py --patients 20 --repetitions 3
    .venv/bin/python benchmarks/bench_robustness.py --busi ../shared/data/busi_sample --repetitions 3
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from radiomics_assets.batch import resolve_workers, run_patients
from radiomics_assets.batch.workers import executor
from radiomics_assets.defs.resources import RadiomicsConfig
from radiomics_assets.features import robustness
from radiomics_assets.ingest.file_pairs import scan_file_pairs
from radiomics_assets.synth import SynthConfig, write_cohort
from radiomics_assets.warehouse import Warehouse


def prepare_cohort(root: Path, args: argparse.Namespace) -> list[str]:
    """Write or link the cohort's inbox and run the patient pipeline; returns the keys that succeeded."""
    if args.busi:
        (root / "inbox").mkdir(parents=True)
        for folder in sorted(Path(args.busi).resolve().iterdir()):
            if folder.is_dir():
                (root / "inbox" / folder.name).symlink_to(folder, target_is_directory=True)
        keys = sorted(scan_file_pairs(root / "inbox")[0])
    else:
        config = SynthConfig(n_patients=args.patients, seed=args.seed)
        keys = write_cohort(config, root)
    settings = RadiomicsConfig(data_dir=str(root), workers=args.workers).patient_settings()
    started = time.perf_counter()
    outcomes = list(run_patients(keys, {"studies", "roi_masks", "features"}, settings, workers=args.workers))
    print(f"patient pipeline: {len(keys)} patients in {time.perf_counter() - started:.1f} s", flush=True)
    for outcome in outcomes:
        if outcome.failed_stage:
            print(f"  failed {outcome.key} ({outcome.failed_stage}): {outcome.error}")
    return [o.key for o in outcomes if o.failed_stage is None]


def icc_summary(rows: pd.DataFrame, icc_by_feature) -> pd.Series:
    icc = icc_by_feature(rows)
    print(f"\nICC over all perturbations, {len(icc)} features:")
    print("  quartiles (25/50/75 %): " + ", ".join(f"{q:.3f}" for q in icc.quantile([0.25, 0.5, 0.75])))
    print(f"  min {icc.min():.3f}, max {icc.max():.3f}")
    for level in (0.5, 0.75, 0.9):
        print(f"  ICC >= {level}: {int((icc >= level).sum())} of {len(icc)}")
    by_class = icc.groupby(icc.index.str.split("__").str[3]).agg(["count", "median", "min"])
    print("\nper feature class (median, min ICC):")
    print(by_class.to_string(float_format=lambda v: f"{v:.3f}"))
    kinds = rows.perturbation.str.replace(r"_\d+$", "", regex=True)
    print("\nmedian ICC per perturbation kind (original + that kind only):")
    for kind in ("erode", "dilate", "contour", "noise"):
        subset = rows[(kinds == "original") | (kinds == kind)]
        print(f"  {kind:8s} {icc_by_feature(subset).median():.3f}")
    print("\nleast robust 10:")
    print(icc.sort_values().head(10).to_string(float_format=lambda v: f"{v:.3f}"))
    return icc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patients", type=int, default=20, help="synthetic cohort size (default 20)")
    parser.add_argument("--seed", type=int, default=7, help="seed of the synthetic cohort and the perturbations")
    parser.add_argument("--repetitions", type=int, default=3, help="robustness_perturbations (default 3)")
    parser.add_argument("--workers", type=int, default=0, help="worker processes (default: one per core)")
    parser.add_argument("--busi", type=Path, help="BUSI-layout folder (benign/, malignant/, normal/) instead")
    parser.add_argument("--data-dir", type=Path, help="empty working folder (default: a new temporary folder)")
    args = parser.parse_args(argv)
    from radiomics_assets.modelling.robustness import icc_by_feature

    root = args.data_dir or Path(tempfile.mkdtemp(prefix="bench_robustness_"))
    print(f"data root: {root}", flush=True)
    keys = prepare_cohort(root, args)
    warehouse = Warehouse(root / "radiomics.duckdb")
    series, masks = warehouse.query("SELECT * FROM series"), warehouse.query("SELECT * FROM masks")
    masks = masks[masks.patient_id.isin(keys)]
    tasks = robustness.cohort_tasks(series, masks, RadiomicsConfig(data_dir=str(root)).params())
    settings = robustness.PerturbationSettings(repetitions=args.repetitions, seed=args.seed)
    workers = min(resolve_workers(args.workers), len(tasks))
    started = time.perf_counter()
    with executor(workers) as pool:
        rows, failures = robustness.perturb_cohort(tasks, settings, pool)
    seconds = time.perf_counter() - started
    n_patients = rows.patient_id.nunique()
    print(
        f"\nperturbation stage: {n_patients} patients ({len(tasks)} ROIs), {len(settings.names()) - 1} perturbations "
        f"per ROI, {workers} workers: {seconds:.1f} s = {seconds / max(len(tasks), 1):.2f} s per ROI "
        f"({seconds / max(len(tasks), 1) / len(settings.names()):.3f} s per extraction)"
    )
    for failure in failures.itertuples():
        print(f"  failed {failure.patient_id}: {failure.error}")
    icc_summary(rows, icc_by_feature)
    return 0


if __name__ == "__main__":
    sys.exit(main())
