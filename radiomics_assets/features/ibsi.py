"""IBSI-1 conformance of PyRadiomics: run it on the IBSI phantoms and compare with the consensus reference values.

The IBSI-1 reference values (``reference_values/ibsi_1_*.csv``: ``reference value;tolerance;tag``) exist for the
5x4x4 digital phantom and for the CT phantom under five processing configurations (A-E). For each configuration
we run PyRadiomics with the parameter file in ``params/ibsi/`` that expresses it as far as PyRadiomics can, map
each IBSI tag to the PyRadiomics feature (or diagnostic) that computes the same quantity, and report reference,
tolerance, our value and pass/fail. Tags without a PyRadiomics counterpart are listed as such.

The ``<config>-ibsi-interp`` variants of CT configurations B-E do IBSI's interpolation (``ibsi_interpolate``)
before PyRadiomics, to separate PyRadiomics' preprocessing from its feature definitions.

This is a report, not a gate: known PyRadiomics deviations from IBSI (docs/ibsi.md) make some
mapped features fail by design.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import radiomics
import SimpleITK as sitk
from radiomics import featureextractor

from radiomics_assets import environment

IBSI_PARAMS_DIR = Path(__file__).parent / "params" / "ibsi"
TABLE_COLUMNS = [
    "config",
    "ibsi_tag",
    "family",
    "pyradiomics_feature",
    "reference",
    "tolerance",
    "ours",
    "difference",
    "allowed",
    "status",
    "note",
]

logging.getLogger("radiomics").setLevel(logging.ERROR)


class PhantomDataError(FileNotFoundError):
    """The IBSI phantom folder lacks an image, mask or reference file this configuration needs."""


@dataclass(frozen=True)
class Run:
    """One PyRadiomics extraction; ``dimension`` says which IBSI aggregation it answers (``3D`` or ``2_5D``)."""

    params: str
    dimension: str


@dataclass(frozen=True)
class IbsiInterpolation:
    """IBSI-style interpolation done before PyRadiomics (whose parameter file then does not resample)."""

    spacing: tuple[float, float, float]  # 0 keeps the original spacing of that axis
    interpolator: str  # SimpleITK interpolator name
    range_then_outliers: tuple[float, float] | None = None
    """IBSI config E re-segments to this range and then to mean +/- 3 SD of what is left; PyRadiomics does one
    or the other, so the combined bounds are computed here and passed to PyRadiomics as an absolute range."""


@dataclass(frozen=True)
class IbsiConfig:
    name: str
    phantom: str  # folder under the phantom dir holding nifti/image and nifti/mask
    reference: str
    runs: tuple[Run, ...]
    description: str
    interpolation: IbsiInterpolation | None = None


CONFIGS = (
    IbsiConfig(
        "digital",
        "digital_phantom",
        "ibsi_1_dig_phantom.csv",
        (Run("digital_3d.yaml", "3D"), Run("digital_2_5d.yaml", "2_5D")),
        "digital phantom, no resampling, no re-segmentation, grey levels used as they are (bin width 1)",
    ),
    IbsiConfig(
        "A",
        "ct_phantom",
        "ibsi_1_chest_config_a.csv",
        (Run("ct_config_a.yaml", "2_5D"),),
        "CT phantom, no resampling, 2D (slice-wise), re-segmentation [-500, 400] HU, bin width 25 HU",
    ),
    IbsiConfig(
        "B",
        "ct_phantom",
        "ibsi_1_chest_config_b.csv",
        (Run("ct_config_b.yaml", "2_5D"),),
        "CT phantom, in-plane resampling to 2x2 mm (linear), 2D, re-segmentation [-500, 400] HU, 32 bins",
    ),
    IbsiConfig(
        "C",
        "ct_phantom",
        "ibsi_1_chest_config_c.csv",
        (Run("ct_config_c.yaml", "3D"),),
        "CT phantom, 2 mm isotropic (linear), 3D, re-segmentation [-1000, 400] HU, bin width 25 HU",
    ),
    IbsiConfig(
        "D",
        "ct_phantom",
        "ibsi_1_chest_config_d.csv",
        (Run("ct_config_d.yaml", "3D"),),
        "CT phantom, 2 mm isotropic (linear), 3D, outlier re-segmentation mean +/- 3 SD, 32 bins",
    ),
    IbsiConfig(
        "E",
        "ct_phantom",
        "ibsi_1_chest_config_e.csv",
        (Run("ct_config_e.yaml", "3D"),),
        "CT phantom, 2 mm isotropic (B-spline), 3D, outlier re-segmentation mean +/- 3 SD "
        "(IBSI also applies [-1000, 400] HU first), 32 bins",
    ),
)

# The same CT configurations with IBSI's interpolation done before PyRadiomics (``ibsi_interpolate``): they
# separate what PyRadiomics' resampling changes from what its feature definitions change.
_2D, _3D = (2.0, 2.0, 0.0), (2.0, 2.0, 2.0)
CONFIGS += tuple(
    IbsiConfig(
        f"{c.name}-ibsi-interp",
        c.phantom,
        c.reference,
        tuple(Run(r.params.replace(".yaml", "_preinterpolated.yaml"), r.dimension) for r in c.runs),
        c.description + "; interpolated the IBSI way before PyRadiomics (grid centres aligned, intensities "
        "rounded, mask interpolated linearly and thresholded at 0.5)",
        IbsiInterpolation(spacing, interpolator, (-1000, 400) if c.name == "E" else None),
    )
    for c, spacing, interpolator in zip(
        CONFIGS[2:], (_2D, _3D, _3D, _3D), ("sitkLinear", "sitkLinear", "sitkLinear", "sitkBSpline"), strict=True
    )
)


# IBSI tag (without the texture aggregation suffix) -> PyRadiomics ``<class>_<feature>``.
FEATURE_MAP = {
    # morphology: PyRadiomics' shape class (mesh by marching cubes, as IBSI)
    "morph_volume": "shape_MeshVolume",
    "morph_vol_approx": "shape_VoxelVolume",
    "morph_area_mesh": "shape_SurfaceArea",
    "morph_av": "shape_SurfaceVolumeRatio",
    "morph_comp_1": "shape_Compactness1",
    "morph_comp_2": "shape_Compactness2",
    "morph_sph_dispr": "shape_SphericalDisproportion",
    "morph_sphericity": "shape_Sphericity",
    "morph_diam": "shape_Maximum3DDiameter",
    "morph_pca_maj_axis": "shape_MajorAxisLength",
    "morph_pca_min_axis": "shape_MinorAxisLength",
    "morph_pca_least_axis": "shape_LeastAxisLength",
    "morph_pca_elongation": "shape_Elongation",
    "morph_pca_flatness": "shape_Flatness",
    # intensity statistics (on the re-segmented, not discretised, intensities)
    "stat_mean": "firstorder_Mean",
    "stat_var": "firstorder_Variance",
    "stat_skew": "firstorder_Skewness",
    "stat_kurt": "firstorder_Kurtosis",
    "stat_median": "firstorder_Median",
    "stat_min": "firstorder_Minimum",
    "stat_p10": "firstorder_10Percentile",
    "stat_p90": "firstorder_90Percentile",
    "stat_max": "firstorder_Maximum",
    "stat_iqr": "firstorder_InterquartileRange",
    "stat_range": "firstorder_Range",
    "stat_mad": "firstorder_MeanAbsoluteDeviation",
    "stat_rmad": "firstorder_RobustMeanAbsoluteDeviation",
    "stat_energy": "firstorder_Energy",
    "stat_rms": "firstorder_RootMeanSquared",
    # intensity histogram (on the discretised intensities)
    "ih_entropy": "firstorder_Entropy",
    "ih_uniformity": "firstorder_Uniformity",
    # grey level co-occurrence matrix
    "cm_joint_max": "glcm_MaximumProbability",
    "cm_joint_avg": "glcm_JointAverage",
    "cm_joint_var": "glcm_SumSquares",
    "cm_joint_entr": "glcm_JointEntropy",
    "cm_diff_avg": "glcm_DifferenceAverage",
    "cm_diff_var": "glcm_DifferenceVariance",
    "cm_diff_entr": "glcm_DifferenceEntropy",
    "cm_sum_avg": "glcm_SumAverage",
    "cm_sum_var": "glcm_ClusterTendency",
    "cm_sum_entr": "glcm_SumEntropy",
    "cm_energy": "glcm_JointEnergy",
    "cm_contrast": "glcm_Contrast",
    "cm_dissimilarity": "glcm_DifferenceAverage",
    "cm_inv_diff": "glcm_Id",
    "cm_inv_diff_norm": "glcm_Idn",
    "cm_inv_diff_mom": "glcm_Idm",
    "cm_inv_diff_mom_norm": "glcm_Idmn",
    "cm_inv_var": "glcm_InverseVariance",
    "cm_corr": "glcm_Correlation",
    "cm_auto_corr": "glcm_Autocorrelation",
    "cm_clust_tend": "glcm_ClusterTendency",
    "cm_clust_shade": "glcm_ClusterShade",
    "cm_clust_prom": "glcm_ClusterProminence",
    "cm_info_corr1": "glcm_Imc1",
    "cm_info_corr2": "glcm_Imc2",
    # grey level run length matrix
    "rlm_sre": "glrlm_ShortRunEmphasis",
    "rlm_lre": "glrlm_LongRunEmphasis",
    "rlm_lgre": "glrlm_LowGrayLevelRunEmphasis",
    "rlm_hgre": "glrlm_HighGrayLevelRunEmphasis",
    "rlm_srlge": "glrlm_ShortRunLowGrayLevelEmphasis",
    "rlm_srhge": "glrlm_ShortRunHighGrayLevelEmphasis",
    "rlm_lrlge": "glrlm_LongRunLowGrayLevelEmphasis",
    "rlm_lrhge": "glrlm_LongRunHighGrayLevelEmphasis",
    "rlm_glnu": "glrlm_GrayLevelNonUniformity",
    "rlm_glnu_norm": "glrlm_GrayLevelNonUniformityNormalized",
    "rlm_rlnu": "glrlm_RunLengthNonUniformity",
    "rlm_rlnu_norm": "glrlm_RunLengthNonUniformityNormalized",
    "rlm_r_perc": "glrlm_RunPercentage",
    "rlm_gl_var": "glrlm_GrayLevelVariance",
    "rlm_rl_var": "glrlm_RunVariance",
    "rlm_rl_entr": "glrlm_RunEntropy",
    # grey level size zone matrix
    "szm_sze": "glszm_SmallAreaEmphasis",
    "szm_lze": "glszm_LargeAreaEmphasis",
    "szm_lgze": "glszm_LowGrayLevelZoneEmphasis",
    "szm_hgze": "glszm_HighGrayLevelZoneEmphasis",
    "szm_szlge": "glszm_SmallAreaLowGrayLevelEmphasis",
    "szm_szhge": "glszm_SmallAreaHighGrayLevelEmphasis",
    "szm_lzlge": "glszm_LargeAreaLowGrayLevelEmphasis",
    "szm_lzhge": "glszm_LargeAreaHighGrayLevelEmphasis",
    "szm_glnu": "glszm_GrayLevelNonUniformity",
    "szm_glnu_norm": "glszm_GrayLevelNonUniformityNormalized",
    "szm_zsnu": "glszm_SizeZoneNonUniformity",
    "szm_zsnu_norm": "glszm_SizeZoneNonUniformityNormalized",
    "szm_z_perc": "glszm_ZonePercentage",
    "szm_gl_var": "glszm_GrayLevelVariance",
    "szm_zs_var": "glszm_ZoneVariance",
    "szm_zs_entr": "glszm_ZoneEntropy",
    # neighbourhood grey tone difference matrix
    "ngt_coarseness": "ngtdm_Coarseness",
    "ngt_contrast": "ngtdm_Contrast",
    "ngt_busyness": "ngtdm_Busyness",
    "ngt_complexity": "ngtdm_Complexity",
    "ngt_strength": "ngtdm_Strength",
    # neighbouring grey level dependence matrix = PyRadiomics GLDM (alpha 0, distance 1)
    "ngl_lde": "gldm_SmallDependenceEmphasis",
    "ngl_hde": "gldm_LargeDependenceEmphasis",
    "ngl_lgce": "gldm_LowGrayLevelEmphasis",
    "ngl_hgce": "gldm_HighGrayLevelEmphasis",
    "ngl_ldlge": "gldm_SmallDependenceLowGrayLevelEmphasis",
    "ngl_ldhge": "gldm_SmallDependenceHighGrayLevelEmphasis",
    "ngl_hdlge": "gldm_LargeDependenceLowGrayLevelEmphasis",
    "ngl_hdhge": "gldm_LargeDependenceHighGrayLevelEmphasis",
    "ngl_glnu": "gldm_GrayLevelNonUniformity",
    # PyRadiomics deprecated gldm_GrayLevelNonUniformityNormalized as mathematically equal to firstorder Uniformity
    "ngl_glnu_norm": "firstorder_Uniformity",
    "ngl_dcnu": "gldm_DependenceNonUniformity",
    "ngl_dcnu_norm": "gldm_DependenceNonUniformityNormalized",
    "ngl_gl_var": "gldm_GrayLevelVariance",
    "ngl_dc_var": "gldm_DependenceVariance",
    "ngl_dc_entr": "gldm_DependenceEntropy",
}

# Value conversions from PyRadiomics' definition to IBSI's (verified on the digital phantom: 2.6454 - 3 = -0.355).
CONVERSIONS = {"stat_kurt": (lambda value: value - 3.0, "PyRadiomics Kurtosis - 3 (IBSI reports excess kurtosis)")}

NOTES = {
    "cm_sum_var": "PyRadiomics deprecated SumVariance as equal to ClusterTendency",
    "cm_dissimilarity": "PyRadiomics deprecated Dissimilarity as equal to DifferenceAverage",
    "ngl_glnu_norm": "PyRadiomics deprecated gldm GLNU-normalised as equal to firstorder Uniformity",
    "ngl_dc_perc": "always 1 by definition; PyRadiomics deprecated DependencePercentage",
    **dict.fromkeys(
        ("morph_pca_maj_axis", "morph_pca_min_axis", "morph_pca_least_axis"),
        "PyRadiomics divides the voxel-position covariance by N; x sqrt(N/(N-1)) reproduces the IBSI value",
    ),
}

# IBSI image-processing diagnostics -> (PyRadiomics diagnostics stages tried in order, entry, index).
# PyRadiomics crops image and mask to the ROI bounding box, so whole-image dimensions after interpolation
# (img_dim_*_interp_img, int_mask_dim_*) have no counterpart.
_AXES = {"x": 0, "y": 1, "z": 2}
_STAGES = {
    "init": ("original",),
    "interp": ("interpolated", "original"),
    "reseg": ("resegmented", "interpolated", "original"),
}


def _diagnostic_source(tag: str, pre_interpolated: bool = False) -> tuple[tuple[str, ...], str, int | None] | None:
    """Where PyRadiomics reports the quantity of an IBSI diagnostic tag; ``pre_interpolated``: PyRadiomics'
    "original" image is then the IBSI interpolated one, and the initial image is not seen by PyRadiomics."""
    if pre_interpolated:
        if tag.endswith(("_init_img", "_init_roi")):
            return None
        tag = tag.replace("_interp_img", "_init_img").replace("_interp_roi", "_init_roi")
    m = re.fullmatch(r"(img_dim|vox_dim)_([xyz])_(init|interp)_img", tag)
    if m:
        if m.group(1) == "img_dim" and m.group(3) == "interp":
            return None
        entry = "Size" if m.group(1) == "img_dim" else "Spacing"
        return tuple(f"Image-{s}" for s in _STAGES[m.group(3)]), entry, _AXES[m.group(2)]
    m = re.fullmatch(r"(mean|min|max)_int_(init|interp)_img", tag)
    if m:
        # PyRadiomics interpolates only the ROI bounding box plus padding: whole-image statistics after
        # interpolation exist only when nothing is interpolated (then they equal the initial image's).
        entry = {"mean": "Mean", "min": "Minimum", "max": "Maximum"}[m.group(1)]
        stages = ("Image-original",) if m.group(2) == "init" else ("Image-original-if-not-interpolated",)
        return stages, entry, None
    m = re.fullmatch(r"(int|morph)_mask_(bb_dim_([xyz])|vox_count|(?:mean|min|max)_int)_(init|interp|reseg)_roi", tag)
    if m:
        kind, what, axis, stage = m.group(1), m.group(2), m.group(3), m.group(4)
        if kind == "morph" and stage == "reseg":
            stage = "interp"  # IBSI's morphological mask is never re-segmented (nor is PyRadiomics' shape mask)
        entry = {"vox_count": "VoxelNum", "mean_int": "Mean", "min_int": "Minimum", "max_int": "Maximum"}.get(
            what, "BoundingBox"
        )
        index = 3 + _AXES[axis] if axis else None
        return tuple(f"Mask-{s}" for s in _STAGES[stage]), entry, index
    return None


TEXTURE_FAMILIES = {"cm", "rlm", "szm", "dzm", "ngt", "ngl"}
_SUFFIX = re.compile(r"^(?P<base>.+?)_(?P<dim>2D|2_5D|3D)(?:_(?P<agg>avg|comb))?$")


def split_tag(tag: str) -> tuple[str, str | None, str | None]:
    """``cm_joint_max_2_5D_avg`` -> (``cm_joint_max``, ``2_5D``, ``avg``); morph/stat tags have no suffix."""
    m = _SUFFIX.match(tag)
    if m and m.group("base").split("_")[0] in TEXTURE_FAMILIES:
        return m.group("base"), m.group("dim"), m.group("agg")
    return tag, None, None


def _aggregation_note(dim: str | None, agg: str | None) -> str:
    if dim is None:
        return ""
    if agg == "comb":
        return f"{dim} merged matrix: PyRadiomics computes features per direction and averages them"
    if dim == "2D":
        return "2D per-slice features averaged over slices: PyRadiomics merges all slices into one matrix"
    return ""


def load_reference(path: Path) -> pd.DataFrame:
    """An IBSI reference file as (tag, reference, tolerance); empty reference values become NaN."""
    if not path.is_file():
        raise PhantomDataError(f"{path}: IBSI reference value file not found")
    table = pd.read_csv(path, sep=";", dtype=str, keep_default_na=False)
    expected = ["reference value", "tolerance", "tag"]
    if list(table.columns) != expected:
        raise ValueError(f"{path}: expected columns {expected}, found {list(table.columns)}")
    return pd.DataFrame(
        {
            "tag": table["tag"].str.strip(),
            "reference": pd.to_numeric(table["reference value"].replace("", np.nan)),
            "tolerance": pd.to_numeric(table["tolerance"].replace("", np.nan)),
        }
    )


def allowed_difference(reference: float, tolerance: float) -> float:
    """IBSI tolerance plus half a unit of the reference's 3rd significant digit (references are rounded to 3)."""
    if reference == 0 or not math.isfinite(reference):
        return tolerance
    return tolerance + 0.5 * 10 ** (math.floor(math.log10(abs(reference))) - 2)


def default_phantom_dir() -> Path:
    """``$IBSI_PHANTOM_DIR``, else the shared data folder next to the project (``../shared/data/ibsi_phantom``)."""
    return Path(environment.read(environment.IBSI_PHANTOM_DIR))


def phantom_files(phantom_dir: Path, config: IbsiConfig) -> tuple[Path, Path, Path]:
    base = Path(phantom_dir) / config.phantom / "nifti"
    image, mask = sorted((base / "image").glob("*.nii*")), sorted((base / "mask").glob("*.nii*"))
    if len(image) != 1 or len(mask) != 1:
        raise PhantomDataError(
            f"{base}: expected one NIfTI file in image/ and one in mask/ for IBSI config {config.name}, "
            f"found {len(image)} and {len(mask)} (pass --phantom-dir to the ibsi_phantom folder)"
        )
    return image[0], mask[0], Path(phantom_dir) / "reference_values" / config.reference


def run_pyradiomics(
    params: Path, image: sitk.Image, mask: sitk.Image, resegment_range: tuple[float, float] | None = None
) -> dict[str, object]:
    """PyRadiomics' own result for one parameter file: ``<class>_<feature>`` values and ``diagnostics_*`` entries.

    ``resegment_range`` replaces the file's re-segmentation by this absolute range (config E with IBSI preprocessing).
    """
    extractor = featureextractor.RadiomicsFeatureExtractor(str(params))
    if resegment_range is not None:
        extractor.settings.update(resegmentRange=list(resegment_range), resegmentMode="absolute")
    result = extractor.execute(image, mask)
    return {k.removeprefix("original_"): v for k, v in result.items()}


def ibsi_interpolate(image: sitk.Image, mask: sitk.Image, how: IbsiInterpolation) -> tuple[sitk.Image, sitk.Image]:
    """Interpolation as IBSI-1 prescribes it, which PyRadiomics' ``resampledPixelSpacing`` does not do.

    The new grid has ceil(n * old / new) voxels per axis and its centre coincides with the original grid's centre
    (PyRadiomics aligns the grids' corners instead); interpolated intensities are rounded to integers (CT is in
    integer HU); the mask is interpolated linearly and voxels >= 0.5 kept (PyRadiomics uses nearest neighbour).
    """
    old_spacing, size = np.array(image.GetSpacing()), np.array(image.GetSize())
    new_spacing = np.where(np.array(how.spacing) == 0, old_spacing, how.spacing)
    new_size = np.ceil(size * old_spacing / new_spacing - 1e-6).astype(int)
    offset = (old_spacing * (size - 1) - new_spacing * (new_size - 1)) / 2
    direction = np.array(image.GetDirection()).reshape(3, 3)
    origin = np.array(image.GetOrigin()) + direction @ offset
    grid = dict(
        size=[int(n) for n in new_size],
        transform=sitk.Transform(),
        outputOrigin=origin.tolist(),
        outputSpacing=new_spacing.tolist(),
        outputDirection=image.GetDirection(),
    )
    low = float(sitk.GetArrayViewFromImage(image).min())
    resampled = sitk.Resample(
        sitk.Cast(image, sitk.sitkFloat64),
        interpolator=getattr(sitk, how.interpolator),
        defaultPixelValue=low,
        outputPixelType=sitk.sitkFloat64,
        **grid,
    )
    rounded = sitk.GetImageFromArray(np.round(sitk.GetArrayViewFromImage(resampled)).astype(np.float32))
    rounded.CopyInformation(resampled)
    fraction = sitk.Resample(
        sitk.Cast(mask > 0, sitk.sitkFloat32),
        interpolator=sitk.sitkLinear,
        defaultPixelValue=0.0,
        outputPixelType=sitk.sitkFloat32,
        **grid,
    )
    return rounded, sitk.Cast(fraction >= 0.5, sitk.sitkUInt8)


def range_then_outlier_bounds(image: sitk.Image, mask: sitk.Image, low: float, high: float) -> tuple[float, float]:
    """IBSI's combined re-segmentation as one range: [low, high], then mean +/- 3 SD of the ROI voxels left."""
    values = sitk.GetArrayViewFromImage(image)[sitk.GetArrayViewFromImage(mask) > 0]
    values = values[(values >= low) & (values <= high)]
    mean, sd = float(values.mean()), float(values.std())
    return max(low, mean - 3 * sd), min(high, mean + 3 * sd)


def _diagnostic_value(result: dict, source: tuple[tuple[str, ...], str, int | None]) -> tuple[float, str] | None:
    stages, entry, index = source
    if stages == ("Image-original-if-not-interpolated",):
        if "diagnostics_Image-interpolated_Spacing" in result:
            return None
        stages = ("Image-original",)
    for stage in stages:
        key = f"diagnostics_{stage}_{entry}"
        if key in result:
            if index is None:
                return float(result[key]), key
            return float(result[key][index]), f"{key}[{index}]"
    return None


def compare(config: IbsiConfig, reference: pd.DataFrame, results: dict[str, dict]) -> pd.DataFrame:
    """One row per reference tag: the mapped PyRadiomics value and whether it is within tolerance.

    ``results`` maps each run's dimension (``3D``/``2_5D``) to its PyRadiomics result. Dimension-free tags
    (morphology, statistics, diagnostics) come from the 3D run if there is one, else from the 2.5D run.
    """
    main = results.get("3D", next(iter(results.values())))
    rows = []
    for ref in reference.itertuples():
        base, dim, agg = split_tag(ref.tag)
        row = {
            "config": config.name,
            "ibsi_tag": ref.tag,
            "family": base.split("_")[0],
            "pyradiomics_feature": "",
            "reference": ref.reference,
            "tolerance": ref.tolerance,
            "ours": np.nan,
            "difference": np.nan,
            "allowed": np.nan,
            "status": "",
            "note": NOTES.get(base, ""),
        }
        source = _diagnostic_source(ref.tag, pre_interpolated=config.interpolation is not None)
        if source is not None:
            row["family"] = "diag"
        found = None
        if base in FEATURE_MAP and (dim is None or (agg in (None, "avg") and dim in results)):
            result = main if dim is None else results[dim]
            name = FEATURE_MAP[base]
            if name in result:
                value = float(np.asarray(result[name]))
                if base in CONVERSIONS:
                    convert, note = CONVERSIONS[base]
                    value, row["note"] = convert(value), note
                found = (value, name)
        elif source is not None:
            found = _diagnostic_value(main, source)
        if found is None:
            why = _aggregation_note(dim, agg) if base in FEATURE_MAP else ""
            row["status"] = "no PyRadiomics equivalent"
            row["note"] = "; ".join(n for n in (row["note"], why) if n)
        else:
            row["ours"], row["pyradiomics_feature"] = found
            if not math.isfinite(ref.reference):
                row["status"] = "no reference value"
            else:
                row["difference"] = row["ours"] - ref.reference
                row["allowed"] = allowed_difference(ref.reference, ref.tolerance)
                row["status"] = "pass" if abs(row["difference"]) <= row["allowed"] else "fail"
        rows.append(row)
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def evaluate(config: IbsiConfig, phantom_dir: Path, params_dir: Path = IBSI_PARAMS_DIR) -> pd.DataFrame:
    image_path, mask_path, reference_path = phantom_files(phantom_dir, config)
    reference = load_reference(reference_path)
    image, mask = sitk.ReadImage(str(image_path)), sitk.ReadImage(str(mask_path))
    bounds = None
    if config.interpolation is not None:
        image, mask = ibsi_interpolate(image, mask, config.interpolation)
        if config.interpolation.range_then_outliers is not None:
            bounds = range_then_outlier_bounds(image, mask, *config.interpolation.range_then_outliers)
    results = {
        run.dimension: run_pyradiomics(Path(params_dir) / run.params, image, mask, bounds) for run in config.runs
    }
    return compare(config, reference, results)


def summarise(table: pd.DataFrame) -> pd.DataFrame:
    """Per configuration: tags in the reference, mapped to PyRadiomics (with a reference value), passed, failed."""
    order = {c.name: i for i, c in enumerate(CONFIGS)}
    summary = table.groupby("config", sort=False).agg(
        reference_tags=("ibsi_tag", "size"),
        mapped=("status", lambda s: int(s.isin(["pass", "fail"]).sum())),
        passed=("status", lambda s: int((s == "pass").sum())),
        failed=("status", lambda s: int((s == "fail").sum())),
        no_equivalent=("status", lambda s: int((s == "no PyRadiomics equivalent").sum())),
    )
    summary = summary.reset_index().sort_values("config", key=lambda c: c.map(order)).reset_index(drop=True)
    features = table[table.family != "diag"]
    summary["features_mapped"] = (
        summary.config.map(features[features.status.isin(["pass", "fail"])].groupby("config").size())
        .fillna(0)
        .astype(int)
    )
    summary["features_passed"] = (
        summary.config.map(features[features.status == "pass"].groupby("config").size()).fillna(0).astype(int)
    )
    return summary


def _fmt(value: float) -> str:
    return "" if pd.isna(value) else f"{value:.4g}"


def render_markdown(table: pd.DataFrame, configs: list[IbsiConfig]) -> str:
    summary = summarise(table)
    lines = [
        "# IBSI-1 conformance of PyRadiomics",
        "",
        f"PyRadiomics {radiomics.__version__} on the IBSI-1 phantoms, compared with the IBSI-1 consensus reference "
        "values. A value passes when |ours - reference| <= tolerance + half a unit of the reference's third "
        "significant digit (IBSI rounds references to three significant digits).",
        "",
        "## Summary",
        "",
        summary.to_markdown(index=False),
        "",
        "## Configurations",
        "",
        *[f"- **{c.name}**: {c.description} (parameter files: {', '.join(r.params for r in c.runs)})" for c in configs],
    ]
    for config in configs:
        part = table[table.config == config.name]
        compared = part[part.status.isin(["pass", "fail", "no reference value"])].copy()
        for column in ("reference", "tolerance", "ours", "difference"):
            compared[column] = compared[column].map(_fmt)
        shown = compared[
            ["ibsi_tag", "pyradiomics_feature", "reference", "tolerance", "ours", "difference", "status", "note"]
        ]
        missing = part[part.status == "no PyRadiomics equivalent"].ibsi_tag.tolist()
        lines += [
            "",
            f"## Config {config.name}",
            "",
            shown.to_markdown(index=False),
            "",
            f"No PyRadiomics equivalent ({len(missing)}): " + ", ".join(f"`{t}`" for t in missing),
        ]
    return "\n".join(lines) + "\n"


def run_conformance(
    phantom_dir: Path, output_csv: Path, config_names: list[str] | None = None, params_dir: Path = IBSI_PARAMS_DIR
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Evaluate the chosen configurations (default all), write ``output_csv`` and its ``.md`` rendering."""
    known = {c.name.lower(): c for c in CONFIGS}
    wanted = [n.lower() for n in (config_names or [c.name for c in CONFIGS])]
    unknown = [n for n in wanted if n not in known]
    if unknown:
        raise ValueError(f"unknown IBSI configuration(s) {unknown}; choose from {[c.name for c in CONFIGS]}")
    configs = [known[n] for n in wanted]
    table = pd.concat([evaluate(c, Path(phantom_dir), params_dir) for c in configs], ignore_index=True)
    output_csv = Path(output_csv)
    output_csv.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(output_csv, index=False)
    output_csv.with_suffix(".md").write_text(render_markdown(table, configs))
    return table, summarise(table)
