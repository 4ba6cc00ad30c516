"""Does a segmentation learned from the study's own expert outlines beat the classical one-click method? (issue 29)

    .venv/bin/python benchmarks/bench_ultrasound_learned.py [--clicks 3] [--folds 5]

On ``../shared/data/busi_sample`` (40 lesion images), five folds over the images: a pixel classifier (scikit-learn's
``HistGradientBoostingClassifier``) is trained on the training folds' expert outlines and applied to the held-out
images, prompted by a click (``--clicks`` random points at least 3 px inside the outline, as in
``bench_ultrasound_seg.py --clicks``, plus the deepest point). Its mask is the component of probability > 0.5 that
holds the click (or lies nearest to it), holes filled. Two variants, both measured against the classical mask of the
same click:

- ``learned``: per-pixel filters of the image (smoothed intensity at five scales, the same minus the value at the
  click, local standard deviation, gradient magnitude), the offset from the click and the row;
- ``learned on the candidates``: the same plus the share of the classical method's candidate regions that hold the
  pixel, and the classical mask with its signed distance (a learned refinement of the classical result).

Prints Dice quartiles and masks below 0.7 for the random clicks and for the deepest points. Nothing is downloaded;
about 20 minutes on 2 cores (5 minutes of it the classical candidates).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from functools import partial

import numpy as np
import SimpleITK as sitk
from bench_ultrasound_seg import BUSI, CLICK_DEPTH_PX, dice, ground_truth, lesion_cases
from joblib import Parallel, delayed
from scipy import ndimage
from sklearn.ensemble import HistGradientBoostingClassifier

from radiomics_assets.ingest.file_pairs import read_pair_image
from radiomics_assets.masks.ultrasound import seeded_candidates, segment_ultrasound_array

SAMPLES_NEAR_LESION = 3000
SAMPLES_ANYWHERE = 2000
NEAR_LESION_PX = 40


def classical(pair, clicks: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray, list]:
    """The image, its expert outline and, per click, the candidates' vote and the classical mask."""
    pixels = sitk.GetArrayFromImage(read_pair_image(pair))[0].astype(np.float32)
    per_click = []
    for click in clicks:
        regions = [candidate.region for candidate in seeded_candidates(pixels, click) if candidate.region.any()]
        vote = np.mean(regions, axis=0) if regions else np.zeros(pixels.shape)
        per_click.append((click, vote.astype(np.float32), segment_ultrasound_array(pixels, click)))
    return pixels, ground_truth(pair), per_click


def pixel_features(pixels: np.ndarray, click, vote: np.ndarray, mask: np.ndarray, with_candidates: bool) -> np.ndarray:
    smooth = ndimage.median_filter(pixels, 5)
    blurred = [ndimage.gaussian_filter(smooth, sigma) for sigma in (1, 2, 4, 8, 16)]
    layers = blurred + [layer - blurred[2][click] for layer in blurred]
    for sigma in (4, 8):
        mean = ndimage.gaussian_filter(smooth, sigma)
        layers.append(np.sqrt(np.maximum(ndimage.gaussian_filter(smooth * smooth, sigma) - mean * mean, 0)))
    layers += [ndimage.gaussian_gradient_magnitude(smooth, sigma) for sigma in (2, 4)]
    rows, columns = np.indices(pixels.shape)
    distance = np.hypot(rows - click[0], columns - click[1])
    layers += [distance, distance / max(pixels.shape), (rows - click[0]) / pixels.shape[0]]
    layers += [(columns - click[1]) / pixels.shape[1], rows / pixels.shape[0]]
    if with_candidates:
        signed = ndimage.distance_transform_edt(mask) - ndimage.distance_transform_edt(~mask)
        layers += [vote, ndimage.gaussian_filter(vote, 4), mask.astype(np.float32), signed]
    return np.stack([layer.astype(np.float32) for layer in layers], axis=-1).reshape(-1, len(layers))


def click_component(probability: np.ndarray, click) -> np.ndarray:
    labels, count = ndimage.label(probability > 0.5)
    if count == 0:
        return labels > 0
    if labels[click] == 0:  # the click fell outside every component: take the nearest one
        nearest = ndimage.distance_transform_edt(labels == 0, return_indices=True)[1]
        keep = labels[nearest[0][click], nearest[1][click]]
    else:
        keep = labels[click]
    return ndimage.binary_fill_holes(labels == keep)


def cross_validated_dice(cases: list, folds: int, n_random: int, with_candidates: bool) -> dict[str, np.ndarray]:
    """Dice of the learned (``learned``) and of the classical mask (``classical``) for every held-out (image, click),
    and the click's kind (``kind``: random or deepest)."""
    rng = np.random.default_rng(0)
    fold_of = rng.permutation(np.arange(len(cases)) % folds)
    learned, classical_dice, kind = [], [], []
    for fold in range(folds):
        X, y = [], []
        for i in np.flatnonzero(fold_of != fold):
            pixels, truth, per_click = cases[i]
            for click, vote, mask in per_click[:n_random]:
                features = pixel_features(pixels, click, vote, mask, with_candidates)
                near = np.flatnonzero(ndimage.binary_dilation(truth | mask, iterations=NEAR_LESION_PX).ravel())
                rows = np.concatenate([rng.choice(near, SAMPLES_NEAR_LESION), rng.choice(truth.size, SAMPLES_ANYWHERE)])
                X.append(features[rows])
                y.append(truth.ravel()[rows])
        model = HistGradientBoostingClassifier(max_iter=200, random_state=0).fit(np.concatenate(X), np.concatenate(y))
        for i in np.flatnonzero(fold_of == fold):
            pixels, truth, per_click = cases[i]
            for j, (click, vote, mask) in enumerate(per_click):
                features = pixel_features(pixels, click, vote, mask, with_candidates)
                probability = model.predict_proba(features)[:, 1].reshape(pixels.shape)
                learned.append(dice(click_component(probability, click), truth))
                classical_dice.append(dice(mask, truth))
                kind.append("random" if j < n_random else "deepest")
    return {"learned": np.array(learned), "classical": np.array(classical_dice), "kind": np.array(kind)}


def images_with_clicks(cases: list, n_random: int) -> list[tuple]:
    """(pair, clicks) per image: ``n_random`` random (row, column) points at least CLICK_DEPTH_PX inside the expert
    outline, then the deepest point (seeded: every benchmark of learned masks clicks the same points)."""
    rng = np.random.default_rng(1)
    jobs = []
    for _, pair in cases:
        depth = ndimage.distance_transform_edt(ground_truth(pair))
        inside = np.argwhere(depth >= CLICK_DEPTH_PX)
        clicks = [tuple(int(v) for v in inside[i]) for i in rng.choice(len(inside), n_random, replace=False)]
        clicks.append(tuple(int(v) for v in np.unravel_index(np.argmax(depth), depth.shape)))
        jobs.append((pair, clicks))
    return jobs


def summary(values: np.ndarray) -> str:
    q1, median = np.percentile(values, [25, 50])
    return f"median {median:.3f}, lower quartile {q1:.3f}, < 0.7 on {int(np.sum(values < 0.7))}/{len(values)}"


def classical_results(classical_of: Callable, n_random: int) -> list:
    """``classical_of(pair, clicks)`` for every lesion image of the sample and its :func:`images_with_clicks`, on 2
    processes."""
    started = time.perf_counter()
    jobs = images_with_clicks(lesion_cases(BUSI), n_random)
    cases = Parallel(n_jobs=2)(delayed(classical_of)(pair, clicks) for pair, clicks in jobs)
    print(f"classical method for {len(cases)} images: {time.perf_counter() - started:.0f} s")
    return cases


def print_comparison(runs: dict[str, Callable[[], dict[str, np.ndarray]]], folds: int) -> None:
    """Run every learned variant (a call that gives ``cross_validated_dice``'s dict), then print the classical
    masks' Dice and each variant's, for the random clicks and for the deepest points."""
    results = {}
    for name, run in runs.items():
        started = time.perf_counter()
        dices = run()
        print(f"{name}: {time.perf_counter() - started:.0f} s for {folds} folds", flush=True)
        results["classical"] = dices["classical"]
        results[name] = dices["learned"]
    width = max(map(len, results))
    for clicks in ("random", "deepest"):
        print(f"\nclicks: {clicks}")
        for name, values in results.items():
            print(f"  {name:{width}s}  {summary(values[dices['kind'] == clicks])}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clicks", type=int, default=3, help="random clicks per image (plus the deepest point)")
    parser.add_argument("--folds", type=int, default=5)
    args = parser.parse_args()
    cases = classical_results(classical, args.clicks)
    variants = {"learned": False, "learned on the candidates": True}
    print_comparison(
        {name: partial(cross_validated_dice, cases, args.folds, args.clicks, flag) for name, flag in variants.items()},
        args.folds,
    )


if __name__ == "__main__":
    main()
