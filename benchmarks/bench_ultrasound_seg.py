"""Benchmark: the seeded ultrasound segmentation (``auto_segmentation: ultrasound``) against the BUSI ground truth,
and what it does to the classifier.

What is measured
----------------
1. Segmentation: every benign/malignant image of the BUSI sample (``/work/shared/data/busi_sample``; ``normal``
   images have no lesion and are skipped) is segmented by ``masks.autoseg.segment_lesion`` from one seed, the
   maximum of the Euclidean distance transform of its ground-truth mask (the point deepest inside the lesion,
   standing in for a user's click). Dice and the Hausdorff distance (pixels; BUSI has no pixel spacing) against
   the ground truth (its mask files merged by OR, as the pipeline does); median and quartiles are printed, and
   the number of misses (Dice < 0.5).
2. Classifier: two temporary data roots, run headless with ``radiomics-assets run`` (the real pipeline: sensor
   index, manifests, Dagster runs, PyRadiomics, nested CV): one with the ground-truth mask files, one with the
   images alone plus ``seeds.csv`` and ``RADIOMICS_AUTO_SEGMENTATION=ultrasound``. Both get the same
   ``labels.csv``. The nested-CV AUC of each is read from ``reports/metrics.json``; the Dice of the masks the
   seeded run stored (table ``masks``) is printed too.

How to run
----------
    .venv/bin/python benchmarks/bench_ultrasound_seg.py                  # both parts
    .venv/bin/python benchmarks/bench_ultrasound_seg.py --segmentation-only
    .venv/bin/python benchmarks/bench_ultrasound_seg.py --keep /tmp/busi_bench   # keep the two data roots
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from radiomics_assets.ingest.file_pairs import png_array, read_pair_image, scan_file_pairs
from radiomics_assets.masks.autoseg import AutoSegmentation, Seed, segment_lesion
from radiomics_assets.masks.ultrasound import (
    BACKGROUND_RING_FRACTIONS,
    GRADIENT_SIGMAS_PX,
    MEDIAN_RADIUS_PX,
    SEED_MARKER_RADII_PX,
)

BUSI = Path(__file__).resolve().parents[2] / "shared" / "data" / "busi_sample"
# The sample holds one Doppler image (malignant (196).png), which the pipeline refuses by default; the figures in
# the README use its luma, as they did before colour images were detected. Set here, so the runs inherit it.
os.environ.setdefault("RADIOMICS_COLOUR_IMAGES", "luminance")
CLASSES = ("benign", "malignant")


def ground_truth(pair) -> np.ndarray:
    truth = np.zeros(png_array(pair.image, "image").shape, dtype=bool)
    for path in pair.masks:
        truth |= png_array(path, "mask") > 0
    return truth


def deepest_point(truth: np.ndarray) -> tuple[int, int]:
    """(column, row) of the maximum of the distance transform: the pixel farthest from the lesion edge."""
    row, column = np.unravel_index(np.argmax(ndimage.distance_transform_edt(truth)), truth.shape)
    return int(column), int(row)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def hausdorff_px(a: np.ndarray, b: np.ndarray) -> float:
    measure = sitk.HausdorffDistanceImageFilter()
    measure.Execute(sitk.GetImageFromArray(a.astype(np.uint8)), sitk.GetImageFromArray(b.astype(np.uint8)))
    return measure.GetHausdorffDistance()


def quartiles(values) -> str:
    q1, median, q3 = np.percentile(values, [25, 50, 75])
    return f"median {median:.3f} (quartiles {q1:.3f}-{q3:.3f}, min {np.min(values):.3f}, n={len(values)})"


def lesion_cases(source: Path):
    pairs, _ = scan_file_pairs(source)
    return [(key, pair) for key, pair in sorted(pairs.items()) if pair.image.parent.name in CLASSES]


def measure_segmentation(cases) -> dict[str, tuple[int, int]]:
    settings = AutoSegmentation(method="ultrasound")
    dices, distances, seeds = [], [], {}
    started = time.perf_counter()
    for key, pair in cases:
        truth = ground_truth(pair)
        column, row = deepest_point(truth)
        seeds[key] = (column, row)
        image = read_pair_image(pair)
        mask = segment_lesion(image, settings, Seed(None, "", "benchmark", (column, row)), key)
        found = sitk.GetArrayFromImage(mask)[0] > 0
        dices.append(dice(found, truth))
        distances.append(hausdorff_px(found, truth))
    elapsed = time.perf_counter() - started
    print(
        f"segmentation parameters: median radius {MEDIAN_RADIUS_PX} px, gradient sigmas {GRADIENT_SIGMAS_PX} px, "
        f"seed marker radii {SEED_MARKER_RADII_PX} px, background rings at {BACKGROUND_RING_FRACTIONS} of the "
        "shorter side; the candidate of highest surround contrast kept (fixed for every image)"
    )
    print(f"Dice:      {quartiles(dices)}")
    print(f"Hausdorff: {quartiles(distances).replace('.000', '')} px")
    print(f"Dice < 0.5 on {sum(d < 0.5 for d in dices)} of {len(dices)} images; {elapsed / len(cases):.2f} s per image")
    return seeds


def write_root(root: Path, cases, seeds: dict[str, tuple[int, int]] | None) -> None:
    """A data root with the images (and their mask files unless ``seeds`` is given), labels.csv and seeds.csv."""
    for _key, pair in cases:
        folder = root / "inbox" / pair.image.parent.name
        folder.mkdir(parents=True, exist_ok=True)
        for path in [pair.image] if seeds is not None else pair.paths:
            os.symlink(path, folder / path.name)
    labels = ["patient_id,label", *(f"{key},{pair.image.parent.name}" for key, pair in cases)]
    (root / "labels.csv").write_text("\n".join(labels) + "\n")
    if seeds is not None:
        rows = ["patient_id,x,y,z", *(f"{key},{x},{y}," for key, (x, y) in seeds.items())]
        (root / "seeds.csv").write_text("\n".join(rows) + "\n")


def run_pipeline(root: Path, extra_env: dict[str, str]) -> dict:
    env = {**os.environ, "RADIOMICS_DATA_DIR": str(root), "DAGSTER_HOME": str(root / ".dagster"), **extra_env}
    cli = Path(sys.executable).with_name("radiomics-assets")
    started = time.perf_counter()
    done = subprocess.run([str(cli), "run"], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        print(done.stdout[-3000:], done.stderr[-3000:], sep="\n")
        raise SystemExit(f"radiomics-assets run failed on {root}")
    metrics = json.loads((root / "reports" / "metrics.json").read_text())
    metrics["_seconds"] = time.perf_counter() - started
    return metrics


def stored_mask_dice(root: Path, cases) -> list[float]:
    truths = {key: ground_truth(pair) for key, pair in cases}
    with duckdb.connect(str(root / "radiomics.duckdb"), read_only=True) as con:
        rows = con.execute("SELECT patient_id, mask_path, source_kind FROM masks").fetchall()
    assert {kind for _, _, kind in rows} == {"auto:ultrasound"}, "the seeded run stored masks of another kind"
    return [dice(sitk.GetArrayFromImage(sitk.ReadImage(path))[0] > 0, truths[key]) for key, path, _ in rows]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, default=BUSI, help="BUSI-layout folder (default the shared sample)")
    parser.add_argument("--segmentation-only", action="store_true")
    parser.add_argument("--keep", type=Path, help="write the two data roots here and keep them")
    args = parser.parse_args()
    if not args.source.is_dir():
        print(f"no BUSI sample at {args.source}", file=sys.stderr)
        return 1
    cases = lesion_cases(args.source)
    print(f"{len(cases)} benign/malignant images from {args.source}")
    seeds = measure_segmentation(cases)
    if args.segmentation_only:
        return 0
    base = args.keep or Path(tempfile.mkdtemp(prefix="busi_bench_"))
    try:
        results = {}
        for name, case_seeds, env in (
            ("ground-truth masks", None, {"RADIOMICS_AUTO_SEGMENTATION": ""}),
            ("seeded masks", seeds, {"RADIOMICS_AUTO_SEGMENTATION": "ultrasound"}),
        ):
            root = base / name.split()[0]
            shutil.rmtree(root, ignore_errors=True)
            root.mkdir(parents=True)
            write_root(root, cases, case_seeds)
            results[name] = run_pipeline(root, env)
            m = results[name]
            print(
                f"{name:>18}: nested-CV AUC {m['auc']:.3f} (95 % CI {m['auc_ci_low']:.3f}-{m['auc_ci_high']:.3f}; "
                f"per repeat {', '.join(f'{a:.3f}' for a in m['auc_per_repeat'])}), model {m['model']}, "
                f"{m['n_patients']} patients, run {m['_seconds']:.0f} s"
            )
        print(f"stored seeded masks vs ground truth, Dice: {quartiles(stored_mask_dice(base / 'seeded', cases))}")
        gap = results["seeded masks"]["auc"] - results["ground-truth masks"]["auc"]
        print(f"AUC seeded - ground truth: {gap:+.3f}")
    finally:
        if args.keep is None:
            shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
