"""Concept codes and UCUM units of PyRadiomics features, for the DICOM SR measurement report.

Each PyRadiomics feature (``<class>_<feature>``) gets one code. Where the feature computes the quantity IBSI-1
defines (``features/ibsi.py: FEATURE_MAP``), the code is its permanent IBSI identifier (the 4-character code of
the IBSI reference manual, e.g. ``Q4LE`` for mean intensity) under the coding scheme designator ``IBSI``. Every
other feature gets a code of the private scheme ``99RADAS``: ``PYR`` and the first 8 hex digits of the SHA-256 of
its PyRadiomics name (stable across versions, 11 characters: a DICOM Code Value holds 16, and readers such as
highdicom's do not all read the Long Code Value longer names would need), with the PyRadiomics name in the
meaning. Three mapped features keep a private code on purpose, because PyRadiomics' value is not IBSI's quantity
(see ``NOT_IBSI``).

Units are UCUM codes. Shape features are in mm, mm2, mm3 or dimensionless; texture features are dimensionless
(they count voxels, runs, zones or grey-level bins); first-order intensity features are in the image's units,
which depend on the series (HU for CT, the PET's ``Units``, arbitrary units for MR/US, normalised or filtered
images): :func:`intensity_unit` decides them, never by guessing.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from radiomics_assets.errors import InputError
from radiomics_assets.features.ibsi import FEATURE_MAP

IBSI_SCHEME = "IBSI"
PRIVATE_SCHEME = "99RADAS"
IBSI_SCHEME_NAME = "Image Biomarker Standardisation Initiative (IBSI-1) feature identifiers"
PRIVATE_SCHEME_NAME = "radiomics_assets: PyRadiomics feature names"
UCUM_SCHEME = "UCUM"

# IBSI tag (as in FEATURE_MAP and the IBSI reference value files) -> (permanent IBSI identifier, IBSI name).
# Taken from the IBSI reference manual (theibsi/ibsi-doc, docs/03_Image_features.rst: the identifier under each
# feature heading, matched to the tag by the feature's formula symbol, e.g. F_{morph.vol}); "Small zone emphasis"
# lost its identifier in the current manual and is 5QRC in the earlier revisions.
IBSI_IDENTIFIERS: dict[str, tuple[str, str]] = {
    "morph_volume": ("RNU0", "Volume (mesh)"),
    "morph_vol_approx": ("YEKZ", "Volume (voxel counting)"),
    "morph_area_mesh": ("C0JK", "Surface area (mesh)"),
    "morph_av": ("2PR5", "Surface to volume ratio"),
    "morph_comp_1": ("SKGS", "Compactness 1"),
    "morph_comp_2": ("BQWJ", "Compactness 2"),
    "morph_sph_dispr": ("KRCK", "Spherical disproportion"),
    "morph_sphericity": ("QCFX", "Sphericity"),
    "morph_diam": ("L0JK", "Maximum 3D diameter"),
    "morph_pca_maj_axis": ("TDIC", "Major axis length"),
    "morph_pca_min_axis": ("P9VJ", "Minor axis length"),
    "morph_pca_least_axis": ("7J51", "Least axis length"),
    "morph_pca_elongation": ("Q3CK", "Elongation"),
    "morph_pca_flatness": ("N17B", "Flatness"),
    "stat_mean": ("Q4LE", "Mean intensity"),
    "stat_var": ("ECT3", "Intensity variance"),
    "stat_skew": ("KE2A", "Intensity skewness"),
    "stat_kurt": ("IPH6", "(Excess) intensity kurtosis"),
    "stat_median": ("Y12H", "Median intensity"),
    "stat_min": ("1GSF", "Minimum intensity"),
    "stat_p10": ("QG58", "10th intensity percentile"),
    "stat_p90": ("8DWT", "90th intensity percentile"),
    "stat_max": ("84IY", "Maximum intensity"),
    "stat_iqr": ("SALO", "Intensity interquartile range"),
    "stat_range": ("2OJQ", "Intensity range"),
    "stat_mad": ("4FUA", "Intensity-based mean absolute deviation"),
    "stat_rmad": ("1128", "Intensity-based robust mean absolute deviation"),
    "stat_energy": ("N8CA", "Intensity-based energy"),
    "stat_rms": ("5ZWQ", "Root mean square intensity"),
    "ih_entropy": ("TLU2", "Discretised intensity entropy"),
    "ih_uniformity": ("BJ5W", "Discretised intensity uniformity"),
    "cm_joint_max": ("GYBY", "GLCM joint maximum"),
    "cm_joint_avg": ("60VM", "GLCM joint average"),
    "cm_joint_var": ("UR99", "GLCM joint variance"),
    "cm_joint_entr": ("TU9B", "GLCM joint entropy"),
    "cm_diff_avg": ("TF7R", "GLCM difference average"),
    "cm_diff_var": ("D3YU", "GLCM difference variance"),
    "cm_diff_entr": ("NTRS", "GLCM difference entropy"),
    "cm_sum_avg": ("ZGXS", "GLCM sum average"),
    "cm_sum_var": ("OEEB", "GLCM sum variance"),
    "cm_sum_entr": ("P6QZ", "GLCM sum entropy"),
    "cm_energy": ("8ZQL", "GLCM angular second moment"),
    "cm_contrast": ("ACUI", "GLCM contrast"),
    "cm_dissimilarity": ("8S9J", "GLCM dissimilarity"),
    "cm_inv_diff": ("IB1Z", "GLCM inverse difference"),
    "cm_inv_diff_norm": ("NDRX", "GLCM normalised inverse difference"),
    "cm_inv_diff_mom": ("WF0Z", "GLCM inverse difference moment"),
    "cm_inv_diff_mom_norm": ("1QCO", "GLCM normalised inverse difference moment"),
    "cm_inv_var": ("E8JP", "GLCM inverse variance"),
    "cm_corr": ("NI2N", "GLCM correlation"),
    "cm_auto_corr": ("QWB0", "GLCM autocorrelation"),
    "cm_clust_tend": ("DG8W", "GLCM cluster tendency"),
    "cm_clust_shade": ("7NFM", "GLCM cluster shade"),
    "cm_clust_prom": ("AE86", "GLCM cluster prominence"),
    "cm_info_corr1": ("R8DG", "GLCM information correlation 1"),
    "cm_info_corr2": ("JN9H", "GLCM information correlation 2"),
    "rlm_sre": ("22OV", "GLRLM short runs emphasis"),
    "rlm_lre": ("W4KF", "GLRLM long runs emphasis"),
    "rlm_lgre": ("V3SW", "GLRLM low grey level run emphasis"),
    "rlm_hgre": ("G3QZ", "GLRLM high grey level run emphasis"),
    "rlm_srlge": ("HTZT", "GLRLM short run low grey level emphasis"),
    "rlm_srhge": ("GD3A", "GLRLM short run high grey level emphasis"),
    "rlm_lrlge": ("IVPO", "GLRLM long run low grey level emphasis"),
    "rlm_lrhge": ("3KUM", "GLRLM long run high grey level emphasis"),
    "rlm_glnu": ("R5YN", "GLRLM grey level non-uniformity"),
    "rlm_glnu_norm": ("OVBL", "GLRLM normalised grey level non-uniformity"),
    "rlm_rlnu": ("W92Y", "GLRLM run length non-uniformity"),
    "rlm_rlnu_norm": ("IC23", "GLRLM normalised run length non-uniformity"),
    "rlm_r_perc": ("9ZK5", "GLRLM run percentage"),
    "rlm_gl_var": ("8CE5", "GLRLM grey level variance"),
    "rlm_rl_var": ("SXLW", "GLRLM run length variance"),
    "rlm_rl_entr": ("HJ9O", "GLRLM run entropy"),
    "szm_sze": ("5QRC", "GLSZM small zone emphasis"),
    "szm_lze": ("48P8", "GLSZM large zone emphasis"),
    "szm_lgze": ("XMSY", "GLSZM low grey level zone emphasis"),
    "szm_hgze": ("5GN9", "GLSZM high grey level zone emphasis"),
    "szm_szlge": ("5RAI", "GLSZM small zone low grey level emphasis"),
    "szm_szhge": ("HW1V", "GLSZM small zone high grey level emphasis"),
    "szm_lzlge": ("YH51", "GLSZM large zone low grey level emphasis"),
    "szm_lzhge": ("J17V", "GLSZM large zone high grey level emphasis"),
    "szm_glnu": ("JNSA", "GLSZM grey level non-uniformity"),
    "szm_glnu_norm": ("Y1RO", "GLSZM normalised grey level non-uniformity"),
    "szm_zsnu": ("4JP3", "GLSZM zone size non-uniformity"),
    "szm_zsnu_norm": ("VB3A", "GLSZM normalised zone size non-uniformity"),
    "szm_z_perc": ("P30P", "GLSZM zone percentage"),
    "szm_gl_var": ("BYLV", "GLSZM grey level variance"),
    "szm_zs_var": ("3NSA", "GLSZM zone size variance"),
    "szm_zs_entr": ("GU8N", "GLSZM zone size entropy"),
    "ngt_coarseness": ("QCDE", "NGTDM coarseness"),
    "ngt_contrast": ("65HE", "NGTDM contrast"),
    "ngt_busyness": ("NQ30", "NGTDM busyness"),
    "ngt_complexity": ("HDEZ", "NGTDM complexity"),
    "ngt_strength": ("1X9X", "NGTDM strength"),
    "ngl_lde": ("SODN", "NGLDM low dependence emphasis"),
    "ngl_hde": ("IMOQ", "NGLDM high dependence emphasis"),
    "ngl_lgce": ("TL9H", "NGLDM low grey level count emphasis"),
    "ngl_hgce": ("OAE7", "NGLDM high grey level count emphasis"),
    "ngl_ldlge": ("EQ3F", "NGLDM low dependence low grey level emphasis"),
    "ngl_ldhge": ("JA6D", "NGLDM low dependence high grey level emphasis"),
    "ngl_hdlge": ("NBZI", "NGLDM high dependence low grey level emphasis"),
    "ngl_hdhge": ("9QMG", "NGLDM high dependence high grey level emphasis"),
    "ngl_glnu": ("FP8K", "NGLDM grey level non-uniformity"),
    "ngl_glnu_norm": ("5SPA", "NGLDM normalised grey level non-uniformity"),
    "ngl_dcnu": ("Z87G", "NGLDM dependence count non-uniformity"),
    "ngl_dcnu_norm": ("OKJI", "NGLDM normalised dependence count non-uniformity"),
    "ngl_gl_var": ("1PFV", "NGLDM grey level variance"),
    "ngl_dc_var": ("DNX2", "NGLDM dependence count variance"),
    "ngl_dc_entr": ("FCBV", "NGLDM dependence count entropy"),
}

NOT_IBSI = {
    "firstorder_Kurtosis": "PyRadiomics reports kurtosis; IBSI IPH6 is excess kurtosis (kurtosis - 3)",
    **dict.fromkeys(
        ("shape_MajorAxisLength", "shape_MinorAxisLength", "shape_LeastAxisLength"),
        "PyRadiomics divides the voxel-position covariance by N, IBSI by N - 1",
    ),
}
"""PyRadiomics features that FEATURE_MAP pairs with an IBSI tag but whose value is not the IBSI quantity: they keep
a private code, so a reader comparing with IBSI values is not misled."""

# Where several IBSI tags map to one PyRadiomics feature (PyRadiomics deprecated the duplicates), the tag that
# names that feature is its code: glcm_ClusterTendency is cluster tendency, not sum variance, etc.
_PREFERRED_TAG = {
    "glcm_ClusterTendency": "cm_clust_tend",
    "glcm_DifferenceAverage": "cm_diff_avg",
    "firstorder_Uniformity": "ih_uniformity",
}

INTENSITY = "intensity"
INTENSITY_SQUARED = "intensity^2"
INTENSITY_SQUARED_VOLUME = "intensity^2.mm3"
"""Placeholders of the image-dependent units, resolved per series by :func:`intensity_unit`."""

# Every PyRadiomics 3.1 feature (deprecated ones included: a parameter file may list them) -> unit. A feature that
# is not here fails the export, naming it, instead of being written with a unit we do not know.
FEATURE_UNITS: dict[str, str] = {
    **{
        f"shape_{name}": unit
        for name, unit in {
            "MeshVolume": "mm3",
            "VoxelVolume": "mm3",
            "SurfaceArea": "mm2",
            "SurfaceVolumeRatio": "/mm",
            "Sphericity": "1",
            "Compactness1": "1",
            "Compactness2": "1",
            "SphericalDisproportion": "1",
            "Maximum3DDiameter": "mm",
            "Maximum2DDiameterSlice": "mm",
            "Maximum2DDiameterColumn": "mm",
            "Maximum2DDiameterRow": "mm",
            "MajorAxisLength": "mm",
            "MinorAxisLength": "mm",
            "LeastAxisLength": "mm",
            "Elongation": "1",
            "Flatness": "1",
        }.items()
    },
    **{
        f"shape2D_{name}": unit
        for name, unit in {
            "MeshSurface": "mm2",
            "PixelSurface": "mm2",
            "Perimeter": "mm",
            "PerimeterSurfaceRatio": "/mm",
            "Sphericity": "1",
            "SphericalDisproportion": "1",
            "MaximumDiameter": "mm",
            "MajorAxisLength": "mm",
            "MinorAxisLength": "mm",
            "Elongation": "1",
        }.items()
    },
    **{
        f"firstorder_{name}": unit
        for name, unit in {
            "Energy": INTENSITY_SQUARED,
            "TotalEnergy": INTENSITY_SQUARED_VOLUME,  # Energy times the voxel volume (mm3)
            "Entropy": "1",
            "Minimum": INTENSITY,
            "10Percentile": INTENSITY,
            "90Percentile": INTENSITY,
            "Maximum": INTENSITY,
            "Mean": INTENSITY,
            "Median": INTENSITY,
            "InterquartileRange": INTENSITY,
            "Range": INTENSITY,
            "MeanAbsoluteDeviation": INTENSITY,
            "RobustMeanAbsoluteDeviation": INTENSITY,
            "RootMeanSquared": INTENSITY,
            "StandardDeviation": INTENSITY,
            "Skewness": "1",
            "Kurtosis": "1",
            "Variance": INTENSITY_SQUARED,
            "Uniformity": "1",
        }.items()
    },
    # Texture features are computed on grey-level bins and counts of voxels, runs, zones: dimensionless.
    **{
        f"{family}_{name}": "1"
        for family, names in {
            "glcm": "Autocorrelation ClusterProminence ClusterShade ClusterTendency Contrast Correlation "
            "DifferenceAverage DifferenceEntropy DifferenceVariance Dissimilarity Homogeneity1 Homogeneity2 Id Idm "
            "Idmn Idn Imc1 Imc2 InverseVariance JointAverage JointEnergy JointEntropy MCC MaximumProbability "
            "SumAverage SumEntropy SumSquares SumVariance",
            "glrlm": "GrayLevelNonUniformity GrayLevelNonUniformityNormalized GrayLevelVariance "
            "HighGrayLevelRunEmphasis LongRunEmphasis LongRunHighGrayLevelEmphasis LongRunLowGrayLevelEmphasis "
            "LowGrayLevelRunEmphasis RunEntropy RunLengthNonUniformity RunLengthNonUniformityNormalized RunPercentage "
            "RunVariance ShortRunEmphasis ShortRunHighGrayLevelEmphasis ShortRunLowGrayLevelEmphasis",
            "glszm": "GrayLevelNonUniformity GrayLevelNonUniformityNormalized GrayLevelVariance "
            "HighGrayLevelZoneEmphasis LargeAreaEmphasis LargeAreaHighGrayLevelEmphasis LargeAreaLowGrayLevelEmphasis "
            "LowGrayLevelZoneEmphasis SizeZoneNonUniformity SizeZoneNonUniformityNormalized SmallAreaEmphasis "
            "SmallAreaHighGrayLevelEmphasis SmallAreaLowGrayLevelEmphasis ZoneEntropy ZonePercentage ZoneVariance",
            "gldm": "DependenceEntropy DependenceNonUniformity DependenceNonUniformityNormalized DependencePercentage "
            "DependenceVariance GrayLevelNonUniformity GrayLevelNonUniformityNormalized GrayLevelVariance "
            "HighGrayLevelEmphasis LargeDependenceEmphasis LargeDependenceHighGrayLevelEmphasis "
            "LargeDependenceLowGrayLevelEmphasis LowGrayLevelEmphasis SmallDependenceEmphasis "
            "SmallDependenceHighGrayLevelEmphasis SmallDependenceLowGrayLevelEmphasis",
            "ngtdm": "Busyness Coarseness Complexity Contrast Strength",
        }.items()
        for name in names.split()
    },
}

UNIT_MEANINGS = {
    "mm": "millimeter",
    "mm2": "square millimeter",
    "mm3": "cubic millimeter",
    "/mm": "per millimeter",
    "1": "no units",
    "[hnsf'U]": "Hounsfield unit",
    "[hnsf'U]2": "Hounsfield unit squared",
    "[hnsf'U]2.mm3": "Hounsfield unit squared cubic millimeter",
    "{SUVbw}g/ml": "Standardized Uptake Value body weight",
    "({SUVbw}g/ml)2": "Standardized Uptake Value body weight squared",
    "({SUVbw}g/ml)2.mm3": "Standardized Uptake Value body weight squared cubic millimeter",
    "Bq/ml": "becquerels per milliliter",
    "(Bq/ml)2": "becquerels per milliliter squared",
    "(Bq/ml)2.mm3": "becquerels per milliliter squared cubic millimeter",
    "[arb'U]": "arbitrary unit",
    "[arb'U]2": "arbitrary unit squared",
    "[arb'U]2.mm3": "arbitrary unit squared cubic millimeter",
}

_PET_UNITS = {"GML": "{SUVbw}g/ml", "BQML": "Bq/ml"}


@dataclass(frozen=True)
class FeatureCode:
    """The concept of one PyRadiomics feature in the SR: coding scheme, code value and meaning, and its unit."""

    feature: str
    scheme: str
    value: str
    meaning: str
    unit: str
    """A UCUM code, or one of the intensity placeholders (resolved per series by :func:`resolved_unit`)."""


def private_code_value(name: str, prefix: str = "PYR") -> str:
    """The ``99RADAS`` code value of a PyRadiomics name: ``prefix`` + 8 hex digits of its SHA-256."""
    return prefix + hashlib.sha256(name.encode()).hexdigest()[:8].upper()


def image_type_code_value(image_type: str) -> str:
    """The ``99RADAS`` code of a PyRadiomics image type (the measurement method): the name when it fits a Code
    Value (``original``, ``wavelet-LLH``), else ``IMG`` + 8 hex digits of its SHA-256."""
    return image_type if len(image_type) <= 16 else private_code_value(image_type, "IMG")


def _ibsi_tags() -> dict[str, str]:
    """PyRadiomics feature -> the IBSI tag whose identifier is its code."""
    tags: dict[str, str] = {}
    for tag, feature in FEATURE_MAP.items():
        if feature not in NOT_IBSI:
            tags.setdefault(feature, tag)
    return {**tags, **_PREFERRED_TAG}


def _code_for(feature: str, ibsi_tags: dict[str, str]) -> FeatureCode:
    unit = FEATURE_UNITS[feature]
    tag = ibsi_tags.get(feature)
    if tag is not None:
        identifier, name = IBSI_IDENTIFIERS[tag]
        return FeatureCode(feature, IBSI_SCHEME, identifier, name, unit)
    feature_class, name = feature.split("_", 1)
    return FeatureCode(
        feature, PRIVATE_SCHEME, private_code_value(feature), f"PyRadiomics {feature_class} {name}", unit
    )


FEATURE_CODES: dict[str, FeatureCode] = {feature: _code_for(feature, _ibsi_tags()) for feature in FEATURE_UNITS}
"""PyRadiomics ``<class>_<feature>`` -> its code and unit."""


def feature_code(feature_class: str, feature: str) -> FeatureCode:
    """The code of a PyRadiomics feature; a feature without one is refused (a newer PyRadiomics, a typo)."""
    name = f"{feature_class}_{feature}"
    try:
        return FEATURE_CODES[name]
    except KeyError:
        raise InputError(
            f"feature {name} has no concept code and unit in radiomics_assets/exports/codes.py; add it there"
        ) from None


def intensity_unit(modality: str, *, image_type: str, normalised: bool, pet_units: str = "") -> str:
    """UCUM code of the image intensities a first-order feature of this series is computed on.

    CT in HU; PET in its ``Units`` (0054,1001) when that is SUV body weight (GML) or Bq/ml; anything else —
    MR and US (no physical unit), an image PyRadiomics normalised, a filtered image type (LoG, wavelet, ...:
    derived values), a PET of other units — in arbitrary units.
    """
    if normalised or image_type != "original":
        return "[arb'U]"
    if modality == "CT":
        return "[hnsf'U]"
    if modality == "PT":
        return _PET_UNITS.get(pet_units.upper(), "[arb'U]")
    return "[arb'U]"


def resolved_unit(code: FeatureCode, intensity: str) -> str:
    """The UCUM code of ``code``'s unit for a series whose intensities are in ``intensity``."""
    if code.unit == INTENSITY:
        return intensity
    base = intensity if intensity.isalpha() or intensity.startswith("[") else f"({intensity})"
    if code.unit == INTENSITY_SQUARED:
        return f"{base}2"
    if code.unit == INTENSITY_SQUARED_VOLUME:
        return f"{base}2.mm3"
    return code.unit


def code_table_markdown() -> str:
    """The feature -> code, unit table as Markdown (rendered into docs/reference/feature-codes.md)."""
    lines = ["| PyRadiomics feature | scheme | code | meaning | unit (UCUM) |", "|---|---|---|---|---|"]
    for code in FEATURE_CODES.values():
        unit = {
            INTENSITY: "image units",
            INTENSITY_SQUARED: "image units²",
            INTENSITY_SQUARED_VOLUME: "image units² mm3",
        }
        lines.append(
            f"| `{code.feature}` | {code.scheme} | `{code.value}` | {code.meaning} | {unit.get(code.unit, code.unit)} |"
        )
    return "\n".join(lines)
