"""Ultrasound lesion segmentation from one seed (masks/ultrasound.py), its seeds.csv form and its configuration."""

import numpy as np
import pytest
import SimpleITK as sitk

from radiomics_assets.defs.resources import RadiomicsConfig
from radiomics_assets.errors import DicomInputError, SeedFileError
from radiomics_assets.masks.autoseg import AutoSegmentation, read_seeds, seed_for, segment_lesion
from radiomics_assets.masks.ultrasound import segment_ultrasound_array


def speckled_lesion(shape=(160, 200), centre=(70, 90), radii=(28, 40), seed=3):
    """A B-mode-like image: Rayleigh speckle over bright tissue with a dark (hypoechoic) elliptical lesion.

    Returns the 8-bit grey image (rows, columns) and the true lesion mask.
    """
    rng = np.random.default_rng(seed)
    rows, columns = np.ogrid[: shape[0], : shape[1]]
    lesion = ((rows - centre[0]) / radii[0]) ** 2 + ((columns - centre[1]) / radii[1]) ** 2 <= 1.0
    echo = np.where(lesion, 35.0, 130.0)
    image = echo * rng.rayleigh(scale=0.8, size=shape)
    return np.clip(image, 0, 255).astype(np.uint8), lesion


def dice(a, b):
    return 2 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def test_seeded_watershed_finds_a_speckled_lesion():
    image, truth = speckled_lesion()
    found = segment_ultrasound_array(image.astype(np.float32), (70, 90))
    assert dice(found, truth) > 0.85
    # the mask is one component that holds the seed, without holes
    assert found[70, 90]
    assert not found[5, 5]


def test_segment_lesion_ultrasound_keeps_the_grid_and_needs_a_seed(tmp_path):
    image, truth = speckled_lesion()
    volume = sitk.GetImageFromArray(image[None].astype(np.float32))
    volume.SetSpacing((0.1, 0.1, 1.0))
    volume.SetOrigin((5.0, -3.0, 0.0))
    seeds_csv = tmp_path / "seeds.csv"
    seeds_csv.write_text("patient_id,x,y,z\nbenign (3),90,70,\n")
    seed = seed_for(read_seeds(seeds_csv)["benign_3"], "US")
    assert seed.pixel == (90, 70) and seed.point_mm is None
    mask = segment_lesion(volume, AutoSegmentation(method="ultrasound"), seed, "patient benign_3 US")
    assert mask.GetSpacing() == volume.GetSpacing() and mask.GetOrigin() == volume.GetOrigin()
    assert dice(sitk.GetArrayFromImage(mask)[0] > 0, truth) > 0.85
    assert AutoSegmentation(method="ultrasound").source_kind == "auto:ultrasound"
    with pytest.raises(DicomInputError, match="needs a seed point"):
        segment_lesion(volume, AutoSegmentation(method="ultrasound"), None, "patient benign_3 US")


def test_2d_seed_outside_the_image_or_on_a_3d_series_fails_naming_the_row(tmp_path):
    seeds_csv = tmp_path / "seeds.csv"
    seeds_csv.write_text("patient_id,x,y,z\nA,500,10,\nB,10,10,\n")
    seeds = read_seeds(seeds_csv)
    flat = sitk.Image(200, 160, 1, sitk.sitkFloat32)
    with pytest.raises(DicomInputError, match=r"seeds.csv:2: seed column 500, row 10 lies outside"):
        segment_lesion(flat, AutoSegmentation(method="ultrasound"), seeds["A"][0], "A")
    volume = sitk.Image(20, 20, 5, sitk.sitkFloat32)
    with pytest.raises(DicomInputError, match=r"seeds.csv:3: a 2D seed .* 5 slices"):
        segment_lesion(volume, AutoSegmentation(method="confidence_connected"), seeds["B"][0], "B")


def test_fractional_2d_seed_is_refused(tmp_path):
    seeds_csv = tmp_path / "seeds.csv"
    seeds_csv.write_text("patient_id,x,y,z\nA,10.5,3,\n")
    with pytest.raises(SeedFileError, match=r"seeds.csv:2: bad seed row .*whole"):
        read_seeds(seeds_csv)


def test_ultrasound_method_from_the_environment():
    config = RadiomicsConfig.from_env({"RADIOMICS_AUTO_SEGMENTATION": "ultrasound"})
    assert config.auto_segmentation == "ultrasound"
    assert config.mask_options().auto.source_kind == "auto:ultrasound"
    assert RadiomicsConfig.from_env({}).auto_segmentation == ""
