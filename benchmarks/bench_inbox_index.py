"""Benchmark: the inbox index at archive scale (``ingest.inbox_index.InboxIndex.update``).

What is measured
----------------
An inbox of ``--patients`` x ``--series`` x ``--slices`` small DICOM files (8x8 CT slices written with pydicom,
one folder per series; by default 1,000 x 2 x 50 = 100,000 files) is generated once in ``--dir`` (kept and
reused when it already holds that many files; generation time is not a figure). Then:

* **first indexing**: one ``update`` without budget, reading every header in ``--workers`` processes; printed
  as headers per second (wall clock; the walk, the SQLite writes and the grouping included) and per CPU second
  (this process and the workers); then both header readers in one process on ``--reference-files`` files,
  alternating: the reader of only the needed tags and the previous one (pydicom up to PixelSpacing);
* **idle tick**: ``update`` with nothing changed in a process that knows the index (a sensor's code server), best
  of three, and the first tick of a new process; alternating with today's tick emulated (every file ``stat``ed,
  every header row loaded and grouped again: ``RADIOMICS_INBOX_FULL_SCAN_SECONDS=0``, nothing kept in memory,
  no stored grouping);
* **tick after one new series**: ``--slices`` files written into a new folder, then one ``update``: the first
  change a process sees (it loads the header rows), then the next ones (only the patients the change touches are
  grouped again), alternating with the whole inbox grouped again (before), with and without Python's cycle
  collector running during the update (before it was paused there);
* **idle sensor tick with every patient registered**: ``update`` and the sensor's plan (each patient's files
  compared with its manifest), alternating with the plan reading every manifest and fingerprinting every patient
  again (before).

The machine the figures come from is shared: compare the ratios measured alternating in one run.

How to run
----------
    .venv/bin/python benchmarks/bench_inbox_index.py --dir /tmp/inbox_bench
    .venv/bin/python benchmarks/bench_inbox_index.py --dir /tmp/inbox_bench --patients 100   # 10k files
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path
from unittest import mock

import numpy as np
import pydicom
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from radiomics_assets.ingest import inbox_index, manifests
from radiomics_assets.ingest.dicom_headers import read_header, read_header_with_pydicom
from radiomics_assets.ingest.inbox import RACY_SECONDS, inbox_entries
from radiomics_assets.ingest.inbox_index import FULL_SCAN_ENV, READ_WORKERS_ENV, InboxIndex, index_path
from radiomics_assets.ingest.inbox_tick import plan_tick
from radiomics_assets.ingest.manifests import write_manifest
from radiomics_assets.paths import DataRoot

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


def _series_dataset(patient_id: str, study_uid: str, frame_uid: str) -> pydicom.Dataset:
    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CT_IMAGE_STORAGE
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = CT_IMAGE_STORAGE
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.StudyDate = "20240101"
    ds.Modality = "CT"
    ds.Manufacturer = "BENCH"
    ds.PatientName = "Bench^Patient"
    ds.PatientID = patient_id
    ds.SliceThickness = "2.0"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = generate_uid()
    ds.FrameOfReferenceUID = frame_uid
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ds.Columns = 8
    ds.PixelSpacing = [0.7, 0.7]
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
    ds.PixelData = np.arange(64, dtype=np.int16).tobytes()
    return ds


def write_series(folder: Path, patient_id: str, study_uid: str, frame_uid: str, n_slices: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    ds = _series_dataset(patient_id, study_uid, frame_uid)
    for k in range(n_slices):
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.ImagePositionPatient = [0.0, 0.0, 2.0 * k]
        ds.InstanceNumber = k + 1
        ds.save_as(folder / f"IM_{k:04d}.dcm", enforce_file_format=True)


def _write_patient(args: tuple[Path, int, int, int]) -> None:
    inbox, p, n_series, n_slices = args
    study_uid, frame_uid = generate_uid(), generate_uid()
    for s in range(n_series):
        write_series(inbox / f"P{p:05d}" / f"S{s}", f"P{p:05d}", study_uid, frame_uid, n_slices)


def generate_inbox(inbox: Path, n_patients: int, n_series: int, n_slices: int, workers: int) -> None:
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(_write_patient, [(inbox, p, n_series, n_slices) for p in range(n_patients)], chunksize=8))


def count_files(inbox: Path) -> int:
    return sum(len(files) for _, _, files in os.walk(inbox))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=None, help="where the inbox is generated (default: a temp dir)")
    parser.add_argument("--patients", type=int, default=1000)
    parser.add_argument("--series", type=int, default=2)
    parser.add_argument("--slices", type=int, default=50)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--reference-files", type=int, default=1000, help="files read by both readers, alternating")
    parser.add_argument("--generate-only", action="store_true")
    args = parser.parse_args()

    base = args.dir or Path(tempfile.mkdtemp(prefix="inbox_bench_"))
    inbox = base / "inbox"
    expected = args.patients * args.series * args.slices
    if not inbox.exists() or count_files(inbox) != expected:
        shutil.rmtree(inbox, ignore_errors=True)
        started = time.perf_counter()
        generate_inbox(inbox, args.patients, args.series, args.slices, args.workers)
        print(f"generated {expected} files in {time.perf_counter() - started:.0f} s under {inbox}")
    if args.generate_only:
        return
    os.environ.setdefault(READ_WORKERS_ENV, str(args.workers))
    root = DataRoot(base)

    def fresh_update(**kwargs) -> tuple[float, object]:
        inbox_index._KNOWN.clear()  # as a new process: nothing known of the index file
        started = time.perf_counter()
        snapshot = InboxIndex(root).update(**kwargs)
        return time.perf_counter() - started, snapshot

    shutil.rmtree(base / "index", ignore_errors=True)
    cpu_before = os.times()
    seconds, snapshot = fresh_update(max_header_reads=None, max_seconds=None)
    cpu = [after - before for after, before in zip(os.times()[:4], cpu_before[:4], strict=True)]
    print(
        f"first indexing: {snapshot.header_reads} headers in {seconds:.1f} s = {snapshot.header_reads / seconds:.0f} "
        f"headers/s ({os.environ[READ_WORKERS_ENV]} worker processes; walk, SQLite and grouping included; "
        f"{len(snapshot.patients)} patients); CPU: this process {cpu[0] + cpu[1]:.1f} s, workers "
        f"{cpu[2] + cpu[3]:.1f} s = {snapshot.header_reads / sum(cpu):.0f} headers per CPU second"
    )
    sample = sorted(inbox.glob("P0000*/S0/*.dcm"))[: args.reference_files]
    rates: dict[str, list[float]] = {"needed tags": [], "pydicom up to PixelSpacing (before)": []}
    for _ in range(3):  # alternating, one process each
        for label, reader in zip(rates, (read_header, read_header_with_pydicom), strict=True):
            started = time.perf_counter()
            for path in sample:
                reader(path)
            rates[label].append(len(sample) / (time.perf_counter() - started))
    for label, values in rates.items():
        print(f"header reader, one process, {label}: {max(values):.0f} headers/s (best of 3, {len(sample)} files)")

    def as_before() -> float:
        """Today's tick: every file stat'ed, every header row loaded and grouped again."""
        with sqlite3.connect(index_path(root)) as con:
            con.execute("DELETE FROM meta WHERE name = 'grouping_generation'")  # no stored grouping to start from
        os.environ[FULL_SCAN_ENV] = "0"
        try:
            return fresh_update()[0]
        finally:
            del os.environ[FULL_SCAN_ENV]

    index = InboxIndex(root)
    index.update()  # this process now knows the index (a sensor's code server keeps it between ticks)
    idle, before = [], []
    for _ in range(3):
        started = time.perf_counter()
        index.update()
        idle.append(time.perf_counter() - started)
        before.append(as_before())
        index.update()
    walk_started = time.perf_counter()
    inbox_entries(inbox)
    walk_seconds = time.perf_counter() - walk_started
    cold = fresh_update()[0]
    print(f"idle tick (nothing changed): {min(idle):.3f} s (best of 3); first tick of a new process: {cold:.2f} s")
    print(
        f"idle tick as before (every file stat'ed, every header row loaded and grouped): {min(before):.2f} s "
        f"(best of 3, alternating; the walk alone {walk_seconds:.2f} s)"
    )

    def tick_after_new_series() -> tuple[float, object]:
        new_series = inbox / "P00000" / "S_new"
        write_series(new_series, "P00000", generate_uid(), generate_uid(), args.slices)
        started = time.perf_counter()
        snapshot = index.update()
        seconds = time.perf_counter() - started
        shutil.rmtree(new_series)
        index.update()
        return seconds, snapshot

    seconds, snapshot = tick_after_new_series()
    print(
        f"tick after one new series of {args.slices} files, first change seen by this process (header rows "
        f"loaded): {seconds:.2f} s ({snapshot.header_reads} headers read, {snapshot.folders_listed} folders listed)"
    )
    scoped, whole, collected = [], [], []
    regroup_all = mock.patch.object(InboxIndex, "_update_changed", lambda *args: (None, ({}, {})))
    for _ in range(3):  # alternating: as shipped; the whole inbox regrouped (before); also with the collector on
        scoped.append(tick_after_new_series()[0])
        with regroup_all:
            whole.append(tick_after_new_series()[0])
            with mock.patch.object(inbox_index.gc, "disable", lambda: None):  # the pause made a no-op
                collected.append(tick_after_new_series()[0])
    print(
        f"tick after one new series, next changes: {min(scoped):.3f} s (best of 3, only the patients it touches "
        f"regrouped); the whole inbox regrouped (before): {min(whole):.2f} s, and with the cycle collector running "
        f"during the update: {min(collected):.2f} s"
    )

    # The sensor's plan after the index: every patient's files compared with its manifest, every tick.
    snapshot = index.update()
    keys = set(snapshot.patients)
    for entry in snapshot.patients.values():
        write_manifest(root, entry)
    cursor = plan_tick(root, snapshot, None, keys, 0.0, 25).cursor
    time.sleep(RACY_SECONDS + 0.1)  # manifests are written once, at registration: trusted from memory after this
    now, then = [], []
    for _ in range(3):  # alternating: as shipped; each manifest read and each fingerprint computed again (before)
        started = time.perf_counter()
        plan = plan_tick(root, index.update(), cursor, keys, 0.0, 25)
        now.append(time.perf_counter() - started)
        manifests._FINGERPRINTS.clear()
        started = time.perf_counter()
        again = index.update()
        fresh = replace(again, patients={key: replace(entry) for key, entry in again.patients.items()})
        plan_tick(root, fresh, cursor, keys, 0.0, 25)
        then.append(time.perf_counter() - started)
    assert not plan.runs, plan.summary
    print(
        f"idle sensor tick, index and plan ({len(keys)} patients registered): {min(now):.3f} s (best of 3); with "
        f"the plan reading every manifest and fingerprinting every patient (before): {min(then):.3f} s"
    )


if __name__ == "__main__":
    main()
