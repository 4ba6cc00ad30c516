"""The incremental inbox index, the patient manifests and the inbox sensor built on them.

Sensor ticks are real evaluations of `inbox_sensor` on a real (temporary) Dagster instance; the partitions a
tick requests are added to the instance as the daemon would. DICOM reads are counted by wrapping
``pydicom.dcmread`` (every read in the package goes through it); the wrapper still reads the file.
"""

import shutil
import time
from collections import Counter
from pathlib import Path

import dagster as dg
import pydicom
import pytest
from pydicom.uid import generate_uid

from radiomics_assets.definitions import defs
from radiomics_assets.defs.partitions import patients
from radiomics_assets.defs.resources import RadiomicsConfig
from radiomics_assets.defs.sensors import inbox_sensor
from radiomics_assets.ingest import InboxIndex, find_patient, read_manifest, write_manifests
from radiomics_assets.ingest import dicom_headers as dicom_series
from radiomics_assets.paths import DataRoot
from radiomics_assets.synth import SynthConfig, write_cohort, write_patient
from radiomics_assets_tests.conftest import SMALL, requested_runs

ONE = SynthConfig(n_patients=1, seed=11, rows=64, columns=64, slices=20)


class DicomReads:
    """Every DICOM read: the path read, and whether it was a header read of the inbox scan."""

    def __init__(self, monkeypatch):
        self.paths: list[Path] = []
        self.header_paths: list[Path] = []
        real_dcmread, real_read_until = pydicom.dcmread, dicom_series.read_until

        def counting_dcmread(path, *args, **kwargs):
            self.paths.append(Path(path))
            return real_dcmread(path, *args, **kwargs)

        def counting_read_until(path, last_tag):
            self.paths.append(Path(path))
            if last_tag == dicom_series.LAST_HEADER_TAG:
                self.header_paths.append(Path(path))
            return real_read_until(path, last_tag)

        monkeypatch.setattr(pydicom, "dcmread", counting_dcmread)
        monkeypatch.setattr(dicom_series, "read_until", counting_read_until)

    def reset(self) -> None:
        self.paths.clear()
        self.header_paths.clear()


class Sensor:
    """Evaluates `inbox_sensor` tick after tick, carrying the cursor and applying partition requests."""

    def __init__(self, instance, root: Path):
        self.instance, self.root, self.cursor = instance, root, None

    def tick(self, settle_seconds: int = 0) -> dg.SensorResult:
        resources = {"radiomics": RadiomicsConfig(data_dir=str(self.root), inbox_settle_seconds=settle_seconds)}
        context = dg.build_sensor_context(instance=self.instance, cursor=self.cursor, resources=resources)
        result = inbox_sensor(context)
        self.cursor = result.cursor
        for request in result.dynamic_partitions_requests or []:
            self.instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
        return result

    def registered(self) -> set[str]:
        return set(self.instance.get_dynamic_partitions(patients.name))


def _runs(result: dg.SensorResult) -> list[tuple[str, str]]:
    return requested_runs(result)


def _staged_patient(tmp_path: Path) -> Path:
    """One synthetic SMALL patient written outside the inbox, to copy in step by step."""
    write_cohort(ONE, tmp_path / "staging")
    return tmp_path / "staging" / "inbox" / "SYN-0001"


def test_growing_study_is_registered_only_once_stable(tmp_path):
    source = _staged_patient(tmp_path)
    target = tmp_path / "data" / "inbox" / "SYN-0001"
    (target / "CT").mkdir(parents=True)
    slices = sorted((source / "CT").iterdir())
    with dg.instance_for_test() as instance:
        sensor = Sensor(instance, tmp_path / "data")
        for path in slices[:8]:
            shutil.copy2(path, target / "CT" / path.name)
        half = slices[8].read_bytes()
        (target / "CT" / slices[8].name).write_bytes(half[: len(half) // 2])  # a file still being written
        first = sensor.tick()
        assert not first.run_requests and not sensor.registered()
        assert "files new or changed since the previous tick" in first.skip_reason.skip_message

        for path in slices[8:]:
            shutil.copy2(path, target / "CT" / path.name)  # the copy goes on between ticks
        shutil.copytree(source / "RTSTRUCT", target / "RTSTRUCT")
        assert not sensor.tick().run_requests and not sensor.registered()

        # Unchanged since the previous tick, but written just now: a long settle time still holds it back.
        held = sensor.tick(settle_seconds=3600)
        assert not held.run_requests and "settle time 3600 s" in held.skip_reason.skip_message

        registered = sensor.tick(settle_seconds=0)
        assert _runs(registered) == [("SYN-0001", "ingest-SYN-0001")]
        assert sensor.registered() == {"SYN-0001"}
        manifest = read_manifest(DataRoot(tmp_path / "data"), "SYN-0001")
        assert len(manifest.dicom) == 21 and "SYN-0001/RTSTRUCT/RS.dcm" in manifest.dicom
        assert "SYN-0001/CT/CT_0009.dcm" in manifest.dicom  # the complete file, no longer the half-written one

        assert not sensor.tick().run_requests  # registered once


def test_identical_redrop_registers_nothing_and_late_series_reruns_once(tmp_path, monkeypatch):
    source = _staged_patient(tmp_path)
    data = tmp_path / "data"
    shutil.copytree(source, data / "inbox" / "SYN-0001")
    with dg.instance_for_test() as instance:
        sensor = Sensor(instance, data)
        sensor.tick()
        assert _runs(sensor.tick()) == [("SYN-0001", "ingest-SYN-0001")]
        first_fingerprint = read_manifest(DataRoot(data), "SYN-0001").fingerprint

        # The same files dropped again (a copy that keeps their times, like cp -p or rsync -a).
        reads = DicomReads(monkeypatch)
        shutil.copytree(source, data / "inbox" / "SYN-0001", dirs_exist_ok=True)
        for _ in range(2):
            again = sensor.tick()
            assert not again.run_requests and not again.dynamic_partitions_requests
        assert reads.header_paths == []  # unchanged size and mtime: no header read again

        # A second series of the same patient arrives later, in its own folder.
        late = SynthConfig(n_patients=1, seed=12, rows=64, columns=64, slices=20)
        write_patient(late, 0, 1, tmp_path / "late")
        shutil.copytree(tmp_path / "late" / "SYN-0001" / "CT", data / "inbox" / "SYN-0001" / "CT_later")
        assert not sensor.tick().run_requests  # changed since the previous tick: wait one more
        rerun = sensor.tick()
        manifest = read_manifest(DataRoot(data), "SYN-0001")
        assert manifest.fingerprint != first_fingerprint
        assert _runs(rerun) == [("SYN-0001", f"ingest-SYN-0001-{manifest.fingerprint[:12]}")]
        assert rerun.run_requests[0].tags["radiomics/inbox_fingerprint"] == manifest.fingerprint
        assert not rerun.dynamic_partitions_requests
        assert len(reads.header_paths) == 20  # only the new series' files were read
        assert len(find_patient(DataRoot(data), "SYN-0001").image_series) == 2
        assert not sensor.tick().run_requests and not sensor.tick().run_requests


def _clone_patients(template: Path, inbox: Path, n_patients: int) -> int:
    """``n_patients`` copies of a synthetic patient, each with its own PatientID and UIDs; returns files written."""
    files = sorted(template.rglob("*.dcm"))
    datasets = [(path.relative_to(template), pydicom.dcmread(path)) for path in files]
    for i in range(n_patients):
        patient_id = f"BULK-{i:04d}"
        for relative, ds in datasets:
            ds.PatientID = patient_id
            ds.SeriesInstanceUID = generate_uid(entropy_srcs=[patient_id, ds.Modality])
            ds.SOPInstanceUID = generate_uid(entropy_srcs=[patient_id, str(relative)])
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            out = inbox / patient_id / relative
            out.parent.mkdir(parents=True, exist_ok=True)
            ds.save_as(out)
    return n_patients * len(files)


def test_index_pages_header_reads_and_sensor_registers_thousands_across_ticks(tmp_path, monkeypatch):
    data = tmp_path / "data"
    n_files = _clone_patients(_staged_patient(tmp_path), data / "inbox", 100)
    assert n_files == 2100
    reads = DicomReads(monkeypatch)

    index = InboxIndex(DataRoot(data))
    pages = []
    for _ in range(4):
        reads.reset()
        snapshot = index.update(max_header_reads=800)
        pages.append((len(reads.header_paths), snapshot.header_reads, len(snapshot.pending)))
    assert pages == [(800, 800, 1300), (800, 800, 500), (500, 500, 0), (0, 0, 0)]
    assert len(snapshot.patients) == 100 and not snapshot.waiting_for_headers
    assert {len(entry.files) for entry in snapshot.patients.values()} == {21}

    # The sensor on a fresh index: the default budget (2000 headers per tick) leaves 100 files for the next tick.
    shutil.rmtree(data / "index")
    with dg.instance_for_test() as instance:
        sensor = Sensor(instance, data)
        reads_per_tick, seconds_per_tick, registered = [], [], Counter()
        for _ in range(4):
            reads.reset()
            started = time.perf_counter()
            result = sensor.tick()
            seconds_per_tick.append(time.perf_counter() - started)
            reads_per_tick.append(len(reads.header_paths))
            registered.update(key for key, _ in _runs(result))
        assert reads_per_tick == [2000, 100, 0, 0]
        assert registered == Counter({f"BULK-{i:04d}": 1 for i in range(100)})
        assert sensor.registered() == set(registered)
        assert max(seconds_per_tick) < 30, seconds_per_tick  # the daemon's sensor timeout is 60 s


def test_a_patients_partition_reads_only_its_own_files(tmp_path, monkeypatch):
    monkeypatch.setenv("RADIOMICS_DATA_DIR", str(tmp_path))
    write_cohort(SMALL, tmp_path)
    root = DataRoot(tmp_path)
    job = defs.resolve_job_def("ingest_patient")
    reads = DicomReads(monkeypatch)

    def ingest_reads(keys: list[str]) -> list[Path]:
        write_manifests(root, keys)
        reads.reset()
        with dg.instance_for_test() as instance:
            instance.add_dynamic_partitions(patients.name, keys)
            assert job.execute_in_process(partition_key="SYN-0001", instance=instance).success
        return list(reads.paths)

    own_folder = root.inbox / "SYN-0001"
    with_8 = ingest_reads([f"SYN-{i:04d}" for i in range(1, 9)])
    assert with_8 and all(own_folder in path.parents for path in with_8)

    write_cohort(SynthConfig(n_patients=8, seed=11, rows=64, columns=64, slices=20, id_prefix="MORE"), tmp_path)
    with_16 = ingest_reads([f"SYN-{i:04d}" for i in range(1, 9)] + [f"MORE-{i:04d}" for i in range(1, 9)])
    assert Counter(with_16) == Counter(with_8)

    # Without a manifest (a data root from before manifests) the patient is found by reading every header.
    (tmp_path / "manifests" / "SYN-0001.json").unlink()
    reads.reset()
    assert len(find_patient(root, "SYN-0001").paths) == 21
    assert len(reads.header_paths) == 16 * 21


@pytest.mark.parametrize("make_loop", [True, False], ids=["symlink_loop", "linked_study"])
def test_index_follows_symlinked_folders_once(tmp_path, make_loop):
    source = _staged_patient(tmp_path)
    inbox = tmp_path / "data" / "inbox"
    inbox.mkdir(parents=True)
    (inbox / "linked").symlink_to(source, target_is_directory=True)
    if make_loop:
        (source / "CT" / "back").symlink_to(source, target_is_directory=True)
    snapshot = InboxIndex(DataRoot(tmp_path / "data")).update()
    assert list(snapshot.patients) == ["SYN-0001"]
    assert len(snapshot.patients["SYN-0001"].files) == 21
    assert all(path.startswith("linked/") for path in snapshot.patients["SYN-0001"].dicom)


def test_broken_study_is_registered_and_its_run_names_the_file(tmp_path, monkeypatch, capfd):
    monkeypatch.setenv("RADIOMICS_DATA_DIR", str(tmp_path))
    write_cohort(SynthConfig(n_patients=2, seed=11, rows=64, columns=64, slices=20), tmp_path)
    broken = tmp_path / "inbox" / "SYN-0002" / "CT" / "CT_0006.dcm"
    broken.write_bytes(broken.read_bytes()[:200])
    (tmp_path / "inbox" / "stray.dcm").write_bytes(broken.read_bytes())
    with dg.instance_for_test() as instance:
        sensor = Sensor(instance, tmp_path)
        sensor.tick()
        batch = "ingest-SYN-0001...SYN-0002"  # arriving together, the two share one run
        assert sorted(_runs(sensor.tick())) == [("SYN-0001", batch), ("SYN-0002", batch)]
        log = capfd.readouterr().err
        assert "SYN-0002: unreadable files" in log and "CT_0006.dcm: incomplete DICOM header" in log
        assert "stray.dcm is not used" in log
        assert "SYN-0002/CT/CT_0006.dcm" in read_manifest(DataRoot(tmp_path), "SYN-0002").dicom

        job = defs.resolve_job_def("ingest_patient")
        result = job.execute_in_process(partition_key="SYN-0002", instance=instance, raise_on_error=False)
        assert not result.success
        (failure,) = [e for e in result.all_events if e.is_step_failure]
        message = str(failure.event_specific_data.error.to_string())
        assert "CT_0006.dcm: incomplete DICOM header" in message and "CT_0007.dcm: slice spacing" in message
