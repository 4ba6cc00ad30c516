"""Benchmark: grouping cached DICOM headers by patient and series (``ingest.dicom_headers.group_headers``).

What is measured
----------------
Every sensor tick groups every cached header of the inbox again (patient keys, identical-copy and SOP-conflict
checks, skipped non-volumetric objects, localizer series). Synthetic headers (no files are read: the
identical-copy check reads files only for a repeated SOP instance UID) for ``--patients`` patients of
``--slices`` CT slices each, every second PatientID with a space (so its key carries a hash). Printed: the best
of five wall-clock times.

How to run
----------
    .venv/bin/python benchmarks/bench_group_headers.py
    .venv/bin/python benchmarks/bench_group_headers.py --patients 1000 --slices 100
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from radiomics_assets.ingest.dicom_headers import DicomFile, group_headers

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


def synthetic_headers(n_patients: int, n_slices: int) -> list[DicomFile]:
    return [
        DicomFile(
            path=Path(f"/inbox/P{p:05d}/CT/{k:04d}.dcm"),
            patient_id=f"P {p:05d}" if p % 2 else f"P{p:05d}",
            study_uid=f"1.2.{p}",
            series_uid=f"1.2.{p}.1",
            sop_uid=f"1.2.{p}.1.{k}",
            modality="CT",
            frame_of_reference_uid=f"1.2.{p}.9",
            sop_class_uid=CT_IMAGE_STORAGE,
            image_position=f"0.0\\0.0\\{k * 2.0!r}",
            image_orientation="1.0\\0.0\\0.0\\0.0\\1.0\\0.0",
            rows_columns="512\\512",
            pixel_spacing="0.7\\0.7",
            image_type="ORIGINAL\\PRIMARY\\AXIAL",
        )
        for p in range(n_patients)
        for k in range(n_slices)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=200)
    parser.add_argument("--slices", type=int, default=100)
    args = parser.parse_args()
    headers = synthetic_headers(args.patients, args.slices)
    times = []
    for _ in range(5):
        started = time.perf_counter()
        scan = group_headers(headers, {})
        times.append(time.perf_counter() - started)
    assert len(scan.patients) == args.patients
    print(f"group_headers: {len(headers)} headers, {args.patients} patients: {min(times) * 1000:.0f} ms (best of 5)")


if __name__ == "__main__":
    main()
