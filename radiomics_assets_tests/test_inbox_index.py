"""The incremental inbox index, the patient manifests and the inbox sensor built on them.

Sensor ticks are real evaluations of `inbox_sensor` on a real (temporary) Dagster instance; the partitions a
tick requests are added to the instance as the daemon would. DICOM reads are counted by wrapping
``pydicom.dcmread`` and ``read_header`` (every read in the package goes through one of them); the wrappers still
read the file.
"""

import copy
import gc
import os
import random
import shutil
import threading
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
from radiomics_assets.errors import DicomInputError
from radiomics_assets.ingest import InboxIndex, find_patient, inbox_index, manifests, read_manifest, write_manifests
from radiomics_assets.ingest import dicom_headers as dicom_series
from radiomics_assets.ingest import inbox as inbox_walk
from radiomics_assets.ingest.inbox import inbox_entries, walk_inbox
from radiomics_assets.ingest.manifests import write_manifest
from radiomics_assets.paths import DataRoot
from radiomics_assets.synth import SynthConfig, write_cohort, write_patient
from radiomics_assets_tests.conftest import SHARED_DATA, SMALL, requested_runs

ONE = SynthConfig(n_patients=1, seed=11, rows=64, columns=64, slices=20)


class DicomReads:
    """Every DICOM read: the path read, and whether it was a header read of the inbox scan."""

    def __init__(self, monkeypatch):
        self.paths: list[Path] = []
        self.header_paths: list[Path] = []
        real_dcmread, real_read_header = pydicom.dcmread, dicom_series.read_header

        def counting_dcmread(path, *args, **kwargs):
            self.paths.append(Path(path))
            return real_dcmread(path, *args, **kwargs)

        def counting_read_header(path):
            self.paths.append(Path(path))
            self.header_paths.append(Path(path))
            return real_read_header(path)

        monkeypatch.setattr(pydicom, "dcmread", counting_dcmread)
        monkeypatch.setattr(dicom_series, "read_header", counting_read_header)

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

    # The sensor on a fresh index: the default budget (20000 headers per tick) reads them all on the first tick.
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
        assert reads_per_tick == [2100, 0, 0, 0]
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


# ---------------------------------------------------------------------------------------------------------------
# The walk that lists only changed folders, and the reader of only the needed tags.


def _age(tree: Path, seconds: float = 3600) -> None:
    """Dates every file and folder under ``tree`` back, as in an archive filled long ago."""
    stamp = time.time() - seconds
    for path in [*tree.rglob("*"), tree]:
        os.utime(path, (stamp, stamp), follow_symlinks=False)


def _view(snapshot, *inboxes: Path) -> dict:
    """What a snapshot says, with the inbox paths in messages made relative (two roots may index one inbox)."""

    def text(message: str) -> str:
        for inbox in inboxes:
            message = message.replace(str(inbox), "inbox")
        return message

    return {
        "patients": {
            key: (entry.dicom, entry.pair, entry.files, {rel: text(why) for rel, why in entry.unreadable.items()})
            for key, entry in snapshot.patients.items()
        },
        "ignored": {rel: text(why) for rel, why in snapshot.ignored.items()},
        "pending": snapshot.pending,
        "n_files": snapshot.n_files,
    }


def test_an_idle_update_lists_no_folder_reads_nothing_and_keeps_the_grouping(tmp_path, monkeypatch):
    monkeypatch.setenv(inbox_index.RECENT_ENV, "0")
    data = tmp_path / "data"
    _clone_patients(_staged_patient(tmp_path), data / "inbox", 3)
    _age(data / "inbox")
    n_folders = 1 + sum(1 for path in (data / "inbox").rglob("*") if path.is_dir())
    index = InboxIndex(DataRoot(data))
    first = index.update()
    assert first.folders_listed == n_folders and first.header_reads == 63 and len(first.patients) == 3

    reads = DicomReads(monkeypatch)
    again = index.update()
    assert again.folders_listed == 0 and again.header_reads == 0 and reads.header_paths == []
    assert _view(again) == _view(first)

    inbox_index._KNOWN.clear()  # a new process: the stored listings and headers, nothing listed or read
    loads = []
    real_load = inbox_index._stored_grouping
    monkeypatch.setattr(inbox_index, "_stored_grouping", lambda *args: loads.append(1) or real_load(*args))
    cold = index.update()
    assert cold.folders_listed == 0 and reads.header_paths == [] and _view(cold) == _view(first)
    assert _view(index.update()) == _view(first) and loads == [1]  # the stored grouping is loaded once, then kept

    # One new series: its folder and its patient's folder (whose entries changed) are listed, nothing else.
    late = SynthConfig(n_patients=1, seed=12, rows=64, columns=64, slices=20)
    write_patient(late, 0, 1, tmp_path / "late")
    shutil.copytree(tmp_path / "late" / "SYN-0001" / "CT", data / "inbox" / "BULK-0001" / "CT_later")
    grown = index.update()
    assert grown.folders_listed == 2 and grown.header_reads == 20 and len(reads.header_paths) == 20
    assert len(grown.patients["BULK-0001"].files) == 21  # its own PatientID: a patient of its own
    assert len(grown.patients) == 4 and grown.patients["SYN-0001"].dicom[0].startswith("BULK-0001/CT_later/")


def test_an_update_pauses_the_cycle_collector_and_always_restores_it(tmp_path, monkeypatch):
    """The collector would walk every file's index objects again and again during a regrouping (see
    ``_cyclic_gc_paused``); it must be off only for the update, also when the update fails."""
    data = tmp_path / "data"
    _clone_patients(_staged_patient(tmp_path), data / "inbox", 1)
    seen = []
    real_walk = inbox_index.walk_inbox

    def recording_walk(*args, **kwargs):
        seen.append(gc.isenabled())
        return real_walk(*args, **kwargs)

    monkeypatch.setattr(inbox_index, "walk_inbox", recording_walk)
    assert len(InboxIndex(DataRoot(data)).update().patients) == 1
    assert seen == [False] and gc.isenabled()

    def failing_walk(*args, **kwargs):
        raise OSError("inbox share went away")

    monkeypatch.setattr(inbox_index, "walk_inbox", failing_walk)
    with pytest.raises(OSError, match="went away"):
        InboxIndex(DataRoot(data)).update()
    assert gc.isenabled()
    gc.disable()  # a caller that runs with the collector off keeps it off
    try:
        monkeypatch.setattr(inbox_index, "walk_inbox", real_walk)
        InboxIndex(DataRoot(data)).update()
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_the_incremental_index_equals_a_fresh_full_index_after_every_change(tmp_path, monkeypatch):
    monkeypatch.setenv(inbox_index.RECENT_ENV, "0")
    source = _staged_patient(tmp_path)
    data = tmp_path / "data"
    inbox = data / "inbox"
    _clone_patients(source, inbox, 4)
    _clone_patients(source, tmp_path / "more", 5)  # BULK-0004 is moved in later
    _age(inbox)
    index = InboxIndex(DataRoot(data))
    index.update()
    other = tmp_path / "other"  # a second data root whose inbox is the same folder, indexed from nothing
    other.mkdir()
    (other / "inbox").symlink_to(inbox, target_is_directory=True)

    def compare(step: str) -> dict:
        incremental = index.update()
        shutil.rmtree(other / "index", ignore_errors=True)
        inbox_index._KNOWN.pop(str(inbox_index.index_path(DataRoot(other))), None)
        full = InboxIndex(DataRoot(other)).update()
        assert full.folders_listed > 0
        assert _view(incremental, inbox, other / "inbox") == _view(full, inbox, other / "inbox"), step
        assert {rel for rel, _ in inbox_entries(inbox)} == set(walk_inbox(inbox).files()), step
        return _view(incremental)

    shutil.move(tmp_path / "more" / "BULK-0004", inbox / "BULK-0004")  # old times, moved in whole
    assert "BULK-0004" in compare("folder moved in")["patients"]
    (inbox / "BULK-0001" / "CT" / "CT_0005.dcm").unlink()
    compare("file removed")
    (inbox / "BULK-0002" / "CT" / "CT_0003.dcm").rename(inbox / "BULK-0002" / "CT" / "CT_0003b.dcm")
    assert "BULK-0002/CT/CT_0003b.dcm" in compare("file renamed")["patients"]["BULK-0002"][0]
    (inbox / "BULK-0002" / "RTSTRUCT").rename(inbox / "BULK-0002" / "RS")
    assert "BULK-0002/RS/RS.dcm" in compare("folder renamed")["patients"]["BULK-0002"][0]
    shutil.rmtree(inbox / "BULK-0003")
    assert "BULK-0003" not in compare("folder removed")["patients"]
    bad = inbox / os.fsdecode(b"caf\xe9")
    bad.mkdir()
    shutil.copy2(source / "CT" / "CT_0001.dcm", bad / "CT_0001.dcm")
    assert "caf\\xe9" in compare("folder with a name that is not UTF-8")["ignored"]
    (inbox / "linked").symlink_to(source, target_is_directory=True)
    assert "SYN-0001" in compare("symlinked study")["patients"]
    (inbox / "hidden").mkdir()
    (inbox / "hidden" / ".partial.dcm").write_bytes(b"not yet")
    compare("hidden file")

    # A file rewritten in place in a quiet folder: no folder time changes, so only a full walk sees it.
    rewritten = inbox / "BULK-0000" / "CT" / "CT_0002.dcm"
    ds = pydicom.dcmread(rewritten)
    ds.PatientID = "MOVED-1"
    quiet = rewritten.parent.stat()
    ds.save_as(rewritten)
    os.utime(rewritten.parent, ns=(quiet.st_atime_ns, quiet.st_mtime_ns))
    assert "MOVED-1" not in index.update().patients  # as documented: not seen until the periodic full walk
    monkeypatch.setenv(inbox_index.FULL_SCAN_ENV, "0")
    assert compare("in-place rewrite, full walk")["patients"]["MOVED-1"][0] == ["BULK-0000/CT/CT_0002.dcm"]


class IndexRig:
    """An inbox indexed incrementally by one process, compared after each step with an index built from nothing
    (a second data root whose inbox links to the same folder) and with what a new process loads from the stored
    grouping. ``grouped`` records how many headers each grouping of the step was given."""

    def __init__(self, tmp_path: Path, monkeypatch):
        monkeypatch.setenv(inbox_index.RECENT_ENV, "0")
        self.template = _staged_patient(tmp_path) / "CT" / "CT_0001.dcm"
        self.data = tmp_path / "data"
        self.inbox = self.data / "inbox"
        self.inbox.mkdir(parents=True, exist_ok=True)
        self.other = tmp_path / "other"
        self.other.mkdir()
        (self.other / "inbox").symlink_to(self.inbox, target_is_directory=True)
        self.index = InboxIndex(DataRoot(self.data))
        self.key = str(inbox_index.index_path(DataRoot(self.data)))
        self.steps = 0
        self.grouped: list[int] = []
        self.groupings: list[int] = []
        real_group = inbox_index.group_headers
        monkeypatch.setattr(
            inbox_index,
            "group_headers",
            lambda headers, *a: self.grouped.append(len(headers)) or real_group(headers, *a),
        )

    def write(self, relative: str, patient_id: str, issuer="", modality="", series="", orientation=None) -> None:
        """A copy of the template slice as an object of its own (new SOP instance UID) of ``patient_id``."""
        ds = pydicom.dcmread(self.template)
        ds.PatientID = patient_id
        if issuer:
            ds.IssuerOfPatientID = issuer
        if modality:
            ds.Modality = modality
        if orientation:
            ds.ImageOrientationPatient = orientation
        ds.SeriesInstanceUID = series or generate_uid(entropy_srcs=[patient_id, issuer, modality])
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[relative])
        (self.inbox / relative).parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(self.inbox / relative)

    def settle(self) -> None:
        """Folders changed in the last minute dated back, each step to its own time: a folder listed within
        RACY_SECONDS of its change is listed again on the next update, which would make the index file's state
        newer than the state of the process compared."""
        self.steps += 1
        stamp = time.time() - 3600 + self.steps
        for folder in [self.inbox, *(path for path in self.inbox.rglob("*") if path.is_dir())]:
            if folder.stat().st_mtime > time.time() - 60:
                os.utime(folder, (stamp, stamp))

    def full(self):
        shutil.rmtree(self.other / "index", ignore_errors=True)
        inbox_index._KNOWN.pop(str(inbox_index.index_path(DataRoot(self.other))), None)
        return InboxIndex(DataRoot(self.other)).update()

    def step(self, label: str) -> tuple[dict, int]:
        """One update after a change: (what it says, the headers its first grouping was given)."""
        self.settle()
        self.grouped.clear()
        incremental = self.index.update()
        self.groupings = list(self.grouped)  # of this update alone
        regrouped = self.grouped[0] if self.grouped else 0
        full = _view(self.full(), self.other / "inbox")
        assert _view(incremental, self.inbox) == full, label
        in_memory = inbox_index._KNOWN.pop(self.key)
        assert _view(self.index.update(), self.inbox) == full, label  # a new process: the stored grouping
        inbox_index._KNOWN[self.key] = in_memory  # this process again
        return _view(incremental, self.inbox), regrouped


def test_a_change_regroups_only_the_patients_it_touches_and_gives_the_full_grouping(tmp_path, monkeypatch):
    """After each change the index groups only the headers of the patients the change may touch (``inbox_delta``):
    PatientIDs sharing a folder, unreadable and skipped files beside another patient's, issuers that split a
    PatientID, a PatientID whose key is another patient's, identical copies. Each result must equal a grouping of
    the whole inbox from nothing."""
    rig = IndexRig(tmp_path, monkeypatch)
    inbox, write = rig.inbox, rig.write
    _clone_patients(rig.template.parent.parent, inbox, 4)
    _age(inbox)
    rig.index.update()
    total = 84
    write("BULK-0000/CT/guest.dcm", "GUEST-1")  # another patient's file in a patient's folder
    view, regrouped = rig.step("a guest file in a patient's folder")
    assert "GUEST-1" in view["patients"] and regrouped == 22 < total + 1
    (inbox / "BULK-0001" / "CT" / "broken.dcm").write_bytes(b"not DICOM")
    view, regrouped = rig.step("an unreadable file beside a patient's")
    assert "BULK-0001/CT/broken.dcm" in view["patients"]["BULK-0001"][3] and regrouped == 21
    (inbox / "junk").mkdir()
    (inbox / "junk" / "notes.txt").write_text("scanner notes")
    view, regrouped = rig.step("an unreadable file alone")
    assert "junk/notes.txt" in view["ignored"] and regrouped == 0
    write("BULK-0000/CT/report.dcm", "BULK-0001", modality="SR")  # skipped by one patient, beside another's
    view, regrouped = rig.step("a skipped object beside another patient's files")
    # Listed as a file beside the folder's last patient in path order (the grouping's rule for a folder's strays).
    assert "modality SR" in view["patients"]["GUEST-1"][3]["BULK-0000/CT/report.dcm"]
    assert regrouped == 21 + 1 + 21 + 1
    write("split/a/one.dcm", "BULK-0002", issuer="HOSP-A")
    write("split/b/one.dcm", "BULK-0002", issuer="HOSP-B")
    view, regrouped = rig.step("one PatientID from two issuers")
    assert {"BULK-0002", "BULK-0002_HOSP-A", "BULK-0002_HOSP-B"} <= set(view["patients"])
    write("collide/one.dcm", "BULK-0002_HOSP-A")  # a PatientID that is another patient's key
    view, regrouped = rig.step("a PatientID equal to another patient's key")
    assert view["patients"]["BULK-0002_HOSP-A"][0] == ["collide/one.dcm", "split/a/one.dcm"]  # refused at ingest
    assert regrouped == 1  # the new key is another patient's: the whole inbox decides (grouped next)
    shutil.copy2(inbox / "BULK-0003" / "CT" / "CT_0004.dcm", inbox / "junk" / "copy.dcm")
    view, regrouped = rig.step("an identical copy in another folder")
    assert "identical copy" in view["ignored"]["junk/copy.dcm"] and regrouped == 22
    (inbox / "BULK-0000" / "CT" / "guest.dcm").unlink()
    shutil.rmtree(inbox / "collide")
    view, regrouped = rig.step("files removed")
    assert "GUEST-1" not in view["patients"] and "collide/one.dcm" not in str(view)
    shutil.rmtree(inbox / "BULK-0003")
    view, regrouped = rig.step("a patient removed")
    assert view["patients"]["BULK-0003"][0] == ["junk/copy.dcm", "junk/notes.txt"] and regrouped == 1
    inbox_index._KNOWN.clear()  # a new process: its first change starts from the stored rows and grouping
    write("BULK-0001/CT/late.dcm", "BULK-0001")
    view, regrouped = rig.step("a new process's first change")
    # BULK-0001 (22 headers), its SR report in BULK-0000's folder, and so BULK-0000 (21): not the other patients.
    assert "BULK-0001/CT/late.dcm" in view["patients"]["BULK-0001"][0] and regrouped == 22 + 1 + 21


def test_a_key_whose_other_patient_id_has_only_skipped_files_there_is_regrouped_whole(tmp_path, monkeypatch):
    """C from two issuers gives the keys C_H1 and C_H2, and a second PatientID is literally C_H1. Its files under
    that key may all be skipped (a report, a localizer): they still decide whether the key exists, which series is
    a localizer, and which patient a stray file in a folder goes to."""
    rig = IndexRig(tmp_path, monkeypatch)
    rig.write("a/x1.dcm", "C", issuer="H1")
    rig.write("b/x2.dcm", "C", issuer="H2")
    rig.write("g/y.dcm", "C_H1", modality="SR")
    rig.step("a report of C_H1")
    (rig.inbox / "b" / "x2.dcm").unlink()  # C is no longer split: the key C_H1 remains for the report alone
    view, _ = rig.step("C no longer split")
    assert view["patients"]["C_H1"][0] == []

    series = generate_uid(entropy_srcs=["localizer"])
    rig.write("a/loc.dcm", "C", issuer="H1", series=series, orientation=[1, 0, 0, 0, 1, 0])
    rig.write("b/x2.dcm", "C", issuer="H2")
    rig.write("h/loc2.dcm", "C_H1", series=series, orientation=[0, 1, 0, 0, 0, -1])
    view, _ = rig.step("a localizer series of two PatientIDs under one key")
    assert "localizer" in view["ignored"]["h/loc2.dcm"]
    (rig.inbox / "a" / "loc.dcm").unlink()  # one slice left in the series: no longer a localizer, used
    view, _ = rig.step("the localizer's other slice removed")
    assert "h/loc2.dcm" in view["patients"]["C_H1"][0]

    rig.write("shared/x.dcm", "C_H1")
    (rig.inbox / "shared" / "u.txt").write_text("not DICOM")
    rig.step("a stray file beside C_H1")
    rig.write("shared/n.dcm", "B")  # B is beside it now; the stray goes to the folder's last patient in key order
    rig.step("another patient beside the stray file")


def test_an_index_written_by_another_process_meanwhile_is_never_patched(tmp_path, monkeypatch):
    """Process B read the index; process A indexed a change and wrote it; B then writes what it found. B's change of
    part of the stored grouping assumed the grouping B read, so it is not applied: the stored grouping is dropped
    and the next process to load the index groups the whole inbox."""
    rig = IndexRig(tmp_path, monkeypatch)
    rig.write("a/x1.dcm", "X")
    rig.write("b/y1.dcm", "Y")
    _age(rig.inbox)
    rig.index.update()
    (rig.inbox / "b" / "y2.txt").write_text("a change: B's state now holds the rows")
    rig.settle()
    rig.index.update()

    def process_a():
        rig.write("a/f1.dcm", "P")
        rig.settle()
        assert "P" in InboxIndex(DataRoot(rig.data)).update().patients
        (rig.inbox / "a" / "f1.dcm").unlink()  # gone again before B walks: B sees a/ changed, not P
        rig.settle()

    _during_next_walk(rig, monkeypatch, process_a)
    assert sorted(rig.index.update().patients) == ["X", "Y"]
    assert _loaded_by_a_new_process(rig) == _view(rig.full(), rig.other / "inbox")

    # The same when B changed nothing but wrote a folder listed again (its idle call stores the new listing).
    (rig.inbox / "b" / "y3.txt").write_text("b/ changes now: B lists it again on its next calls")
    rig.index.update()
    real_write = InboxIndex._write

    def process_a_then_write(self, *args, **kwargs):
        monkeypatch.setattr(InboxIndex, "_write", real_write)

        def process_a():
            rig.write("a/f2.dcm", "Q")
            rig.settle()
            assert "Q" in InboxIndex(DataRoot(rig.data)).update().patients

        _as_another_process(rig, process_a)
        return real_write(self, *args, **kwargs)

    monkeypatch.setattr(InboxIndex, "_write", process_a_then_write)
    rig.index.update()
    assert _loaded_by_a_new_process(rig) == _view(rig.full(), rig.other / "inbox")


def _as_another_process(rig: IndexRig, action) -> None:
    """``action`` runs as another process (with its own memory of the index); then this process has its back."""
    mine = inbox_index._KNOWN.pop(rig.key, None)
    try:
        action()
    finally:
        inbox_index._KNOWN.pop(rig.key, None)
        if mine is not None:
            inbox_index._KNOWN[rig.key] = mine


def _during_next_walk(rig: IndexRig, monkeypatch, action, after: bool = False) -> None:
    """``action`` runs as another process during this process's next update: after it read the index and before
    (or, ``after``, just after) its walk, so before its write."""
    real_walk = inbox_index.walk_inbox

    def walk(*args, **kwargs):
        monkeypatch.setattr(inbox_index, "walk_inbox", real_walk)
        if not after:
            _as_another_process(rig, action)
        walked = real_walk(*args, **kwargs)
        if after:
            _as_another_process(rig, action)
        return walked

    monkeypatch.setattr(inbox_index, "walk_inbox", walk)


def _loaded_by_a_new_process(rig: IndexRig) -> dict:
    loaded: dict = {}
    _as_another_process(rig, lambda: loaded.update(_view(InboxIndex(DataRoot(rig.data)).update(), rig.inbox)))
    return loaded


@pytest.mark.parametrize("next_call", ["a partial change", "an idle full walk"])
def test_a_process_whose_grouping_was_not_stored_starts_its_next_call_from_the_index_file(
    tmp_path, monkeypatch, next_call
):
    """Process B stores P while A walks, then Q arrives: A's partial write is refused (the index moved), and A's next
    call must not mark B's grouping, which lacks Q, valid again."""
    rig = IndexRig(tmp_path, monkeypatch)
    rig.write("a/x.dcm", "X")
    _age(rig.inbox)
    rig.index.update()

    def process_b():
        rig.write("b/p.dcm", "P")
        rig.settle()
        assert "P" in InboxIndex(DataRoot(rig.data)).update().patients
        rig.write("c/q.dcm", "Q")
        rig.settle()

    _during_next_walk(rig, monkeypatch, process_b)
    assert sorted(rig.index.update().patients) == ["P", "Q", "X"]
    if next_call == "a partial change":
        rig.write("d/r.dcm", "R")
        rig.settle()
    else:
        monkeypatch.setenv(inbox_index.FULL_SCAN_ENV, "0")
    rig.index.update()
    assert _loaded_by_a_new_process(rig) == _view(rig.full(), rig.other / "inbox")


def test_a_whole_grouping_from_a_walk_older_than_another_process_write_is_not_stored(tmp_path, monkeypatch):
    """A's periodic full walk ends before B stores patient Y (b/y.dcm): A's whole grouping lacks Y and must not
    replace B's; and a row B wrote for a file that went again must not join a patient later."""
    rig = IndexRig(tmp_path, monkeypatch)
    rig.write("a/x.dcm", "X")
    rig.write("b/u.dcm", "U")
    _age(rig.inbox)
    rig.index.update()
    monkeypatch.setenv(inbox_index.FULL_SCAN_ENV, "0")  # A's next call: a full walk, so a whole regrouping
    rig.write("d/w.dcm", "W")
    rig.settle()

    def process_b():
        rig.write("b/y.dcm", "Y")
        rig.write("b/gone.dcm", "G")
        rig.settle()
        assert {"Y", "G"} <= set(InboxIndex(DataRoot(rig.data)).update().patients)
        (rig.inbox / "b" / "gone.dcm").unlink()  # its row stays in the index until a call sees it go
        rig.settle()

    _during_next_walk(rig, monkeypatch, process_b, after=True)
    assert sorted(rig.index.update().patients) == ["U", "W", "X"]  # A's own walk
    monkeypatch.setenv(inbox_index.FULL_SCAN_ENV, "3600")
    inbox_index._KNOWN.clear()  # every process loads the index file now
    full = _view(rig.full(), rig.other / "inbox")
    assert _view(InboxIndex(DataRoot(rig.data)).update(), rig.inbox) == full
    inbox_index._KNOWN.clear()
    rig.write("e/z.dcm", "G")  # a new file of G: the row of b/gone.dcm must not come back with it
    view, _ = rig.step("a new process's first change")
    assert view["patients"]["G"][0] == ["e/z.dcm"]


def test_a_whole_grouping_from_an_ordinary_walk_older_than_another_process_write_is_not_stored(tmp_path, monkeypatch):
    """As above, without a full walk: A's change goes to the whole grouping (a sidecar is in it) from a walk older
    than B's write of b/y.dcm, and A does not list b/ again, so the stored listing of b/ is B's."""
    rig = IndexRig(tmp_path, monkeypatch)
    rig.write("a/x.dcm", "X")
    rig.write("b/u.dcm", "U")
    _age(rig.inbox)
    rig.index.update()
    rig.write("c/w.dcm", "W")
    (rig.inbox / "c" / "w.json").write_text("{}")
    rig.settle()

    def process_b():
        rig.write("b/y.dcm", "Y")
        rig.settle()
        assert "Y" in InboxIndex(DataRoot(rig.data)).update().patients

    _during_next_walk(rig, monkeypatch, process_b, after=True)
    assert sorted(rig.index.update().patients) == ["U", "W", "X"]
    assert _loaded_by_a_new_process(rig) == _view(rig.full(), rig.other / "inbox")


def test_a_call_with_nothing_to_store_forgets_an_index_another_process_changed(tmp_path, monkeypatch):
    """A's call ends with a header left for later (no grouping to store) while B's full walk found b/u.dcm rewritten
    in place (U -> U2) and stored it. A's next call must not store its own older grouping (U) over B's listing of
    b/: no later walk would list b/ again to correct it."""
    rig = IndexRig(tmp_path, monkeypatch)
    rig.write("a/x.dcm", "X")
    rig.write("b/u.dcm", "U")
    _age(rig.inbox)
    rig.index.update()
    rig.write("c/1.dcm", "Q")
    rig.write("c/2.dcm", "Q")
    rig.settle()

    def process_b():
        rewritten = rig.inbox / "b" / "u.dcm"
        quiet = rewritten.parent.stat()
        ds = pydicom.dcmread(rewritten)
        ds.PatientID = "U2"
        ds.save_as(rewritten)
        os.utime(rewritten.parent, ns=(quiet.st_atime_ns, quiet.st_mtime_ns))  # only a full walk sees it
        monkeypatch.setenv(inbox_index.FULL_SCAN_ENV, "0")
        assert "U2" in InboxIndex(DataRoot(rig.data)).update().patients
        monkeypatch.setenv(inbox_index.FULL_SCAN_ENV, "3600")

    _during_next_walk(rig, monkeypatch, process_b, after=True)
    assert rig.index.update(max_header_reads=1).pending == ["c/2.dcm"]
    rig.index.update()
    full = _view(rig.full(), rig.other / "inbox")
    assert "U2" in full["patients"]
    inbox_index._KNOWN.clear()
    monkeypatch.setenv(inbox_index.FULL_SCAN_ENV, "0")  # even a periodic full walk
    assert _view(InboxIndex(DataRoot(rig.data)).update(), rig.inbox) == full


def test_two_threads_of_one_process_never_leave_a_stale_grouping(tmp_path, monkeypatch):
    """The sensor's code server and a run may update one index from two threads of one process."""
    rig = IndexRig(tmp_path, monkeypatch)
    rig.write("a/x.dcm", "X")
    _age(rig.inbox)
    rig.index.update()
    real_walk = inbox_index.walk_inbox
    first_walking, second_done = threading.Event(), threading.Event()

    def walk(*args, **kwargs):
        if threading.current_thread().name == "first":
            first_walking.set()
            second_done.wait(30)
        return real_walk(*args, **kwargs)

    monkeypatch.setattr(inbox_index, "walk_inbox", walk)
    results = {}
    first = threading.Thread(target=lambda: results.setdefault("first", rig.index.update()), name="first")
    first.start()
    first_walking.wait(30)
    rig.write("b/p.dcm", "P")
    rig.settle()
    second = threading.Thread(target=lambda: results.setdefault("second", InboxIndex(DataRoot(rig.data)).update()))
    second.start()
    second.join()
    rig.write("c/q.dcm", "Q")
    rig.settle()
    second_done.set()
    first.join()
    assert sorted(results["first"].patients) == ["P", "Q", "X"]
    rig.write("d/r.dcm", "R")
    rig.settle()
    rig.index.update()
    assert _loaded_by_a_new_process(rig) == _view(rig.full(), rig.other / "inbox")


def test_a_sidecar_without_its_image_does_not_stop_the_grouping_from_being_kept(tmp_path, monkeypatch):
    """A ``.json`` alone (a converter's metadata beside DICOM files) is no image/mask pair: idle calls keep the
    grouping. An image file alone may become a patient when the settings change, so it still regroups."""
    rig = IndexRig(tmp_path, monkeypatch)
    rig.write("a/x.dcm", "X")
    (rig.inbox / "a" / "x.json").write_text('{"converted_by": "a converter"}')
    view, _ = rig.step("a sidecar alone")
    assert list(view["patients"]) == ["X"] and view["n_files"] == 2
    rig.grouped.clear()
    rig.index.update()
    assert rig.grouped == []  # an idle call: the kept grouping
    (rig.inbox / "b").mkdir()
    (rig.inbox / "b" / "scan.nrrd").write_bytes(b"NRRD0004")
    rig.step("an image file alone")
    rig.grouped.clear()
    rig.index.update()
    assert rig.grouped == [1]  # grouped again on every call


def test_a_change_within_a_read_budget_of_zero_reads_nothing(tmp_path, monkeypatch):
    rig = IndexRig(tmp_path, monkeypatch)
    rig.write("a/x.dcm", "A")
    rig.step("one patient")
    rig.write("b/y.dcm", "B")
    rig.settle()
    snapshot = rig.index.update(max_header_reads=0)
    assert snapshot.header_reads == 0 and snapshot.pending == ["b/y.dcm"]


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_random_changes_regrouped_in_part_give_the_full_grouping(tmp_path, monkeypatch, seed):
    """Random files added, copied, moved and removed among folders shared by PatientIDs with and without issuers
    (one PatientID equal to another's key), localizer series, non-image objects and unreadable files: after each
    step the index's grouping equals one built from nothing, and so does the stored grouping."""
    rng = random.Random(seed)
    rig = IndexRig(tmp_path, monkeypatch)
    inbox = rig.inbox
    patient_ids = ["A", "B", "C", "C_H1", "D d", *(f"Q{i}" for i in range(6))]
    folders = ["p1", "p1/s1", "shared", "x/y/z", "junk", *(f"q{i}/s" for i in range(8))]
    series = [generate_uid(entropy_srcs=[f"series {i}"]) for i in range(3)]
    orientations = [[1, 0, 0, 0, 1, 0], [0, 1, 0, 0, 0, -1]]
    scoped = 0
    for step in range(50):
        files = sorted(path for path in inbox.rglob("*") if path.is_file())
        folder = inbox / rng.choice(folders)
        name = f"f{step}"
        action = rng.random()
        if action < 0.5 or not files:
            kind = {"issuer": rng.choice(["", "", "H1", "H2"]), "modality": "SR" if rng.random() < 0.15 else ""}
            if rng.random() < 0.3:  # a shared series: a localizer when its slices are not parallel
                kind |= {"series": rng.choice(series), "orientation": rng.choice(orientations)}
            rig.write(str((folder / f"{name}.dcm").relative_to(inbox)), rng.choice(patient_ids), **kind)
        elif action < 0.65:
            rng.choice(files).unlink()
        elif action < 0.75:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{name}.txt").write_text("not DICOM")
        elif action < 0.85:
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copy2(rng.choice(files), folder / f"{name}.dcm")  # an identical copy (or a second unreadable)
        elif action < 0.95:
            folder.mkdir(parents=True, exist_ok=True)
            rng.choice(files).rename(folder / f"{name}.dcm")
        elif folder.exists():
            shutil.rmtree(folder)
        _, regrouped = rig.step(f"step {step}")
        scoped += len(rig.groupings) == 1 and regrouped < sum(1 for _ in inbox.rglob("*.dcm"))
    assert scoped >= 10  # most steps touched only part of the inbox


def test_the_sensor_reads_a_manifest_again_only_when_its_file_changed(tmp_path, monkeypatch):
    """The sensor compares every registered patient with its manifest on every tick: a manifest is parsed again
    only when its file changed, and never trusted from memory while its times are within the file system's time
    step (a rewrite there may keep the inode, the size and a coarse time)."""
    root = DataRoot(tmp_path / "data")
    entry = inbox_index.PatientEntry("P1", ["a/x.dcm"], None, [inbox_index.FileStamp("a/x.dcm", 10, 1, 1)], {})
    write_manifest(root, entry)
    parsed = []
    real_read = manifests.read_manifest
    monkeypatch.setattr(manifests, "read_manifest", lambda *args: parsed.append(1) or real_read(*args))
    assert manifests.manifest_fingerprint(root, "P1") == entry.fingerprint
    assert manifests.manifest_fingerprint(root, "P1") == entry.fingerprint and len(parsed) == 2  # just written
    time.sleep(inbox_walk.RACY_SECONDS + 0.1)
    assert manifests.manifest_fingerprint(root, "P1") == entry.fingerprint and len(parsed) == 3
    assert manifests.manifest_fingerprint(root, "P1") == entry.fingerprint and len(parsed) == 3  # from memory
    moved = inbox_index.PatientEntry("P1", ["a/x.dcm"], None, [inbox_index.FileStamp("a/x.dcm", 11, 1, 1)], {})
    write_manifest(root, moved)
    assert manifests.manifest_fingerprint(root, "P1") == moved.fingerprint != entry.fingerprint
    assert manifests.manifest_fingerprint(root, "P2") is None


def test_a_folder_changed_within_its_listing_time_tick_is_listed_again(tmp_path, monkeypatch):
    monkeypatch.setenv(inbox_index.RECENT_ENV, "0")
    monkeypatch.setattr(inbox_walk, "RACY_SECONDS", 1.0)  # a shorter step than the default 2 s: a shorter test
    source = _staged_patient(tmp_path)
    folder = tmp_path / "data" / "inbox" / "SYN-0001" / "CT"
    folder.mkdir(parents=True)
    slices = sorted((source / "CT").iterdir())
    shutil.copy2(slices[0], folder)
    _age(tmp_path / "data" / "inbox" / "SYN-0001", seconds=0)  # the folder's time is now, as the listing's
    index = InboxIndex(DataRoot(tmp_path / "data"))
    assert index.update().n_files == 1
    # A file arrives within the same timestamp step: on a coarse file system the folder's time does not move.
    same = folder.stat()
    shutil.copy2(slices[1], folder)
    os.utime(folder, ns=(same.st_atime_ns, same.st_mtime_ns))
    assert index.update().n_files == 2  # the previous listing was racy, so the folder is listed again
    time.sleep(1.1)
    assert index.update().folders_listed == 3  # listed within RACY_SECONDS of the folder's time: again
    later = index.update()
    assert later.n_files == 2 and later.folders_listed == 0  # that listing was not racy: trusted now


def test_a_file_still_being_written_in_a_busy_folder_is_stat_again(tmp_path):
    source = _staged_patient(tmp_path)
    folder = tmp_path / "data" / "inbox" / "SYN-0001" / "CT"
    shutil.copytree(source / "CT", folder)
    growing = folder / "CT_0009.dcm"
    whole = growing.read_bytes()
    growing.write_bytes(whole[:300])  # the copy has not reached the end of the header yet
    index = InboxIndex(DataRoot(tmp_path / "data"))
    first = index.update()
    assert "SYN-0001/CT/CT_0009.dcm" in first.patients["SYN-0001"].unreadable
    before = folder.stat()
    with open(growing, "ab") as out:  # the copy goes on in place: the folder's time does not change
        out.write(whole[300:])
    os.utime(folder, ns=(before.st_atime_ns, before.st_mtime_ns))
    second = index.update()  # the folder changed less than RADIOMICS_INBOX_RECENT_SECONDS ago: files stat'ed
    assert second.header_reads == 1 and not second.patients["SYN-0001"].unreadable
    assert next(f for f in second.patients["SYN-0001"].files if f.path.endswith("CT_0009.dcm")).size == len(whole)


def _plain_and_pydicom(path: Path) -> tuple:
    try:
        with_pydicom = dicom_series.read_header_with_pydicom(path)
    except DicomInputError as exc:
        with_pydicom = str(exc)
    return dicom_series._plain_header(path), with_pydicom


def _variant(template: pydicom.Dataset, path: Path, *, implicit: bool = False, big_endian: bool = False, **values):
    ds = copy.deepcopy(template)
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    syntax = (
        pydicom.uid.ImplicitVRLittleEndian
        if implicit
        else pydicom.uid.ExplicitVRBigEndian
        if big_endian
        else pydicom.uid.ExplicitVRLittleEndian
    )
    ds.file_meta.TransferSyntaxUID = syntax
    pydicom.dcmwrite(
        path,
        ds,
        implicit_vr=implicit,
        little_endian=not big_endian,
        enforce_file_format=not big_endian,
        force_encoding=big_endian,  # pydicom converts to big endian only when forced
    )
    return path


def test_the_needed_tags_reader_gives_pydicoms_values_or_leaves_the_file_to_pydicom(tmp_path):
    write_cohort(SMALL, tmp_path)
    cohort = sorted((tmp_path / "inbox").rglob("*.dcm"))
    for path in cohort:
        plain, with_pydicom = _plain_and_pydicom(path)
        assert plain == with_pydicom, path  # every synthetic file is plain: the fast reader answers for all

    template = pydicom.dcmread(cohort[0])
    template.decode()
    sequence_item = pydicom.Dataset()
    sequence_item.ReferencedSOPInstanceUID = "1.2.3"
    odd = tmp_path / "odd"
    odd.mkdir()
    plain_cases = {
        "implicit VR": _variant(template, odd / "implicit.dcm", implicit=True),
        "padded and multi-valued": _variant(
            template,
            odd / "padded.dcm",
            PatientID="ID 7 ",
            InstitutionName="Hospital\\Second site",
            ConvolutionKernel=["Br40d", "3"],
            ImageType=[" DERIVED", "SECONDARY "],
            ImagePositionPatient=["-1.5e2", "0", "+3.25"],
            SliceThickness="2.50",
            MagneticFieldStrength="0",
            Rows=128,
            Columns=27,
        ),
        "undefined-length sequence": _variant(
            template, odd / "sequence.dcm", ReferencedImageSequence=pydicom.Sequence([sequence_item])
        ),
    }
    ds = pydicom.dcmread(plain_cases["undefined-length sequence"])
    ds["ReferencedImageSequence"].is_undefined_length = True
    ds.ReferencedImageSequence[0].is_undefined_length_sequence_item = True
    ds.save_as(plain_cases["undefined-length sequence"])
    for label, path in plain_cases.items():
        plain, with_pydicom = _plain_and_pydicom(path)
        assert plain is not None and plain == with_pydicom, label
    assert _plain_and_pydicom(plain_cases["padded and multi-valued"])[0].rows_columns == "128\\27"

    to_pydicom = {
        "non-ASCII text": _variant(
            template, odd / "latin1.dcm", SpecificCharacterSet="ISO_IR 100", InstitutionName="Hôpital"
        ),
        "ISO 2022 character set": _variant(template, odd / "iso2022.dcm", SpecificCharacterSet=["", "ISO 2022 IR 87"]),
        "big endian": _variant(template, odd / "big.dcm", big_endian=True),
        "multi-frame": _variant(template, odd / "frames.dcm", NumberOfFrames=3),
        "several PatientIDs": _variant(template, odd / "two_ids.dcm", PatientID=["A", "B"]),
        "empty PatientID": _variant(template, odd / "no_id.dcm", PatientID=""),
    }
    truncated = odd / "truncated.dcm"
    truncated.write_bytes(cohort[0].read_bytes()[:400])
    not_dicom = odd / "notes.dcm"
    not_dicom.write_text("scanner notes")
    odd_syntax = odd / "odd_syntax.dcm"  # a transfer syntax UID that is not ASCII (found by fuzzing)
    odd_syntax.write_bytes(cohort[0].read_bytes().replace(b"1.2.840.10008.1.2.1", b"1.2.840.10008.1.2\x9d", 1))
    to_pydicom.update({"truncated": truncated, "not DICOM": not_dicom, "transfer syntax not ASCII": odd_syntax})
    for label, path in to_pydicom.items():
        plain, with_pydicom = _plain_and_pydicom(path)
        assert plain is None, label
        header, error = dicom_series.header_or_error(path)
        assert (header or error) == with_pydicom, label


@pytest.mark.skipif(not SHARED_DATA.exists(), reason="../shared/data is not present")
def test_the_needed_tags_reader_equals_pydicom_on_real_series():
    paths = sorted((SHARED_DATA / "sarcoma").rglob("*.dcm"))
    assert paths
    answered = 0
    for path in paths:
        plain, with_pydicom = _plain_and_pydicom(path)
        assert plain is None or plain == with_pydicom, path
        answered += plain is not None
    assert answered == len(paths)


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_worker_processes_read_the_headers_as_this_process_does(tmp_path, monkeypatch, start_method):
    data = tmp_path / "data"
    _clone_patients(_staged_patient(tmp_path), data / "inbox", 4)
    monkeypatch.setattr(inbox_index, "PARALLEL_MIN_READS", 10)  # a pool for this small inbox
    monkeypatch.setattr(inbox_index, "READ_CHUNK", 16)
    monkeypatch.setenv(inbox_index.READ_WORKERS_ENV, "2")
    if start_method == "spawn":  # as in the sensor's threaded server
        monkeypatch.setattr(inbox_index.threading, "active_count", lambda: 2)
    index = InboxIndex(DataRoot(data))
    budgeted = index.update(max_seconds=0)  # the budget is checked after each task of READ_CHUNK files
    assert budgeted.header_reads == 16 and len(budgeted.pending) == 84 - 16
    pooled = index.update()
    assert pooled.header_reads == 84 - 16 and not pooled.pending

    other = tmp_path / "other"  # the same inbox indexed in this process
    other.mkdir()
    (other / "inbox").symlink_to(data / "inbox", target_is_directory=True)
    monkeypatch.setenv(inbox_index.READ_WORKERS_ENV, "1")
    alone = InboxIndex(DataRoot(other)).update()
    assert alone.header_reads == 84
    assert _view(pooled, data / "inbox", other / "inbox") == _view(alone, data / "inbox", other / "inbox")
    assert len(pooled.patients) == 4
