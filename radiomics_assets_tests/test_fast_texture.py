"""The Numba texture matrices and the once-per-image-type binning give stock PyRadiomics' values exactly.

The matrices hold counts (and NGTDM's sums, accumulated in the C code's order), so they are compared for
equality with PyRadiomics' C functions; the features computed from them by PyRadiomics' own formulas are then
the same doubles, and are compared for equality too (stricter than the 1e-9 relative the pipeline promises).
"""

import numpy as np
import pytest
import SimpleITK as sitk
from radiomics import cMatrices, featureextractor, firstorder, glcm, gldm, glrlm, glszm, imageoperations, ngtdm
from scipy import ndimage

from radiomics_assets.features import PARAMS_DIR, fast_texture, speedups
from radiomics_assets_tests.conftest import SHARED_DATA

TEXTURE_CLASSES = {
    "firstorder": firstorder.RadiomicsFirstOrder,  # binned too (entropy, uniformity): checks the binning reuse
    "glcm": glcm.RadiomicsGLCM,
    "glrlm": glrlm.RadiomicsGLRLM,
    "glszm": glszm.RadiomicsGLSZM,
    "gldm": gldm.RadiomicsGLDM,
    "ngtdm": ngtdm.RadiomicsNGTDM,
}
ROI_SHAPES = [(1, 1, 1), (1, 1, 9), (1, 7, 1), (1, 12, 14), (6, 1, 9), (3, 3, 3), (9, 11, 13), (18, 22, 20)]


def random_grid(shape, rng, levels=12, fill=None):
    """A grey-level grid (1..levels, smooth or speckled) and an ROI (blob, speckle, full or empty)."""
    noise = rng.normal(size=shape)
    smooth = ndimage.gaussian_filter(noise, 1.5) if min(shape) > 1 else noise
    image = np.digitize(smooth, np.quantile(smooth, np.linspace(0, 1, levels + 1)[1:-1])) + 1
    fill = rng.choice([0.05, 0.4, 0.8, 1.0]) if fill is None else fill
    mask = rng.random(shape) < fill
    if rng.random() < 0.5 and min(shape) > 2:
        mask = ndimage.binary_closing(mask)
    return image.astype(np.int64), mask


def both(name, *args):
    """(stock, fast) results of one matrix function, an exception counting as the result."""
    results = []
    for module in (cMatrices, fast_texture):
        try:
            results.append(getattr(module, f"calculate_{name}")(*args))
        except Exception as exc:  # noqa: BLE001 - the same exception is the expected result
            results.append(exc)
    return results


def assert_same(stock, fast, context):
    if isinstance(stock, Exception):
        assert type(fast) is type(stock) and str(fast) == str(stock), context
        return
    assert not isinstance(fast, Exception), (context, fast)
    stock, fast = (stock, fast) if isinstance(stock, tuple) else ((stock,), (fast,))
    for expected, got in zip(stock, fast, strict=True):
        assert got.shape == expected.shape and got.dtype == expected.dtype, context
        np.testing.assert_array_equal(got, expected, err_msg=str(context))


def force2d_options(ndim):
    return [(False, 0)] + [(True, dimension) for dimension in range(ndim)]


@pytest.mark.parametrize("shape", ROI_SHAPES + [(7, 9), (1, 5), (12, 1)])
def test_matrices_equal_pyradiomics_c_code(shape):
    rng = np.random.default_rng(sum(shape))
    for trial in range(4):
        image, mask = random_grid(shape, rng, levels=int(rng.integers(1, 16)), fill=[None, None, 1.0, 0.0][trial])
        ng = int(image.max()) + int(rng.integers(0, 3))  # grey levels absent from the grid, as after binning
        for force2d in force2d_options(len(shape)):
            for distances in ([1], [1, 2], [2]):
                distances = np.array(distances)
                context = (shape, trial, force2d, distances.tolist())
                assert_same(*both("glcm", image, mask, distances, ng, *force2d), context)
                assert_same(*both("ngtdm", image, mask, distances, ng, *force2d), context)
                for alpha in (0, 1, 3):
                    assert_same(*both("gldm", image, mask, distances, ng, alpha, *force2d), (*context, alpha))
            assert_same(*both("glszm", image, mask, ng, int(mask.sum()), *force2d), (shape, trial, force2d))
            assert_same(*both("glrlm", image, mask, ng, int(max(shape)), *force2d), (shape, trial, force2d))


def test_lines_of_isolated_voxels_drop_length_one_runs_as_pyradiomics_does():
    """An angle along which no line holds two ROI voxels: PyRadiomics zeroes that angle's runs."""
    image = np.ones((5, 6, 7), dtype=np.int64)
    mask = np.zeros(image.shape, bool)
    mask[::2, ::2, ::2] = True  # no two ROI voxels are neighbours; many share a line but not a neighbour
    mask[1, 1, 1] = True
    assert_same(*both("glrlm", image, mask, 1, 7, False, 0), "checkerboard")
    single = np.zeros(image.shape, bool)
    single[2, 3, 4] = True
    assert_same(*both("glrlm", image, single, 1, 7, False, 0), "one voxel")


def test_inputs_the_c_code_rejects_are_left_to_it():
    """Grey levels outside 1..Ng, GLSZM buffers smaller than the ROI, voxel-based extraction: PyRadiomics' own."""
    image, mask = random_grid((4, 5, 6), np.random.default_rng(2), fill=1.0)
    for bad in (image - 1, image + 20):
        assert_same(*both("glcm", bad, mask, np.array([1]), int(image.max()), False, 0), "levels")
        assert_same(*both("glrlm", bad, mask, int(image.max()), 6, False, 0), "levels")
        assert_same(*both("glszm", bad, mask, int(image.max()), int(mask.sum()), False, 0), "levels")
    assert_same(*both("glszm", image, mask, int(image.max()), 0, False, 0), "no voxels")
    voxels = np.array(np.nonzero(mask))[:, :5]
    assert_same(*both("glcm", image, mask, np.array([1]), int(image.max()), False, 0, 1, voxels), "voxel-based")
    assert_same(*both("gldm", image, mask, np.array([1]), int(image.max()), 0, False, 0, 1, voxels), "voxel-based")


def test_warm_up_compiles_every_kernel_for_the_types_extraction_uses():
    assert fast_texture.warm_up() and fast_texture.ready()
    for kernel in (fast_texture._glcm, fast_texture._gldm, fast_texture._ngtdm, fast_texture._glszm):
        assert len(kernel.signatures) == 1, kernel  # the warm-up's types are the ones every later call uses
    image, mask = random_grid((6, 7, 8), np.random.default_rng(6), fill=0.7)
    fast_texture.calculate_glcm(image, mask, np.array([1, 2]), int(image.max()), True, 0)
    fast_texture.calculate_glszm(image, mask, int(image.max()), int(mask.sum()), False, 0)
    assert len(fast_texture._glcm.signatures) == len(fast_texture._glszm.signatures) == 1  # nothing recompiled


def test_a_kernel_that_fails_hands_the_matrix_to_the_c_code(monkeypatch):
    """A Numba failure (compilation, a cache it cannot read) costs speed, never values or the extraction."""

    def broken(*args):
        raise RuntimeError("simulated Numba failure")

    image, mask = random_grid((5, 6, 7), np.random.default_rng(4), fill=0.8)
    ng = int(image.max())
    expected = {
        "glcm": cMatrices.calculate_glcm(image, mask, np.array([1]), ng, False, 0),
        "glszm": cMatrices.calculate_glszm(image, mask, ng, int(mask.sum()), False, 0),
        "glrlm": cMatrices.calculate_glrlm(image, mask, ng, 7, False, 0),
    }
    for kernel in ("_glcm", "_glszm", "_glrlm"):
        monkeypatch.setattr(fast_texture, kernel, broken)
    assert_same(expected["glcm"], fast_texture.calculate_glcm(image, mask, np.array([1]), ng, False, 0), "glcm")
    assert_same(expected["glszm"], fast_texture.calculate_glszm(image, mask, ng, int(mask.sum()), False, 0), "glszm")
    assert_same(expected["glrlm"], fast_texture.calculate_glrlm(image, mask, ng, 7, False, 0), "glrlm")


def feature_values(image, mask, settings):
    """Every feature of every class; a class that raises counts with its exception as the value."""
    values = {}
    for name, feature_class in TEXTURE_CLASSES.items():
        try:
            instance = feature_class(image, mask, **settings)
            instance.enableAllFeatures()
            computed = instance.execute()
        except Exception as exc:  # noqa: BLE001 - compared with stock PyRadiomics' exception below
            values[name] = f"{type(exc).__name__}: {exc}"
            continue
        for feature, value in computed.items():
            values[f"{name}_{feature}"] = float(np.asarray(value))
    return values


def assert_features_equal_stock(image, mask, settings, context):
    assert speedups.install() and speedups.installed()
    fast = feature_values(image, mask, settings)
    with speedups.stock_pyradiomics():
        stock = feature_values(image, mask, settings)
    assert fast.keys() == stock.keys()
    for name, value in stock.items():
        same_nan = isinstance(value, float) and np.isnan(value) and np.isnan(fast[name])
        assert fast[name] == value or same_nan, (context, name, fast[name], value)


def sitk_pair(array, mask, spacing=(0.8, 0.8, 2.5)):
    image = sitk.GetImageFromArray(array.astype(np.float32))
    image.SetSpacing(spacing[: array.ndim])
    label = sitk.GetImageFromArray(mask.astype(np.uint8))
    label.CopyInformation(image)
    return image, label


SETTINGS = [
    {"binWidth": 25},
    {"binWidth": 7.5, "weightingNorm": "euclidean"},
    {"binCount": 16, "distances": [1, 2]},
    {"binWidth": 25, "force2D": True, "force2Ddimension": 0, "gldm_a": 1},
    {"binCount": 5, "weightingNorm": "manhattan", "force2D": True, "force2Ddimension": 0},
]


@pytest.mark.parametrize("settings", SETTINGS, ids=lambda s: "-".join(f"{k}={v}" for k, v in s.items()))
def test_every_feature_equals_stock_pyradiomics_on_random_rois(settings):
    rng = np.random.default_rng(len(str(settings)))
    for shape in [*ROI_SHAPES, (12, 14), (1, 9)]:  # and 2D images
        hu = ndimage.gaussian_filter(rng.normal(0, 300, shape), 1) + 40
        mask = rng.random(shape) < rng.choice([0.3, 0.9, 1.0])
        if shape == (1, 1, 1) or not mask.any():
            mask = np.ones(shape, bool)
        image, label = sitk_pair(hu, mask)
        assert_features_equal_stock(image, label, {"label": 1, **settings}, (shape, settings))


def test_binning_is_reused_only_for_the_same_image_roi_and_settings():
    """Consecutive classes on grids of equal shape but other values, ROI or settings: each binned anew."""
    rng = np.random.default_rng(5)
    shape = (8, 9, 10)
    base = ndimage.gaussian_filter(rng.normal(0, 300, shape), 1) + 40
    mask = rng.random(shape) < 0.7
    cases = [(base, mask, 25), (base + 13, mask, 25), (base, ~mask | (base > 0), 25), (base, mask, 10)]
    for values, roi, width in cases:
        image, label = sitk_pair(values, roi)
        assert_features_equal_stock(image, label, {"label": 1, "binWidth": width}, width)
        fast = glszm.RadiomicsGLSZM(image, label, label=1, binWidth=width)
        with speedups.stock_pyradiomics():
            stock = glszm.RadiomicsGLSZM(image, label, label=1, binWidth=width)
        np.testing.assert_array_equal(fast.imageArray, stock.imageArray)
        for name in ("grayLevels", "Ng"):
            got, expected = np.asarray(fast.coefficients[name]), np.asarray(stock.coefficients[name])
            assert got.dtype == expected.dtype and np.array_equal(got, expected), name


def test_filtered_images_equal_stock_pyradiomics():
    rng = np.random.default_rng(9)
    shape = (16, 30, 28)
    hu = ndimage.gaussian_filter(rng.normal(0, 300, shape), 1.5) + 40
    mask = np.zeros(shape, bool)
    mask[3:13, 6:24, 5:22] = ndimage.binary_opening(rng.random((10, 18, 17)) < 0.8)
    image, label = sitk_pair(hu, mask)
    settings = {"label": 1, "binWidth": 5}
    filtered = [*imageoperations.getLoGImage(image, label, sigma=[1.0, 2.0])]
    filtered += [*imageoperations.getWaveletImage(image, label)][:3]
    for derived, name, _ in filtered:
        assert_features_equal_stock(derived, label, settings, name)


def test_empty_roi_fails_as_in_pyradiomics():
    image, label = sitk_pair(np.ones((3, 4, 5)), np.zeros((3, 4, 5), bool))
    assert_features_equal_stock(image, label, {"label": 1, "binWidth": 25}, "empty ROI")


def test_stock_switch_restores_pyradiomics_matrices(monkeypatch):
    assert speedups.install()
    assert glcm.cMatrices is fast_texture.texture_matrices and glszm.cMatrices is fast_texture.texture_matrices
    with speedups.stock_pyradiomics():
        assert all(module.cMatrices is cMatrices for module in (glcm, glrlm, glszm, gldm, ngtdm))
    speedups.uninstall()
    monkeypatch.setenv(speedups.STOCK_ENV, "1")
    assert not speedups.install() and glrlm.cMatrices is cMatrices
    monkeypatch.delenv(speedups.STOCK_ENV)
    assert speedups.install() and ngtdm.cMatrices is fast_texture.texture_matrices


SARCOMA = SHARED_DATA / "sarcoma"


@pytest.mark.skipif(not SARCOMA.exists(), reason="../shared/data is not present")
def test_real_sarcoma_roi_equals_stock_pyradiomics(tmp_path):
    """A real CT and its tumour mask, resampled to 1 mm, original and LoG: every stored value as stock's."""
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(SARCOMA / "dicom" / "STS_002" / "CT" / "image")))
    image = reader.Execute()
    mask = sitk.ReadImage(str(SARCOMA / "reference_masks" / "STS_002" / "CT_mask.nii.gz"))
    mask = sitk.Resample(mask, image, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    # Both runs get the same region around the tumour (stock PyRadiomics would resample the whole CT: slow).
    shape = sitk.LabelShapeStatisticsImageFilter()
    shape.Execute(mask)
    box = np.array(shape.GetBoundingBox(1))
    low = np.maximum(box[:3] - 20, 0)
    high = np.minimum(box[:3] + box[3:] + 20, image.GetSize())
    image, mask = (sitk.RegionOfInterest(i, (high - low).tolist(), low.tolist()) for i in (image, mask))
    params = tmp_path / "ct_log.yaml"
    params.write_text(
        (PARAMS_DIR / "ct.yaml").read_text().replace("  Original: {}", "  Original: {}\n  LoG: {sigma: [3.0]}")
    )
    assert speedups.install()
    fast = featureextractor.RadiomicsFeatureExtractor(str(params)).execute(image, mask)
    with speedups.stock_pyradiomics():
        stock = featureextractor.RadiomicsFeatureExtractor(str(params)).execute(image, mask)
    texture = [name for name in stock if name.split("_")[1] in TEXTURE_CLASSES]
    assert len(texture) > 150
    for name in texture:
        assert float(fast[name]) == float(stock[name]), name
