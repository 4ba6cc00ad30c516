"""Time of the cohort job (labels -> feature_matrix -> model -> selected_features -> validation_report ->
predictions) in a real Dagster run, on a synthetic feature table.

    .venv/bin/python benchmarks/bench_cohort_job.py --patients 600 --features 100 [--permutations 19]
    .venv/bin/python benchmarks/bench_cohort_job.py --outcome survival --patients 600 --features 100 [--covariates]

Binary (default): features written straight to the warehouse, a yes/no label. Another ``--outcome``: a synthetic
study of that type (``synth_tables``: planted signal, labels.csv + study.yaml) imported as the project's own
feature table, optionally with clinical covariates compared (``predictors: compare``). Prints the wall time of the
job and the model card's split (groups, outer CV, permutation test, final fit).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd

from radiomics_assets.defs.cohort_assets import COHORT_ASSETS
from radiomics_assets.defs.resources import RadiomicsConfig
from radiomics_assets.warehouse import Warehouse


def write_warehouse(root: Path, patients: int, features: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    keys = [f"SYN-{i:04d}" for i in range(patients)]
    labels = np.arange(patients) % 2
    values = rng.standard_normal((patients, features))
    values[:, :3] += 0.8 * labels[:, None]  # three informative features
    rows = pd.DataFrame(
        {
            "patient_id": np.repeat(keys, features),
            "series_uid": np.repeat([f"{k}-CT" for k in keys], features),
            "modality": "CT",
            "roi": "GTV",
            "image_type": "original",
            "feature_class": "firstorder",
            "feature": np.tile([f"f{j:03d}" for j in range(features)], patients),
            "value": values.ravel(),
            "params_hash": "synthetic",
        }
    )
    with Warehouse(root / "radiomics.duckdb").connect() as con:
        con.register("incoming", rows)
        con.execute("INSERT INTO features BY NAME SELECT * FROM incoming")
    lines = ["patient_id,label"] + [f"{k},{'yes' if v else 'no'}" for k, v in zip(keys, labels, strict=True)]
    (root / "labels.csv").write_text("\n".join(lines) + "\n")


def write_study_table(root: Path, args) -> None:
    """A synthetic study of ``args.outcome`` (labels.csv, study.yaml) and its feature table, imported."""
    from radiomics_assets.ingest.feature_tables import import_feature_table
    from radiomics_assets.paths import DataRoot
    from radiomics_assets.synth_tables import SyntheticStudy, write_study

    spec = SyntheticStudy(
        outcome=args.outcome, n_patients=args.patients, n_features=args.features, covariates=args.covariates
    )
    write_study(spec, root)
    import_feature_table(DataRoot(root), root / "feature_tables" / "synthetic.csv")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patients", type=int, default=600)
    parser.add_argument("--features", type=int, default=100)
    parser.add_argument("--permutations", type=int, default=None, help="default: the resource's default")
    parser.add_argument("--outcome", default="binary", choices=["binary", "multiclass", "continuous", "survival"])
    parser.add_argument("--covariates", action="store_true", help="with clinical covariates, predictors: compare")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if args.outcome == "binary" and not args.covariates:
            write_warehouse(root, args.patients, args.features)
        else:
            write_study_table(root, args)
        extra = {} if args.permutations is None else {"permutations": args.permutations}
        config = RadiomicsConfig(data_dir=str(root), **extra)
        started = time.perf_counter()
        with dg.instance_for_test() as instance:
            result = dg.materialize(COHORT_ASSETS, instance=instance, resources={"radiomics": config})
        elapsed = time.perf_counter() - started
        card = json.loads((root / "models" / "model_card.json").read_text())
        print(
            f"{args.patients} patients x {args.features} features, permutations {config.permutations}, "
            f"{config.modelling_jobs} processes: cohort job {elapsed:.0f} s (success {result.success}); "
            f"model card seconds {card['seconds']}; {card['task']} {card['primary_metric']['name']} "
            f"{card['primary_metric']['value']:.3f}, p {card['cv_estimate']['permutation_p_value']}"
            + (f"; gain over clinical {card['comparison']['gain']}" if "comparison" in card else "")
        )


if __name__ == "__main__":
    main()
