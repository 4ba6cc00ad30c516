"""The null of every outcome type: the whole default procedure on permuted outcomes centres on chance.

    .venv/bin/python benchmarks/bench_outcome_null.py --permutations 20 [--outcomes survival multiclass ...]
        [--patients 120] [--features 60] [--repeats 1]

For each outcome type a synthetic study with a planted signal (``synth_tables``) is generated once; its outcome
is permuted between patients (survival: (time, event) pairs together) and the whole default procedure (every
candidate family of the type, chosen inside the folds, 5-fold outer CV) is cross-validated on each permutation.
Prints, per type, the observed estimate on the real outcome, the null mean, SD and standard error, and the chance
value: AUC and macro AUC 0.5, Harrell's c-index 0.5, R² a little below 0 (out of sample, predicting the training
mean costs about 1/n_train).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from radiomics_assets.modelling import ModellingSettings, cross_validate, load_outcomes, task_for
from radiomics_assets.modelling.study import parse_study
from radiomics_assets.paths import DataRoot
from radiomics_assets.synth_tables import SyntheticStudy, make_study

OUTCOMES = ("binary", "multiclass", "continuous", "survival")


def study_arrays(outcome: str, patients: int, features: int, seed: int):
    """(X, y, task) of a synthetic study with a planted signal and no covariates."""
    spec = SyntheticStudy(outcome=outcome, n_patients=patients, n_features=features, covariates=False, seed=seed)
    feature_table, labels, document = make_study(spec)
    with tempfile.TemporaryDirectory() as tmp:
        labels.to_csv(Path(tmp) / "labels.csv", index=False)
        study = parse_study(document, Path(tmp) / "study.yaml")
        table = load_outcomes(DataRoot(Path(tmp)), study).table
    task = task_for(study)
    X = feature_table.set_index("patient_id").loc[table.patient_id]
    return X, task.target(table), task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--outcomes", nargs="+", default=list(OUTCOMES), choices=OUTCOMES)
    parser.add_argument("--permutations", type=int, default=20)
    parser.add_argument("--patients", type=int, default=120)
    parser.add_argument("--features", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    settings = ModellingSettings(seed=args.seed, repeats=args.repeats, n_jobs=args.jobs, permutations=0)
    rows = []
    for outcome in args.outcomes:
        X, y, task = study_arrays(outcome, args.patients, args.features, args.seed)
        started = time.perf_counter()
        observed = cross_validate(X, y, settings, with_candidates=False, task=task).score
        rng = np.random.default_rng(1000 + args.seed)
        null = []
        for i in range(args.permutations):
            shuffled = task.permute(np.asarray(y), np.arange(len(y)), rng)
            cv = cross_validate(X, shuffled, replace(settings, seed=args.seed + i), with_candidates=False, task=task)
            null.append(cv.score)
        null = np.asarray(null)
        rows.append(
            {
                "outcome": outcome,
                "metric": task.primary_metric,
                "observed (planted signal)": round(observed, 3),
                "null mean": round(float(null.mean()), 3),
                "null SD": round(float(null.std(ddof=1)), 3),
                "standard error": round(float(null.std(ddof=1) / np.sqrt(len(null))), 3),
                "chance": task.chance_level,
                "permutations": len(null),
                "seconds": round(time.perf_counter() - started, 1),
            }
        )
        print(pd.DataFrame(rows[-1:]).to_string(index=False), flush=True)
    print()
    print(pd.DataFrame(rows).to_markdown(index=False))


if __name__ == "__main__":
    main()
