"""The studies step: a patient's image series read, validated and stored as canonical volumes, with their
``series`` rows (which files are the patient's: ``patient_lookup.patient_inputs``)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import SimpleITK as sitk

from radiomics_assets.errors import DicomInputError
from radiomics_assets.hashing import image_hash
from radiomics_assets.ingest.dicom_headers import scanner_identity
from radiomics_assets.ingest.dicom_series import describe_series, read_series_volume
from radiomics_assets.ingest.file_pairs import (
    file_series_uid,
    pair_modality,
    read_pair_image_described,
)
from radiomics_assets.ingest.patient_lookup import PatientInputs, patient_inputs
from radiomics_assets.paths import STORED_IMAGE_SUFFIX, DataRoot, patient_key
from radiomics_assets.stored_images import write_stored_image


def _store_series(
    root: DataRoot,
    inputs: PatientInputs,
    image: sitk.Image,
    identity: dict,
    source: Path,
    n_slices: int,
    units: tuple[str | None, float | None] = (None, None),
) -> dict:
    """Store ``image`` as the canonical volume of one series and return its ``series`` row.

    ``identity`` holds the UIDs and modality (study_uid, series_uid, modality, frame_of_reference_uid); size,
    spacing and origin (mm) are the stored volume's own, so the row always describes what extraction reads.
    ``units`` is (units the values were exported in, factor to SUVbw for PET).
    """
    out_dir = root.volumes / inputs.key
    out_dir.mkdir(parents=True, exist_ok=True)
    volume_path = out_dir / f"{patient_key(identity['series_uid'])}{STORED_IMAGE_SUFFIX}"
    write_stored_image(image, volume_path)
    inputs.volumes[str(volume_path)] = image
    size, spacing, origin = image.GetSize(), image.GetSpacing(), image.GetOrigin()
    return {
        "patient_id": inputs.key,
        **identity,
        "n_slices": int(n_slices),
        **{f"size_{axis}": int(v) for axis, v in zip("xyz", size, strict=True)},
        **{f"spacing_{axis}": float(v) for axis, v in zip("xyz", spacing, strict=True)},
        **{f"origin_{axis}": float(v) for axis, v in zip("xyz", origin, strict=True)},
        "source_path": str(source.relative_to(root.path)),
        "volume_path": str(volume_path),
        "image_hash": image_hash(image, keep_voxel_digest=True),
        "units": units[0],
        "suv_factor": units[1],
        "ingested_at": dt.datetime.now(dt.UTC).replace(tzinfo=None),
    }


def _ingest_file_pair(root: DataRoot, inputs: PatientInputs, modality: str) -> pd.DataFrame:
    pair = inputs.pair
    image, grey = read_pair_image_described(pair)
    identity = {
        "study_uid": "",
        "series_uid": file_series_uid(pair.image),
        "modality": pair_modality(pair, modality),
        "frame_of_reference_uid": "",
        "study_date": "",
    }
    # A PNG's units say how its grey levels were read (bit depth, RGB); extraction checks its parameters against them.
    row = _store_series(root, inputs, image, identity, pair.image, image.GetSize()[2], (grey, None))
    return pd.DataFrame([row])


def _ultrasound_rows(root: DataRoot, inputs: PatientInputs, images: list) -> list[dict]:
    """The patient's one DICOM US image as a 2D series (see ``ingest/dicom_us.py``)."""
    from radiomics_assets.ingest.dicom_us import FRAMES_FILE, read_frame_choices, read_us_image

    if len(images) > 1:
        names = ", ".join(str(f.path) for f in images)
        raise DicomInputError(
            f"patient {inputs.key}: {len(images)} US images ({names}); one US image per patient (a seed in seeds.csv "
            "is per patient): give each image its own PatientID or keep one"
        )
    (header,) = images
    frame = read_frame_choices(root.path / FRAMES_FILE).get(header.path.relative_to(root.inbox).as_posix())
    identity = {
        "study_uid": header.study_uid,
        "series_uid": header.series_uid,
        "modality": "US",
        "frame_of_reference_uid": header.frame_of_reference_uid,
        "study_date": header.study_date,
        **scanner_identity(header),
    }
    return [_store_series(root, inputs, read_us_image(header.path, frame=frame), identity, header.path, 1)]


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
    if not patient.image_series and not patient.ultrasound:
        skipped = "".join(f"; {why}" for why in patient.skipped.values())
        raise DicomInputError(f"patient {key}: no CT/MR/PET image series or US image in {root.inbox}{skipped}")
    rows = _ultrasound_rows(root, inputs, patient.ultrasound) if patient.ultrasound else []
    for series_uid, files in sorted(patient.image_series.items()):
        try:
            volume = read_series_volume(files)
        except DicomInputError as exc:
            beside = [why for path, why in patient.unreadable.items() if path.parent == files[0].path.parent]
            raise DicomInputError("; ".join([str(exc), *beside])) from exc
        image = volume.image
        info = describe_series(files, image)
        identity = {
            "study_uid": info.study_uid,
            "series_uid": series_uid,
            "modality": info.modality,
            "frame_of_reference_uid": info.frame_of_reference_uid,
            "study_date": info.study_date,
            **scanner_identity(files[0]),
        }
        units = (volume.units, volume.suv_factor)
        rows.append(_store_series(root, inputs, image, identity, info.first_file.parent, info.n_slices, units))
    return pd.DataFrame(rows)
