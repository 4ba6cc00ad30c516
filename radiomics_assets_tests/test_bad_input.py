"""A corpus of broken inputs: each fails only its patient's partition, with a message naming the file and the
problem, and leaves the rows of other patients and the broken patient's earlier rows intact."""

import re

import dagster as dg
import duckdb
import numpy as np
import pydicom
import pytest

from radiomics_assets.cli import step_failure_messages
from radiomics_assets.definitions import defs
from radiomics_assets.defs.partitions import patients
from radiomics_assets.synth import SynthConfig, make_patient, write_cohort
from radiomics_assets_tests.conftest import write_ct, write_seg

COHORT = SynthConfig(n_patients=2, seed=21, rows=48, columns=48, slices=16)


def _ct(root, name):
    return root / "inbox" / "SYN-0002" / "CT" / name


def _rtstruct(root):
    return root / "inbox" / "SYN-0002" / "RTSTRUCT" / "RS.dcm"


def _edit(path, change):
    ds = pydicom.dcmread(path)
    change(ds)
    ds.save_as(path)


def truncated_header(root):
    path = _ct(root, "CT_0006.dcm")
    path.write_bytes(path.read_bytes()[:200])


def truncated_pixels(root):
    path = _ct(root, "CT_0006.dcm")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 3 // 4])


def missing_slice(root):
    _ct(root, "CT_0006.dcm").unlink()


def duplicate_slice(root):
    def same_position_new_uid(ds):
        ds.SOPInstanceUID = ds.SOPInstanceUID + ".1"
        ds.ImagePositionPatient = pydicom.dcmread(_ct(root, "CT_0005.dcm")).ImagePositionPatient

    _edit(_ct(root, "CT_0006.dcm"), same_position_new_uid)


def mixed_orientation(root):
    _edit(_ct(root, "CT_0006.dcm"), lambda ds: setattr(ds, "ImageOrientationPatient", [0, 1, 0, 0, 0, -1]))


def rtstruct_for_absent_series(root):
    def point_elsewhere(ds):
        ds.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0].RTReferencedSeriesSequence[
            0
        ].SeriesInstanceUID = "1.2.3.4.5"
        ds.StructureSetROISequence[0].ReferencedFrameOfReferenceUID = "1.2.3.4.6"

    _edit(_rtstruct(root), point_elsewhere)


def empty_roi(root):
    def shrink(ds):
        for contour in ds.ROIContourSequence[0].ContourSequence:
            x, y, z = (float(v) for v in contour.ContourData[:3])
            # A tiny triangle between voxel centres encloses no voxel.
            contour.ContourData = [x, y, z, x + 0.05, y, z, x, y + 0.05, z]
            contour.NumberOfContourPoints = 3

    _edit(_rtstruct(root), shrink)


def no_matching_roi(root):
    _edit(_rtstruct(root), lambda ds: setattr(ds.StructureSetROISequence[0], "ROIName", "Body"))


def contour_outside_image(root):
    def move(ds):
        contour = ds.ROIContourSequence[0].ContourSequence[0]
        points = np.asarray(contour.ContourData, dtype=float).reshape(-1, 3)
        points[:, 2] += 500.0
        contour.ContourData = [f"{v:.6g}" for v in points.ravel()]

    _edit(_rtstruct(root), move)


def seg_for_absent_series(root):
    patient = make_patient(COHORT, 1, label=0)
    # Same PatientID, but a series (other UIDs and frame of reference) that never reached the inbox.
    elsewhere = write_ct(patient, root / "elsewhere" / "CT", seed=COHORT.seed + 1)
    write_seg(elsewhere, {"GTV_seg": patient.lesion}, root / "inbox" / "SYN-0002" / "SEG" / "orphan.dcm")


CASES = [
    (truncated_header, "studies", [r"CT_0007\.dcm: slice spacing", r"CT_0006\.dcm: incomplete DICOM header"]),
    (truncated_pixels, "studies", [r"CT_0006\.dcm: pixel data unreadable"]),
    (missing_slice, "studies", [r"CT_0007\.dcm: slice spacing 4\.000 mm", "missing"]),
    (duplicate_slice, "studies", [r"CT_000[56]\.dcm: duplicate slice"]),
    (mixed_orientation, "studies", [r"CT_0006\.dcm: orientation .* differs"]),
    (rtstruct_for_absent_series, "roi_masks", [r"RS\.dcm: cannot pair the RTSTRUCT"]),
    (empty_roi, "roi_masks", [r"RS\.dcm: ROI 'GTV' is empty"]),
    (no_matching_roi, "roi_masks", [r"RS\.dcm: no ROI matches 'GTV\.\*' \(ROIs present: \['Body'\]\)"]),
    (contour_outside_image, "roi_masks", [r"RS\.dcm: ROI 'GTV' has a contour at slice index .* outside the image"]),
    (seg_for_absent_series, "roi_masks", [r"orphan\.dcm: cannot pair the SEG with an image series"]),
]


def _counts(root):
    with duckdb.connect(str(root / "radiomics.duckdb"), read_only=True) as con:
        return {
            table: dict(con.execute(f"SELECT patient_id, count(*) FROM {table} GROUP BY ALL").fetchall())
            for table in ("series", "masks", "features")
        }


@pytest.mark.parametrize(("breakage", "failing_step", "patterns"), CASES, ids=[c[0].__name__ for c in CASES])
def test_broken_input_fails_only_its_partition(tmp_path, monkeypatch, breakage, failing_step, patterns):
    monkeypatch.setenv("RADIOMICS_DATA_DIR", str(tmp_path))
    write_cohort(COHORT, tmp_path)
    job = defs.resolve_job_def("ingest_patient")
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(patients.name, ["SYN-0001", "SYN-0002"])
        for key in ("SYN-0001", "SYN-0002"):
            assert job.execute_in_process(partition_key=key, instance=instance).success
        before = _counts(tmp_path)

        breakage(tmp_path)
        result = job.execute_in_process(partition_key="SYN-0002", instance=instance, raise_on_error=False)
        assert not result.success
        (message,) = step_failure_messages(result)
        assert message.startswith(f"SYN-0002 {failing_step}: ")
        for pattern in patterns:
            assert re.search(pattern, message), (pattern, message)
        assert _counts(tmp_path) == before

        # The other patient still re-runs cleanly.
        assert job.execute_in_process(partition_key="SYN-0001", instance=instance).success
        assert _counts(tmp_path) == before


def test_non_dicom_files_beside_a_series_do_not_fail_it(tmp_path, monkeypatch):
    monkeypatch.setenv("RADIOMICS_DATA_DIR", str(tmp_path))
    write_cohort(COHORT, tmp_path)
    (_ct(tmp_path, "README.txt")).write_text("scanner export notes")
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(patients.name, ["SYN-0002"])
        result = defs.resolve_job_def("ingest_patient").execute_in_process(partition_key="SYN-0002", instance=instance)
        assert result.success, step_failure_messages(result)
    with duckdb.connect(str(tmp_path / "radiomics.duckdb"), read_only=True) as con:
        series = con.sql("SELECT modality, n_slices FROM series WHERE patient_id = 'SYN-0002'").fetchall()
        n_features = con.sql("SELECT count(*) FROM features WHERE patient_id = 'SYN-0002'").fetchall()[0][0]
    assert series == [("CT", COHORT.slices)]  # the text file is neither a slice nor a series
    assert n_features > 100
