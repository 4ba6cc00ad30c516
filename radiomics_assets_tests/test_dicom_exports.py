"""DICOM exports: SEG of automated masks and TID 1500 SR of features, read back and validated.

Two synthetic CT patients go through the real pipeline (a real Dagster instance, PyRadiomics, DuckDB): one with a
seed and ``confidence_connected`` (an automated mask -> a SEG), one with an RTSTRUCT. Their exports are read back
with pydicom and highdicom: SEG masks equal the stored masks voxel for voxel, SR values equal the DuckDB rows,
references and codes round-trip, and dicom3tools' ``dciodvfy`` (when installed) reports no error.
"""

import shutil
import subprocess
import threading

import dagster as dg
import duckdb
import highdicom as hd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from radiomics_assets.cli import main as cli_main
from radiomics_assets.cli import step_failure_messages
from radiomics_assets.definitions import defs
from radiomics_assets.defs.partitions import patients
from radiomics_assets.exports.codes import FEATURE_CODES, IBSI_IDENTIFIERS, NOT_IBSI, code_table_markdown
from radiomics_assets.features.ibsi import FEATURE_MAP
from radiomics_assets.masks.dicom_seg import read_segmentation, segment_masks
from radiomics_assets.paths import PROJECT_ROOT, DataRoot, patient_key
from radiomics_assets.synth import make_patient, write_rtstruct
from radiomics_assets_tests.conftest import SHARED_DATA, SMALL, write_ct

AUTO, CONTOURED = "SYN-0001", "SYN-0002"


def _lesion_centre_mm(patient, slices):
    voxels = np.argwhere(patient.lesion)
    z, y, x = voxels[np.argmin(((voxels - voxels.mean(axis=0)) ** 2).sum(axis=1))]
    origin = patient.origin_mm
    return origin[0] + x * patient.spacing_mm[0], origin[1] + y * patient.spacing_mm[1], origin[2] + z * 2.0


def _run(instance, job, keys, config):
    instance.add_dynamic_partitions(patients.name, keys)
    results = [
        defs.resolve_job_def(job).execute_in_process(
            partition_key=key,
            instance=instance,
            raise_on_error=False,
            run_config={"resources": {"radiomics": {"config": config}}},
        )
        for key in keys
    ]
    for result in results:
        assert result.success, step_failure_messages(result)
    return results


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Two patients ingested, segmented, extracted and exported (with de-identified copies)."""
    tmp_path = tmp_path_factory.mktemp("exports")
    root = DataRoot(tmp_path)
    auto = make_patient(SMALL, 0, label=1)
    auto.hu = np.where(auto.lesion, auto.hu + 100.0, auto.hu)  # a contrast-enhancing lesion, for region growing
    slices = write_ct(auto, root.inbox / AUTO / "CT")
    x, y, z = _lesion_centre_mm(auto, slices)
    (tmp_path / "seeds.csv").write_text(f"patient_id,x,y,z,modality\n{AUTO},{x:.3f},{y:.3f},{z:.3f},CT\n")
    contoured = make_patient(SMALL, 1, label=0)
    ct = write_ct(contoured, root.inbox / CONTOURED / "CT")
    write_rtstruct(contoured, ct, root.inbox / CONTOURED / "RTSTRUCT" / "RS.dcm", "GTV", SMALL.seed)
    config = {"data_dir": str(tmp_path), "auto_segmentation": "confidence_connected"}
    with dg.instance_for_test() as instance:
        _run(instance, "ingest_patient", [AUTO, CONTOURED], config)
        off = _run(instance, "export_dicom", [AUTO], config)[0]
        off_metadata = off.asset_materializations_for_node("dicom_exports_batch")[0].metadata
        assert not (tmp_path / "exports").exists()  # off by default: nothing written
        results = _run(
            instance, "export_dicom", [AUTO, CONTOURED], {**config, "export_dicom": True, "export_deidentified": True}
        )
    metadata = {r.asset_materializations_for_node("dicom_exports_batch")[0].partition: r for r in results}
    return root, off_metadata, metadata


def _table(root, sql, params):
    with duckdb.connect(str(root.warehouse), read_only=True) as con:
        return con.execute(sql, params).df()


def _files(root, key, prefix):
    return sorted((root.path / "exports" / key).glob(f"{prefix}_*.dcm"))


def test_off_by_default_records_off(exported):
    _, off_metadata, _ = exported
    assert off_metadata["exports"].value == "off"


def test_seg_of_automated_mask_equals_stored_mask(exported):
    root, _, _ = exported
    (seg_path,) = _files(root, AUTO, "seg")
    assert _files(root, CONTOURED, "seg") == []  # RTSTRUCT masks are the user's own: no SEG for them
    mask_row = _table(root, "SELECT * FROM masks WHERE patient_id = ?", [AUTO]).iloc[0]
    series = _table(root, "SELECT * FROM series WHERE patient_id = ?", [AUTO]).iloc[0]
    stored = sitk.GetArrayFromImage(sitk.ReadImage(mask_row.mask_path)).astype(bool)

    segmentation = read_segmentation(seg_path)
    decoded = segment_masks(segmentation, segmentation.segments, sitk.ReadImage(series.volume_path))[1]
    assert np.array_equal(sitk.GetArrayFromImage(decoded).astype(bool), stored) and stored.sum() > 100

    seg = hd.seg.segread(seg_path)
    ct = [pydicom.dcmread(p, stop_before_pixels=True) for p in sorted((root.inbox / AUTO / "CT").glob("*.dcm"))]
    assert seg.SegmentationType == "BINARY"
    assert seg.FrameOfReferenceUID == ct[0].FrameOfReferenceUID
    assert seg.StudyInstanceUID == ct[0].StudyInstanceUID and seg.PatientID == AUTO
    assert segmentation.referenced_series_uids == {series.series_uid}
    referenced = {item.ReferencedSOPInstanceUID for item in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence}
    assert referenced == {ds.SOPInstanceUID for ds in ct}
    description = seg.SegmentSequence[0]
    assert description.SegmentLabel == "auto" and description.SegmentAlgorithmType == "AUTOMATIC"
    algorithm = description.SegmentationAlgorithmIdentificationSequence[0]
    assert algorithm.AlgorithmName == "radiomics_assets automated segmentation"
    assert algorithm.AlgorithmParameters == "method=confidence_connected"
    # Each frame is derived from the source slice at its own position.
    by_uid = {ds.SOPInstanceUID: ds for ds in ct}
    for frame in seg.PerFrameFunctionalGroupsSequence:
        source = frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        position = [float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient]
        assert np.allclose(position, [float(v) for v in by_uid[source].ImagePositionPatient])


def _text_values(dataset) -> dict[str, list[str]]:
    """Concept name -> the TEXT values of the SR content tree."""
    found: dict[str, list[str]] = {}

    def walk(items):
        for item in items:
            if item.ValueType == "TEXT":
                found.setdefault(item.ConceptNameCodeSequence[0].CodeMeaning, []).append(item.TextValue)
            walk(item.get("ContentSequence", []))

    walk(dataset.ContentSequence)
    return found


def _scoord3d(dataset) -> list[np.ndarray]:
    found = []

    def walk(items):
        for item in items:
            if item.ValueType == "SCOORD3D":
                found.append(np.array(item.GraphicData, dtype=float).reshape(-1, 3))
            walk(item.get("ContentSequence", []))

    walk(dataset.ContentSequence)
    return found


@pytest.mark.parametrize("key", [AUTO, CONTOURED])
def test_sr_values_codes_and_references_round_trip(exported, key):
    root, _, _ = exported
    (report_path,) = _files(root, key, "sr")
    features = _table(root, "SELECT * FROM features WHERE patient_id = ?", [key])
    mask_row = _table(root, "SELECT * FROM masks WHERE patient_id = ?", [key]).iloc[0]
    report = hd.sr.srread(report_path)
    assert report.PatientID == key and report.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR
    (group,) = report.content.get_volumetric_roi_measurement_groups()
    assert group.tracking_identifier == mask_row.roi
    measurements = group.get_measurements()
    assert len(measurements) == len(features) > 100
    expected = {(f"{r.feature_class}_{r.feature}"): r.value for r in features.itertuples()}
    seen = {}
    for measurement in measurements:
        code = measurement.name
        matches = [c for c in FEATURE_CODES.values() if (c.value, c.scheme) == (code.value, code.scheme_designator)]
        (feature_code,) = matches
        seen[feature_code.feature] = measurement.value
        assert measurement.unit.scheme_designator == "UCUM"
    assert seen == expected  # exactly the stored doubles, every feature
    units = {m.name.value: m.unit.value for m in measurements}
    assert units["RNU0"] == "mm3" and units["Q4LE"] == "[hnsf'U]" and units["ECT3"] == "[hnsf'U]2"
    assert units[FEATURE_CODES["glcm_MCC"].value] == "1" and units[FEATURE_CODES["firstorder_Kurtosis"].value] == "1"
    assert {m.method.value for m in measurements} == {"original"}
    dataset = pydicom.dcmread(report_path)
    texts = _text_values(dataset)  # the algorithm: PyRadiomics with its version and the parameter file hash
    assert texts["Algorithm Name"] == ["PyRadiomics"]
    assert texts["Algorithm Version"] == [features.pyradiomics_version.iloc[0]]
    assert f"parameter file sha256 {features.params_hash.iloc[0]}" in texts["Algorithm Parameters"]
    schemes = {item.CodingSchemeDesignator for item in dataset.CodingSchemeIdentificationSequence}
    assert schemes == {"IBSI", "99RADAS"}
    if key == AUTO:
        (seg_path,) = _files(root, AUTO, "seg")
        seg = pydicom.dcmread(seg_path)
        segment = group.referenced_segment
        assert segment.referenced_sop_instance_uid == seg.SOPInstanceUID
        assert segment.referenced_sop_class_uid == seg.SOPClassUID
        assert group.tracking_uid == seg.SegmentSequence[0].TrackingUID
    else:
        rtstruct = pydicom.dcmread(root.inbox / CONTOURED / "RTSTRUCT" / "RS.dcm")
        assert group.reference_type.value == "121231"  # Volume Surface
        polygons = _scoord3d(dataset)
        contours = rtstruct.ROIContourSequence[0].ContourSequence
        assert len(polygons) == len(contours) > 3
        for polygon, contour in zip(polygons, contours, strict=True):
            points = np.array(contour.ContourData, dtype=float).reshape(-1, 3)
            assert np.allclose(polygon[:-1], points) and np.array_equal(polygon[0], polygon[-1])  # closed
        evidence = {
            item.ReferencedSOPInstanceUID
            for sequence in ("PertinentOtherEvidenceSequence", "CurrentRequestedProcedureEvidenceSequence")
            for study in dataset.get(sequence, [])
            for series in study.ReferencedSeriesSequence
            for item in series.ReferencedSOPSequence
        }
        assert rtstruct.SOPInstanceUID in evidence


def test_code_table_uses_ibsi_identifiers_and_covers_pyradiomics():
    from radiomics import getFeatureClasses

    names = {f"{c}_{n}" for c, cls in getFeatureClasses().items() for n in cls.getFeatureNames()}
    assert names == set(FEATURE_CODES)
    assert set(IBSI_IDENTIFIERS) == set(FEATURE_MAP)
    assert FEATURE_CODES["firstorder_Mean"].value == "Q4LE" and FEATURE_CODES["firstorder_Mean"].scheme == "IBSI"
    assert FEATURE_CODES["glcm_ClusterTendency"].value == "DG8W"  # its own name, not the deprecated sum variance
    for feature in NOT_IBSI:
        assert FEATURE_CODES[feature].scheme == "99RADAS"
    for scheme in ("IBSI", "99RADAS"):
        values = [c.value for c in FEATURE_CODES.values() if c.scheme == scheme]
        assert len(values) == len(set(values)) and max(map(len, values)) <= 16  # one feature per code; fits SH
    assert all(len(c.meaning) <= 64 for c in FEATURE_CODES.values())  # Code Meaning is LO
    assert code_table_markdown() in (PROJECT_ROOT / "docs" / "reference" / "feature-codes.md").read_text()


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dicom3tools (dciodvfy) not installed")
def test_exports_pass_dciodvfy(exported):
    root, _, _ = exported
    files = _files(root, AUTO, "seg") + _files(root, AUTO, "sr") + _files(root, CONTOURED, "sr")
    for path in files + sorted((root.path / "exports_deidentified").glob("*/*.dcm")):
        result = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
        errors = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")]
        assert not errors, (path.name, errors)


def test_deidentified_copies_have_no_identity_and_consistent_uids(exported):
    root, _, _ = exported
    copies = sorted((root.path / "exports_deidentified").glob("*/*.dcm"))
    assert {p.parent.name for p in copies} == {"ANON-0001", "ANON-0002"}
    originals = {p.name: pydicom.dcmread(p) for key in (AUTO, CONTOURED) for p in _files(root, key, "*")}
    seg_copy = next(pydicom.dcmread(p) for p in copies if p.name.startswith("seg_"))
    for path in copies:
        ds = pydicom.dcmread(path)
        text = str(ds)
        assert ds.PatientIdentityRemoved == "YES" and ds.PatientID.startswith("ANON-")
        assert "Synthetic^Case" not in text and "SYN-000" not in text
        original = originals[path.name]
        assert ds.SOPInstanceUID != original.SOPInstanceUID and ds.StudyInstanceUID != original.StudyInstanceUID
        assert ds.SOPClassUID == original.SOPClassUID
    # The SR copy of the auto patient references the SEG copy's new UID (one mapping for all files).
    sr_copy = next(pydicom.dcmread(p) for p in copies if p.name.startswith("sr_") and p.parent.name == "ANON-0001")
    assert seg_copy.SOPInstanceUID in str(sr_copy)


def test_png_patients_are_skipped_with_a_note(tmp_path):
    from radiomics_assets.exports import ExportSettings, export_patient
    from radiomics_assets.ingest import ingest_studies
    from radiomics_assets.masks import MaskOptions, build_masks
    from radiomics_assets.warehouse import Warehouse

    root = DataRoot(tmp_path)
    image = np.random.default_rng(0).integers(0, 255, (40, 50)).astype(np.uint8)
    lesion = np.zeros((40, 50), np.uint8)
    lesion[10:25, 10:30] = 255
    (root.inbox / "benign").mkdir(parents=True)
    sitk.WriteImage(sitk.GetImageFromArray(image), str(root.inbox / "benign" / "benign (1).png"))
    sitk.WriteImage(sitk.GetImageFromArray(lesion), str(root.inbox / "benign" / "benign (1)_mask.png"))
    key = patient_key("benign (1)")
    series = ingest_studies(root, key)
    masks = build_masks(root, key, series, MaskOptions())
    Warehouse(root.warehouse).replace_patient(key, {"series": series, "masks": masks})
    outcome = export_patient(root, key, ExportSettings(params={}))
    assert "not a DICOM patient" in outcome.skipped and not outcome.files
    assert not (tmp_path / "exports").exists()


def test_send_exports_to_a_storage_scp(exported, tmp_path, capsys):
    from pynetdicom import AE, evt
    from pynetdicom.sop_class import Comprehensive3DSRStorage, SegmentationStorage

    root, _, _ = exported
    received = {}
    lock = threading.Lock()

    def on_store(event):
        ds = event.dataset
        ds.file_meta = event.file_meta
        with lock:
            received[ds.SOPInstanceUID] = ds
        return 0x0000

    scp = AE(ae_title="TESTSCP")
    scp.add_supported_context(SegmentationStorage, "1.2.840.10008.1.2.1")
    scp.add_supported_context(Comprehensive3DSRStorage, "1.2.840.10008.1.2.1")
    server = scp.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    port = server.server_address[1]
    try:
        code = cli_main(
            [
                "--data-dir",
                str(root.path),
                "send-exports",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--ae-title",
                "TESTSCP",
            ]
        )
    finally:
        server.shutdown()
    assert code == 0
    files = sorted((root.path / "exports").glob("*/*.dcm"))
    assert len(received) == len(files) == 3
    for path in files:
        original = pydicom.dcmread(path)
        got = received[original.SOPInstanceUID]
        assert got == original  # every element equal
    assert "sent 3 of 3" in capsys.readouterr().out


def test_export_settings_come_from_the_environment():
    from radiomics_assets.defs.resources import RadiomicsConfig

    assert not RadiomicsConfig.from_env({}).export_dicom and not RadiomicsConfig.from_env({}).export_deidentified
    on = RadiomicsConfig.from_env({"RADIOMICS_EXPORT_DICOM": "1", "RADIOMICS_EXPORT_DEIDENTIFIED": "1"})
    assert on.export_dicom and on.export_deidentified


@pytest.mark.skipif(not (SHARED_DATA / "sarcoma").exists(), reason="../shared/data is not present")
def test_real_sarcoma_patient_exports_one_valid_sr_per_series(tmp_path):
    """A real CT + MR + PET patient with RTSTRUCTs: an SR per series, values equal DuckDB, valid objects."""
    (tmp_path / "inbox").mkdir()
    (tmp_path / "inbox" / "STS_002").symlink_to(SHARED_DATA / "sarcoma" / "dicom" / "STS_002", target_is_directory=True)
    config = {"data_dir": str(tmp_path)}
    with dg.instance_for_test() as instance:
        _run(instance, "ingest_patient", ["STS_002"], config)
        _run(instance, "export_dicom", ["STS_002"], {**config, "export_dicom": True})
    root = DataRoot(tmp_path)
    reports = _files(root, "STS_002", "sr")
    series = _table(root, "SELECT series_uid, modality FROM series WHERE patient_id = ?", ["STS_002"])
    assert len(reports) == len(series) == 3 and not _files(root, "STS_002", "seg")
    features = _table(root, "SELECT * FROM features WHERE patient_id = ?", ["STS_002"])
    by_code = {c.value: c.feature for c in FEATURE_CODES.values()}
    for path in reports:
        report = hd.sr.srread(path)
        (group,) = report.content.get_volumetric_roi_measurement_groups()
        rows = features[features.roi == group.tracking_identifier]
        stored = {f"{r.feature_class}_{r.feature}": r.value for r in rows.itertuples()}
        assert {by_code[m.name.value]: m.value for m in group.get_measurements()} == stored
        units = {m.name.value: m.unit.value for m in group.get_measurements()}
        modality = group.tracking_identifier.rsplit("_", 1)[-1]  # GTV_Mass_CT, _MR_T1 -> T1, _PET
        # CT in HU, MR in arbitrary units (z-score normalised by mr.yaml), PET by its Units (GML: SUV body weight)
        expected = {"CT": "[hnsf'U]", "T1": "[arb'U]", "PET": "{SUVbw}g/ml"}[modality]
        assert units["Q4LE"] == expected and units["ECT3"] == (
            "({SUVbw}g/ml)2" if modality == "PET" else expected + "2"
        )
        if shutil.which("dciodvfy"):
            result = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
            assert not [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")]


def test_a_patient_whose_source_slices_are_gone_fails_alone(exported, tmp_path):
    """The stored rows remain but a source slice was deleted: that patient fails naming its folder; the other is
    exported."""
    root, _, _ = exported
    copy = tmp_path / "root"
    shutil.copytree(root.path, copy, ignore=shutil.ignore_patterns("exports*"))
    (copy / "inbox" / CONTOURED / "CT" / "CT_0005.dcm").unlink()
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(patients.name, [AUTO, CONTOURED])
        results = {
            key: defs.resolve_job_def("export_dicom").execute_in_process(
                partition_key=key,
                instance=instance,
                raise_on_error=False,
                run_config={"resources": {"radiomics": {"config": {"data_dir": str(copy), "export_dicom": True}}}},
            )
            for key in (AUTO, CONTOURED)
        }
    assert results[AUTO].success and len(list((copy / "exports" / AUTO).glob("*.dcm"))) == 2
    (message,) = step_failure_messages(results[CONTOURED])
    assert message.startswith(f"{CONTOURED} dicom_exports: ") and f"inbox/{CONTOURED}/CT" in message
    assert "lacks the slices [4]" in message


def test_pet_converted_from_bq_per_ml_is_reported_in_suv(tmp_path):
    """A PET exported in Bq/ml is stored as SUVbw (ingest converts it), so the SR gives SUV units, not Bq/ml."""
    from radiomics_assets.synth import PetHeader, pet_slopes, write_pet_series

    patient = make_patient(SMALL, 0, 1)
    rng = np.random.default_rng(0)
    suv = np.where(patient.lesion, 8.0 + 0.02 * (patient.hu - patient.hu[patient.lesion].mean()), 1.5)
    suv = np.clip(suv + 0.1 * rng.standard_normal(suv.shape), 0.0, None)
    factor = 3.254897503e-4  # the default PetHeader's SUV factor (scan 4500 s after the injection)
    folder = tmp_path / "inbox" / patient.patient_id
    slopes = [s / factor for s in pet_slopes(suv)]
    slices = write_pet_series(patient, suv / factor, folder / "PT", SMALL.seed, header=PetHeader(), slopes=slopes)
    write_rtstruct(patient, slices, folder / "RS" / "RS.dcm", "GTV", SMALL.seed)
    config = {"data_dir": str(tmp_path)}
    key = patient_key(patient.patient_id)
    with dg.instance_for_test() as instance:
        _run(instance, "ingest_patient", [key], config)
        _run(instance, "export_dicom", [key], {**config, "export_dicom": True})
    root = DataRoot(tmp_path)
    assert _table(root, "SELECT units FROM series WHERE patient_id = ?", [key]).units.tolist() == ["BQML"]
    (path,) = _files(root, key, "sr")
    (group,) = hd.sr.srread(path).content.get_volumetric_roi_measurement_groups()
    units = {m.name.value: m.unit.value for m in group.get_measurements()}
    assert units["Q4LE"] == "{SUVbw}g/ml" and units["ECT3"] == "({SUVbw}g/ml)2"
