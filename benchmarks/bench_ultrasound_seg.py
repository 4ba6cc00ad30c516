"""Benchmark: the seeded ultrasound segmentation (``auto_segmentation: ultrasound``) against the BUSI ground truth,
and what it does to the classifier.

What is measured
----------------
1. Segmentation: every benign/malignant image of the BUSI sample (``/work/shared/data/busi_sample``; ``normal``
   images have no lesion and are skipped) is segmented by ``masks.autoseg.segment_lesion`` from one seed, the
   maximum of the Euclidean distance transform of its ground-truth mask (the point deepest inside the lesion,
   standing in for a user's click). Dice and the Hausdorff distance (pixels; BUSI has no pixel spacing) against
   the ground truth (its mask files merged by OR, as the pipeline does); median and quartiles are printed, and
   the number of misses (Dice < 0.5) and of poor masks (Dice < 0.7). Also: how well the segmentation's own
   confidence (the contrast it records in the mask, ``masks.ultrasound.CONTRAST_KEY``, and the candidate agreement)
   ranks the masks by Dice (Spearman), and, with ``--oracle``, the Dice of the best of the candidates (chosen with
   the ground truth: the ceiling of any rule that picks among them). With ``--clicks N``, the same for N random
   clicks per image anywhere at least 3 px inside the expert outline, and N in its inner half: a user's click is
   rarely the deepest point.
2. Classifier: two temporary data roots, run headless with ``radiomics-assets run`` (the real pipeline: sensor
   index, manifests, Dagster runs, PyRadiomics, nested CV): one with the ground-truth mask files, one with the
   images alone plus ``seeds.csv`` and ``RADIOMICS_AUTO_SEGMENTATION=ultrasound``. Both get the same
   ``labels.csv``. The nested-CV AUC of each is read from ``reports/metrics.json``; the Dice of the masks the
   seeded run stored (table ``masks``) is printed too. With ``--candidate-features`` a third root is run: the
   seeded images again with ``RADIOMICS_ULTRASOUND_CANDIDATE_FEATURES=1`` (features averaged over the candidate
   outlines, ``features.candidate_average``), and the extraction time per image with and without the option is
   measured in this process on the seeded run's stored masks (one core, the two alternating image by image).
   The permutation test is off in these runs (``RADIOMICS_PERMUTATIONS=0`` unless set): it does not change the AUC.

How to run
----------
    .venv/bin/python benchmarks/bench_ultrasound_seg.py                  # both parts
    .venv/bin/python benchmarks/bench_ultrasound_seg.py --segmentation-only
    .venv/bin/python benchmarks/bench_ultrasound_seg.py --keep /tmp/busi_bench   # keep the two data roots
    .venv/bin/python benchmarks/bench_ultrasound_seg.py --segmentation-only --oracle
    .venv/bin/python benchmarks/bench_ultrasound_seg.py --segmentation-only --clicks 3   # clicks off the centre
    .venv/bin/python benchmarks/bench_ultrasound_seg.py --candidate-features   # three arms
    .venv/bin/python benchmarks/bench_ultrasound_seg.py --figures docs/results   # the docs' two figures, then
    .venv/bin/python benchmarks/render_figures.py                                 # ... the pages they are in
    .venv/bin/python benchmarks/bench_ultrasound_features.py /tmp/busi_bench     # per-feature ICC, see there
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
from scipy.stats import spearmanr

from radiomics_assets.ingest.file_pairs import png_array, read_pair_image, scan_file_pairs
from radiomics_assets.masks.autoseg import AutoSegmentation, Seed, segment_lesion
from radiomics_assets.masks.ultrasound import (
    AGREEMENT_KEY,
    BACKGROUND_RING_FRACTIONS,
    CONTRAST_KEY,
    GRADIENT_SIGMAS_PX,
    MEDIAN_RADIUS_PX,
    SEED_MARKER_RADII_PX,
    seeded_candidates,
    with_outline_margin,
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


def best_candidate_dice(pixels: np.ndarray, seed_row_column: tuple[int, int], truth: np.ndarray) -> float:
    """Dice of the candidate (with the outline margin) closest to the ground truth: the selection's ceiling."""
    best = 0.0
    for candidate in seeded_candidates(pixels, seed_row_column):
        if candidate.region.any():
            best = max(best, dice(with_outline_margin(candidate.region), truth))
    return best


def measure_segmentation(cases, oracle: bool = False) -> tuple[dict[str, tuple[int, int]], dict]:
    """The seeds (deepest points) by image key, and the figures of the segmentation's row in
    ``docs/results/ultrasound_segmentation.json``."""
    settings = AutoSegmentation(method="ultrasound")
    dices, distances, seeds, contrasts, agreements, ceilings = [], [], {}, [], [], []
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
        contrasts.append(float(mask.GetMetaData(CONTRAST_KEY)))
        agreements.append(float(mask.GetMetaData(AGREEMENT_KEY)))
        if oracle:
            pixels = sitk.GetArrayFromImage(image)[0].astype(np.float32)
            ceilings.append(best_candidate_dice(pixels, (row, column), truth))
    elapsed = time.perf_counter() - started
    print(
        f"segmentation parameters: median radius {MEDIAN_RADIUS_PX} px, gradient sigmas {GRADIENT_SIGMAS_PX} px, "
        f"seed marker radii {SEED_MARKER_RADII_PX} px, background rings at {BACKGROUND_RING_FRACTIONS} of the "
        "shorter side, and from two re-seeds when the click is off-centre; the candidate of highest contrast + "
        "2 x agreement kept (fixed for every image)"
    )
    print(f"Dice:      {quartiles(dices)}")
    print(f"Hausdorff: {quartiles(distances).replace('.000', '')} px")
    print(
        f"Dice < 0.5 on {sum(d < 0.5 for d in dices)}, < 0.7 on {sum(d < 0.7 for d in dices)} of {len(dices)} images"
        + ("" if oracle else f"; {elapsed / len(cases):.2f} s per image")
    )
    print(
        f"confidence vs Dice, Spearman: contrast {spearmanr(contrasts, dices).statistic:.2f}, "
        f"candidate agreement {spearmanr(agreements, dices, nan_policy='omit').statistic:.2f}"
    )
    if oracle:
        print(f"best candidate (chosen with the ground truth), Dice: {quartiles(ceilings)}")
    figures = {
        "n": len(dices),
        "dice_median": round(float(np.median(dices)), 3),
        "dice_quartiles": [round(float(q), 3) for q in np.percentile(dices, [25, 75])],
        "dice_below_half": int(sum(d < 0.5 for d in dices)),
        "dice_min": round(float(np.min(dices)), 2),
        "hausdorff_px_median": round(float(np.median(distances))),
        "hausdorff_px_quartiles": [round(float(q)) for q in np.percentile(distances, [25, 75])],
    }
    return seeds, figures


FIGURE_SOURCE = ".venv/bin/python benchmarks/bench_ultrasound_seg.py --figures docs/results"
CURRENT_CLASSIFIER_ROWS = {"ground-truth masks": 0, "seeded masks": 1}
"""Which arm's figures replace which of the figure's current rows (in the order they appear there)."""


def _rewrite_current_rows(path: Path, update) -> None:
    figure = json.loads(path.read_text())
    update([row for row in figure["rows"] if row.get("current")])
    figure["source"] = FIGURE_SOURCE
    fields = "".join(
        f"  {json.dumps(name)}: {json.dumps(value)},\n" for name, value in figure.items() if name != "rows"
    )
    rows = ",\n".join(f"    {json.dumps(row)}" for row in figure["rows"])  # one row per line, as the files were
    path.write_text(f'{{\n{fields}  "rows": [\n{rows}\n  ]\n}}\n')


def update_figures(results: Path, segmentation: dict, runs: dict[str, dict]) -> None:
    """Replace the current rows of the documentation's two ultrasound figures with this run's figures; the other
    rows are earlier versions of the method, kept as they were measured."""

    def segmentation_rows(current: list[dict]) -> None:
        (row,) = current
        row.update(segmentation)

    def classifier_rows(current: list[dict]) -> None:
        for arm, position in CURRENT_CLASSIFIER_ROWS.items():
            m = runs[arm]
            current[position].update(
                auc=round(m["auc"], 3),
                ci=[round(m["auc_ci_low"], 3), round(m["auc_ci_high"], 3)],
                per_repeat=[round(a, 3) for a in m["auc_per_repeat"]],
                model=m["model"],
            )

    _rewrite_current_rows(results / "ultrasound_segmentation.json", segmentation_rows)
    _rewrite_current_rows(results / "ultrasound_classifier.json", classifier_rows)
    print(f"figures written to {results}; run benchmarks/render_figures.py to update the pages")


CLICK_DEPTH_PX = 3
"""A click is at least this far inside the expert outline (a click on the edge is not a click in the lesion)."""


def measure_click_positions(cases, clicks_per_image: int, seed: int = 1) -> None:
    """Dice when the click is not at the lesion's deepest point: ``clicks_per_image`` points drawn uniformly among
    the pixels at least ``CLICK_DEPTH_PX`` inside the expert outline, and the same among those in the inner half
    (distance to the edge at least half its maximum), per image, with a fixed random seed."""
    settings = AutoSegmentation(method="ultrasound")
    rng = np.random.default_rng(seed)
    dices: dict[str, list[float]] = {"anywhere inside": [], "inner half": []}
    for key, pair in cases:
        truth = ground_truth(pair)
        depth = ndimage.distance_transform_edt(truth)
        image = read_pair_image(pair)
        pools = {"anywhere inside": depth >= CLICK_DEPTH_PX, "inner half": depth >= 0.5 * depth.max()}
        for name, pool in pools.items():
            points = np.argwhere(pool)
            for row, column in points[rng.choice(len(points), min(clicks_per_image, len(points)), replace=False)]:
                mask = segment_lesion(image, settings, Seed(None, "", "benchmark", (int(column), int(row))), key)
                dices[name].append(dice(sitk.GetArrayFromImage(mask)[0] > 0, truth))
    for name, values in dices.items():
        misses = sum(d < 0.7 for d in values)
        print(f"clicks {name} ({clicks_per_image} per image): Dice {quartiles(values)}; < 0.7 on {misses}")


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


def extraction_seconds(root: Path) -> tuple[list[float], list[float]]:
    """Seconds per image of the plain extraction and of the candidate-averaged one, on the stored seeded masks of
    ``root``, alternating the two per image (so a load change on the shared machine hits both alike)."""
    from radiomics_assets.features import PARAMS_DIR, ExtractionTarget, extract, prepare_pyradiomics
    from radiomics_assets.features.candidate_average import extract_candidate_average

    prepare_pyradiomics()
    params = PARAMS_DIR / "us.yaml"
    with duckdb.connect(str(root / "radiomics.duckdb"), read_only=True) as con:
        rows = con.execute(
            "SELECT m.patient_id, m.series_uid, m.roi, m.mask_path, s.volume_path FROM masks m "
            "JOIN series s USING (patient_id, series_uid) ORDER BY m.patient_id"
        ).fetchall()
    plain, averaged = [], []
    for patient, series_uid, roi, mask_path, volume_path in rows:
        target = ExtractionTarget(
            patient, series_uid, "US", roi, sitk.ReadImage(volume_path), sitk.ReadImage(mask_path), source=mask_path
        )
        for extractor, times in ((extract, plain), (extract_candidate_average, averaged)):
            started = time.perf_counter()
            extractor(target, params)
            times.append(time.perf_counter() - started)
    return plain, averaged


def print_run(name: str, m: dict) -> None:
    print(
        f"{name:>28}: nested-CV AUC {m['auc']:.3f} (95 % CI {m['auc_ci_low']:.3f}-{m['auc_ci_high']:.3f}; "
        f"per repeat {', '.join(f'{a:.3f}' for a in m['auc_per_repeat'])}), model {m['model']}, "
        f"{m['n_patients']} patients, run {m['_seconds']:.0f} s",
        flush=True,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, default=BUSI, help="BUSI-layout folder (default the shared sample)")
    parser.add_argument("--segmentation-only", action="store_true")
    parser.add_argument("--oracle", action="store_true", help="also the Dice of the best candidate (slower)")
    parser.add_argument("--keep", type=Path, help="write the data roots here and keep them")
    parser.add_argument(
        "--candidate-features",
        action="store_true",
        help="a third run: seeded masks with features averaged over the candidate outlines, and extraction times",
    )
    parser.add_argument(
        "--clicks",
        type=int,
        default=0,
        metavar="N",
        help="also the Dice of N random clicks per image anywhere inside the lesion and in its inner half",
    )
    parser.add_argument(
        "--figures",
        type=Path,
        metavar="DIR",
        help="replace the current rows of the ultrasound figures' result files in DIR (docs/results)",
    )
    args = parser.parse_args()
    if args.figures and args.segmentation_only:
        parser.error("--figures needs the classifier runs: drop --segmentation-only")
    if not args.source.is_dir():
        print(f"no BUSI sample at {args.source}", file=sys.stderr)
        return 1
    cases = lesion_cases(args.source)
    print(f"{len(cases)} benign/malignant images from {args.source}")
    seeds, segmentation = measure_segmentation(cases, args.oracle)
    if args.clicks:
        measure_click_positions(cases, args.clicks)
    if args.segmentation_only:
        return 0
    base = args.keep or Path(tempfile.mkdtemp(prefix="busi_bench_"))
    try:
        os.environ.setdefault("RADIOMICS_PERMUTATIONS", "0")
        off = {"RADIOMICS_ULTRASOUND_CANDIDATE_FEATURES": ""}
        arms = [
            ("ground-truth masks", "ground-truth", None, {"RADIOMICS_AUTO_SEGMENTATION": "", **off}),
            ("seeded masks", "seeded", seeds, {"RADIOMICS_AUTO_SEGMENTATION": "ultrasound", **off}),
        ]
        if args.candidate_features:
            on = {"RADIOMICS_AUTO_SEGMENTATION": "ultrasound", "RADIOMICS_ULTRASOUND_CANDIDATE_FEATURES": "1"}
            arms.append(("seeded, candidate-averaged", "candidates", seeds, on))
        results = {}
        for name, folder, case_seeds, env in arms:
            root = base / folder
            shutil.rmtree(root, ignore_errors=True)
            root.mkdir(parents=True)
            write_root(root, cases, case_seeds)
            results[name] = run_pipeline(root, env)
            print_run(name, results[name])
        print(f"stored seeded masks vs ground truth, Dice: {quartiles(stored_mask_dice(base / 'seeded', cases))}")
        for name in list(results)[1:]:
            print(f"AUC {name} - ground truth: {results[name]['auc'] - results['ground-truth masks']['auc']:+.3f}")
        if args.figures:
            update_figures(args.figures, segmentation, results)
        if args.candidate_features:
            plain, averaged = extraction_seconds(base / "seeded")
            print(
                f"extraction per image (one core, alternating; the machine was shared): plain median "
                f"{np.median(plain):.2f} s, candidate-averaged median {np.median(averaged):.2f} s "
                f"(ratio of medians {np.median(averaged) / np.median(plain):.1f}; of totals "
                f"{sum(averaged) / sum(plain):.1f}), n={len(plain)}"
            )
    finally:
        if args.keep is None:
            shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
