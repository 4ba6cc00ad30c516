"""The default model's forest: scikit-learn's ``RandomForestClassifier`` against ``FastRandomForestClassifier``.

Fits both on the same random tables (300 trees, ``class_weight="balanced"``, one job: the consensus' forest), the
two alternating ``--rounds`` times per size, and prints the median fit + predict time of each, the ratio, and
whether every probability is the same double.

    .venv/bin/python benchmarks/bench_forest_fit.py [--sizes 9 41 120 480] [--features 100] [--rounds 5]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.ensemble import RandomForestClassifier

from radiomics_assets.modelling.fast_forest import FastRandomForestClassifier


def _seconds(forest, X: np.ndarray, y: np.ndarray, X_test: np.ndarray) -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    probabilities = forest.fit(X, y).predict_proba(X_test)
    return time.perf_counter() - start, probabilities


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[9, 41, 120, 480], help="training patients")
    parser.add_argument("--features", type=int, default=100)
    parser.add_argument("--trees", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    print(f"{args.trees} trees, class_weight='balanced', {args.features} features; median of {args.rounds} rounds")
    print(f"{'patients':>8}  {'scikit-learn s':>14}  {'fast s':>8}  {'speed-up':>8}  same probabilities")
    for size in args.sizes:
        rng = np.random.default_rng(size)
        X = rng.standard_normal((size, args.features))
        y = (X[:, 0] + rng.standard_normal(size) > 0.5).astype(int)
        y[:2] = [0, 1]
        X_test = rng.standard_normal((max(2, size // 4), args.features))
        times: dict[str, list[float]] = {"sklearn": [], "fast": []}
        same = True
        for round_ in range(args.rounds):
            params = {"n_estimators": args.trees, "class_weight": "balanced", "random_state": round_, "n_jobs": 1}
            reference_time, reference = _seconds(RandomForestClassifier(**params), X, y, X_test)
            fast_time, fast = _seconds(FastRandomForestClassifier(**params), X, y, X_test)
            times["sklearn"].append(reference_time)
            times["fast"].append(fast_time)
            same &= reference.tobytes() == fast.tobytes()
        sklearn_s, fast_s = float(np.median(times["sklearn"])), float(np.median(times["fast"]))
        print(f"{size:>8}  {sklearn_s:>14.3f}  {fast_s:>8.3f}  {sklearn_s / fast_s:>7.1f}x  {same}")


if __name__ == "__main__":
    main()
