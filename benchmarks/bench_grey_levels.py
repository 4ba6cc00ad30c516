"""Benchmark: how many grey levels the shipped parameter files give on real and synthetic ROIs, against the
extraction guard's default maximum (``max_grey_levels``, 1000).

What is measured
----------------
The studies and roi_masks stages run (batch driver, no extraction) over a synthetic cohort
(``radiomics_assets.synth``, CT + RTSTRUCT) and, when ``../shared/data/sarcoma`` is present, over the six
sarcoma patients (CT, T1 MR, PET in SUV, each with its RTSTRUCT). For every (series, ROI) the number of grey
levels is computed as the guard does (``features.extraction.grey_levels``: the modality's shipped parameter
file's binWidth/binCount over the ROI's intensity range, after normalisation for MR). Printed: per modality
the number of ROIs and the largest and median grey-level count, and the largest ratio to the maximum.

How to run
----------
    .venv/bin/python benchmarks/bench_grey_levels.py
    .venv/bin/python benchmarks/bench_grey_levels.py --synthetic-patients 4 --no-sarcoma
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import SimpleITK as sitk

from radiomics_assets.batch import PatientSettings, run_patients
from radiomics_assets.features import (
    DEFAULT_MAX_GREY_LEVELS,
    PARAMS_DIR,
    grey_levels,
    load_extractor,
    params_by_modality,
)
from radiomics_assets.synth import SynthConfig, write_cohort

SARCOMA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "sarcoma"


def _levels(data_dir: Path, keys: list[str]) -> dict[str, list[int]]:
    params = params_by_modality(PARAMS_DIR)
    settings = PatientSettings(data_dir=data_dir, params=params)
    by_modality: dict[str, list[int]] = {}
    for outcome in run_patients(keys, {"studies", "roi_masks"}, settings):
        if outcome.failed_stage:
            print(f"  {outcome.key}: failed at {outcome.failed_stage}: {outcome.error}", file=sys.stderr)
            continue
        series = {row.series_uid: row for row in outcome.series.itertuples()}
        for mask in outcome.masks.itertuples():
            row = series[mask.series_uid]
            image, roi = sitk.ReadImage(row.volume_path), sitk.ReadImage(mask.mask_path)
            levels, *_ = grey_levels(load_extractor(params[row.modality]), image, roi)
            by_modality.setdefault(row.modality, []).append(levels)
    return by_modality


def _report(name: str, by_modality: dict[str, list[int]]) -> None:
    for modality, levels in sorted(by_modality.items()):
        print(
            f"{name} {modality}: {len(levels)} ROIs, grey levels max {max(levels)}, median "
            f"{statistics.median(levels):g} ({max(levels) / DEFAULT_MAX_GREY_LEVELS:.1%} of the maximum "
            f"{DEFAULT_MAX_GREY_LEVELS})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--synthetic-patients", type=int, default=10)
    parser.add_argument("--no-sarcoma", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        synthetic = Path(tmp) / "synthetic"
        keys = write_cohort(SynthConfig(n_patients=args.synthetic_patients), synthetic)
        _report("synthetic", _levels(synthetic, keys))
        if SARCOMA.exists() and not args.no_sarcoma:
            sarcoma = Path(tmp) / "sarcoma"
            (sarcoma / "inbox").mkdir(parents=True)
            keys = sorted(p.name for p in (SARCOMA / "dicom").iterdir())
            for key in keys:  # linked, never copied
                (sarcoma / "inbox" / key).symlink_to(SARCOMA / "dicom" / key, target_is_directory=True)
            _report("sarcoma", _levels(sarcoma, keys))


if __name__ == "__main__":
    main()
