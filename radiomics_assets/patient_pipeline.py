"""The patient-level workflow steps (studies, masks, features) as plain functions over a data root.

Each step reads what the previous one wrote (NIfTI volumes and masks under the data root, rows in the
warehouse) so that steps can run in different processes or machines.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk

from radiomics_assets.dicom_series import DicomInputError, PatientFiles, describe_series, read_series, scan_inbox
from radiomics_assets.features import ExtractionTarget, extract, image_hash, load_extractor
from radiomics_assets.file_inputs import (
    FilePair,
    file_series_uid,
    pair_modality,
    read_pair_image,
    read_pair_masks,
    scan_file_pairs,
)
from radiomics_assets.paths import DataRoot, patient_key
from radiomics_assets.rtstruct import rasterise, read_structure_set, select_rois
from radiomics_assets.warehouse import Warehouse


def find_patient(root: DataRoot, key: str) -> PatientFiles:
    scan = scan_inbox(root.inbox)
    if key not in scan.patients:
        raise DicomInputError(f"no DICOM files or image/mask file pair for patient key {key!r} under {root.inbox}")
    return scan.patients[key]


def inbox_patient_keys(inbox: Path) -> set[str]:
    """Partition keys of every patient in the inbox: DICOM PatientIDs and NIfTI/NRRD/PNG pair ids."""
    return set(scan_inbox(inbox).patients) | set(scan_file_pairs(inbox)[0])


def find_file_pair(root: DataRoot, key: str) -> FilePair | None:
    """The image/mask file pair of ``key`` when the patient came as files rather than DICOM."""
    return scan_file_pairs(root.inbox)[0].get(key)



def _ingest_file_pair(root: DataRoot, pair: FilePair, modality: str) -> pd.DataFrame:
    image = read_pair_image(pair)
    series_uid = file_series_uid(pair.image)
    out_dir = root.volumes / pair.key
    out_dir.mkdir(parents=True, exist_ok=True)
    volume_path = out_dir / f"{patient_key(series_uid)}.nii.gz"
    sitk.WriteImage(image, str(volume_path), useCompression=True)
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


def ingest_studies(root: DataRoot, key: str, file_modality: str = "CT") -> pd.DataFrame:
    """Read and validate every image series of a patient, store canonical volumes; returns ``series`` rows.

    A patient given as an image/mask file pair (NIfTI, NRRD, PNG) gets one series of modality
    ``file_modality`` (``US`` for PNG; a ``<id>.json`` sidecar overrides both).
    """
    pair = find_file_pair(root, key)
    if pair is not None and key not in scan_inbox(root.inbox).patients:
        return _ingest_file_pair(root, pair, file_modality)
    patient = find_patient(root, key)
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
        volume_path = out_dir / f"{patient_key(series_uid)}.nii.gz"
        sitk.WriteImage(image, str(volume_path), useCompression=True)
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


def _image_series_for(series: pd.DataFrame, referenced: frozenset[str], frame_uid: str, source: Path) -> pd.Series:
    """The series an RTSTRUCT belongs to: by referenced series UID, else by frame of reference."""
    by_uid = series[series.series_uid.isin(referenced)]
    if len(by_uid) == 1:
        return by_uid.iloc[0]
    by_frame = series[series.frame_of_reference_uid == frame_uid]
    if len(by_frame) == 1:
        return by_frame.iloc[0]
    raise DicomInputError(
        f"{source}: cannot pair the RTSTRUCT with an image series of this patient "
        f"(referenced series {sorted(referenced) or 'none'}, frame of reference {frame_uid or 'none'})"
    )


def _file_pair_masks(root: DataRoot, pair: FilePair, series: pd.DataFrame, resample: bool) -> pd.DataFrame:
    target = series.iloc[0]
    image = sitk.ReadImage(target.volume_path)
    out_dir = root.masks / pair.key
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for roi, mask in read_pair_masks(pair, image, resample_masks_to_image=resample).items():
        voxels = int(sitk.GetArrayViewFromImage(mask).sum())
        mask_path = out_dir / f"{patient_key(target.series_uid)}__{roi}.nii.gz"
        sitk.WriteImage(mask, str(mask_path), useCompression=True)
        rows.append({
            "patient_id": pair.key, "series_uid": target.series_uid, "roi": roi, "source_kind": "file",
            "source_path": ";".join(str(p.relative_to(root.root)) for p in pair.masks), "voxel_count": voxels,
            "volume_ml": voxels * float(np.prod(mask.GetSpacing())) / 1000.0, "mask_path": str(mask_path),
            "mask_hash": image_hash(mask),
        })  # fmt: skip
    return pd.DataFrame(rows)


def build_masks(
    root: DataRoot, key: str, series: pd.DataFrame, roi_pattern: str, resample_masks_to_image: bool = False
) -> pd.DataFrame:
    """Rasterise every matching RTSTRUCT ROI onto its image series, or read file masks; returns ``masks`` rows.

    ``resample_masks_to_image`` resamples a file mask on another grid than its image (nearest neighbour)
    instead of failing; it does not apply to RTSTRUCTs, which are rasterised on the image grid anyway.
    """
    pair = find_file_pair(root, key)
    if pair is not None and len(series) == 1 and str(series.series_uid.iloc[0]).startswith("file-"):
        return _file_pair_masks(root, pair, series, resample_masks_to_image)
    patient = find_patient(root, key)
    if not patient.rtstructs:
        raise DicomInputError(f"patient {key}: no RTSTRUCT in {root.inbox} (automated segmentation comes later)")
    out_dir = root.masks / key
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for rt in patient.rtstructs:
        structure_set = read_structure_set(rt.path)
        rois = select_rois(structure_set, roi_pattern)
        if not rois:
            names = [r.name for r in structure_set.rois]
            raise DicomInputError(f"{rt.path}: no ROI matches {roi_pattern!r} (ROIs present: {names})")
        frame_uid = rois[0].frame_of_reference_uid or rt.frame_of_reference_uid
        target = _image_series_for(series, structure_set.referenced_series_uids, frame_uid, rt.path)
        image = sitk.ReadImage(target.volume_path)
        for roi in rois:
            mask = rasterise(roi, image, source=rt.path)
            voxels = int(sitk.GetArrayViewFromImage(mask).sum())
            if voxels == 0:
                raise DicomInputError(f"{rt.path}: ROI {roi.name!r} is empty on series {target.series_uid}")
            mask_path = out_dir / f"{patient_key(target.series_uid)}__{patient_key(roi.name)}.nii.gz"
            sitk.WriteImage(mask, str(mask_path), useCompression=True)
            rows.append({
                "patient_id": key, "series_uid": target.series_uid, "roi": roi.name, "source_kind": "rtstruct",
                "source_path": str(rt.path.relative_to(root.root)), "voxel_count": voxels,
                "volume_ml": voxels * float(np.prod(mask.GetSpacing())) / 1000.0, "mask_path": str(mask_path),
                "mask_hash": image_hash(mask),
            })  # fmt: skip
    return pd.DataFrame(rows)


def extract_features(
    key: str, series: pd.DataFrame, masks: pd.DataFrame, params: dict[str, Path]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """PyRadiomics on every (series, ROI) of a patient; returns (``features`` rows, ``diagnostics`` rows).

    ``params`` maps modality (CT, MR, PT) to its parameter file; every file needed is checked before any
    extraction starts, so a broken file fails fast with PyRadiomics' own message.
    """
    modality = dict(zip(series.series_uid, series.modality, strict=True))
    volume = dict(zip(series.series_uid, series.volume_path, strict=True))
    for needed in sorted({modality[uid] for uid in masks.series_uid}):
        load_extractor(params[needed])
    feature_frames, diagnostic_rows = [], []
    for mask_row in masks.itertuples():
        target = ExtractionTarget(
            patient_id=key, series_uid=mask_row.series_uid, modality=modality[mask_row.series_uid],
            roi=mask_row.roi, image=sitk.ReadImage(volume[mask_row.series_uid]),
            mask=sitk.ReadImage(mask_row.mask_path),
        )  # fmt: skip
        rows, diagnostics = extract(target, params[target.modality])
        feature_frames.append(rows)
        diagnostic_rows += [
            {"patient_id": key, "series_uid": mask_row.series_uid, "roi": mask_row.roi, "name": k, "value": str(v)}
            for k, v in diagnostics.items()
        ]
    return pd.concat(feature_frames, ignore_index=True), pd.DataFrame(diagnostic_rows)


def store(root: DataRoot, key: str, **tables: pd.DataFrame) -> None:
    Warehouse(root.warehouse).replace_patient(key, tables)
