"""Score one new image with the promoted model (``radiomics-assets predict``): mask, features, probability.

The image goes the way a training patient went: the same reader (PNG luminance, or DICOM US with its physical
pixel spacing), the same mask sources (a mask file, or the seeded ``ultrasound`` segmentation), PyRadiomics with the
modality's parameter file (for a seeded mask, averaged over the candidate outlines when the model's training features
were: ``features.candidate_average``), and the model's own feature columns. What would make the score meaningless fails
before scoring: no promoted model, a model of another modality, a parameter file other than the one the model's
features were extracted with, an image whose pixel spacing differs from the training images' (``modelling.spacing``),
or features the model needs that this extraction does not give.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from radiomics_assets.errors import FileInputError, PredictionError
from radiomics_assets.hashing import file_hash
from radiomics_assets.modelling import SavedModel, load_model, prediction_columns, task_of
from radiomics_assets.modelling.spacing import resamples_to_fixed_spacing, spacing_kind, spacing_mismatch
from radiomics_assets.paths import DataRoot

__all__ = ["ImagePrediction", "predict_image", "read_new_image"]

US = "US"


def _load_saved_model(root: DataRoot) -> SavedModel:
    """The promoted model (``models/model.pkl``), or an error saying how to train one."""
    if not (root.models / "model.pkl").exists():
        raise PredictionError(
            f"no trained model under {root.models}: train one first (radiomics-assets run, or the retrain_cohort job)"
        )
    return load_model(root)


def _model_version(root: DataRoot, saved) -> str:
    from radiomics_assets.modelling.registry import current_version

    return current_version(root.models) or saved.model_id


@dataclass(frozen=True)
class ImagePrediction:
    """The score of one image: binary, probability of the positive class (label 1) and the class at the threshold;
    every outcome type, ``outputs``: the model's prediction columns (class probabilities, a value, or the risk and
    survival probabilities at the study's horizons)."""

    probability: float | None
    predicted_label: int | None
    threshold: float | None
    model_version: str
    model_id: str
    mask_source: str
    """``file:<mask path>`` or ``auto:ultrasound`` (seed column,row)."""
    roi: str
    picture: Path | None
    task: str = "binary"
    outputs: dict = field(default_factory=dict)
    mask_contrast: float | None = None
    """The seeded segmentation's own confidence in its mask (surround contrast, ``masks.ultrasound.CONTRAST_KEY``:
    higher is a clearer lesion boundary; compare with the study's distribution, ``masks.ultrasound_quality``);
    None for a mask file."""

    def as_dict(self) -> dict:
        return {
            "task": self.task,
            "outputs": self.outputs,
            "probability": self.probability,
            "predicted_label": self.predicted_label,
            "threshold": self.threshold,
            "model_version": self.model_version,
            "model_id": self.model_id,
            "mask_source": self.mask_source,
            "roi": self.roi,
            "picture": str(self.picture) if self.picture else None,
            "mask_contrast": self.mask_contrast,
        }


def read_new_image(path: Path, *, frame: int | None = None) -> sitk.Image:
    """A PNG or DICOM US image as the studies step stores it: a one-slice float32 volume (grey by luminance)."""
    from radiomics_assets.ingest.file_pairs import FilePair, read_pair_image

    path = Path(path)
    if not path.is_file():
        raise FileInputError(f"{path}: no such image file")
    if path.suffix.lower() == ".png":
        return read_pair_image(FilePair(key="new", kind="png", image=path))
    from radiomics_assets.ingest.dicom_us import read_us_image

    return read_us_image(path, frame=frame)


def _model_roi(saved) -> str:
    """The one ultrasound ROI the model's columns (``<modality>__<roi>__...``) describe."""
    blocks = sorted({tuple(c.split("__")[:2]) for c in saved.feature_columns})
    modalities = sorted({m for m, _ in blocks})
    if modalities != [US]:
        raise PredictionError(
            f"the promoted model was trained on {', '.join(modalities)} features; predict scores 2D ultrasound images "
            "(train a model on US images first)"
        )
    if len(blocks) != 1:
        raise PredictionError(
            f"the promoted model combines several ultrasound ROIs ({[r for _, r in blocks]}); one image with one mask "
            "cannot fill them"
        )
    return blocks[0][1]


def _check_spacing(saved: SavedModel, image: sitk.Image, image_path: Path, params_path: Path) -> None:
    """Refuse an image whose spacing kind (mm or PNG pixels) or in-plane spacing differs from the training images'.

    A model saved before the spacing was recorded scores with a warning: it cannot be checked."""
    trained = (getattr(saved, "pixel_spacing", None) or {}).get(US)
    if trained is None:
        warnings.warn(
            f"the promoted model {saved.model_id} does not record its training images' pixel spacing (saved by an "
            f"older version): {image_path} is scored without checking that its spacing matches; retrain to check it",
            stacklevel=3,
        )
        return
    spacing = image.GetSpacing()
    problem = spacing_mismatch(
        trained, spacing_kind(image_path), (spacing[0], spacing[1]), resampled=resamples_to_fixed_spacing(params_path)
    )
    if problem:
        raise PredictionError(f"{image_path}: {problem}; its shape and texture features would be on another scale")


def _mask_from(image: sitk.Image, mask_path: Path | None, seed: tuple[int, int] | None, source: str):
    from radiomics_assets.masks.autoseg import AutoSegmentation, Seed, segment_lesion

    if (mask_path is None) == (seed is None):
        raise PredictionError("give either a seed (--seed COLUMN,ROW) or a mask file (--mask MASK), not both or none")
    if seed is not None:
        mask = segment_lesion(
            image, AutoSegmentation(method="ultrasound"), Seed(None, "", "--seed", (int(seed[0]), int(seed[1]))), source
        )
        return mask, f"auto:ultrasound (seed column {seed[0]}, row {seed[1]})"
    from radiomics_assets.ingest.file_pairs import png_array

    lesion = png_array(Path(mask_path), "mask") > 0 if Path(mask_path).suffix.lower() == ".png" else None
    if lesion is None:
        lesion = sitk.GetArrayFromImage(sitk.ReadImage(str(mask_path))).squeeze() > 0
    columns, rows = image.GetSize()[:2]
    if lesion.shape != (rows, columns):
        raise FileInputError(
            f"{mask_path}: mask size {lesion.shape[::-1]} (columns, rows) differs from the image's {(columns, rows)}"
        )
    if not lesion.any():
        raise FileInputError(f"{mask_path}: the mask is empty")
    mask = sitk.GetImageFromArray(lesion.astype(np.uint8)[None])
    mask.CopyInformation(image)
    return mask, f"file:{mask_path}"


def predict_image(
    root: DataRoot,
    image_path: Path,
    *,
    params_path: Path,
    seed: tuple[int, int] | None = None,
    mask_path: Path | None = None,
    frame: int | None = None,
    picture_dir: Path | None = None,
) -> ImagePrediction:
    """Score one PNG or DICOM US image with the promoted model of ``root``.

    ``seed`` is (column, row) in pixels, for the ``ultrasound`` segmentation; ``mask_path`` a mask file on the
    image's grid instead. ``params_path`` is the ultrasound parameter file the pipeline uses (its hash must match
    the model's features). The picture (image with the mask outline) is written to
    ``<picture_dir>/<image stem>_mask.png`` unless ``picture_dir`` is None.
    """
    from radiomics_assets.features.candidate_average import extract_candidate_average
    from radiomics_assets.features.extraction import ExtractionTarget, extract, prepare_pyradiomics
    from radiomics_assets.modelling.matrix import wide_matrix
    from radiomics_assets.pictures import mask_outline_png

    saved = _load_saved_model(root)
    roi = _model_roi(saved)
    covariates = [c.split("__", 1)[1] for c in saved.feature_columns if c.startswith("clinical__")]
    if covariates:
        raise PredictionError(
            f"the promoted model also uses clinical covariates ({', '.join(covariates)}), which one image does not "
            "give; add the patient to labels.csv with its covariates and an empty outcome, and read table predictions"
        )
    trained_hash, current_hash = saved.params_hashes.get(US), file_hash(params_path)
    if trained_hash and trained_hash != current_hash:
        raise PredictionError(
            f"{params_path}: parameter file (hash {current_hash}) differs from the one the model's features were "
            f"extracted with (hash {trained_hash}); restore it or retrain"
        )
    image = read_new_image(image_path, frame=frame)
    _check_spacing(saved, image, Path(image_path), params_path)
    mask, mask_source = _mask_from(image, mask_path, seed, str(image_path))
    prepare_pyradiomics()
    target = ExtractionTarget("new", "new", US, roi, image, mask, source=str(image_path))
    if seed is not None and getattr(saved, "ultrasound_candidate_features", False):
        # The model learned from features averaged over the candidate outlines: this image's are made the same way.
        rows, _ = extract_candidate_average(target, params_path)
    else:
        rows, _ = extract(target, params_path)
    X = wide_matrix(rows)
    missing = [c for c in saved.feature_columns if c not in X.columns]
    if missing:
        raise PredictionError(
            f"the model was trained on another feature set: {len(missing)} of its {len(saved.feature_columns)} "
            f"columns are not extracted with {params_path} (e.g. {missing[0]}); retrain or use its parameter file"
        )
    outputs = {name: _plain(values[0]) for name, values in prediction_columns(saved, X).items()}
    task = task_of(saved).kind.value
    picture = None
    if picture_dir is not None:
        picture_dir.mkdir(parents=True, exist_ok=True)
        picture = picture_dir / f"{Path(image_path).stem}_mask.png"
        picture.write_bytes(mask_outline_png(image, mask))
    binary = task == "binary"
    return ImagePrediction(
        probability=outputs["probability"] if binary else None,
        predicted_label=outputs["predicted_label"] if binary else None,
        threshold=float(saved.threshold) if binary else None,
        task=task,
        outputs=outputs,
        model_version=_model_version(root, saved),
        model_id=saved.model_id,
        mask_source=mask_source,
        roi=roi,
        picture=picture,
        mask_contrast=_recorded_contrast(mask),
    )


def _recorded_contrast(mask: sitk.Image) -> float | None:
    from radiomics_assets.masks.ultrasound import CONTRAST_KEY

    return float(mask.GetMetaData(CONTRAST_KEY)) if mask.HasMetaDataKey(CONTRAST_KEY) else None


def _plain(value):
    """A numpy scalar as a plain number or text (for JSON output)."""
    return value.item() if isinstance(value, np.generic) else value
