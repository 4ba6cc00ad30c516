"""The patient-level ingest steps (studies, masks) as plain functions over a data root (extraction: features.py).

Each step reads what the previous one wrote (NIfTI volumes and masks under the data root, rows in the
warehouse) so that steps can run in different processes or machines.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk

from radiomics_assets.autoseg import SEEDED_METHODS, SEEDS_FILE, AutoSegmentation, read_seeds, seed_for, segment_lesion
from radiomics_assets.dicom_seg import frame_corners_mm, read_segmentation, segment_masks, select_segments
from radiomics_assets.dicom_series import (
    DicomFile,
    DicomInputError,
    PatientFiles,
    describe_series,
    read_series,
    scan_inbox,
)
from radiomics_assets.features import image_hash
from radiomics_assets.file_inputs import (
    FilePair,
    file_series_uid,
    pair_modality,
    read_pair_image,
    read_pair_masks,
    scan_file_pairs,
)
from radiomics_assets.inbox_index import manifest_file_pair, manifest_path, manifest_scan, read_manifest
from radiomics_assets.paths import STORED_IMAGE_SUFFIX, DataRoot, patient_key
from radiomics_assets.rtstruct import rasterise, read_structure_set, select_rois

log = logging.getLogger(__name__)
Volumes = dict[str, sitk.Image]
"""Stored volumes already in memory, by path."""


@dataclass(frozen=True)
class PatientInputs:
    """A patient's input files: its DICOM files (None when it came only as an image/mask file pair) and its pair."""

    key: str
    dicom: PatientFiles | None
    pair: FilePair | None
    where: str
    """Where they were looked for, for error messages."""
    volumes: Volumes = field(default_factory=dict, compare=False)
    """Volumes stored by this process's ingest, by path: the masks stage uses them instead of reading them back."""

    def require_dicom(self) -> PatientFiles:
        if self.dicom is None:
            raise DicomInputError(f"no DICOM files for patient key {self.key!r} under {self.where}")
        return self.dicom


def patient_inputs(root: DataRoot, key: str) -> PatientInputs:
    """The patient's files: only those in its manifest when there is one (read once), else from a scan of the inbox."""
    manifest = read_manifest(root, key)
    if manifest is None:
        scan, pair, where = scan_inbox(root.inbox), scan_file_pairs(root.inbox)[0].get(key), str(root.inbox)
    else:
        scan = manifest_scan(root, manifest) if manifest.dicom else None
        pair, where = manifest_file_pair(root, manifest), f"{root.inbox} (files in {manifest_path(root, key)})"
    dicom = scan.patients.get(key) if scan is not None else None
    if dicom is None and pair is None:
        raise DicomInputError(f"no DICOM files or image/mask file pair for patient key {key!r} under {where}")
    return PatientInputs(key, dicom, pair, where)


def find_patient(root: DataRoot, key: str) -> PatientFiles:
    """The patient's DICOM files (see :func:`patient_inputs`)."""
    return patient_inputs(root, key).require_dicom()


def _store_volume(image: sitk.Image, volume_path: Path, inputs: PatientInputs) -> None:
    sitk.WriteImage(image, str(volume_path), useCompression=True)
    inputs.volumes[str(volume_path)] = image


def _stored_volume(volume_path: str, volumes: Volumes) -> sitk.Image:
    return volumes[volume_path] if volume_path in volumes else sitk.ReadImage(volume_path)


def _ingest_file_pair(root: DataRoot, inputs: PatientInputs, modality: str) -> pd.DataFrame:
    pair = inputs.pair
    image = read_pair_image(pair)
    series_uid = file_series_uid(pair.image)
    out_dir = root.volumes / pair.key
    out_dir.mkdir(parents=True, exist_ok=True)
    volume_path = out_dir / f"{patient_key(series_uid)}{STORED_IMAGE_SUFFIX}"
    _store_volume(image, volume_path, inputs)
    size, spacing, origin = image.GetSize(), image.GetSpacing(), image.GetOrigin()
    return pd.DataFrame([{
        "patient_id": pair.key, "study_uid": "", "series_uid": series_uid, "modality": pair_modality(pair, modality),
        "frame_of_reference_uid": "", "n_slices": int(size[2]),
        "size_x": size[0], "size_y": size[1], "size_z": size[2],
        "spacing_x": spacing[0], "spacing_y": spacing[1], "spacing_z": spacing[2],
        "origin_x": origin[0], "origin_y": origin[1], "origin_z": origin[2],
        "source_path": str(pair.image.relative_to(root.root)), "volume_path": str(volume_path),
        "image_hash": image_hash(image), "ingested_at": dt.datetime.now(dt.UTC).replace(tzinfo=None),
    }])  # fmt: skip


def ingest_studies(
    root: DataRoot, key: str, file_modality: str = "CT", inputs: PatientInputs | None = None
) -> pd.DataFrame:
    """Read and validate every image series of a patient, store canonical volumes; returns ``series`` rows.

    A patient given as an image/mask file pair (NIfTI, NRRD, PNG) gets one series of modality
    ``file_modality`` (``US`` for PNG; a ``<id>.json`` sidecar overrides both). ``inputs`` saves looking the
    patient's files up again when the caller already has them.
    """
    inputs = inputs or patient_inputs(root, key)
    if inputs.pair is not None and inputs.dicom is None:
        return _ingest_file_pair(root, inputs, file_modality)
    patient = inputs.require_dicom()
    if not patient.image_series:
        raise DicomInputError(f"patient {key}: no CT/MR/PET image series in {root.inbox}")
    out_dir = root.volumes / key
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for series_uid, files in sorted(patient.image_series.items()):
        try:
            image = read_series(files)
        except DicomInputError as exc:
            beside = [why for path, why in patient.unreadable.items() if path.parent == files[0].path.parent]
            raise DicomInputError("; ".join([str(exc), *beside])) from exc
        info = describe_series(files, image)
        volume_path = out_dir / f"{patient_key(series_uid)}{STORED_IMAGE_SUFFIX}"
        _store_volume(image, volume_path, inputs)
        rows.append({
            "patient_id": key, "study_uid": info.study_uid, "series_uid": series_uid, "modality": info.modality,
            "frame_of_reference_uid": info.frame_of_reference_uid, "n_slices": info.n_slices,
            "size_x": info.size[0], "size_y": info.size[1], "size_z": info.size[2],
            "spacing_x": info.spacing_mm[0], "spacing_y": info.spacing_mm[1], "spacing_z": info.spacing_mm[2],
            "origin_x": info.origin_mm[0], "origin_y": info.origin_mm[1], "origin_z": info.origin_mm[2],
            "source_path": str(info.first_file.parent.relative_to(root.root)), "volume_path": str(volume_path),
            "image_hash": image_hash(image), "ingested_at": dt.datetime.now(dt.UTC).replace(tzinfo=None),
        })  # fmt: skip
    return pd.DataFrame(rows)


SLICE_TOLERANCE = 0.1
"""A contour plane or SEG frame further than this share of the slice spacing from every slice is not on a series."""
EXTENT_TOLERANCE_VOXELS = 0.5
"""Contour points and frame corners may lie up to half a voxel beyond the outermost voxel centres."""


def _geometry_misfit(target: pd.Series, planes_mm: Sequence[np.ndarray]) -> str | None:
    """Why the points of ``planes_mm`` (one (N, 3) array per contour or frame) are not on series ``target``.

    None when every plane lies on a slice of the series and every point inside its volume. Size, spacing and
    origin come from the ``series`` row; the direction from the stored volume's header (no voxels are read).
    """
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(target.volume_path))
    reader.ReadImageInformation()
    direction = np.array(reader.GetDirection()).reshape(3, 3)
    size = np.array([target.size_x, target.size_y, target.size_z], dtype=float)
    spacing = np.array([target.spacing_x, target.spacing_y, target.spacing_z], dtype=float)
    origin = np.array([target.origin_x, target.origin_y, target.origin_z], dtype=float)
    for points in planes_mm:
        points = np.asarray(points, dtype=float).reshape(-1, 3)
        index = np.linalg.solve(direction, (points - origin).T).T / spacing  # continuous voxel index per point
        off_slice = float(np.abs(index[:, 2] - np.rint(index[:, 2])).max())
        if off_slice > SLICE_TOLERANCE:
            along_normal = float(np.mean(points @ direction[:, 2]))
            return (
                f"the plane at {along_normal:.2f} mm along its slice normal is {off_slice:.2f} slice spacings "
                f"({off_slice * spacing[2]:.2f} mm) from the nearest slice"
            )
        outside = np.any((index < -EXTENT_TOLERANCE_VOXELS) | (index > size - 1 + EXTENT_TOLERANCE_VOXELS), axis=1)
        if outside.any():
            first = int(np.flatnonzero(outside)[0])
            return (
                f"point {points[first].round(2).tolist()} mm lies outside its volume (voxel index "
                f"{index[first].round(2).tolist()}, size {size.astype(int).tolist()})"
            )
    return None


def _image_series_for(
    series: pd.DataFrame,
    referenced: frozenset[str],
    frame_uid: str,
    source: Path,
    what: str = "RTSTRUCT",
    planes_mm: Sequence[np.ndarray] = (),
) -> pd.Series:
    """The series an RTSTRUCT or SEG belongs to: by referenced series UID, else by frame of reference, else by geometry.

    Geometry decides when the UIDs give no or several series (real data: CT, MR and PET sharing one frame of
    reference, a referenced series that never arrived): of the series with the frame of reference (all of the
    patient's when the file names none), the one on whose slices every contour or frame (``planes_mm``, one (N, 3)
    array of points per plane) lies, inside its volume. A frame of reference that no series has is not matched
    by geometry: patient coordinates of different frames are not comparable, so a fit would be a coincidence.
    """
    by_uid = series[series.series_uid.isin(referenced)]
    if len(by_uid) == 1:
        return by_uid.iloc[0]
    by_frame = series[series.frame_of_reference_uid == frame_uid]
    if len(by_frame) == 1:
        return by_frame.iloc[0]
    unpaired = (
        f"{source}: cannot pair the {what} with an image series of this patient "
        f"(referenced series {sorted(referenced) or 'none'}, frame of reference {frame_uid or 'none'})"
    )
    if frame_uid and by_frame.empty:
        raise DicomInputError(f"{unpaired}: no image series of this patient has that frame of reference")
    candidates = (by_frame if frame_uid else series).sort_values("series_uid")
    misfit = {row.series_uid: _geometry_misfit(row, planes_mm) for _, row in candidates.iterrows()}
    fits = [uid for uid, why in misfit.items() if why is None]
    if len(fits) == 1:
        return candidates[candidates.series_uid == fits[0]].iloc[0]
    modality = dict(zip(candidates.series_uid, candidates.modality, strict=True))
    if fits:
        named = ", ".join(f"{uid} ({modality[uid]})" for uid in fits)
        raise DicomInputError(f"{unpaired}: several series fit its contours/frames, cannot choose: {named}")
    why = "; ".join(f"{uid} ({modality[uid]}): {reason}" for uid, reason in misfit.items())
    raise DicomInputError(f"{unpaired}: no series fits its contours/frames: {why or 'no image series'}")


def _mask_row(root: DataRoot, key: str, series_uid: str, roi: str, kind: str, sources: list[Path], mask: sitk.Image):
    """Write ``mask`` under ``masks/<patient>/`` and return its ``masks`` row."""
    out_dir = root.masks / key
    out_dir.mkdir(parents=True, exist_ok=True)
    voxels = int(sitk.GetArrayViewFromImage(mask).sum())
    mask_path = out_dir / f"{patient_key(series_uid)}__{patient_key(roi)}{STORED_IMAGE_SUFFIX}"
    sitk.WriteImage(mask, str(mask_path), useCompression=True)
    return {
        "patient_id": key, "series_uid": series_uid, "roi": roi, "source_kind": kind,
        "source_path": ";".join(str(Path(p).relative_to(root.root)) for p in sources), "voxel_count": voxels,
        "volume_ml": voxels * float(np.prod(mask.GetSpacing())) / 1000.0, "mask_path": str(mask_path),
        "mask_hash": image_hash(mask),
    }  # fmt: skip


def _file_pair_masks(
    root: DataRoot, pair: FilePair, series: pd.DataFrame, resample: bool, volumes: Volumes
) -> pd.DataFrame:
    target = series.iloc[0]
    image = _stored_volume(target.volume_path, volumes)
    masks = read_pair_masks(pair, image, resample_masks_to_image=resample)
    return pd.DataFrame([_mask_row(root, pair.key, target.series_uid, roi, "file", pair.masks, mask)
                         for roi, mask in masks.items()])  # fmt: skip


@dataclass(frozen=True)
class MaskOptions:
    """How ``build_masks`` finds masks: ROI/segment name pattern, file-mask resampling, automated segmentation."""

    roi_pattern: str = "GTV.*"
    resample_masks_to_image: bool = False
    """Resample a NIfTI/NRRD mask on another grid than its image (nearest neighbour) instead of failing."""
    auto: AutoSegmentation = field(default_factory=AutoSegmentation)
    """Segments image series that have no RTSTRUCT/SEG mask; off while ``auto.method`` is empty."""


def _rtstruct_rows(
    root: DataRoot, key: str, series: pd.DataFrame, rt: DicomFile, roi_pattern: str, volumes: Volumes
) -> list[dict]:
    structure_set = read_structure_set(rt.path)
    rois = select_rois(structure_set, roi_pattern)
    if not rois:
        names = [r.name for r in structure_set.rois]
        raise DicomInputError(f"{rt.path}: no ROI matches {roi_pattern!r} (ROIs present: {names})")
    frame_uid = rois[0].frame_of_reference_uid or rt.frame_of_reference_uid
    contours = [points for roi in rois for points in roi.contours_mm]
    target = _image_series_for(series, structure_set.referenced_series_uids, frame_uid, rt.path, planes_mm=contours)
    image = _stored_volume(target.volume_path, volumes)
    rows = []
    for roi in rois:
        mask = rasterise(roi, image, source=rt.path)
        if not sitk.GetArrayViewFromImage(mask).any():
            raise DicomInputError(f"{rt.path}: ROI {roi.name!r} is empty on series {target.series_uid}")
        rows.append(_mask_row(root, key, target.series_uid, roi.name, "rtstruct", [rt.path], mask))
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
    target = _image_series_for(series, segmentation.referenced_series_uids, frame_uid, seg_file.path, "SEG", frames)
    masks = segment_masks(segmentation, segments, _stored_volume(target.volume_path, volumes))
    rows = []
    for segment in segments:
        mask = masks[segment.number]
        if not sitk.GetArrayViewFromImage(mask).any():
            raise DicomInputError(
                f"{seg_file.path}: segment {segment.number} {segment.label!r} is empty on series {target.series_uid}"
            )
        rows.append(_mask_row(root, key, target.series_uid, segment.label, "seg", [seg_file.path], mask))
    return rows


def _auto_rows(
    root: DataRoot, key: str, series: pd.DataFrame, auto: AutoSegmentation, required: bool, volumes: Volumes
) -> list[dict]:
    """Automated masks for ``series`` (those without a mask); a series without a seed fails only if ``required``."""
    seeds_path = root.root / SEEDS_FILE
    seeds = read_seeds(seeds_path).get(key, [])
    rows = []
    for target in series.itertuples():
        seed = seed_for(seeds, target.modality)
        if seed is None and auto.method in SEEDED_METHODS:
            if required:
                raise DicomInputError(
                    f"patient {key}: no mask for {target.modality} series {target.series_uid}, and {auto.method} "
                    f"needs a seed: add a row '{key},x,y,z,{target.modality}' (mm) to {seeds_path}"
                )
            log.warning("patient %s: %s series %s has no mask and no seed; not segmented", key, target.modality,
                        target.series_uid)  # fmt: skip
            continue
        image = _stored_volume(target.volume_path, volumes)
        mask = segment_lesion(image, auto, seed, f"patient {key} {target.modality} series {target.series_uid}")
        sources = [seeds_path] if seed is not None else []
        rows.append(_mask_row(root, key, target.series_uid, auto.roi_name, auto.source_kind, sources, mask))
    return rows


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
            "(set auto_segmentation, see README 'Accepted input layouts')"
        )
    seen: dict[tuple[str, str], str] = {}
    for row in rows:
        previous = seen.setdefault((row["series_uid"], row["roi"]), row["source_path"])
        if previous != row["source_path"]:
            raise DicomInputError(
                f"{root.root / row['source_path']}: ROI {row['roi']!r} of series {row['series_uid']} is also given by "
                f"{root.root / previous}; narrow roi_pattern or remove one"
            )
    return pd.DataFrame(rows)
