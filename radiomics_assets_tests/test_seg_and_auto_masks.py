"""DICOM-SEG masks, automated segmentation, several NIfTI masks per image and skipped BUSI normal images.

SEGs are written with highdicom from real synthetic CT series (pydicom), so the masks read back are compared
voxel for voxel with the arrays that were encoded.
"""

import dagster as dg
import duckdb
import numpy as np
import pytest
import SimpleITK as sitk

from radiomics_assets.cli import main as cli_main
from radiomics_assets.cli import step_failure_messages
from radiomics_assets.definitions import defs
from radiomics_assets.defs.partitions import patients
from radiomics_assets.errors import DicomInputError
from radiomics_assets.ingest import ingest_studies, read_series, scan_inbox
from radiomics_assets.ingest.file_pairs import EMPTY_LESION_MASK, labels_from_folders, scan_file_pairs
from radiomics_assets.masks import (
    AutoSegmentation,
    MaskOptions,
    Seed,
    build_masks,
    read_segmentation,
    segment_lesion,
    segment_masks,
)
from radiomics_assets.paths import DataRoot, patient_key
from radiomics_assets.synth import make_patient, write_rtstruct
from radiomics_assets_tests.conftest import SMALL, write_ct, write_seg


def _array(path):
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path))).astype(bool)


def test_seg_segments_become_masks_voxel_for_voxel(tmp_path):
    root = DataRoot(tmp_path)
    encoded = {}
    for index, with_rtstruct in ((0, True), (1, False)):
        patient = make_patient(SMALL, index, label=index % 2)
        folder = root.inbox / patient.patient_id
        slices = write_ct(patient, folder / "CT")
        if with_rtstruct:
            write_rtstruct(patient, slices, folder / "RTSTRUCT" / "RS.dcm", "GTV", SMALL.seed)
        satellite = np.zeros_like(patient.lesion)
        satellite[2:6, 8:20, 40:52] = True  # overlaps no lesion slice fully: its own frames
        body = patient.hu > -500
        segments = {"GTV_core": patient.lesion, "GTV_satellite": satellite, "Body": body}
        seg = write_seg(slices, segments, folder / "SEG" / "seg.dcm", shuffle_seed=index)
        frames = seg.PerFrameFunctionalGroupsSequence
        z_of_frames = [float(f.PlanePositionSequence[0].ImagePositionPatient[2]) for f in frames]
        assert z_of_frames != sorted(z_of_frames)  # frame order is not slice order: placement must use positions
        encoded[patient.patient_id] = (segments, with_rtstruct)

    scan = scan_inbox(root.inbox)
    assert not scan.ignored
    for key, (segments, with_rtstruct) in encoded.items():
        assert [f.path.name for f in scan.patients[key].segmentations] == ["seg.dcm"]
        series = ingest_studies(root, key)
        masks = build_masks(root, key, series, MaskOptions(roi_pattern="GTV.*"))
        expected = {"GTV_core": "seg", "GTV_satellite": "seg"} | ({"GTV": "rtstruct"} if with_rtstruct else {})
        assert dict(zip(masks.roi, masks.source_kind, strict=True)) == expected  # Body does not match GTV.*
        assert set(masks.series_uid) == set(series.series_uid)
        for row in masks.itertuples():
            truth = segments["GTV_core" if row.roi == "GTV" else row.roi]
            assert np.array_equal(_array(row.mask_path), truth), row.roi
            assert row.voxel_count == truth.sum() > 100
        seg_rows = masks[masks.source_kind == "seg"]
        assert set(seg_rows.source_path) == {f"inbox/{key}/SEG/seg.dcm"}


@pytest.mark.parametrize("kind", ["LABELMAP", "FRACTIONAL"])
def test_labelmap_and_fractional_segs_decode_exactly(tmp_path, kind):
    patient = make_patient(SMALL, 5, label=0)
    slices = write_ct(patient, tmp_path / "CT")
    image = read_series(next(iter(scan_inbox(tmp_path / "CT").patients[patient.patient_id].image_series.values())))
    other = np.zeros_like(patient.lesion)
    other[2:6, 8:20, 40:52] = True
    other &= ~patient.lesion  # a label map cannot hold overlapping segments
    if kind == "LABELMAP":
        pixels = (patient.lesion * 1 + other * 2).astype(np.uint8)
    else:  # probabilities: above half the maximum is inside
        pixels = np.stack([patient.lesion * 0.8, other * 0.6 + patient.lesion * 0.3], axis=-1).astype(np.float32)
    write_seg(slices, {"GTV": patient.lesion, "other": other}, tmp_path / "seg.dcm", kind=kind, pixels=pixels)
    segmentation = read_segmentation(tmp_path / "seg.dcm")
    masks = segment_masks(segmentation, segmentation.segments, image)
    assert np.array_equal(sitk.GetArrayFromImage(masks[1]).astype(bool), patient.lesion)
    assert np.array_equal(sitk.GetArrayFromImage(masks[2]).astype(bool), other)


def test_seg_referencing_an_absent_series_fails_naming_the_seg(tmp_path):
    root = DataRoot(tmp_path)
    patient = make_patient(SMALL, 2, label=0)
    write_ct(patient, root.inbox / patient.patient_id / "CT")
    # Same patient, but a series (other UIDs and frame of reference) that never reached the inbox.
    elsewhere = write_ct(patient, tmp_path / "not_in_inbox" / "CT", seed=SMALL.seed + 1)
    seg_path = root.inbox / patient.patient_id / "SEG" / "orphan.dcm"
    write_seg(elsewhere, {"GTV": patient.lesion}, seg_path)
    series = ingest_studies(root, patient.patient_id)
    with pytest.raises(DicomInputError, match=r"orphan\.dcm: cannot pair the SEG with an image series"):
        build_masks(root, patient.patient_id, series, MaskOptions())


def _lesion_centre_mm(patient, image):
    """A lesion voxel near the lesion's centroid, in patient coordinates (what a reader would click)."""
    voxels = np.argwhere(patient.lesion)
    nearest = voxels[np.argmin(((voxels - voxels.mean(axis=0)) ** 2).sum(axis=1))]
    return image.TransformIndexToPhysicalPoint([int(v) for v in nearest[::-1]])


def _run(instance, key, **config):
    instance.add_dynamic_partitions(patients.name, [key])
    return defs.resolve_job_def("ingest_patient").execute_in_process(
        partition_key=key,
        instance=instance,
        raise_on_error=False,
        run_config={"resources": {"radiomics": {"config": config}}} if config else None,
    )


def test_region_growing_from_seed_recovers_the_lesion(tmp_path, monkeypatch):
    monkeypatch.setenv("RADIOMICS_DATA_DIR", str(tmp_path))
    root = DataRoot(tmp_path)
    rows, truths = ["patient_id,x,y,z,modality"], {}
    for index, label in ((0, 1), (4, 0)):
        patient = make_patient(SMALL, index, label)
        patient.hu = np.where(patient.lesion, patient.hu + 100.0, patient.hu)  # a contrast-enhancing lesion
        write_ct(patient, root.inbox / patient.patient_id / "CT")
        reference = sitk.GetImageFromArray(patient.hu)
        reference.SetOrigin(patient.origin_mm)
        reference.SetSpacing(patient.spacing_mm)
        x, y, z = _lesion_centre_mm(patient, reference)
        rows.append(f"{patient.patient_id},{x:.3f},{y:.3f},{z:.3f},CT")
        truths[patient.patient_id] = patient.lesion
    (tmp_path / "seeds.csv").write_text("\n".join(rows) + "\n")

    with dg.instance_for_test() as instance:
        off = _run(instance, "SYN-0001")
        (message,) = step_failure_messages(off)
        assert "no RTSTRUCT or DICOM-SEG" in message and "auto_segmentation" in message
        for key in truths:
            result = _run(instance, key, auto_segmentation="confidence_connected")
            assert result.success, step_failure_messages(result)
    with duckdb.connect(str(root.warehouse), read_only=True) as con:
        masks = con.execute("SELECT * FROM masks ORDER BY patient_id").df()
        n_features = con.execute("SELECT count(*) FROM features WHERE roi = 'auto'").fetchone()[0]
    assert masks.patient_id.tolist() == sorted(truths)
    assert set(masks.source_kind) == {"auto:confidence_connected"} and set(masks.roi) == {"auto"}
    assert set(masks.source_path) == {"seeds.csv"} and n_features > 100
    for row in masks.itertuples():
        found, truth = _array(row.mask_path), truths[row.patient_id]
        dice = 2 * (found & truth).sum() / (found.sum() + truth.sum())
        assert dice > 0.9, (row.patient_id, dice)


@pytest.mark.parametrize("method", ["threshold", "otsu"])
def test_unseeded_methods_keep_the_largest_component_or_the_seeded_one(method):
    rng = np.random.default_rng(2)
    array = rng.normal(0.0, 5.0, (20, 40, 40))
    big, small = np.zeros(array.shape, bool), np.zeros(array.shape, bool)
    big[4:16, 5:20, 5:20] = True
    small[8:12, 28:34, 28:34] = True
    array[big | small] += 100.0
    image = sitk.GetImageFromArray(array.astype(np.float32))
    image.SetSpacing((0.5, 0.5, 2.0))
    settings = AutoSegmentation(method=method, lower=50.0, upper=1000.0)
    # The light curvature-flow smoothing rounds a few box corners off, hence "within", not "equal".
    largest = sitk.GetArrayFromImage(segment_lesion(image, settings, None, "test")).astype(bool)
    assert not (largest & ~big).any() and largest.sum() > 0.99 * big.sum()
    seed = Seed(image.TransformIndexToPhysicalPoint((30, 30, 10)), "", "seeds.csv:2")
    seeded = sitk.GetArrayFromImage(segment_lesion(image, settings, seed, "test")).astype(bool)
    assert not (seeded & ~small).any() and seeded.sum() > 0.9 * small.sum()
    outside = Seed((500.0, 0.0, 0.0), "", "seeds.csv:3")
    with pytest.raises(DicomInputError, match=r"seeds\.csv:3: seed .* lies outside the image"):
        segment_lesion(image, settings, outside, "test")


def test_auto_segmentation_needs_a_seed_and_skips_masked_series(tmp_path):
    root = DataRoot(tmp_path)
    patient = make_patient(SMALL, 3, label=1)
    slices = write_ct(patient, root.inbox / patient.patient_id / "CT")
    series = ingest_studies(root, patient.patient_id)
    options = MaskOptions(auto=AutoSegmentation(method="confidence_connected"))
    with pytest.raises(DicomInputError, match=r"confidence_connected needs a seed: add a row 'SYN-0004,x,y,z,CT'"):
        build_masks(root, patient.patient_id, series, options)
    # Once the series has an RTSTRUCT it is not segmented automatically, even with the option on.
    write_rtstruct(patient, slices, root.inbox / patient.patient_id / "RS.dcm", "GTV", SMALL.seed)
    masks = build_masks(root, patient.patient_id, series, options)
    assert masks.source_kind.tolist() == ["rtstruct"]


def _volume(size=(30, 30, 12)):
    image = sitk.GetImageFromArray(np.random.default_rng(5).normal(0, 1, size[::-1]).astype(np.float32))
    image.SetSpacing((1.0, 1.0, 2.0))
    return image


def _mask_file(image, boxes: dict[int, tuple[slice, ...]], path):
    array = np.zeros(sitk.GetArrayViewFromImage(image).shape, np.uint8)
    for value, box in boxes.items():
        array[box] = value
    mask = sitk.GetImageFromArray(array)
    mask.CopyInformation(image)
    sitk.WriteImage(mask, str(path))
    return array


def test_several_nifti_mask_files_per_image_each_give_rois(tmp_path):
    root = DataRoot(tmp_path)
    root.inbox.mkdir(parents=True)
    image = _volume()
    sitk.WriteImage(image, str(root.inbox / "case7.nii.gz"))
    main = _mask_file(image, {1: np.s_[2:6, 5:10, 5:10]}, root.inbox / "case7_mask.nii.gz")
    liver = _mask_file(
        image, {1: np.s_[3:8, 12:20, 12:20], 2: np.s_[8:10, 2:6, 20:28]}, root.inbox / "case7_mask_liver.nii.gz"
    )
    numbered = _mask_file(image, {4: np.s_[0:3, 20:25, 0:5]}, root.inbox / "case7_mask_1.nii.gz")
    pairs, incomplete = scan_file_pairs(root.inbox)
    assert list(pairs) == ["case7"] and len(pairs["case7"].masks) == 3 and not incomplete
    series = ingest_studies(root, "case7")
    masks = build_masks(root, "case7", series, MaskOptions())
    expected = {"mask": main == 1, "liver_label_1": liver == 1, "liver_label_2": liver == 2, "mask_1": numbered == 4}
    assert sorted(masks.roi) == sorted(expected) and set(masks.source_kind) == {"file"}
    for row in masks.itertuples():
        assert np.array_equal(_array(row.mask_path), expected[row.roi]), row.roi


def _png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(sitk.GetImageFromArray(array.astype(np.uint8)), str(path))


def test_busi_normal_images_with_empty_masks_are_skipped_with_a_note(tmp_path, monkeypatch, capsys):
    inbox = tmp_path / "inbox"
    rng = np.random.default_rng(1)
    lesion = np.zeros((40, 50), np.uint8)
    lesion[10:25, 10:30] = 255
    _png(inbox / "benign" / "benign (1).png", rng.integers(0, 255, (40, 50)))
    _png(inbox / "benign" / "benign (1)_mask.png", lesion)
    _png(inbox / "normal" / "normal (2).png", rng.integers(0, 255, (40, 50)))
    _png(inbox / "normal" / "normal (2)_mask.png", np.zeros((40, 50)))
    _png(inbox / "normal" / "normal (2)_mask_1.png", np.zeros((40, 50)))

    pairs, skipped = scan_file_pairs(inbox)
    assert list(pairs) == [patient_key("benign (1)")]
    assert {p.name for p in skipped} == {"normal (2).png", "normal (2)_mask.png", "normal (2)_mask_1.png"}
    assert all(EMPTY_LESION_MASK in why for why in skipped.values())
    table, notes = labels_from_folders(inbox)
    assert table.patient_id.tolist() == [patient_key("benign (1)")] and len(notes) == 1 and "normal (2).png" in notes[0]

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / ".dagster"))
    cli_main(["--data-dir", str(tmp_path), "run"])  # the cohort step fails (no labels); the notes come first
    out = capsys.readouterr().out
    assert f"note: ignored inbox/normal/normal (2).png: {EMPTY_LESION_MASK}" in out
    assert "1 patients registered" in out
