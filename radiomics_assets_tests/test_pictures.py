"""Pictures for QA: the mask outline over the middle lesion slice, and the roi_masks metadata that carries it."""

import base64
import io
import re
from dataclasses import replace

import dagster as dg
import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

from radiomics_assets.defs.partitions import patients
from radiomics_assets.pictures import OUTLINE_COLOURS, grey_window, lesion_slice_index, mask_outline_png
from radiomics_assets.synth import SynthConfig, write_cohort


def _volume(array: np.ndarray, spacing=(1.0, 1.0, 2.0)) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    return image


def _mask_like(image: sitk.Image, array: np.ndarray) -> sitk.Image:
    mask = sitk.GetImageFromArray(array.astype(np.uint8))
    mask.CopyInformation(image)
    return mask


def _rgb(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def test_outline_is_drawn_on_the_middle_lesion_slice_around_the_lesion():
    # A smooth CT-like volume; the lesion covers slices 5..9, and slice 7 alone has a bright mark inside it.
    z, y, x = np.mgrid[0:12, 0:64, 0:64]
    hu = (-50.0 + 2.0 * x).astype(np.float32)
    lesion = (z >= 5) & (z <= 9) & (np.abs(y - 32) <= 8) & (np.abs(x - 32) <= 8)
    hu[7, 30:35, 30:35] = 1000.0
    image = _volume(hu)
    mask = _mask_like(image, lesion)
    assert lesion_slice_index(mask) == 7

    png = mask_outline_png(image, mask)
    assert png.startswith(b"\x89PNG") and len(png) < 5_000
    picture = _rgb(png)
    # The lesion (17 mm) plus 20 mm of context each side (the minimum) is 57 mm square: 160 px square.
    assert picture.shape == (160, 160, 3)
    red = np.all(picture == OUTLINE_COLOURS[0], axis=-1)
    rows, columns = np.flatnonzero(red.any(axis=1)), np.flatnonzero(red.any(axis=0))
    scale = 160 / 57
    assert abs(rows[0] - 20 * scale) <= 2 and abs(rows[-1] - 37 * scale) <= 2, (rows[0], rows[-1])
    assert abs(columns[0] - 20 * scale) <= 2 and abs(columns[-1] - 37 * scale) <= 2
    assert not red[int(26 * scale) : int(31 * scale), int(26 * scale) : int(31 * scale)].any()  # inside stays grey
    centre = picture[80, 80]
    assert centre[0] == centre[1] == centre[2] == 255  # the bright mark of slice 7 (clipped to white)


def test_lesion_slice_with_a_gap_and_several_masks_with_their_own_colours():
    image = _volume(np.zeros((10, 40, 40), np.float32))
    first = np.zeros((10, 40, 40), bool)
    first[[1, 2, 8], 10:20, 10:20] = True  # a gap: the middle of slices {1, 2, 8} is 2, which the lesion covers
    assert lesion_slice_index(_mask_like(image, first)) == 2
    second = np.zeros_like(first)
    second[2, 22:30, 22:30] = True
    picture = _rgb(mask_outline_png(image, [_mask_like(image, first), _mask_like(image, second)], size_px=100))
    assert max(picture.shape[:2]) == 100
    for colour in OUTLINE_COLOURS[:2]:
        assert np.all(picture == colour, axis=-1).sum() > 20, colour


def test_2d_image_and_off_grid_mask():
    image = sitk.GetImageFromArray(np.random.default_rng(0).integers(0, 255, (30, 60)).astype(np.uint8))
    image.SetSpacing((0.5, 0.5))
    lesion = np.zeros((30, 60), bool)
    lesion[10:20, 5:55] = True
    mask = _mask_like(image, lesion)
    assert lesion_slice_index(mask) == 0
    picture = _rgb(mask_outline_png(image, mask, size_px=120))
    assert picture.shape == (60, 120, 3)  # 30 x 60 pixels of 0.5 mm: whole image, the lesion fills its width
    with pytest.raises(ValueError, match="not on the image grid"):
        mask_outline_png(image, sitk.GetImageFromArray(np.ones((10, 10), np.uint8)))


def test_roi_masks_metadata_carries_one_picture_per_series_and_rounded_volume(tmp_path, monkeypatch):
    """A real partition run: the roi_masks materialisation shows the outline PNG (markdown, base64, a few kB)."""
    data_root = tmp_path / "data"
    monkeypatch.setenv("RADIOMICS_DATA_DIR", str(data_root))
    write_cohort(replace(SynthConfig(), n_patients=1, seed=4, rows=48, columns=48, slices=12), data_root)
    from radiomics_assets.definitions import defs

    with dg.DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions(patients.name, ["SYN-0001"])
        result = defs.resolve_job_def("ingest_patient").execute_in_process(partition_key="SYN-0001", instance=instance)
        materialisations = result.asset_materializations_for_node("patient_batch")
    (materialisation,) = [m for m in materialisations if m.asset_key == dg.AssetKey("roi_masks")]
    metadata = materialisation.metadata
    volume = metadata["volume_ml"].value
    assert volume > 0 and volume == round(volume, 1)
    markdown = metadata["mask_outlines"].value
    assert markdown.startswith("**CT** GTV ") and f"{volume:.1f} ml" in markdown
    (encoded,) = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)\)", markdown)
    png = base64.b64decode(encoded)
    assert len(png) < 8_000
    picture = _rgb(png)
    assert max(picture.shape[:2]) == 160 and np.all(picture == OUTLINE_COLOURS[0], axis=-1).sum() > 50


def test_grey_window_follows_the_lesion_so_its_texture_shows():
    # A CT slice: air (-1000 HU) and bone (+1000 HU) around a soft-tissue lesion whose texture spans 20..60 HU.
    rng = np.random.default_rng(3)
    hu = np.full((1, 80, 80), -1000.0, dtype=np.float32)
    hu[0, :, 40:] = 1000.0
    hu[0, 10:70, 10:70] = 0.0
    lesion = np.zeros(hu.shape, dtype=bool)
    lesion[0, 30:50, 30:50] = True
    hu[lesion] = rng.uniform(20, 60, int(lesion.sum()))
    image = _volume(hu, spacing=(1.0, 1.0, 1.0))
    picture = _rgb(mask_outline_png(image, _mask_like(image, lesion)))[..., 0]
    # The lesion (20 mm) plus 20 mm each side is 60 mm: rows/columns 20..40 of 60 are lesion, 160 px square.
    scale = 160 / 60
    inside = picture[int(24 * scale) : int(36 * scale), int(24 * scale) : int(36 * scale)]
    assert len(np.unique(inside)) >= 20  # the texture, in many grey levels (a whole-region window gave 2)
    assert 60 < inside.mean() < 200  # mid-grey, neither black nor white
    low, high = grey_window(hu[0], lesion[0])
    assert 0 <= low < 21 and 59 < high <= 80, (low, high)  # 20..60 HU widened by half its range, within the slice
