"""Hospital-style exports next to good patients in one inbox: the odd objects are skipped with a note, each
broken patient fails alone naming its file, the good patients get their features, and nothing stops the run or
the sensor tick.

Every case is built from the synthetic cohort (``radiomics_assets.synth``) the way PACS exports and scanners
write them: dose-report secondary captures, scouts, screen saves and enhanced multi-frame objects beside the CT,
the same study exported into two folders, PatientIDs in Cyrillic, too long for a file name, or differing only in
characters a sanitiser drops, a folder name that is not UTF-8, a contour drawn between slices.
"""

import os
import re
import shutil
from pathlib import Path

import dagster as dg
import duckdb
import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from radiomics_assets.cli import main as cli_main
from radiomics_assets.ingest import scan_inbox
from radiomics_assets.ingest.dicom_headers import ENHANCED_MULTIFRAME_SOP_CLASSES
from radiomics_assets.paths import patient_key
from radiomics_assets.synth import (
    CT_IMAGE_STORAGE,
    SynthConfig,
    make_patient,
    write_ct_series,
    write_rtstruct,
)
from radiomics_assets_tests.conftest import SHARED_DATA
from radiomics_assets_tests.test_inbox_index import Sensor

COHORT = SynthConfig(n_patients=12, seed=21, rows=48, columns=48, slices=16)
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
ENHANCED_CT = "1.2.840.10008.5.1.4.1.1.2.1"
NAME_MARK = "Synthetic^Case"  # every synthetic PatientName starts so; it must appear nowhere in the outputs


def _write_as(inbox: Path, folder: str | bytes, index: int, patient_id: str | None = None) -> Path:
    """Synthetic patient ``index`` (CT + RTSTRUCT) under ``inbox/folder``, its files relabelled to ``patient_id``."""
    patient = make_patient(COHORT, index, label=index % 2)
    where = Path(os.fsdecode(os.path.join(os.fsencode(inbox), os.fsencode(folder))))
    ct = write_ct_series(patient, where / "CT", COHORT.seed)
    write_rtstruct(patient, ct, where / "RTSTRUCT" / "RS.dcm", COHORT.roi_name, COHORT.seed)
    if patient_id is not None:
        for path in where.rglob("*.dcm"):
            ds = pydicom.dcmread(path)
            ds.SpecificCharacterSet = "ISO_IR 192"  # UTF-8, for the Cyrillic ID
            ds.PatientID = patient_id
            ds.save_as(path)
    return where


def _like(slice_path: Path, path: Path, **changes) -> pydicom.Dataset:
    """A new object made from one CT slice (patient and study kept), with its own UIDs and ``changes``; written."""
    ds = pydicom.dcmread(slice_path)
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.SeriesInstanceUID = generate_uid()
    for keyword, value in changes.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path)
    return ds


def add_dose_report(ct_folder: Path) -> Path:
    """A dose-report secondary capture in the CT folder: Modality CT, SOP class SC, no patient geometry."""
    path = ct_folder / "DOSE_REPORT.dcm"
    _like(
        ct_folder / "CT_0001.dcm",
        path,
        SOPClassUID=SECONDARY_CAPTURE,
        ImageType=["DERIVED", "SECONDARY", "OTHER"],
        ImagePositionPatient=None,
        ImageOrientationPatient=None,
        PixelSpacing=None,
    )
    return path


def add_scout(ct_folder: Path, flagged: bool = True) -> list[Path]:
    """A two-image localizer (AP and lateral) as its own series; ``flagged``: ImageType says LOCALIZER."""
    series_uid = generate_uid()
    paths = []
    for name, orientation in (("SCOUT_AP", [1, 0, 0, 0, 0, -1]), ("SCOUT_LAT", [0, 1, 0, 0, 0, -1])):
        path = ct_folder / f"{name}.dcm"
        image_type = ["ORIGINAL", "PRIMARY", "LOCALIZER"] if flagged else ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds = _like(ct_folder / "CT_0001.dcm", path, ImageOrientationPatient=orientation, ImageType=image_type)
        ds.SeriesInstanceUID = series_uid
        ds.save_as(path)
        paths.append(path)
    return paths


def add_screen_save(ct_folder: Path) -> Path:
    """A CT Image Storage object marked DERIVED\\SECONDARY without position or orientation (a screen save)."""
    path = ct_folder / "SCREEN_SAVE.dcm"
    _like(
        ct_folder / "CT_0001.dcm",
        path,
        ImageType=["DERIVED", "SECONDARY", "SCREEN SAVE"],
        ImagePositionPatient=None,
        ImageOrientationPatient=None,
    )
    return path


def add_enhanced_ct(ct_folder: Path) -> Path:
    """An Enhanced CT object without its functional groups: its frames cannot be placed (real ones are read, see
    test_real_exports_three)."""
    path = ct_folder.parent / "ENHANCED" / "ENHANCED_CT.dcm"
    ds = _like(ct_folder / "CT_0001.dcm", path, SOPClassUID=ENHANCED_CT, ImagePositionPatient=None)
    ds.NumberOfFrames = 2
    ds.PixelData = ds.PixelData * 2
    ds.save_as(path)
    return path


def shift_contour(rtstruct: Path, contour_index: int, by_mm: float) -> None:
    ds = pydicom.dcmread(rtstruct)
    contour = ds.ROIContourSequence[0].ContourSequence[contour_index]
    points = np.asarray(contour.ContourData, dtype=float).reshape(-1, 3)
    points[:, 2] += by_mm
    contour.ContourData = [f"{v:.6g}" for v in points.ravel()]
    ds.save_as(rtstruct)


def test_non_volumetric_objects_and_identical_copies_are_skipped_with_their_reason(tmp_path):
    inbox = tmp_path / "inbox"
    folder = _write_as(inbox, "P1", 0)
    ct = folder / "CT"
    dose, screen, enhanced = add_dose_report(ct), add_screen_save(ct), add_enhanced_ct(ct)
    scout = add_scout(ct, flagged=False)  # not flagged: recognised by its planes that are not parallel
    shutil.copytree(folder, inbox / "export_2" / "P1")
    scan = scan_inbox(inbox)
    (patient,) = scan.patients.values()
    assert [len(files) for files in patient.image_series.values()] == [COHORT.slices]
    assert all(f.path.is_relative_to(folder) for f in patient.all_files()) and not patient.conflicts
    skipped = patient.skipped
    assert "secondary capture" in skipped[dose] and "screen save" in skipped[screen]
    assert "multi-frame image whose frames cannot be placed: no functional groups" in skipped[enhanced]
    assert all("localizer series" in skipped[p] and "not parallel" in skipped[p] for p in scout)
    copies = [p for p in skipped if p.is_relative_to(inbox / "export_2")]
    assert len(copies) == COHORT.slices + 1 + 5  # the CT, the RTSTRUCT and the five odd objects, each once more
    assert f"identical copy of {ct / 'CT_0003.dcm'}" in skipped[inbox / "export_2" / "P1" / "CT" / "CT_0003.dcm"]
    assert set(skipped) <= set(scan.ignored) and not patient.unreadable
    assert ENHANCED_CT in ENHANCED_MULTIFRAME_SOP_CLASSES


def test_same_sop_instance_uid_with_other_content_is_a_conflict_naming_both_files(tmp_path):
    inbox = tmp_path / "inbox"
    ct = _write_as(inbox, "P1", 0) / "CT"
    other = inbox / "other" / "CT_0005.dcm"
    other.parent.mkdir()
    ds = pydicom.dcmread(ct / "CT_0005.dcm")
    ds.PixelData = bytes(len(ds.PixelData))
    ds.save_as(other)
    (patient,) = scan_inbox(inbox).patients.values()
    (conflict,) = patient.conflicts
    assert f"{other}: same SOP instance UID" in conflict and str(ct / "CT_0005.dcm") in conflict


def test_ids_that_share_a_key_are_not_merged(tmp_path):
    inbox = tmp_path / "inbox"
    _write_as(inbox, "a", 0, patient_id="CD 30")
    _write_as(inbox, "b", 1, patient_id=patient_key("CD 30"))  # an ID that is literally the other one's key
    scan = scan_inbox(inbox)
    (patient,) = scan.patients.values()
    (conflict,) = patient.conflicts
    assert "2 different PatientIDs give this key" in conflict and "they are not merged" in conflict


def _build_corpus(inbox: Path) -> dict:
    """Good and broken patients in one inbox; returns what each case is expected to become."""
    _write_as(inbox, "SYN-0001", 0)
    _write_as(inbox, "SYN-0002", 1)
    # The same patient (same pixels, contours and UIDs) as a hospital export: scouts, a dose report, a screen
    # save and an enhanced object beside the CT, and the whole study exported a second time into another folder.
    export = _write_as(inbox, "export/2026-01-01/CT_STUDY", 1, patient_id="SYN-0002-EXPORT")
    for add in (add_dose_report, add_scout, add_screen_save, add_enhanced_ct):
        add(export / "CT")
    shutil.copytree(export, inbox / "export" / "second_copy")
    ids = {"cyrillic": "Иванов", "long": "X" * 200, "space": "AB 20", "slash": "AB/20"}
    for index, (case, patient_id) in enumerate(ids.items(), start=2):
        _write_as(inbox, case, index, patient_id=patient_id)
    _write_as(inbox, "collide_a", 6, patient_id="CD 30")
    _write_as(inbox, "collide_b", 7, patient_id=patient_key("CD 30"))
    _write_as(inbox, b"caf\xe9", 8, patient_id="SYN-0009")  # a folder name that is not UTF-8
    between = _write_as(inbox, "SYN-0010", 9)
    shift_contour(between / "RTSTRUCT" / "RS.dcm", 2, COHORT.slice_thickness_mm / 2)
    conflict = _write_as(inbox, "SYN-0011", 10) / "CT" / "CT_0005.dcm"
    ds = pydicom.dcmread(conflict)
    ds.PixelData = bytes(len(ds.PixelData))
    (inbox / "SYN-0011-resent").mkdir()
    ds.save_as(inbox / "SYN-0011-resent" / "CT_0005.dcm")
    truncated = _write_as(inbox, "SYN-0012", 11) / "CT" / "CT_0006.dcm"
    truncated.write_bytes(truncated.read_bytes()[:200])
    return {
        "twin": "SYN-0002",
        "good": ["SYN-0001", "SYN-0002", "SYN-0002-EXPORT", *(patient_key(i) for i in ids.values())],
        "failed": {
            patient_key("CD 30"): r"2 different PatientIDs give this key",
            "SYN-0010": r"RS\.dcm: ROI 'GTV' contour 3 lies 1\.00 mm from the nearest slice",
            "SYN-0011": r"SYN-0011-resent/CT_0005\.dcm: same SOP instance UID .* as .*/SYN-0011/CT/CT_0005\.dcm but "
            "different content",
            "SYN-0012": r"SYN-0012/CT/CT_0006\.dcm: incomplete DICOM header",
        },
        "notes": [
            r"caf\\xe9: name is not valid UTF-8",
            r"CT_STUDY/CT/DOSE_REPORT\.dcm: secondary capture",
            r"CT_STUDY/CT/SCOUT_AP\.dcm: localizer",
            r"CT_STUDY/CT/SCREEN_SAVE\.dcm: derived secondary image without slice geometry",
            r"CT_STUDY/ENHANCED/ENHANCED_CT\.dcm: multi-frame image whose frames cannot be placed",
            r"second_copy/CT/CT_0001\.dcm: identical copy of .*CT_STUDY/CT/CT_0001\.dcm",
        ],
    }


def _table(root: Path, query: str):
    with duckdb.connect(str(root / "radiomics.duckdb"), read_only=True) as con:
        return con.execute(query).df()


def test_one_inbox_of_real_world_exports(tmp_path, monkeypatch, capfd):
    monkeypatch.setenv("RADIOMICS_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / ".dagster"))
    expected = _build_corpus(tmp_path / "inbox")
    keys = expected["good"] + list(expected["failed"])

    # The sensor: two ticks (new, then stable) register every patient and request their runs; neither raises.
    with dg.instance_for_test() as instance:
        sensor = Sensor(instance, tmp_path)
        sensor.tick()
        sensor.tick()
        assert sensor.registered() == set(keys)
        assert not [key for key in keys if "Synthetic" in key or "Case" in key]
    tick_log = capfd.readouterr().err
    for note in expected["notes"]:
        assert re.search(note, tick_log), note

    # The headless run over the same inbox: the good patients get features, each broken one fails alone.
    code = cli_main(["--data-dir", str(tmp_path), "run", "--no-cohort"])
    out, err = capfd.readouterr()
    assert code == 1
    assert f"{len(keys)} patients registered" in out
    good, broken = len(expected["good"]), len(expected["failed"])
    assert f"patient assets: {good} done, {broken} failed of {len(keys)} in " in out
    for note in expected["notes"]:
        assert re.search(rf"note: ignored inbox/.*{note}", out), note
    # The run's summary lists each failed patient (`FAILED <key> <stage>: <file>: <problem>`).
    failures = [line.strip().removeprefix("FAILED ") for line in out.splitlines() if line.strip().startswith("FAILED ")]
    assert len(failures) == len(expected["failed"])
    for key, pattern in expected["failed"].items():
        (line,) = [line for line in failures if line.startswith(f"{key} ")]
        assert re.search(pattern, line), (pattern, line)

    features = _table(tmp_path, "SELECT patient_id, feature_class, feature, image_type, value FROM features")
    assert sorted(features.patient_id.unique()) == sorted(expected["good"])
    by_patient = {
        key: rows.set_index(["image_type", "feature_class", "feature"]).value
        for key, rows in features.groupby("patient_id")
    }
    twin, export = by_patient[expected["twin"]], by_patient["SYN-0002-EXPORT"]
    assert len(twin) > 100 and twin.sort_index().equals(export.sort_index())  # skipped objects changed nothing

    # No patient name anywhere: tables, keys, file names, logs.
    for table in ("series", "masks", "features", "diagnostics"):
        text = _table(tmp_path, f"SELECT * FROM {table}").astype(str).to_csv()
        assert NAME_MARK not in text and "Иванов" not in text
    names = [str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if "inbox" not in p.parts]
    assert not [n for n in names if NAME_MARK in n or "Synthetic" in n]
    assert NAME_MARK not in tick_log + out + err


@pytest.mark.skipif(not (SHARED_DATA / "sarcoma").exists(), reason="../shared/data is not present")
def test_sarcoma_export_with_a_scout_and_a_copy_keeps_its_series(tmp_path):
    """A real patient (CT, MR, PET, RTSTRUCTs) with a localizer and part of the study exported twice: the same
    series and structure sets as the original, the scout and the copies skipped."""
    source = SHARED_DATA / "sarcoma" / "dicom" / "STS_002"
    inbox = tmp_path / "inbox"
    (inbox / "STS_002").mkdir(parents=True)
    for sub in source.iterdir():
        (inbox / "STS_002" / sub.name).symlink_to(sub, target_is_directory=sub.is_dir())
    original = scan_inbox(inbox).patients["STS_002"]
    ct = next(files for files in original.image_series.values() if files[0].modality == "CT")
    add_scout_from(ct[0].path, inbox / "scouts")
    copies = [f.path for f in ct[:3]] + [f.path for f in original.rtstructs]
    for number, path in enumerate(copies):  # a second export of some of the files (copied into the temporary inbox)
        (inbox / "copy" / str(number)).mkdir(parents=True)
        shutil.copy(path, inbox / "copy" / str(number) / path.name)
    scan = scan_inbox(inbox)
    patient = scan.patients["STS_002"]
    assert {uid: len(files) for uid, files in patient.image_series.items()} == {
        uid: len(files) for uid, files in original.image_series.items()
    }
    assert not patient.conflicts and len(patient.rtstructs) == len(original.rtstructs)
    assert sum("localizer" in why for why in patient.skipped.values()) == 2
    assert sum("identical copy" in why for why in patient.skipped.values()) == len(copies)


def add_scout_from(slice_path: Path, folder: Path) -> list[Path]:
    """Two localizer images (AP, lateral) made from one real slice, as their own series in ``folder``."""
    series_uid = generate_uid()
    paths = []
    folder.mkdir(parents=True, exist_ok=True)
    for name, orientation in (("SCOUT_AP", [1, 0, 0, 0, 0, -1]), ("SCOUT_LAT", [0, 1, 0, 0, 0, -1])):
        ds = _like(slice_path, folder / f"{name}.dcm", ImageOrientationPatient=orientation)
        ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
        ds.SeriesInstanceUID = series_uid
        ds.SOPClassUID = CT_IMAGE_STORAGE
        ds.save_as(folder / f"{name}.dcm")
        paths.append(folder / f"{name}.dcm")
    return paths


def test_a_name_that_is_not_utf8_costs_only_its_files_and_is_reported_once(tmp_path):
    from radiomics_assets.ingest import InboxIndex
    from radiomics_assets.paths import DataRoot

    inbox = tmp_path / "inbox"
    _write_as(inbox, "SYN-0001", 0)
    _write_as(inbox, b"caf\xe9", 1)
    (inbox / "SYN-0001" / os.fsdecode(b"notes \xff.txt")).write_text("scanner notes")
    index = InboxIndex(DataRoot(tmp_path))
    first = index.update()
    assert sorted(first.patients) == ["SYN-0001"]
    assert set(first.new_ignored) == {"caf\\xe9", "SYN-0001/notes \\xff.txt"}
    assert "caf\\xe9: name is not valid UTF-8" in first.ignored["caf\\xe9"]
    again = index.update()
    assert "caf\\xe9" in again.ignored and not again.new_ignored  # the sensor warns once, not every tick
    assert sorted(scan_inbox(inbox).patients) == ["SYN-0001"]
