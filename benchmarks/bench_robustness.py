"""Benchmark: what the feature robustness stage costs per patient and how its ICCs are distributed.

What is measured
----------------
A cohort is ingested, masked and extracted by the patient pipeline (``batch.run_patients``) into a temporary
data root; then every stored (series, ROI) is perturbed and re-extracted exactly as the ``feature_robustness``
asset does (``features.perturbations.perturb_cohort`` on the worker pool), and the ICC of every feature is computed
over all patients with ``modelling.feature_icc.icc_by_feature``. Printed: the wall time of the perturbation stage
per patient, the ICC quartiles, how many features reach ICC 0.75 and 0.9, the median ICC per feature class and
per perturbation kind (ICC over ``original`` plus that kind's perturbations only), the least robust features and,
when the cohort has labels, the ICC of the 10 features with the strongest univariate AUC (does a threshold drop
the signal?).

With ``--workers 1`` everything runs in this process and its CPU time is printed too (a figure that does not
depend on what else the machine is running).

Cohorts: the synthetic CT cohort (``radiomics_assets.synth``, real DICOM + RTSTRUCT, CT parameter file), or with
``--busi`` the BUSI ultrasound sample (2D PNG images + masks, linked into the temporary inbox, not copied; the
``normal`` images have no lesion and are skipped by ingest), or with ``--dicom`` a folder of DICOM patients such as
the sarcoma sample (CT, MR and PET per patient, each with its own parameter file; linked, not copied).

How to run
----------
    .venv/bin/python benchmarks/bench_robustness.py --patients 20 --repetitions 3
    .venv/bin/python benchmarks/bench_robustness.py --busi ../shared/data/busi_sample --repetitions 3
    .venv/bin/python benchmarks/bench_robustness.py --dicom ../shared/data/sarcoma/dicom --repetitions 3
    .venv/bin/python benchmarks/bench_robustness.py --patients 6 --workers 1     # CPU cost per extraction
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from radiomics_assets.batch import resolve_workers, run_patients
from radiomics_assets.batch.executors import executor
from radiomics_assets.defs.resources import RadiomicsConfig
from radiomics_assets.features import perturbations
from radiomics_assets.ingest.dicom_headers import scan_inbox
from radiomics_assets.ingest.file_pairs import labels_from_folders, scan_file_pairs
from radiomics_assets.paths import DataRoot
from radiomics_assets.synth import SynthConfig, write_cohort
from radiomics_assets.warehouse import Warehouse


def prepare_cohort(root: Path, args: argparse.Namespace) -> list[str]:
    """Write or link the cohort's inbox and run the patient pipeline; returns the keys that succeeded."""
    if args.busi or args.dicom:
        (root / "inbox").mkdir(parents=True)
        for folder in sorted(Path(args.busi or args.dicom).resolve().iterdir()):
            if folder.is_dir():
                (root / "inbox" / folder.name).symlink_to(folder, target_is_directory=True)
    if args.busi:
        keys = sorted(scan_file_pairs(root / "inbox")[0])
        labels_from_folders(root / "inbox")[0].to_csv(root / "labels.csv", index=False)
    elif args.dicom:
        keys = sorted(scan_inbox(root / "inbox").patients)
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
    modality = icc.index.str.split("__").str[0]
    if modality.nunique() > 1:
        by_modality = icc.groupby(modality).agg(["count", "median", lambda v: int((v >= 0.75).sum())])
        print("\nper modality (features, median ICC, ICC >= 0.75):")
        print(by_modality.to_string(float_format=lambda v: f"{v:.3f}"))
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


def signal_summary(root: Path, icc: pd.Series, warehouse: Warehouse) -> None:
    """Does a threshold drop the features that carry the outcome? Univariate AUC of the 10 strongest, with ICC."""
    if not (root / "labels.csv").exists():
        return
    from sklearn.metrics import roc_auc_score

    from radiomics_assets.modelling.matrix import load_labels, wide_matrix

    labels = load_labels(DataRoot(root)).set_index("patient_id").label
    wide = wide_matrix(warehouse.query("SELECT * FROM features")).join(labels, how="inner")
    if wide.label.nunique() != 2:
        return
    auc = pd.Series({c: roc_auc_score(wide.label, wide[c]) for c in icc.index if wide[c].nunique() > 1})
    strength = (auc - 0.5).abs().sort_values(ascending=False).head(10)
    top = pd.DataFrame({"auc": auc[strength.index], "icc": icc[strength.index]})
    print("\n10 features with the strongest univariate AUC (all patients) and their ICC:")
    print(top.to_string(float_format=lambda v: f"{v:.3f}"))
    for level in (0.75, 0.9):
        print(f"  of these, ICC >= {level}: {int((top.icc >= level).sum())}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patients", type=int, default=20, help="synthetic cohort size (default 20)")
    parser.add_argument("--seed", type=int, default=7, help="seed of the synthetic cohort and the perturbations")
    parser.add_argument("--repetitions", type=int, default=3, help="robustness_perturbations (default 3)")
    parser.add_argument("--workers", type=int, default=0, help="worker processes (default: one per core)")
    parser.add_argument("--busi", type=Path, help="BUSI-layout folder (benign/, malignant/, normal/) instead")
    parser.add_argument("--dicom", type=Path, help="folder of DICOM patients (e.g. the sarcoma sample) instead")
    parser.add_argument("--data-dir", type=Path, help="empty working folder (default: a new temporary folder)")
    args = parser.parse_args(argv)
    from radiomics_assets.modelling.feature_icc import icc_by_feature

    root = args.data_dir or Path(tempfile.mkdtemp(prefix="bench_robustness_"))
    print(f"data root: {root}", flush=True)
    keys = prepare_cohort(root, args)
    warehouse = Warehouse(root / "radiomics.duckdb")
    series, masks = warehouse.query("SELECT * FROM series"), warehouse.query("SELECT * FROM masks")
    masks = masks[masks.patient_id.isin(keys)]
    tasks = perturbations.cohort_tasks(series, masks, RadiomicsConfig(data_dir=str(root)).params())
    settings = perturbations.PerturbationSettings(repetitions=args.repetitions, seed=args.seed)
    workers = min(resolve_workers(args.workers), len(tasks))
    started, cpu_started = time.perf_counter(), time.process_time()
    with executor(workers) as pool:
        rows, failures = perturbations.perturb_cohort(tasks, settings, pool)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    n_patients = rows.patient_id.nunique()
    print(
        f"\nperturbation stage: {n_patients} patients ({len(tasks)} ROIs), {len(settings.names()) - 1} perturbations "
        f"per ROI, {workers} workers: {seconds:.1f} s = {seconds / max(len(tasks), 1):.2f} s per ROI "
        f"({seconds / max(len(tasks), 1) / len(settings.names()):.3f} s per extraction)"
    )
    if workers == 1:  # all the work ran in this process, so its CPU time is the stage's CPU cost
        print(f"  CPU {cpu:.1f} s = {cpu / max(len(tasks), 1) / len(settings.names()):.3f} s per extraction")
    for failure in failures.itertuples():
        print(f"  failed {failure.patient_id}: {failure.error}")
    icc = icc_summary(rows, icc_by_feature)
    signal_summary(root, icc, warehouse)
    return 0


if __name__ == "__main__":
    sys.exit(main())
