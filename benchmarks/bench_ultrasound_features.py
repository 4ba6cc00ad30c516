"""Benchmark: which radiomics features survive the seeded outline, and what that does to a classifier.

Input: the two data roots that ``bench_ultrasound_seg.py --keep DIR`` leaves (``DIR/ground-truth``: the BUSI sample
with its expert mask files; ``DIR/seeded``: the same images segmented from one click). Both hold the PyRadiomics
features of every image (table ``features``) and the labels.

What is measured
----------------
1. Agreement per feature between the expert and the seeded mask of the same image: ICC(1,1) (one-way random
   effects, absolute agreement, ``modelling.feature_icc``; the two outlines are the two "measurements" of each
   image, and a systematic shift counts as disagreement because a model trained on one outline scores the other).
   Printed: the distribution over features, the most and least stable features, and the ICC per feature class.
2. A fixed proxy classifier (standardised L2 logistic regression, C = 0.1, no tuning; repeated stratified 5-fold
   CV, 10 repeats; out-of-fold AUC pooled per repeat) on: the expert features; the seeded features; the seeded
   features restricted to those whose expert-vs-seeded ICC, computed **on the training folds' images only** (the
   option needs expert masks for some training images), is at least each threshold; and, with ``--ring``, the
   seeded features plus the same features of a peritumoral ring (the seeded mask dilated by ``--ring-px`` pixels,
   minus the mask); with ``--candidates``, features averaged over the candidate masks the segmentation computes
   (``masks.ultrasound.ultrasound_candidates``; each with the outline margin). Not the pipeline's nested CV (that is
   ``bench_ultrasound_seg.py``): a quick like-for-like comparison of feature sets. On 40 images the AUC's spread
   over repeats and its bootstrap CI are wide; they are printed, the options are not tuned to them.

How to run
----------
    .venv/bin/python benchmarks/bench_ultrasound_seg.py --keep /tmp/busi_bench
    .venv/bin/python benchmarks/bench_ultrasound_features.py /tmp/busi_bench [--ring] [--candidates]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import SimpleITK as sitk
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import RepeatedStratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from radiomics_assets.modelling.feature_icc import icc_by_feature

os.environ.setdefault("RADIOMICS_COLOUR_IMAGES", "luminance")
ICC_THRESHOLDS = (0.5, 0.75, 0.9)
REPEATS, FOLDS = 10, 5


def feature_table(root: Path) -> tuple[pd.DataFrame, pd.Series]:
    """Wide features (patient x ``<class>__<feature>``) and the 0/1 labels of a data root."""
    with duckdb.connect(str(root / "radiomics.duckdb"), read_only=True) as con:
        long = con.execute("SELECT patient_id, feature_class, feature, value FROM features").df()
        labels = con.execute("SELECT patient_id, label FROM labels").df()
    long["column"] = long.feature_class + "__" + long.feature
    wide = long.pivot_table(index="patient_id", columns="column", values="value", aggfunc="first")
    return wide, labels.set_index("patient_id").label.astype(int)


def expert_vs_seeded_icc(expert: pd.DataFrame, seeded: pd.DataFrame, patients) -> pd.Series:
    """ICC(1,1) per feature over ``patients`` x {expert, seeded}."""
    patients = list(patients)
    stacked = pd.concat(
        [
            frame.loc[patients].rename_axis(index="patient_id", columns="feature").stack().rename("value").reset_index()
            for frame in (expert, seeded)
        ],
        keys=["expert", "seeded"],
        names=["perturbation", None],
    ).reset_index(level=0)
    return icc_by_feature(stacked)


def cv_auc(features: pd.DataFrame, labels: pd.Series, column_filter=None) -> tuple[float, float, float, float]:
    """Mean, min and max over repeats of the pooled out-of-fold AUC, and the mean number of features used.

    ``column_filter(train_patients)`` returns the columns a training fold may use (None: all)."""
    X = features.loc[labels.index].dropna(axis=1, how="any")
    X = X.loc[:, X.std() > 0]
    y = labels.to_numpy()
    aucs, widths = [], []
    splitter = RepeatedStratifiedKFold(n_splits=FOLDS, n_repeats=REPEATS, random_state=0)
    scores = np.zeros(len(y))
    for fold, (train, test) in enumerate(splitter.split(X, y)):
        columns = list(X.columns) if column_filter is None else [c for c in column_filter(X.index[train]) if c in X]
        widths.append(len(columns))
        if not columns:
            scores[test] = 0.5
        else:
            model = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=5000))
            model.fit(X.iloc[train][columns], y[train])
            scores[test] = model.predict_proba(X.iloc[test][columns])[:, 1]
        if (fold + 1) % FOLDS == 0:
            aucs.append(roc_auc_score(y, scores))
    return float(np.mean(aucs)), float(np.min(aucs)), float(np.max(aucs)), float(np.mean(widths))


def extra_features(seeded_root: Path, masks_for, params_path: Path) -> pd.DataFrame:
    """PyRadiomics features of other masks of each seeded image: ``masks_for(image, mask, seed)`` -> list of masks
    (``seed``: the (row, column) click of ``seeds.csv``); the features of the list are averaged per image."""
    from radiomics_assets.features.extraction import ExtractionTarget, extract, prepare_pyradiomics
    from radiomics_assets.masks.autoseg import SEEDS_FILE, read_seeds

    prepare_pyradiomics()
    seeds = read_seeds(seeded_root / SEEDS_FILE)
    with duckdb.connect(str(seeded_root / "radiomics.duckdb"), read_only=True) as con:
        rows = con.execute(
            "SELECT m.patient_id, m.series_uid, m.mask_path, s.volume_path, s.units "
            "FROM masks m JOIN series s USING (patient_id, series_uid)"
        ).fetchall()
    table = {}
    for patient, series_uid, mask_path, volume_path, _units in rows:
        image, mask = sitk.ReadImage(volume_path), sitk.ReadImage(mask_path)
        values = []
        column, row = seeds[patient][0].pixel
        for other in masks_for(image, mask, (row, column)):
            long, _ = extract(ExtractionTarget(patient, series_uid, "US", "extra", image, other), params_path)
            long["column"] = long.feature_class + "__" + long.feature
            values.append(long.set_index("column").value.astype(float))
        table[patient] = pd.concat(values, axis=1).mean(axis=1)
    return pd.DataFrame(table).T


def ring_masks(ring_px: int):
    def masks_for(image, mask, _seed):
        grown = sitk.BinaryDilate(mask, [ring_px, ring_px, 0], sitk.sitkBall, 0, 1)
        ring = sitk.Cast(sitk.And(grown > 0, mask == 0), sitk.sitkUInt8)
        ring.CopyInformation(image)
        return [ring]

    return masks_for


def candidate_masks(image, mask, seed):
    """The grown candidates of the segmentation from the same click, each with the outline margin."""
    from radiomics_assets.masks.ultrasound import ultrasound_candidate_masks

    row, column = seed
    return ultrasound_candidate_masks(image, (column, row, 0))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("roots", type=Path, help="the --keep folder of bench_ultrasound_seg.py")
    parser.add_argument("--ring", action="store_true", help="also measure seeded + peritumoral-ring features")
    parser.add_argument("--ring-px", type=int, default=10)
    parser.add_argument("--candidates", action="store_true", help="also measure candidate-averaged features")
    parser.add_argument(
        "--params", type=Path, default=Path(__file__).resolve().parents[1] / "radiomics_assets/features/params/us.yaml"
    )
    args = parser.parse_args()
    expert_root, seeded_root = args.roots / "ground-truth", args.roots / "seeded"
    for root in (expert_root, seeded_root):
        if not (root / "radiomics.duckdb").is_file():
            print(
                f"{root}: no radiomics.duckdb; run bench_ultrasound_seg.py --keep {args.roots} first", file=sys.stderr
            )
            return 1
    expert, labels = feature_table(expert_root)
    seeded, seeded_labels = feature_table(seeded_root)
    patients = sorted(set(expert.index) & set(seeded.index) & set(labels.index))
    labels = labels.loc[patients]
    columns = sorted(set(expert.columns) & set(seeded.columns))
    expert, seeded = expert.loc[patients, columns], seeded.loc[patients, columns]
    print(f"{len(patients)} images ({int(labels.sum())} malignant), {len(columns)} features in both roots")

    icc = expert_vs_seeded_icc(expert, seeded, patients).dropna().sort_values()
    q = np.percentile(icc, [10, 25, 50, 75, 90])
    print(
        f"expert-vs-seeded ICC(1,1) over {len(icc)} features: median {q[2]:.3f} (quartiles {q[1]:.3f}-{q[3]:.3f}, "
        f"10th-90th percentile {q[0]:.3f}-{q[4]:.3f}); "
        + ", ".join(f">= {t}: {int((icc >= t).sum())}" for t in ICC_THRESHOLDS)
    )
    by_class = icc.groupby(icc.index.str.split("__").str[0]).median().sort_values()
    print("median ICC per class: " + ", ".join(f"{name} {value:.2f}" for name, value in by_class.items()))
    print("least stable: " + ", ".join(f"{name} {value:.2f}" for name, value in icc.head(10).items()))
    print("most stable:  " + ", ".join(f"{name} {value:.2f}" for name, value in icc.tail(10)[::-1].items()))

    def report(name, features, column_filter=None):
        mean, low, high, width = cv_auc(features, labels, column_filter)
        print(f"{name:>44}: AUC {mean:.3f} (repeats {low:.3f}-{high:.3f}), {width:.0f} features")

    print(f"proxy classifier: L2 logistic regression, {REPEATS} x {FOLDS}-fold CV")
    report("expert masks", expert)
    report("seeded masks", seeded)
    for threshold in ICC_THRESHOLDS:

        def stable(train, threshold=threshold):
            fold_icc = expert_vs_seeded_icc(expert, seeded, train)
            return list(fold_icc.index[fold_icc >= threshold])

        report(f"seeded, ICC >= {threshold} on training folds", seeded, stable)
    if args.ring:
        ring = extra_features(seeded_root, ring_masks(args.ring_px), args.params).add_prefix("ring__")
        report(f"seeded + {args.ring_px} px ring", seeded.join(ring))
        report(f"{args.ring_px} px ring alone", ring.loc[patients])
    if args.candidates:
        averaged = extra_features(seeded_root, candidate_masks, args.params)
        report("averaged over the candidates", averaged.loc[patients, [c for c in columns if c in averaged]])
    return 0


if __name__ == "__main__":
    sys.exit(main())
