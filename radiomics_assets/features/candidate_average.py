"""Features of a seeded ultrasound mask averaged over the segmentation's candidate outlines (issue 29).

The seeded segmentation (``masks.ultrasound``) grows twelve candidate regions from one click (36 when it re-seeds an
off-centre click) and keeps the one of highest surround contrast and agreement; on a quarter of the images that one
is off by 15 % or more, and its shape and texture features are then other numbers than the expert outline's. The
features averaged over every grown candidate (each with the outline margin,
``masks.ultrasound.ultrasound_candidate_masks``) depend less on which candidate won: on the 40 BUSI sample images
they gave a proxy AUC close to the expert outlines' (``benchmarks/bench_ultrasound_features.py --candidates``).
Option ``RADIOMICS_ULTRASOUND_CANDIDATE_FEATURES=1`` (``PatientSettings.ultrasound_candidate_features``) stores them
instead of the chosen mask's for masks of kind ``auto:ultrasound``; ``predict`` does the same for a model trained so
(``SavedModel.ultrasound_candidate_features``).

Rules:

- the candidates are recomputed from the stored image and the seed the mask's header records (``SEED_KEY``); the
  stored mask must be one of them, else the segmentation changed since the masks step ran and the averages would
  describe other outlines than the stored mask: refused (re-run ``roi_masks``);
- every feature (shape2D too) is the plain mean of PyRadiomics' values over the usable candidates, each extracted
  with the same extractor and parameter file as a single mask; the rows are the stored mask's rows (names, hashes,
  provenance) with the mean as value;
- a candidate is skipped when it is empty or not larger than the parameter file's ``minimumROISize`` (PyRadiomics
  would refuse it); after the 4 px outline margin a grown candidate has at least 49 pixels, so this only happens with a
  parameter file that asks for more. With no usable candidate the extraction fails naming the mask and image;
- the diagnostics say how many candidates were averaged and skipped (``CANDIDATE_MASKS_DIAGNOSTIC``,
  ``SKIPPED_CANDIDATES_DIAGNOSTIC``); the other diagnostics are the stored mask's own extraction's.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk

from radiomics_assets import environment
from radiomics_assets.errors import ExtractionError
from radiomics_assets.features.extraction import ExtractionTarget, extract, load_extractor
from radiomics_assets.features.parameter_files import DEFAULT_MAX_GREY_LEVELS
from radiomics_assets.hashing import image_hash
from radiomics_assets.masks.sources import SEEDED_ULTRASOUND
from radiomics_assets.masks.ultrasound import SEED_KEY, ultrasound_candidate_masks

CANDIDATE_FEATURES_ENV = environment.ULTRASOUND_CANDIDATE_FEATURES.name
CANDIDATE_MASKS_DIAGNOSTIC = "diagnostics_radiomics_assets_candidate_masks"
"""Diagnostics entry: the number of candidate masks the stored feature values are the mean over (absent: the
features are the stored mask's own)."""
SKIPPED_CANDIDATES_DIAGNOSTIC = "diagnostics_radiomics_assets_candidate_masks_skipped"


def stored_seed(mask: sitk.Image, source: str) -> tuple[int, int, int]:
    """(column, row, 0) of the click a seeded mask was grown from, as its header records it."""
    if not mask.HasMetaDataKey(SEED_KEY):
        raise ExtractionError(
            f"{source}: the seeded mask does not record its seed ({SEED_KEY}; stored by an older version), so its "
            "candidate outlines cannot be recomputed: re-run roi_masks for this patient"
        )
    column, row = (int(v) for v in mask.GetMetaData(SEED_KEY).split(","))
    return column, row, 0


def extract_candidate_average(
    target: ExtractionTarget, params_path: Path, *, max_grey_levels: int = DEFAULT_MAX_GREY_LEVELS
) -> tuple[pd.DataFrame, dict]:
    """Long feature rows of ``target`` (a seeded mask carrying its seed) whose values are the means over the
    candidate masks, and the diagnostics of the stored mask's extraction plus the candidate counts."""
    source = f"{target.source or target.series_uid}, ROI {target.roi}"
    candidates = ultrasound_candidate_masks(target.image, stored_seed(target.mask, source))
    stored = sitk.GetArrayViewFromImage(target.mask) > 0
    chosen = [i for i, m in enumerate(candidates) if np.array_equal(sitk.GetArrayViewFromImage(m) > 0, stored)]
    if not chosen:
        raise ExtractionError(
            f"{source}: the stored seeded mask is none of the candidate outlines recomputed from its seed (the "
            "segmentation or the image changed since the masks step ran): re-run roi_masks for this patient"
        )
    # PyRadiomics refuses an ROI of minimumROISize pixels or fewer; without the setting, only an empty one.
    minimum = int(load_extractor(params_path).settings.get("minimumROISize") or 0)
    usable = [i for i, m in enumerate(candidates) if int((sitk.GetArrayViewFromImage(m) > 0).sum()) > minimum]
    if not usable:
        raise ExtractionError(
            f"{source}: none of the {len(candidates)} candidate outlines has more than {minimum} pixels "
            "(minimumROISize of the parameter file): nothing to average"
        )
    if chosen[0] not in usable:  # PyRadiomics refuses the stored mask itself under this parameter file
        raise ExtractionError(f"{source}: the seeded mask has {minimum} pixels or fewer (minimumROISize)")
    values, rows, diagnostics = [], None, {}
    for index in usable:
        candidate_rows, candidate_diagnostics = extract(
            replace(target, mask=candidates[index]), params_path, max_grey_levels=max_grey_levels
        )
        names = candidate_rows.image_type + "_" + candidate_rows.feature_class + "_" + candidate_rows.feature
        values.append(pd.Series(candidate_rows.value.to_numpy(), index=names.to_numpy()))
        if index == chosen[0]:
            rows, diagnostics = candidate_rows.copy(), candidate_diagnostics
    if any(not v.index.equals(values[0].index) for v in values):
        raise ExtractionError(f"{source}: the candidate outlines gave different feature sets; cannot average them")
    # A NaN of one candidate stays NaN in the mean: a value averaged over fewer outlines would be another number.
    means = pd.concat(values, axis=1).mean(axis=1, skipna=False)
    rows["value"] = means.reindex(
        (rows.image_type + "_" + rows.feature_class + "_" + rows.feature).to_numpy()
    ).to_numpy()
    rows["mask_hash"] = image_hash(target.mask)  # the rows describe the stored mask, the candidates derive from it
    diagnostics = {
        **diagnostics,
        CANDIDATE_MASKS_DIAGNOSTIC: len(usable),
        SKIPPED_CANDIDATES_DIAGNOSTIC: len(candidates) - len(usable),
    }
    return rows, diagnostics


def candidate_averaged_training(warehouse, patient_ids: list[str]) -> bool:
    """Whether the features of the training patients' seeded ultrasound masks are candidate averages.

    Read from what is stored (table ``diagnostics``), not from the current setting, as the parameter hash is: the
    model must be scored the way its features were made. A mix (the option changed and only some patients were
    re-extracted) would train on two kinds of number under one column name: refused, naming some patients."""
    masks = warehouse.query(
        "SELECT m.patient_id, d.value FROM masks m LEFT JOIN diagnostics d ON d.patient_id = m.patient_id "
        "AND d.series_uid = m.series_uid AND d.roi = m.roi AND d.name = ? WHERE m.source_kind = ?",
        [CANDIDATE_MASKS_DIAGNOSTIC, SEEDED_ULTRASOUND],
    )
    masks = masks[masks.patient_id.isin(set(patient_ids))]
    averaged = masks.value.notna()
    if averaged.all() or not averaged.any():
        return bool(len(masks)) and bool(averaged.all())
    plain = sorted(masks.patient_id[~averaged].unique())
    raise ValueError(
        f"the seeded ultrasound features of {int(averaged.sum())} training masks are averaged over the candidate "
        f"outlines and those of {int((~averaged).sum())} are not (e.g. patients {', '.join(plain[:3])}): re-run the "
        f"features of every patient with one {CANDIDATE_FEATURES_ENV} setting"
    )
