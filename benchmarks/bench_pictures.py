"""Cost and size of the mask-outline pictures (``pictures.mask_outline_png``) that roi_masks' metadata carries.

(a) A full-size synthetic CT (512 x 512 x N slices, float32) with a box lesion: median drawing time over
repeats and PNG bytes. (b) When ``../shared/data`` is present, the real pictures of one sarcoma patient (CT, MR,
PET with RTSTRUCTs) and one BUSI ultrasound image, drawn by the batch driver as a run draws them (in the worker,
from the volumes its ingest holds): bytes per series, written to ``--out`` for a look.

    .venv/bin/python benchmarks/bench_pictures.py [--slices 150] [--repeats 5] [--out /tmp/pictures]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from radiomics_assets.pictures import mask_outline_png

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def synthetic(slices: int, repeats: int) -> None:
    rng = np.random.default_rng(0)
    body = rng.normal(40, 15, (slices, 512, 512)).astype(np.float32)
    image = sitk.GetImageFromArray(body)
    image.SetSpacing((0.8, 0.8, 2.0))
    lesion = np.zeros(body.shape, np.uint8)
    lesion[slices // 3 : slices // 2, 200:260, 220:300] = 1
    mask = sitk.GetImageFromArray(lesion)
    mask.CopyInformation(image)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        png = mask_outline_png(image, mask)
        times.append(time.perf_counter() - started)
    print(
        f"synthetic CT 512x512x{slices} (noise, the worst case for compression): "
        f"{statistics.median(times) * 1000:.0f} ms median of {repeats}, {len(png)} bytes"
    )


def real(out: Path) -> None:
    from radiomics_assets.batch import run_patients
    from radiomics_assets.defs.resources import RadiomicsConfig

    out.mkdir(parents=True, exist_ok=True)
    cases = {"STS_002": SHARED / "sarcoma" / "dicom" / "STS_002"}
    busi = sorted((SHARED / "busi_sample" / "benign").glob("* (*).png"))[:1]
    with tempfile.TemporaryDirectory() as work:
        root = Path(work)
        (root / "inbox").mkdir()
        for key, folder in cases.items():
            (root / "inbox" / key).symlink_to(folder, target_is_directory=True)
        for image in busi:
            (root / "inbox" / "benign").mkdir(exist_ok=True)
            for path in (image, image.with_name(f"{image.stem}_mask.png")):
                (root / "inbox" / "benign" / path.name).symlink_to(path)
        settings = RadiomicsConfig(data_dir=str(root)).patient_settings()
        keys = ["STS_002", *(f"benign_{image.stem.split('(')[1].rstrip(')')}" for image in busi)]
        for outcome in run_patients(keys, {"studies", "roi_masks"}, settings, workers=1):
            if outcome.error:
                print(f"{outcome.key}: failed at {outcome.failed_stage}: {outcome.error}")
                continue
            modality = dict(zip(outcome.series.series_uid, outcome.series.modality, strict=True))
            for number, (series_uid, png) in enumerate(sorted(outcome.pictures.items())):
                path = out / f"{outcome.key}_{modality[series_uid]}_{number}.png"
                path.write_bytes(png)
                print(f"{outcome.key} {modality[series_uid]}: {len(png)} bytes -> {path}")
            for series_uid, why in outcome.picture_problems.items():
                print(f"{outcome.key} {series_uid}: no picture: {why}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=150)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "radiomics_pictures")
    args = parser.parse_args()
    synthetic(args.slices, args.repeats)
    if SHARED.exists():
        real(args.out)
    else:
        print(f"{SHARED} absent: real pictures skipped")


if __name__ == "__main__":
    main()
