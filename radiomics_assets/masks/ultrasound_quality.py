"""How good are the masks of a seeded ultrasound study: the segmentation's own confidence, its worst masks, and its
Dice against the expert outlines where some exist.

A study segmented from clicks (``auto_segmentation: ultrasound``) has no ground truth for most images, so its report
must show how far the masks can be trusted. Three things, none of them invented where the data is missing:

1. the confidence the segmentation recorded in each mask's NRRD header (``masks.ultrasound``: ``CONTRAST_KEY``, the
   chosen candidate's surround contrast, and ``AGREEMENT_KEY``, the median Dice of the other candidates with it);
   a mask written before these were recorded has NaN there and is counted as "not recorded";
2. the masks of lowest contrast, for a gallery a reader looks at first;
3. where a radiologist outlined some images (mask files, RTSTRUCT or SEG beside the seeded images) and ``seeds.csv``
   also gives a click for them, the seeded mask of those images is computed here from the click and compared with
   the outline (Dice): the only direct measure of the seeded masks' accuracy inside the study.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
import SimpleITK as sitk

from radiomics_assets.errors import DicomInputError
from radiomics_assets.masks.autoseg import AutoSegmentation, Seed, seed_for, segment_lesion
from radiomics_assets.masks.sources import SEEDED_ULTRASOUND, is_automated
from radiomics_assets.masks.ultrasound import AGREEMENT_KEY, CONTRAST_KEY

MASK_COLUMNS = ("patient_id", "roi", "source_kind", "mask_path", "volume_path")


@dataclass(frozen=True)
class SeededMaskQuality:
    """The quality figures of one study's seeded masks."""

    confidence: pd.DataFrame
    """One row per seeded mask: patient_id, roi, mask_path, volume_path, contrast, candidate_agreement (NaN: not
    recorded), sorted by contrast, lowest first."""
    worst: pd.DataFrame
    """The ``worst`` rows of lowest recorded contrast (the gallery)."""
    expert_dice: pd.DataFrame
    """One row per image with an expert mask and a seed: patient_id, roi, dice, contrast (of the seeded mask made
    for the comparison)."""
    not_recorded: int
    """Seeded masks whose file carries no confidence (written by an older version)."""

    def contrast_quartiles(self) -> tuple[float, float, float] | None:
        values = self.confidence.contrast.dropna()
        values = values[np.isfinite(values)]
        return tuple(float(q) for q in np.percentile(values, [25, 50, 75])) if len(values) else None

    def dice_quartiles(self) -> tuple[float, float, float] | None:
        values = self.expert_dice.dice.dropna()
        return tuple(float(q) for q in np.percentile(values, [25, 50, 75])) if len(values) else None


def worst_mask_pictures(quality: SeededMaskQuality, *, size_px: int = 160) -> list[tuple[str, bytes]]:
    """(caption, PNG bytes) of each of ``quality.worst``: the mask outline over its image, captioned with the
    patient key, ROI and contrast. A mask or image whose file is gone is left out (the caption list says so by
    its length); the report shows these first, as the masks most worth a look."""
    from radiomics_assets.pictures import mask_outline_png

    pictures = []
    for row in quality.worst.itertuples(index=False):
        try:
            png = mask_outline_png(sitk.ReadImage(row.volume_path), sitk.ReadImage(row.mask_path), size_px=size_px)
        except (RuntimeError, ValueError):
            continue
        pictures.append((f"{row.patient_id}, ROI {row.roi}: contrast {row.contrast:.2f}", png))
    return pictures


def recorded_confidence(mask_path: str) -> tuple[float, float]:
    """(contrast, candidate agreement) from a stored mask's header, NaN for what it does not record.

    Reads the header only. A file that cannot be read raises DicomInputError naming it."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(mask_path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise DicomInputError(f"{mask_path}: cannot read the stored mask ({exc})") from exc
    keys = set(reader.GetMetaDataKeys())

    def number(key: str) -> float:
        return float(reader.GetMetaData(key)) if key in keys else float("nan")

    return number(CONTRAST_KEY), number(AGREEMENT_KEY)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 2.0 * float(np.logical_and(a, b).sum()) / total if total else float("nan")


def seeded_mask_quality(
    masks: pd.DataFrame, seeds: Mapping[str, list[Seed]] | None = None, *, worst: int = 8
) -> SeededMaskQuality:
    """Quality of the seeded masks of a study.

    ``masks``: rows of the warehouse's ``masks`` joined with ``series`` (columns ``MASK_COLUMNS``, as the report's
    mask gallery selects them). ``seeds``: ``autoseg.read_seeds`` of the study's ``seeds.csv``; the images that have
    an expert mask and a seed are segmented here (a few seconds each) to give the Dice. ``worst``: gallery size.
    """
    missing = [c for c in MASK_COLUMNS if c not in masks.columns]
    if missing:
        raise ValueError(f"masks table needs columns {list(MASK_COLUMNS)}, missing {missing}")
    seeded = masks[masks.source_kind == SEEDED_ULTRASOUND]
    rows = []
    for row in seeded.itertuples(index=False):
        contrast, agreement = recorded_confidence(row.mask_path)
        rows.append(
            {
                "patient_id": row.patient_id,
                "roi": row.roi,
                "mask_path": row.mask_path,
                "volume_path": row.volume_path,
                "contrast": contrast,
                "candidate_agreement": agreement,
            }
        )
    confidence = pd.DataFrame(
        rows, columns=["patient_id", "roi", "mask_path", "volume_path", "contrast", "candidate_agreement"]
    )
    confidence = confidence.sort_values(["contrast", "patient_id"], na_position="last", kind="stable")
    confidence = confidence.reset_index(drop=True)
    not_recorded = int(confidence.contrast.isna().sum())
    expert_rows = []
    expert = masks[~masks.source_kind.map(is_automated).astype(bool)]
    for row in expert.itertuples(index=False):
        seed = seed_for(list((seeds or {}).get(row.patient_id, [])), "US")
        if seed is None:
            continue
        image = sitk.ReadImage(row.volume_path)
        outline = sitk.GetArrayFromImage(sitk.ReadImage(row.mask_path)) > 0
        found = segment_lesion(image, AutoSegmentation(method="ultrasound"), seed, f"patient {row.patient_id}")
        expert_rows.append(
            {
                "patient_id": row.patient_id,
                "roi": row.roi,
                "dice": _dice(sitk.GetArrayFromImage(found) > 0, outline),
                "contrast": float(found.GetMetaData(CONTRAST_KEY)),
            }
        )
    expert_dice = pd.DataFrame(expert_rows, columns=["patient_id", "roi", "dice", "contrast"])
    return SeededMaskQuality(
        confidence=confidence,
        worst=confidence.dropna(subset=["contrast"]).head(worst).reset_index(drop=True),
        expert_dice=expert_dice.sort_values("dice", kind="stable").reset_index(drop=True),
        not_recorded=not_recorded,
    )
