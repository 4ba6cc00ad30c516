"""DICOM US images (written with pydicom) as 2D patients: grey by luminance, spacing from the ultrasound regions."""

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from radiomics_assets.errors import DicomInputError, FileInputError
from radiomics_assets.ingest import ingest_studies, scan_inbox
from radiomics_assets.ingest.dicom_us import read_us_image
from radiomics_assets.ingest.file_pairs import COLOUR_ENV, png_array
from radiomics_assets.masks import AutoSegmentation, MaskOptions, build_masks
from radiomics_assets.paths import DataRoot
from radiomics_assets_tests.conftest import write_us
from radiomics_assets_tests.test_ultrasound import dice, speckled_lesion

LUMA = np.array([0.299, 0.587, 0.114])


def _colour_image(rows=40, columns=60):
    rng = np.random.default_rng(5)
    return rng.integers(0, 256, (rows, columns, 3)).astype(np.uint8)


@pytest.mark.parametrize("photometric", ["MONOCHROME2", "RGB", "YBR_FULL_422"])
def test_us_image_grey_levels_and_spacing(tmp_path, photometric, monkeypatch):
    monkeypatch.setenv(COLOUR_ENV, "luminance")  # random colour pixels: a colour image, converted when set
    rgb = _colour_image()
    if photometric == "YBR_FULL_422":  # 4:2:2 shares a colour between two pixels: give each pair one colour
        rgb[:, 1::2] = rgb[:, ::2]
    path = write_us(tmp_path / "us.dcm", rgb, photometric=photometric, delta_cm=(0.01, 0.012))
    image = read_us_image(path)
    assert image.GetSize() == (60, 40, 1)
    assert image.GetSpacing() == pytest.approx((0.1, 0.12, 1.0))  # cm -> mm
    grey = sitk.GetArrayFromImage(image)[0]
    if photometric == "MONOCHROME2":
        np.testing.assert_array_equal(grey, rgb[..., 0])
    elif photometric == "RGB":  # the same numbers as the PNG reader gives for the same pixels: the rounded luma
        sitk.WriteImage(sitk.GetImageFromArray(rgb, isVector=True), str(tmp_path / "same.png"))
        np.testing.assert_array_equal(grey, png_array(tmp_path / "same.png", "image"))
        np.testing.assert_array_equal(grey, np.rint(rgb @ LUMA))
        monkeypatch.delenv(COLOUR_ENV)
        with pytest.raises(FileInputError, match=r"us.dcm: colour image \(9\d.\d% of pixels"):
            read_us_image(path)
    else:  # luminance survives the YBR round trip up to rounding
        assert np.abs(grey - rgb @ LUMA).max() < 1.5 and np.abs(grey - rgb @ LUMA).mean() < 0.6


def test_grey_stored_as_rgb_or_ybr_is_read_exactly(tmp_path):
    grey, _ = speckled_lesion(shape=(40, 60))
    for photometric in ("RGB", "YBR_FULL_422", "MONOCHROME2"):
        path = write_us(tmp_path / f"{photometric}.dcm", np.stack([grey] * 3, axis=-1), photometric=photometric)
        np.testing.assert_array_equal(sitk.GetArrayFromImage(read_us_image(path))[0], grey)


def test_cine_loop_needs_a_frame_and_bad_calibration_fails_naming_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv(COLOUR_ENV, "luminance")
    loop = np.stack([_colour_image() // (k + 1) for k in range(3)])
    path = write_us(tmp_path / "loop.dcm", loop, photometric="RGB")
    with pytest.raises(DicomInputError, match=r"loop.dcm: a cine loop of 3 frames; choose one in .*us_frames.csv"):
        read_us_image(path)
    frame = sitk.GetArrayFromImage(read_us_image(path, frame=2))[0]
    np.testing.assert_array_equal(frame, np.rint(loop[2] @ LUMA))
    with pytest.raises(DicomInputError, match="frame 3 chosen, but the file has 3"):
        read_us_image(path, frame=3)
    mm = write_us(tmp_path / "mm.dcm", _colour_image(), units=(4, 4))  # 4 = seconds: not a B-mode calibration
    with pytest.raises(DicomInputError, match=r"mm.dcm: ultrasound region 1 has PhysicalUnitsX/YDirection \(4, 4\)"):
        read_us_image(mm)


def test_dicom_us_patient_is_segmented_from_a_pixel_seed(tmp_path):
    root = DataRoot(tmp_path)
    image, truth = speckled_lesion()
    write_us(root.inbox / "p1" / "us.dcm", np.stack([image] * 3, axis=-1), photometric="YBR_FULL_422")
    loop = np.stack([np.stack([image] * 3, axis=-1)] * 2)
    write_us(root.inbox / "p2" / "loop.dcm", loop, photometric="RGB", patient_id="US-0002")
    (tmp_path / "seeds.csv").write_text("patient_id,x,y,z\nUS-0001,90,70,\nUS-0002,90,70,\n")
    scan = scan_inbox(root.inbox)
    assert [f.path.name for f in scan.patients["US-0001"].ultrasound] == ["us.dcm"] and not scan.ignored

    series = ingest_studies(root, "US-0001")
    assert series.modality.tolist() == ["US"] and series.n_slices.tolist() == [1]
    assert series.spacing_x.iloc[0] == pytest.approx(0.1) and series.spacing_y.iloc[0] == pytest.approx(0.12)
    masks = build_masks(root, "US-0001", series, MaskOptions(auto=AutoSegmentation(method="ultrasound")))
    (row,) = masks.itertuples()
    assert row.source_kind == "auto:ultrasound"
    assert row.volume_ml == pytest.approx(row.voxel_count * 0.1 * 0.12 / 1000)
    assert dice(sitk.GetArrayFromImage(sitk.ReadImage(row.mask_path))[0] > 0, truth) > 0.85

    with pytest.raises(DicomInputError, match="cine loop of 2 frames"):
        ingest_studies(root, "US-0002")
    pd.DataFrame({"file": ["p2/loop.dcm"], "frame": [1]}).to_csv(tmp_path / "us_frames.csv", index=False)
    assert ingest_studies(root, "US-0002").size_x.tolist() == [200]
