"""The PyRadiomics speed-ups give PyRadiomics' own values: each replacement against the original it replaces."""

import numpy as np
import pytest
import SimpleITK as sitk
from radiomics import cShape, featureextractor, imageoperations
from scipy import ndimage

from radiomics_assets.features import PARAMS_DIR, speedups
from radiomics_assets.synth import make_patient

SPACINGS = [1.0, 0.9765620231628418, 3.27, 5.46875, 0.5]


def random_masks(count: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    for trial in range(count):
        mask = rng.random(tuple(rng.integers(2, 16, 3))) < rng.uniform(0.2, 0.9)
        if trial % 2:
            mask = ndimage.binary_opening(mask)  # blob-like as well as speckled
        if mask.any():
            yield np.pad(mask, 1), np.array(rng.choice(SPACINGS, 3))


def ellipsoid(radii_vox: tuple[float, float, float], wobble: float = 0.0, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    grid = np.indices([int(2 * r) + 5 for r in radii_vox]).astype(float)
    centre = [(int(2 * r) + 4) / 2 for r in radii_vox]
    distance = sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii_vox, strict=True))
    return distance + wobble * rng.standard_normal(distance.shape) < 1.0


def assert_same_mesh(mask: np.ndarray, spacing: np.ndarray) -> None:
    area, volume, diameters = cShape.calculate_coefficients(mask, spacing)
    fast_area, fast_volume, fast_diameters = speedups.mesh_coefficients(mask, spacing)
    assert fast_diameters == diameters  # the same doubles: same pairs, same expression
    assert fast_area == pytest.approx(area, rel=1e-12)
    assert fast_volume == pytest.approx(volume, rel=1e-12)


def test_non_boolean_masks_go_to_pyradiomics_unchanged(monkeypatch):
    monkeypatch.setattr(speedups, "SMALL_MESH_VERTICES", 0)
    mask = np.pad(ellipsoid((4, 6, 7)), 1).astype(np.int32) * 256  # the C routine reads this as char: all zero
    assert speedups.mesh_coefficients(mask, np.ones(3)) == cShape.calculate_coefficients(mask, np.ones(3))


def test_mesh_coefficients_equal_pyradiomics_on_random_masks(monkeypatch):
    monkeypatch.setattr(speedups, "SMALL_MESH_VERTICES", 0)  # never hand small masks back to the C routine
    for mask, spacing in random_masks(150):
        assert_same_mesh(mask, spacing)


@pytest.mark.parametrize("all_pairs_max", [0, speedups.ALL_PAIRS_MAX])  # through the convex hull, and without
def test_mesh_coefficients_equal_pyradiomics_on_tumour_sized_shapes(monkeypatch, all_pairs_max):
    monkeypatch.setattr(speedups, "ALL_PAIRS_MAX", all_pairs_max)
    shapes = [ellipsoid((12, 20, 26)), ellipsoid((10, 18, 22), wobble=0.25), ellipsoid((1, 20, 25))[1:2]]
    for mask, spacing in zip(shapes, ([1.0, 1.0, 1.0], [3.27, 0.977, 0.977], [1.0, 1.0, 1.0]), strict=True):
        padded = np.pad(mask, 1)
        assert len(speedups._mesh_vertices(padded, np.array(spacing))) >= speedups.SMALL_MESH_VERTICES or (
            padded.shape[0] == 3  # the one-slice shape: flat, so the hull cannot be built and all pairs are compared
        )
        monkeypatch.setattr(speedups, "SMALL_MESH_VERTICES", 0)
        assert_same_mesh(padded, np.array(spacing))


@pytest.mark.parametrize("dtype", [np.int16, np.float32, np.float64])
def test_bin_edges_equal_pyradiomics(dtype):
    rng = np.random.default_rng(3)
    for width in (25, 10, 0.5, 3):
        for values in (rng.normal(40, 300, 5000), rng.normal(-700, 50, 40), np.full(30, 50.0), np.full(7, 12.0)):
            values = values.astype(dtype)
            expected = speedups._stock_get_bin_edges(values, binWidth=width)
            np.testing.assert_array_equal(speedups.bin_edges(values, binWidth=width), expected)
    signed_zeros = np.array([0.0, -0.0, 3.0, 80.0], dtype=dtype)  # built-in min keeps the first zero's sign
    edges, expected = (
        speedups.bin_edges(signed_zeros, binWidth=25),
        speedups._stock_get_bin_edges(signed_zeros, binWidth=25),
    )
    assert np.array_equal(edges, expected) and np.array_equal(np.signbit(edges), np.signbit(expected))
    counted = rng.normal(0, 1, 100)
    np.testing.assert_array_equal(
        speedups.bin_edges(counted, binCount=16),
        imageoperations.numpy.histogram(counted, 16)[1] + np.r_[np.zeros(16), 1],
    )


@pytest.mark.parametrize("pixel_type", [sitk.sitkInt16, sitk.sitkUInt8, sitk.sitkFloat32, sitk.sitkFloat64])
def test_image_hash_equals_simpleitk(pixel_type):
    array = np.random.default_rng(4).normal(100, 50, (7, 9, 11))
    image = sitk.Cast(sitk.GetImageFromArray(array), pixel_type)
    assert speedups.image_sha1(image) == sitk.Hash(image)


def test_whole_extraction_equals_stock_pyradiomics(small_config, tmp_path, monkeypatch):
    """Every feature of an extraction with LoG and wavelet filters, with and without the speed-ups."""
    monkeypatch.setattr(speedups, "SMALL_MESH_VERTICES", 0)  # the small synthetic lesion takes the fast path too
    patient = make_patient(small_config, 0, 1)
    image = sitk.GetImageFromArray(patient.hu.astype(np.float32))
    image.SetSpacing(patient.spacing_mm)
    mask = sitk.GetImageFromArray(patient.lesion.astype(np.uint8))
    mask.CopyInformation(image)
    params = tmp_path / "log_wavelet.yaml"
    params.write_text(
        (PARAMS_DIR / "ct.yaml")
        .read_text()
        .replace("  Original: {}", "  Original: {}\n  LoG: {sigma: [1.0]}\n  Wavelet: {}")
    )
    assert speedups.install() and speedups.installed()
    fast = featureextractor.RadiomicsFeatureExtractor(str(params)).execute(image, mask)
    with speedups.stock_pyradiomics():
        assert not speedups.installed()
        stock = featureextractor.RadiomicsFeatureExtractor(str(params)).execute(image, mask)
    assert speedups.installed()
    assert fast.keys() == stock.keys() and len(fast) > 500
    for name, value in stock.items():
        if name.startswith("diagnostics_"):
            assert str(fast[name]) == str(value), name  # hashes included
        elif "_shape_" in name and name.split("_")[-1] in {
            "SurfaceArea",
            "MeshVolume",
            "SurfaceVolumeRatio",
            "Sphericity",
            "Compactness1",
            "Compactness2",
            "SphericalDisproportion",
        }:
            assert float(fast[name]) == pytest.approx(float(value), rel=1e-12), name  # summed in another order
        else:
            assert float(fast[name]) == float(value), name


def test_stock_switch(monkeypatch):
    speedups.uninstall()
    monkeypatch.setenv(speedups.STOCK_ENV, "1")
    assert not speedups.install() and not speedups.installed()
    monkeypatch.delenv(speedups.STOCK_ENV)
    assert speedups.install() and speedups.installed()


def test_bspline_resampling_of_a_cropped_image_equals_pyradiomics():
    """A small ROI in a large image (as in a full CT): the cropped image gives PyRadiomics' voxels exactly."""
    rng = np.random.default_rng(8)
    smooth = ndimage.gaussian_filter(rng.normal(0, 300, (60, 200, 180)), 2) + 40
    image = sitk.GetImageFromArray(smooth.astype(np.float32))
    image.SetSpacing((0.7421875, 0.7421875, 2.5))
    image.SetOrigin((-180.12345, -160.5, -312.25))
    mask_array = np.zeros(smooth.shape, np.uint8)
    mask_array[25:33, 90:120, 70:95] = ellipsoid((4, 15, 12))[1:9, :30, :25]
    mask = sitk.GetImageFromArray(mask_array)
    mask.CopyInformation(image)
    settings = {"resampledPixelSpacing": [1, 1, 1], "interpolator": "sitkBSpline", "padDistance": 5, "label": 1}
    fast_image, fast_mask = speedups.resample_image(image, mask, **settings)
    stock_image, stock_mask = speedups._stock_resample_image(image, mask, **settings)
    for fast, stock in ((fast_image, stock_image), (fast_mask, stock_mask)):
        assert (fast.GetSize(), fast.GetOrigin(), fast.GetSpacing()) == (
            stock.GetSize(),
            stock.GetOrigin(),
            stock.GetSpacing(),
        )
        np.testing.assert_array_equal(sitk.GetArrayViewFromImage(fast), sitk.GetArrayViewFromImage(stock))
    assert np.prod(fast_image.GetSize()) < 0.1 * smooth.size  # the ROI is small: the crop is what saves time
    with pytest.raises(ValueError, match="not present"):  # PyRadiomics' own checks still apply
        speedups.resample_image(image, mask, **{**settings, "label": 2})


def _noise_case(rng, direction=None, dtype=np.float32):
    shape = tuple(int(v) for v in rng.integers(12, 48, 3))
    image = sitk.GetImageFromArray(rng.normal(0, 100, shape).astype(dtype))
    image.SetSpacing(tuple(float(v) for v in rng.uniform(0.4, 4.0, 3)))
    image.SetOrigin(tuple(float(v) for v in rng.uniform(-50, 50, 3)))
    if direction is not None:
        image.SetDirection(direction)
    mask_array = np.zeros(shape, np.uint8)
    z, y, x = (slice(n // 4, 3 * n // 4) for n in shape)
    mask_array[z, y, x] = 1
    mask = sitk.GetImageFromArray(mask_array)
    mask.CopyInformation(image)
    return image, mask


def test_axis_by_axis_bspline_equals_itk_after_the_float32_cast():
    """White noise (the hardest case for rounding), random spacings, an oblique direction and a 1 mm grid beside a
    coarse one: the grid and the mask are PyRadiomics' own, and the voxels ITK's, except a few in 100,000 whose
    double (summed in another order) rounds to the neighbouring float32: one unit in the last place, no more."""
    from radiomics_assets.features.bspline_resampling import bspline_values

    rng = np.random.default_rng(3)
    oblique = sitk.VersorTransform((0.3, -0.2, 0.9), 0.4).GetMatrix()
    settings = {"resampledPixelSpacing": [1, 1, 1], "interpolator": "sitkBSpline", "padDistance": 5, "label": 1}
    compared = differing = 0
    for case in range(12):
        image, mask = _noise_case(rng, direction=oblique if case % 3 == 2 else None)
        stock_image, stock_mask = speedups._stock_resample_image(image, mask, **settings)
        fast_image, fast_mask = speedups.resample_image(image, mask, **settings)
        for fast, stock in ((fast_image, stock_image), (fast_mask, stock_mask)):
            assert (fast.GetSize(), fast.GetOrigin(), fast.GetSpacing(), fast.GetDirection()) == (
                stock.GetSize(),
                stock.GetOrigin(),
                stock.GetSpacing(),
                stock.GetDirection(),
            )
        np.testing.assert_array_equal(sitk.GetArrayViewFromImage(fast_mask), sitk.GetArrayViewFromImage(stock_mask))
        fast_values, stock_values = sitk.GetArrayFromImage(fast_image), sitk.GetArrayFromImage(stock_image)
        np.testing.assert_array_max_ulp(fast_values, stock_values, maxulp=1)
        differing += int(np.sum(fast_values != stock_values))
        compared += stock_values.size
        # Computed axis by axis, not by ITK: the module gives the pipeline's voxels on the same grid.
        np.testing.assert_array_equal(bspline_values(image, stock_image), fast_values)
    assert compared > 500_000 and differing <= 1e-4 * compared, (differing, compared)
    # A grid that is not parallel to the image (another direction) is not separable: None, so ITK computes it.
    image, _ = _noise_case(rng)
    rotated = sitk.Image(image)
    rotated.SetDirection(oblique)
    assert bspline_values(image, rotated) is None


def test_integer_images_keep_itks_truncating_cast():
    """ITK casts an interpolated double to an integer pixel by truncation: integer images stay with PyRadiomics."""
    image, mask = _noise_case(np.random.default_rng(4), dtype=np.int16)
    settings = {"resampledPixelSpacing": [1, 1, 1], "interpolator": "sitkBSpline", "padDistance": 5, "label": 1}
    fast_image, _ = speedups.resample_image(image, mask, **settings)
    stock_image, _ = speedups._stock_resample_image(image, mask, **settings)
    assert fast_image.GetPixelID() == sitk.sitkInt16
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(fast_image), sitk.GetArrayViewFromImage(stock_image))


def test_mask_check_from_the_array_equals_pyradiomics():
    """Bounding box and verdict of ``checkMask`` from the mask's array: the same box for random ROIs, the same
    error for every ROI PyRadiomics refuses, and PyRadiomics' own path for a mask on another grid."""
    rng = np.random.default_rng(11)
    settings = {"label": 1, "minimumROIDimensions": 2, "minimumROISize": 20, "correctMask": True}
    image = sitk.GetImageFromArray(rng.normal(0, 1, (20, 30, 25)).astype(np.float32))
    image.SetSpacing((0.8, 0.9, 2.5))

    def mask_of(array, like=image):
        mask = sitk.GetImageFromArray(array.astype(np.uint8))
        mask.CopyInformation(like)
        return mask

    for _ in range(20):
        array = np.zeros((20, 30, 25), np.uint8)
        low = rng.integers(0, 10, 3)
        high = low + rng.integers(3, 10, 3)
        array[low[0] : high[0], low[1] : high[1], low[2] : high[2]] = rng.random(tuple(high - low)) < 0.7
        array[tuple(low)] = 1
        array[array == 0] = rng.choice([0, 2], size=int(np.sum(array == 0)), p=[0.9, 0.1])  # another label around
        fast, fast_corrected = speedups.check_mask(image, mask_of(array), **settings)
        stock, stock_corrected = speedups._stock_check_mask(image, mask_of(array), **settings)
        np.testing.assert_array_equal(fast, stock)
        assert fast_corrected is None and stock_corrected is None
    refused = {
        "absent": np.zeros((20, 30, 25)),
        "one voxel": np.pad(np.ones((1, 1, 1)), ((5, 14), (5, 24), (5, 19))),
        "a line": np.pad(np.ones((1, 1, 25)), ((5, 14), (5, 24), (0, 0))),
        "too small": np.pad(np.ones((1, 4, 5)), ((5, 14), (5, 21), (5, 15))),
    }
    for name, array in refused.items():
        with pytest.raises(ValueError) as stock_error:
            speedups._stock_check_mask(image, mask_of(array), **settings)
        with pytest.raises(ValueError) as fast_error:
            speedups.check_mask(image, mask_of(array), **settings)
        assert str(fast_error.value) == str(stock_error.value), name
    # A mask on a shifted grid: PyRadiomics corrects it (resampling), which only its own function does.
    array = np.zeros((20, 30, 25), np.uint8)
    array[5:12, 8:20, 6:15] = 1
    shifted = mask_of(array)
    shifted.SetOrigin((0.2, 0.0, 0.0))
    fast, fast_corrected = speedups.check_mask(image, shifted, **settings)
    stock, stock_corrected = speedups._stock_check_mask(image, shifted, **settings)
    np.testing.assert_array_equal(fast, stock)
    assert fast_corrected is not None and stock_corrected is not None


def test_diameters_are_the_same_doubles_with_and_without_the_compiled_kernel(monkeypatch):
    """The compiled diameter kernel and its NumPy fallback (no Numba) evaluate the same expression in the same order."""
    rng = np.random.default_rng(5)
    points = np.round(rng.normal(0, 20, (3000, 3)), 1) * np.array([2.5, 0.7421875, 0.7421875])
    compiled = speedups._diameters(points)
    monkeypatch.setattr(speedups.fast_texture, "ready", lambda: False)
    assert speedups._diameters(points) == compiled
    assert all(d > 0 for d in compiled)


def test_mask_passes_over_the_whole_image_give_pyradiomics_diagnostics_and_errors():
    """A small ROI in a large image: ``getMask`` and the mask diagnostics (computed on the ROI's crop, then put back
    in the whole mask's frame) give PyRadiomics' values and their text exactly, and its errors."""
    from radiomics import generalinfo

    rng = np.random.default_rng(2)
    image = sitk.GetImageFromArray(rng.normal(40, 30, (40, 120, 110)).astype(np.float32))
    image.SetSpacing((0.7, 0.7, 2.5))
    image.SetOrigin((-40.3, 12.25, -300.0))
    array = np.zeros((40, 120, 110), np.uint8)
    array[10:18, 50:70, 30:52] = rng.random((8, 20, 22)) < 0.6  # several connected pieces
    array[30, 100, 100] = 1  # and one voxel far away
    array[20:22, 5:9, 5:9] = 2  # another label
    mask = sitk.GetImageFromArray(array)
    mask.CopyInformation(image)
    resampled = sitk.GetImageFromArray(array[5:32, :105, :105].copy())  # a mask already cropped ("interpolated")
    for label in (1, 2):
        fast_mask = speedups.get_mask(mask, label=label)
        stock_mask = speedups._stock_get_mask(mask, label=label)
        assert fast_mask.GetPixelID() == stock_mask.GetPixelID() == sitk.sitkUInt32
        np.testing.assert_array_equal(sitk.GetArrayViewFromImage(fast_mask), sitk.GetArrayViewFromImage(stock_mask))
        for prefix, (im, ma) in {"original": (image, mask), "interpolated": (None, resampled)}.items():
            fast, stock = generalinfo.GeneralInfo(), generalinfo.GeneralInfo()
            speedups.add_mask_elements(fast, im, ma, label, prefix)
            speedups._stock_add_mask_elements(stock, im, ma, label, prefix)
            assert {k: str(v) for k, v in fast.generalInfo.items()} == {
                k: str(v) for k, v in stock.generalInfo.items()
            }, (label, prefix)
            assert len(stock.generalInfo) >= 6
    for kwargs, empty in (({"label": 3}, mask), ({"label": 1}, sitk.Image(mask.GetSize(), sitk.sitkUInt8))):
        with pytest.raises(ValueError) as stock_error:
            speedups._stock_get_mask(empty, **kwargs)
        with pytest.raises(ValueError) as fast_error:
            speedups.get_mask(empty, **kwargs)
        assert str(fast_error.value) == str(stock_error.value)


def test_voxels_at_zero_and_integer_images_are_left_to_itk_on_the_whole_image():
    """Whole-number HU on a grid whose slices land on the input's (1 mm in-plane, 3 mm slices): a voxel of 0 HU comes
    out as ITK's rounding noise of either sign, which decides its grey-level bin, so the image is resampled by ITK as
    given; an integer image (ITK truncates) is not cropped. Both give PyRadiomics' voxels exactly."""
    rng = np.random.default_rng(5)
    settings = {"resampledPixelSpacing": [1, 1, 1], "interpolator": "sitkBSpline", "padDistance": 5, "label": 1}
    for dtype, spacing, resampled in ((np.float32, (1.0, 1.0, 3.0), [1, 1, 1]), (np.int16, (1.0, 1.0, 1.0), [3, 3, 3])):
        image = sitk.GetImageFromArray(np.round(rng.normal(20, 40, (40, 200, 200))).astype(dtype))
        image.SetSpacing(spacing)
        image.SetOrigin((-100.0, -100.0, -60.0))
        mask_array = np.zeros((40, 200, 200), np.uint8)
        mask_array[10:30, 60:140, 60:140] = 1
        mask = sitk.GetImageFromArray(mask_array)
        mask.CopyInformation(image)
        case = {**settings, "resampledPixelSpacing": resampled}
        fast_image, _ = speedups.resample_image(image, mask, **case)
        stock_image, _ = speedups._stock_resample_image(image, mask, **case)
        stock_values = sitk.GetArrayViewFromImage(stock_image)
        np.testing.assert_array_equal(sitk.GetArrayViewFromImage(fast_image), stock_values)
        if dtype is np.float32:  # the case is real: voxels at zero up to rounding, of both signs
            near_zero = stock_values[np.abs(stock_values) < 1e-9]
            assert (near_zero > 0).any() and (near_zero < 0).any()


def test_mask_diagnostics_of_2d_images_and_the_background_label_are_pyradiomics_own():
    from radiomics import generalinfo

    flat = sitk.GetImageFromArray(np.arange(99, dtype=np.float32).reshape(9, 11))
    flat_mask = sitk.GetImageFromArray((np.arange(99).reshape(9, 11) % 7 == 0).astype(np.uint32))
    flat_mask.CopyInformation(flat)
    fast, stock = generalinfo.GeneralInfo(), generalinfo.GeneralInfo()
    speedups.add_mask_elements(fast, flat, flat_mask, 1)
    speedups._stock_add_mask_elements(stock, flat, flat_mask, 1)
    assert {k: str(v) for k, v in fast.generalInfo.items()} == {k: str(v) for k, v in stock.generalInfo.items()}
    inner_zero = np.ones((7, 9, 11), np.uint32)
    inner_zero[3, 4, 5] = 0
    mask = sitk.GetImageFromArray(inner_zero)
    outcomes = []
    for add in (speedups.add_mask_elements, speedups._stock_add_mask_elements):
        info = generalinfo.GeneralInfo()
        with pytest.raises(RuntimeError) as error:
            add(info, None, mask, 0)
        outcomes.append(({k: str(v) for k, v in info.generalInfo.items()}, str(error.value).splitlines()[-1]))
    assert outcomes[0] == outcomes[1]


def test_image_diagnostics_without_the_float64_copy_are_pyradiomics_own():
    """Mean, minimum and maximum of the whole image from the voxels in place (the mean as NumPy's pairwise sum of the
    float64 values, leaf by leaf): the same doubles as PyRadiomics' float64 copy, on images larger than one leaf, of
    odd sizes, with values spanning many magnitudes, integer and 2D images, and a NaN."""
    from radiomics import generalinfo

    rng = np.random.default_rng(9)
    wide = (rng.normal(size=(37, 211, 173)) * 10.0 ** rng.integers(-6, 7, size=(37, 211, 173))).astype(np.float32)
    with_nan = rng.normal(0, 1, (9, 40, 41)).astype(np.float32)
    with_nan[4, 20, 20] = np.nan
    images = {
        "float32, 1.35 M voxels": wide,
        "float64": rng.normal(-500, 400, (13, 257, 129)),
        "int16 CT": rng.integers(-1024, 3000, (21, 300, 301)).astype(np.int16),
        "uint8 2D": rng.integers(0, 256, (403, 517)).astype(np.uint8),
        "float32 with a NaN": with_nan,
        "float32, one leaf": rng.normal(0, 1, (1, 256, 256)).astype(np.float32),
        "float32, signed zeros at the maximum": np.array([[[-0.0, -0.0, -0.0, 0.0, -1.0]]], np.float32),
        "float32, signed zeros at the minimum": np.array([[[-0.0, -0.0, -0.0, 0.0, 1.0]]], np.float32),
        "float64, NaNs of two payloads in the two halves": np.concatenate(
            [np.full(70_000, np.nan), -np.full(70_000, np.nan), np.ones(8)]
        ).reshape(1, 1, -1),
    }
    for name, array in images.items():
        image = sitk.GetImageFromArray(array)
        image.SetSpacing((0.7, 0.9, 2.5)[: image.GetDimension()])
        for prefix in ("original", "interpolated"):
            fast, stock = generalinfo.GeneralInfo(), generalinfo.GeneralInfo()
            speedups.add_image_elements(fast, image, prefix)
            speedups._stock_add_image_elements(stock, image, prefix)
            assert list(fast.generalInfo) == list(stock.generalInfo), name
            for key, value in stock.generalInfo.items():
                ours = fast.generalInfo[key]
                assert type(ours) is type(value) and str(ours) == str(value), (name, key)
                if isinstance(value, np.float64):  # the same bits, signed zeros and NaN payloads included
                    assert ours.tobytes() == value.tobytes(), (name, key)
    assert speedups.pairwise_sum_float64(wide.ravel()) == np.add.reduce(wide.ravel().astype(np.float64))
