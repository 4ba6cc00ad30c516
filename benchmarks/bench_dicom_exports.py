"""Benchmark: time and size of the DICOM exports (SEG + SR) per patient, beside the patient assets' own time.

What is measured
----------------
N synthetic CT patients (default cohort geometry, 80 x 80 x 24; real DICOM written with pydicom) are ingested
with ``confidence_connected`` automated segmentation from a seed at the lesion centre, through the real
``ingest_patient`` job in process (one run for all). Then ``export_patient`` (the domain code of
``dicom_exports``) runs per patient, with and without de-identified copies; the script prints wall-clock seconds
per patient and the sizes of the SEG and SR files.

How to run
----------
    .venv/bin/python benchmarks/bench_dicom_exports.py --patients 6
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=6)
    parser.add_argument("--keep", help="write the data root here (kept) instead of a temporary folder")
    args = parser.parse_args()

    import dagster as dg

    from radiomics_assets.definitions import defs
    from radiomics_assets.defs.partitions import PARTITION_RANGE_END, PARTITION_RANGE_START, patients
    from radiomics_assets.exports import ExportSettings, export_patient
    from radiomics_assets.features import params_by_modality
    from radiomics_assets.paths import DataRoot
    from radiomics_assets.synth import SynthConfig, make_patient, write_ct_series

    config = SynthConfig(n_patients=args.patients)
    with tempfile.TemporaryDirectory() as scratch:
        tmp = args.keep or scratch
        root = DataRoot(Path(tmp))
        seeds, keys = ["patient_id,x,y,z,modality"], []
        for index in range(args.patients):
            patient = make_patient(config, index, label=index % 2)
            patient.hu = np.where(patient.lesion, patient.hu + 100.0, patient.hu)
            write_ct_series(patient, root.inbox / patient.patient_id / "CT", config.seed)
            z, y, x = np.argwhere(patient.lesion).mean(axis=0).round().astype(int)
            point = [patient.origin_mm[i] + v * patient.spacing_mm[i] for i, v in enumerate((x, y, z))]
            seeds.append(f"{patient.patient_id},{point[0]:.3f},{point[1]:.3f},{point[2]:.3f},CT")
            keys.append(patient.patient_id)
        (root.path / "seeds.csv").write_text("\n".join(seeds) + "\n")
        with dg.instance_for_test() as instance:
            instance.add_dynamic_partitions(patients.name, keys)
            started = time.perf_counter()
            result = defs.resolve_job_def("ingest_patient").execute_in_process(
                instance=instance,
                raise_on_error=False,
                tags={PARTITION_RANGE_START: keys[0], PARTITION_RANGE_END: keys[-1]},
                run_config={
                    "resources": {
                        "radiomics": {"config": {"data_dir": tmp, "auto_segmentation": "confidence_connected"}}
                    }
                },
            )
            ingest_seconds = time.perf_counter() - started
        assert result.success, "ingest failed"
        settings = ExportSettings(params=params_by_modality())
        for deidentify in (False, True):
            times, seg_kib, sr_kib = [], [], []
            for key in keys:
                started = time.perf_counter()
                outcome = export_patient(root, key, ExportSettings(params=settings.params, deidentify=deidentify))
                times.append(time.perf_counter() - started)
                seg_kib += [p.stat().st_size / 1024 for p in outcome.files if p.name.startswith("seg_")]
                sr_kib += [p.stat().st_size / 1024 for p in outcome.files if p.name.startswith("sr_")]
            print(
                f"export {'with' if deidentify else 'without'} de-identified copies: "
                f"{statistics.median(times):.2f} s per patient (median of {len(keys)}, max {max(times):.2f} s); "
                f"SEG {statistics.median(seg_kib):.0f} KiB, SR {statistics.median(sr_kib):.0f} KiB"
            )
        print(
            "patient assets (ingest, auto segmentation, features) for comparison: "
            f"{ingest_seconds / len(keys):.2f} s per patient"
        )


if __name__ == "__main__":
    main()
