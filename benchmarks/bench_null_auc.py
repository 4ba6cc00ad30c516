"""Null distribution of the headline AUC: the whole procedure on permuted labels of a real feature matrix.

Features are extracted once (``radiomics-assets synth`` then ``radiomics-assets run --no-cohort``, or any data
root whose warehouse has a ``features`` table and whose labels.csv has labels); each permutation re-runs the
outer CV of the procedure (candidate choice inside the folds) on the same features with permuted labels.
Prints the mean and SD of the fold-mean AUC (the headline estimator), the SD chance predicts, and, for
contrast, the pooled out-of-fold AUC.

    RADIOMICS_DATA_DIR=/tmp/null ./dev run --no-cohort   # after: radiomics-assets --data-dir /tmp/null synth
    .venv/bin/python benchmarks/bench_null_auc.py --data-dir /tmp/null --permutations 20

``--json PATH --json-label LABEL`` also stores the result as the row LABEL of the documentation's ``null_auc``
figure (other rows of an existing file are kept; then ``benchmarks/render_figures.py`` re-renders the page).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from joblib import Parallel, delayed

from radiomics_assets.modelling import (
    MODEL_FAMILIES,
    ModellingSettings,
    cross_validate,
    expected_null_sd,
    load_labels,
    metrics,
)
from radiomics_assets.modelling.matrix import wide_matrix
from radiomics_assets.paths import DataRoot
from radiomics_assets.warehouse import Warehouse


def one_permutation(
    X: pd.DataFrame, y: np.ndarray, settings: ModellingSettings, seed: int
) -> tuple[float, float, float]:
    shuffled = pd.Series(np.random.default_rng(seed).permutation(y), index=X.index)
    cv = cross_validate(X, shuffled, settings, with_candidates=False)
    return cv.auc, metrics(cv, n_bootstrap=0)["auc_pooled"], expected_null_sd(cv.y, cv.fold_of)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--permutations", type=int, default=20)
    parser.add_argument(
        "--models",
        nargs="+",
        default=[],
        choices=[str(m) for m in MODEL_FAMILIES],
        help="candidate families (default: the default procedure)",
    )
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument(
        "--first-seed", type=int, default=1000, help="permutation i uses seed first_seed + i (runs can be combined)"
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also store the result in this figure file")
    parser.add_argument("--json-label", default="", help="the row's label in the figure (default: the settings)")
    args = parser.parse_args()
    root = DataRoot(Path(args.data_dir))
    labels = load_labels(root).set_index("patient_id").label
    X = wide_matrix(Warehouse(root.warehouse).query("SELECT * FROM features"))
    X = X[X.index.isin(labels.index)]
    y = labels.reindex(X.index).to_numpy()
    settings = ModellingSettings(models=tuple(args.models), folds=args.folds, repeats=args.repeats, n_jobs=1)
    print(
        f"{len(y)} patients ({int(y.sum())} positive), {X.shape[1]} features; candidates {args.models or 'default'}; "
        f"{args.folds}-fold x {args.repeats}; {args.permutations} permutations"
    )
    started = time.perf_counter()
    results = Parallel(n_jobs=args.jobs)(
        delayed(one_permutation)(X, y, settings, args.first_seed + i) for i in range(args.permutations)
    )
    fold_mean, pooled, expected = (np.asarray(r) for r in zip(*results, strict=True))
    print(
        f"fold-mean AUC (headline): mean {fold_mean.mean():.3f}, SD {fold_mean.std(ddof=1):.3f}, "
        f"standard error of the mean {fold_mean.std(ddof=1) / np.sqrt(len(fold_mean)):.3f}"
    )
    print(
        f"chance predicts: mean 0.500, SD <= {expected.mean():.3f} (one repeat; repeats of the same patients "
        "shrink it a little)"
    )
    print(f"pooled out-of-fold AUC (information): mean {pooled.mean():.3f}, SD {pooled.std(ddof=1):.3f}")
    print("fold-mean AUCs: " + " ".join(f"{a:.2f}" for a in fold_mean))
    print(f"{time.perf_counter() - started:.0f} s ({args.jobs} processes)")
    if args.json:
        label = (
            args.json_label or f"{', '.join(args.models) or 'default procedure'}, {args.folds}-fold x {args.repeats}"
        )
        store_row(args.json, label, fold_mean, pooled, expected)


def _arguments_without_json(argv: list[str]) -> list[str]:
    """The command line that measured the row, without where it was stored."""
    kept, skip = [], False
    for argument in argv:
        if skip:
            skip = False
        elif argument in ("--json", "--json-label"):
            skip = True
        elif not argument.startswith(("--json=", "--json-label=")):
            kept.append(argument)
    return kept


BLOCK = 20
"""Permutations per block in the figure: how far a run of 20 strays from the mean of all."""


def store_row(path: Path, label: str, fold_mean: np.ndarray, pooled: np.ndarray, expected: np.ndarray) -> None:
    """Replace (or add) the row ``label`` of the ``null_auc`` figure's result file."""
    sd = float(fold_mean.std(ddof=1))
    row = {
        "label": label,
        "command": "bench_null_auc.py " + " ".join(_arguments_without_json(sys.argv[1:])),
        "permutations": len(fold_mean),
        "mean": float(fold_mean.mean()),
        "sd": sd,
        "se": sd / float(np.sqrt(len(fold_mean))),
        "expected_sd": float(expected.mean()),
        "pooled_mean": float(pooled.mean()),
        "fold_mean_aucs": [float(a) for a in fold_mean],
    }
    if len(fold_mean) >= 2 * BLOCK:
        blocks = fold_mean[: len(fold_mean) // BLOCK * BLOCK].reshape(-1, BLOCK)
        row.update(
            block_size=BLOCK, block_means=[float(b) for b in blocks.mean(axis=1)], block_se=sd / float(np.sqrt(BLOCK))
        )
    document = json.loads(path.read_text()) if path.exists() else {"source": "benchmarks/bench_null_auc.py"}
    document["note"] = "rows measured by the command in their permutations cell"
    existing = document.get("rows", [])
    if any(r["label"] == label for r in existing):
        # the row keeps its place and whether the page shows it as the headline
        document["rows"] = [
            {**row, "headline": r.get("headline", False)} if r["label"] == label else r for r in existing
        ]
    else:
        document["rows"] = [*existing, row]
    path.write_text(json.dumps(document, indent=2) + "\n")
    print(f"wrote row {label!r} of {path}")


if __name__ == "__main__":
    main()
