"""RTSTRUCT contours onto slices: a contour between slices fails by name, holes are decided within one plane."""

import numpy as np
import pytest
import SimpleITK as sitk

from radiomics_assets.errors import DicomInputError
from radiomics_assets.masks import RoiContours, rasterise


def _image() -> sitk.Image:
    """20 x 20 x 4 voxels of 1 x 1 x 2 mm, slices at z = 10, 12, 14, 16 mm."""
    image = sitk.Image(20, 20, 4, sitk.sitkFloat32)
    image.SetSpacing((1.0, 1.0, 2.0))
    image.SetOrigin((0.0, 0.0, 10.0))
    return image


def _square(lo: float, hi: float, z_mm: float) -> np.ndarray:
    return np.array([[lo, lo, z_mm], [hi, lo, z_mm], [hi, hi, z_mm], [lo, hi, z_mm]])


def _mask(*contours: np.ndarray) -> np.ndarray:
    return sitk.GetArrayFromImage(rasterise(RoiContours("GTV", 1, "", list(contours)), _image(), source="RS.dcm"))


def test_contour_half_a_slice_off_fails_naming_roi_contour_and_distance():
    # Contour 2 lies at 13 mm, between the slices at 12 and 14 mm: rounded onto 12 mm, XOR used to cancel the
    # first contour there and leave an empty slice with no error.
    with pytest.raises(DicomInputError, match=r"RS\.dcm: ROI 'GTV' contour 2 lies 1\.00 mm from the nearest slice"):
        _mask(_square(1.5, 10.5, 12.0), _square(1.5, 10.5, 13.0))


def test_contour_within_the_tolerance_lands_on_its_slice():
    # 0.1 mm off a 2 mm slice spacing (0.05 of it) is within the tolerance of 0.1 slice spacings (0.2 mm).
    mask = _mask(_square(1.5, 10.5, 12.1))
    assert mask[1].sum() == 81 and mask.sum() == 81
    with pytest.raises(DicomInputError, match=r"contour 1 lies 0\.30 mm from the nearest slice .* beyond 0\.1"):
        _mask(_square(1.5, 10.5, 12.3))


def test_nested_rings_alternate_within_one_plane():
    outline, hole, island = _square(1.5, 16.5, 12.0), _square(4.5, 13.5, 12.0), _square(7.5, 10.5, 12.0)
    mask = _mask(island, outline, hole)  # any order in the file
    assert mask[1].sum() == 15 * 15 - 9 * 9 + 3 * 3
    assert mask[1, 5, 5] == 0 and mask[1, 9, 9] == 1 and mask[1, 2, 2] == 1


def test_overlapping_and_repeated_outlines_add_up_instead_of_cancelling():
    # XOR would cut the overlap of two outlines (and erase a repeated one): both are tumour.
    first, second = _square(1.5, 8.5, 12.0), _square(5.5, 12.5, 12.0)
    assert _mask(first, second)[1].sum() == 7 * 7 + 7 * 7 - 3 * 3
    assert _mask(first, first)[1].sum() == 49


def test_contours_of_different_slices_never_combine():
    mask = _mask(_square(1.5, 10.5, 12.0), _square(4.5, 7.5, 14.0))
    assert mask[1].sum() == 81 and mask[2].sum() == 9
