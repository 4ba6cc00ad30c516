"""The roi_masks step: every mask of a patient's series, whatever its source, written under ``masks/`` with its row.

RTSTRUCT ROIs and SEG segments are paired with their series (``pairing``) and placed on its grid; file masks
come from their image pair; a series without any is segmented automatically when configured. The step reads the
volumes the studies step stored (NRRD under the data root), so it can run in another process or machine.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk

from radiomics_assets.errors import DicomInputError
from radiomics_assets.hashing import image_hash
from radiomics_assets.ingest.dicom_headers import DicomFile
from radiomics_assets.ingest.file_pairs import (
    FilePair,
)
from radiomics_assets.ingest.patient_lookup import PatientInputs, patient_inputs
from radiomics_assets.masks.autoseg import (
    SEEDED_METHODS,
    SEEDS_FILE,
    AutoSegmentation,
    read_seeds,
    seed_for,
    segment_lesion,
)
from radiomics_assets.masks.dicom_seg import frame_corners_mm, read_segmentation, segment_masks, select_segments
from radiomics_assets.masks.file_masks import read_pair_masks
from radiomics_assets.masks.pairing import image_series_for
from radiomics_assets.masks.rtstruct import RoiContours, rasterise, read_structure_set, select_rois
from radiomics_assets.masks.sources import MaskSource
from radiomics_assets.paths import STORED_IMAGE_SUFFIX, DataRoot, patient_key
from radiomics_assets.stored_images import Volumes, stored_image, write_stored_image

log = logging.getLogger(__name__)


def _mask_row(
    root: DataRoot,
    key: str,
    series_uid: str,
    roi: str,
    kind: str,
    sources: list[Path],
    mask: sitk.Image,
    volumes: Volumes,
) -> dict:
    """Write ``mask`` under ``masks/<patient>/`` (kept in ``volumes`` for the features) and return its ``masks``
    row."""
    out_dir = root.masks / key
    out_dir.mkdir(parents=True, exist_ok=True)
    voxels = int(sitk.GetArrayViewFromImage(mask).sum())
    mask_path = out_dir / f"{patient_key(series_uid)}__{patient_key(roi)}{STORED_IMAGE_SUFFIX}"
    write_stored_image(mask, mask_path)
    volumes[str(mask_path)] = mask
    return {
        "patient_id": key,
        "series_uid": series_uid,
        "roi": roi,
        "source_kind": str(kind),
        "source_path": ";".join(str(Path(p).relative_to(root.path)) for p in sources),
        "voxel_count": voxels,
        "volume_ml": voxels * float(np.prod(mask.GetSpacing())) / 1000.0,
        "mask_path": str(mask_path),
        "mask_hash": image_hash(mask, keep_voxel_digest=True),
    }


def _file_pair_masks(
    root: DataRoot, pair: FilePair, series: pd.DataFrame, resample: bool, volumes: Volumes
) -> pd.DataFrame:
    target = series.iloc[0]
    image = stored_image(target.volume_path, volumes)
    masks = read_pair_masks(pair, image, resample_masks_to_image=resample)
    return pd.DataFrame(
        [
            _mask_row(root, pair.key, target.series_uid, roi, MaskSource.FILE, pair.masks, mask, volumes)
            for roi, mask in masks.items()
        ]
    )


@dataclass(frozen=True)
class MaskOptions:
    """How ``build_masks`` finds masks: ROI/segment name pattern, file-mask resampling, automated segmentation."""

    roi_pattern: str = "GTV.*"
    resample_masks_to_image: bool = False
    """Resample a NIfTI/NRRD mask on another grid than its image (nearest neighbour) instead of failing."""
    auto: AutoSegmentation = field(default_factory=AutoSegmentation)
    """Segments image series that have no RTSTRUCT/SEG mask; off while ``auto.method`` is empty."""


def _distinct_names(rt: Path, rois: list[RoiContours]) -> list[RoiContours]:
    """ROIs of one structure set under names that stay distinct: two outlines both called ``GTV`` become
    ``GTV (ROI 3)`` and ``GTV (ROI 4)`` (the ROI numbers), never one mask file written twice."""
    counts: dict[str, int] = {}
    for roi in rois:
        counts[roi.name.casefold()] = counts.get(roi.name.casefold(), 0) + 1
    out = []
    for roi in rois:
        if counts[roi.name.casefold()] > 1:
            renamed = f"{roi.name} (ROI {roi.number})"
            log.warning("%s: several ROIs are named %r; ROI %d is stored as %r", rt, roi.name, roi.number, renamed)
            roi = replace(roi, name=renamed)
        out.append(roi)
    return out


def _rtstruct_rows(
    root: DataRoot, key: str, series: pd.DataFrame, rt: DicomFile, roi_pattern: str, volumes: Volumes
) -> list[dict]:
    """A mask row per matching ROI, each on a series of the ROI's own frame of reference.

    An RTSTRUCT may hold ROIs drawn on different frames of reference (a GTV drawn on the MR in a structure set of
    the planning CT): each ROI is placed on a series of its own frame, never on the grid of a series of another
    one, or the patient fails naming the ROI. A matching ROI without contours, or whose contours cover no voxel,
    is noted and left out, as long as another matching ROI has a mask."""
    structure_set = read_structure_set(rt.path)
    rois = select_rois(structure_set, roi_pattern)
    if not rois:
        names = [r.name for r in structure_set.rois]
        raise DicomInputError(f"{rt.path}: no ROI matches {roi_pattern!r} (ROIs present: {names})")
    rois = _distinct_names(rt.path, rois)
    empty = [roi for roi in rois if not roi.contours_mm]
    by_frame: dict[str, list[RoiContours]] = {}
    for roi in rois:
        if roi.contours_mm:
            by_frame.setdefault(roi.frame_of_reference_uid or rt.frame_of_reference_uid, []).append(roi)
    frames_of_series = dict(zip(series.series_uid, series.frame_of_reference_uid, strict=True))
    rows = []
    for frame_uid, group in sorted(by_frame.items()):
        referenced = structure_set.referenced_series_uids
        if frame_uid:
            # A series referenced under another frame of reference is not this ROI's: its coordinates differ.
            listed = structure_set.series_by_frame.get(frame_uid, frozenset())
            referenced = frozenset(uid for uid in referenced if frames_of_series.get(uid) in (frame_uid, "", None))
            referenced = referenced | listed if listed else referenced
        contours = [points for roi in group for points in roi.contours_mm]
        names = ", ".join(repr(roi.name) for roi in group)
        try:
            target = image_series_for(series, referenced, frame_uid, rt.path, planes_mm=contours)
        except DicomInputError as exc:
            raise DicomInputError(f"{exc} (ROI {names})") from exc
        if frame_uid and target.frame_of_reference_uid and target.frame_of_reference_uid != frame_uid:
            raise DicomInputError(
                f"{rt.path}: ROI {names} is drawn on frame of reference {frame_uid}, but the series it would be "
                f"placed on ({target.series_uid}, {target.modality}) is on {target.frame_of_reference_uid}; add the "
                "series the ROI was drawn on, or remove the ROI"
            )
        image = stored_image(target.volume_path, volumes)
        for roi in group:
            mask = rasterise(roi, image, source=rt.path)
            if not sitk.GetArrayViewFromImage(mask).any():
                empty.append(roi)
                continue
            rows.append(
                _mask_row(root, key, target.series_uid, roi.name, MaskSource.RTSTRUCT, [rt.path], mask, volumes)
            )
    for roi in empty:
        log.warning("%s: ROI %r has no contour inside a voxel; left out (patient %s)", rt.path, roi.name, key)
    if not rows:
        names = ", ".join(repr(roi.name) for roi in empty)
        raise DicomInputError(
            f"{rt.path}: ROI {names} is empty (no ROI matching {roi_pattern!r} has a contour enclosing a voxel centre)"
        )
    return rows


def _seg_rows(
    root: DataRoot, key: str, series: pd.DataFrame, seg_file: DicomFile, roi_pattern: str, volumes: Volumes
) -> list[dict]:
    segmentation = read_segmentation(seg_file.path)
    segments = select_segments(segmentation, roi_pattern)
    if not segments:
        labels = [s.label for s in segmentation.segments]
        raise DicomInputError(f"{seg_file.path}: no segment label matches {roi_pattern!r} (segments present: {labels})")
    frame_uid = segmentation.frame_of_reference_uid or seg_file.frame_of_reference_uid
    frames = frame_corners_mm(segmentation, segments)
    target = image_series_for(series, segmentation.referenced_series_uids, frame_uid, seg_file.path, "SEG", frames)
    masks = segment_masks(segmentation, segments, stored_image(target.volume_path, volumes))
    rows = []
    for segment in segments:
        mask = masks[segment.number]
        if not sitk.GetArrayViewFromImage(mask).any():
            raise DicomInputError(
                f"{seg_file.path}: segment {segment.number} {segment.label!r} is empty on series {target.series_uid}"
            )
        rows.append(
            _mask_row(root, key, target.series_uid, segment.label, MaskSource.SEG, [seg_file.path], mask, volumes)
        )
    return rows


def _auto_rows(
    root: DataRoot, key: str, series: pd.DataFrame, auto: AutoSegmentation, required: bool, volumes: Volumes
) -> list[dict]:
    """Automated masks for ``series`` (those without a mask); a series without a seed fails only if ``required``."""
    seeds_path = root.path / SEEDS_FILE
    seeds = read_seeds(seeds_path).get(key, [])
    rows = []
    for target in series.itertuples():
        seed = seed_for(seeds, target.modality)
        if seed is None and auto.method in SEEDED_METHODS:
            if required:
                raise DicomInputError(
                    f"patient {key}: no mask for {target.modality} series {target.series_uid}, and {auto.method} "
                    f"needs a seed: add a row '{key},x,y,z,{target.modality}' (mm), or '{key},column,row,' for a 2D "
                    f"image, to {seeds_path}"
                )
            log.warning(
                "patient %s: %s series %s has no mask and no seed; not segmented",
                key,
                target.modality,
                target.series_uid,
            )
            continue
        image = stored_image(target.volume_path, volumes)
        mask = segment_lesion(image, auto, seed, f"patient {key} {target.modality} series {target.series_uid}")
        sources = [seeds_path] if seed is not None else []
        rows.append(_mask_row(root, key, target.series_uid, auto.roi_name, auto.source_kind, sources, mask, volumes))
    return rows


def _maskless_image_masks(
    root: DataRoot, key: str, pair: FilePair, series: pd.DataFrame, auto: AutoSegmentation, volumes: Volumes
) -> pd.DataFrame:
    if not auto.method:
        raise DicomInputError(
            f"{pair.image}: no mask file beside it and automated segmentation is off; set auto_segmentation "
            "(e.g. ultrasound, with a seed in seeds.csv) or add the mask file"
        )
    return pd.DataFrame(_auto_rows(root, key, series, auto, required=True, volumes=volumes))


def build_masks(
    root: DataRoot, key: str, series: pd.DataFrame, options: MaskOptions, inputs: PatientInputs | None = None
) -> pd.DataFrame:
    """Masks of a patient's series from RTSTRUCTs, DICOM-SEGs or mask files; returns ``masks`` rows.

    RTSTRUCT ROIs and SEG segments whose name matches ``options.roi_pattern`` each become
    a mask on the grid of the series they belong to. A series without any of these is segmented automatically
    when ``options.auto`` says how; a patient with no mask at all fails with a message saying so.
    """
    inputs = inputs or patient_inputs(root, key)
    if inputs.pair is not None and len(series) == 1 and str(series.series_uid.iloc[0]).startswith("file-"):
        if not inputs.pair.masks:  # an image registered without a mask file: segmented from its seed
            return _maskless_image_masks(root, key, inputs.pair, series, options.auto, inputs.volumes)
        return _file_pair_masks(root, inputs.pair, series, options.resample_masks_to_image, inputs.volumes)
    patient = inputs.require_dicom()
    rows = []
    for rt in patient.rtstructs:
        rows += _rtstruct_rows(root, key, series, rt, options.roi_pattern, inputs.volumes)
    for seg_file in patient.segmentations:
        rows += _seg_rows(root, key, series, seg_file, options.roi_pattern, inputs.volumes)
    without_mask = series[~series.series_uid.isin({row["series_uid"] for row in rows})]
    if options.auto.method and len(without_mask):
        rows += _auto_rows(root, key, without_mask, options.auto, required=not rows, volumes=inputs.volumes)
    if not rows:
        raise DicomInputError(
            f"patient {key}: no RTSTRUCT or DICOM-SEG in {root.inbox}, and automated segmentation is off "
            "(set auto_segmentation, see docs/reference/input-layouts.md)"
        )
    with_roi = {row["series_uid"] for row in rows}
    for bare in series[~series.series_uid.isin(with_roi)].itertuples():
        # Not an error (a PET beside a contoured CT is common), but its series gets no features: say so.
        log.warning(
            "patient %s: %s series %s has no ROI (no RTSTRUCT, SEG or automated mask on it): no features",
            key,
            bare.modality,
            bare.series_uid,
        )
    seen: dict[tuple[str, str], str] = {}
    for row in rows:
        previous = seen.setdefault((row["series_uid"], row["roi"]), row["source_path"])
        if previous != row["source_path"]:
            raise DicomInputError(
                f"{root.path / row['source_path']}: ROI {row['roi']!r} of series {row['series_uid']} is also given by "
                f"{root.path / previous}; narrow roi_pattern or remove one"
            )
    return pd.DataFrame(rows)
