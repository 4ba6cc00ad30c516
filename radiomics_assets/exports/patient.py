"""A patient's exports: a SEG per automated mask and an SR per series, written under ``exports/<patient key>/``.

Everything comes from what the pipeline stored (``series``, ``masks``, ``features`` rows, the stored masks) and
the patient's source DICOM files (its manifest or the inbox). UIDs of the written objects are derived from their
inputs (series, ROI, mask and feature hashes), so exporting unchanged results again gives the same instances and a
PACS replaces rather than duplicates them; changed results get new UIDs.
"""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pydicom
import SimpleITK as sitk
import yaml
from pydicom.uid import generate_uid

from radiomics_assets.errors import DicomInputError
from radiomics_assets.exports.codes import intensity_unit
from radiomics_assets.exports.seg import Producer, automated_segmentation, read_source_slices
from radiomics_assets.exports.sr import ContourReference, RoiFeatures, SegmentReference, measurement_report
from radiomics_assets.hashing import file_hash
from radiomics_assets.masks.sources import MaskSource, automated_method, is_automated
from radiomics_assets.paths import DataRoot, patient_key
from radiomics_assets.warehouse import Warehouse

SEG_SERIES_NUMBER = 900
SR_SERIES_NUMBER = 950


@dataclass(frozen=True)
class ExportSettings:
    params: dict[str, Path]
    """The configured parameter file per modality: tells whether intensities were normalised (arbitrary units)."""
    producer: Producer = field(default_factory=Producer)
    deidentify: bool = False


@dataclass
class ExportOutcome:
    key: str
    files: list[Path] = field(default_factory=list)
    segmentations: int = 0
    reports: int = 0
    measurements: int = 0
    non_finite: list[str] = field(default_factory=list)
    skipped: str = ""
    """Why nothing was written (e.g. a patient given as PNG/NIfTI files has no source SOP instances)."""
    deidentified: list[Path] = field(default_factory=list)


def exports_dir(root: DataRoot, key: str) -> Path:
    return root.path / "exports" / key


def _uid(*parts: object) -> str:
    return generate_uid(entropy_srcs=[str(p) for p in parts])


def tracking_uid(series_uid: str, roi: str) -> str:
    """The ROI's tracking UID: the same in the SEG and the SR, and in every export of that ROI."""
    return _uid(series_uid, roi, "tracking")


def _short(series_uid: str) -> str:
    return hashlib.sha256(series_uid.encode()).hexdigest()[:10]


def _normalised(params: Path | None, params_hashes: set[str]) -> bool:
    """Whether PyRadiomics normalised the intensities. Unknown (the rows come from another parameter file than the
    configured one) counts as normalised: the report then claims arbitrary units, never a unit it cannot know."""
    if params is None or not params.is_file() or params_hashes != {file_hash(params)}:
        return True
    setting = (yaml.safe_load(params.read_text()) or {}).get("setting") or {}
    return bool(setting.get("normalize", False))


COPIED_SHORT_STRINGS = ("StudyID", "AccessionNumber")
"""Type 2 study attributes (SH, at most 16 characters) copied from the source images. Real exports hold longer
values (e.g. a 20-character Study ID); copied as they are, every export would be invalid, and cut short they would
be a wrong identifier: such a value is emptied in the export (the study stays identified by its UID)."""


def _empty_invalid_copies(dataset: pydicom.Dataset) -> None:
    for keyword in COPIED_SHORT_STRINGS:
        if len(str(dataset.get(keyword, "") or "")) > 16:
            setattr(dataset, keyword, "")


def _roi_reference(root: DataRoot, mask, written_seg) -> SegmentReference | ContourReference:
    """What the ROI was measured on: our SEG, the inbox SEG's segment, or the RTSTRUCT ROI's contours."""
    from radiomics_assets.masks.dicom_seg import read_segmentation
    from radiomics_assets.masks.rtstruct import read_structure_set

    if written_seg is not None:
        return SegmentReference(written_seg, 1)
    source = root.path / str(mask.source_path).split(";")[0]
    if mask.source_kind == MaskSource.SEG:
        segmentation = read_segmentation(source)
        numbers = [s.number for s in segmentation.segments if s.label == mask.roi]
        if len(numbers) != 1:
            raise DicomInputError(f"{source}: {len(numbers)} segments are labelled {mask.roi!r}, expected one")
        return SegmentReference(segmentation.dataset, numbers[0])
    if mask.source_kind == MaskSource.RTSTRUCT:
        structure_set = read_structure_set(source)
        rois = [r for r in structure_set.rois if r.name == mask.roi]
        if len(rois) != 1:
            raise DicomInputError(f"{source}: {len(rois)} ROIs are named {mask.roi!r}, expected one")
        header = pydicom.dcmread(source, stop_before_pixels=True)
        frame = rois[0].frame_of_reference_uid or str(getattr(header, "FrameOfReferenceUID", ""))
        return ContourReference(header, rois[0].contours_mm, frame, str(mask.series_uid))
    raise DicomInputError(f"{source}: masks of kind {mask.source_kind!r} cannot be referenced from a DICOM SR")


def _export_series(root, key, series, masks, features, inputs, settings, outcome, out_dir) -> None:
    files = inputs.dicom.image_series.get(series.series_uid)
    if not files:
        raise DicomInputError(
            f"patient {key}: the source DICOM files of series {series.series_uid} are no longer in {inputs.where}"
        )
    grid = sitk.ReadImage(series.volume_path)
    sources = read_source_slices([f.path for f in files], grid)
    short = _short(series.series_uid)
    rois = []
    for index, mask in enumerate(masks.itertuples()):
        written = None
        if is_automated(mask.source_kind):
            method = automated_method(mask.source_kind)
            written = automated_segmentation(
                sitk.ReadImage(mask.mask_path),
                sources,
                roi=mask.roi,
                method=method,
                tracking_uid=tracking_uid(series.series_uid, mask.roi),
                series_uid=_uid(series.series_uid, mask.roi, mask.mask_hash, "seg-series"),
                sop_uid=_uid(series.series_uid, mask.roi, mask.mask_hash, "seg"),
                series_number=SEG_SERIES_NUMBER + index,
                producer=settings.producer,
            )
            _empty_invalid_copies(written)
            path = out_dir / f"seg_{short}_{patient_key(mask.roi)}.dcm"
            written.save_as(path)
            outcome.files.append(path)
            outcome.segmentations += 1
        rows = features[features.roi == mask.roi]
        if len(rows):
            reference = _roi_reference(root, mask, written)
            rois.append(RoiFeatures(mask.roi, tracking_uid(series.series_uid, mask.roi), rows, reference))
    if not rois:
        return
    normalised = _normalised(settings.params.get(series.modality), set(features.params_hash))
    # The stored PET is SUVbw whenever ingest converted it (a suv_factor is recorded, GML or BQML alike); only rows
    # ingested before the conversion existed hold the source's own Units.
    suv_factor = getattr(series, "suv_factor", None)
    converted = suv_factor is not None and not pd.isna(suv_factor)
    pet_units = "GML" if converted else str(sources[0].get("Units", ""))
    units = {
        image_type: intensity_unit(series.modality, image_type=image_type, normalised=normalised, pet_units=pet_units)
        for image_type in features.image_type.unique()
    }
    # New content gets new UIDs: the image, the masks, the parameters and the PyRadiomics version it came from.
    content_key = [
        *sorted(features.image_hash.unique()),
        *sorted(features.mask_hash.unique()),
        *sorted(features.params_hash.unique()),
        *sorted(features.pyradiomics_version.unique()),
    ]
    report, content = measurement_report(
        sources,
        rois,
        intensity_units=units,
        series_uid=_uid(series.series_uid, *content_key, "sr-series"),
        sop_uid=_uid(series.series_uid, *content_key, "sr"),
        series_number=SR_SERIES_NUMBER,
        producer=settings.producer,
    )
    _empty_invalid_copies(report)
    path = out_dir / f"sr_{short}.dcm"
    report.save_as(path, enforce_file_format=True)
    outcome.files.append(path)
    outcome.reports += 1
    outcome.measurements += sum(content.measurements.values())
    outcome.non_finite += content.non_finite


def export_patient(root: DataRoot, key: str, settings: ExportSettings) -> ExportOutcome:
    """Write the patient's SEGs and SRs (replacing its earlier exports); returns what was written.

    A patient without DICOM sources (PNG, NIfTI, NRRD) is skipped with the reason in ``skipped``.
    """
    from radiomics_assets.ingest.studies import patient_inputs

    outcome = ExportOutcome(key)
    warehouse = Warehouse(root.warehouse)
    series_rows = warehouse.query("SELECT * FROM series WHERE patient_id = ? ORDER BY series_uid", [key])
    mask_rows = warehouse.query("SELECT * FROM masks WHERE patient_id = ? ORDER BY series_uid, roi", [key])
    feature_rows = warehouse.query(
        "SELECT * FROM features WHERE patient_id = ? ORDER BY series_uid, roi, image_type, feature_class, feature",
        [key],
    )
    if series_rows.empty:
        outcome.skipped = "no stored series (run the patient's ingest first)"
        return outcome
    if mask_rows.empty:
        outcome.skipped = "no stored masks (run the patient's roi_masks first)"
        return outcome
    inputs = patient_inputs(root, key)
    if inputs.dicom is None or not (mask_rows.source_kind != MaskSource.FILE).any():
        outcome.skipped = "not a DICOM patient (image files have no source SOP instances to reference)"
        return outcome
    out_dir = exports_dir(root, key)
    shutil.rmtree(out_dir, ignore_errors=True)  # a re-export replaces the patient's earlier files
    out_dir.mkdir(parents=True)
    for series in series_rows.itertuples():
        # Masks of image files (a NIfTI/PNG pair beside the DICOM series) have no source SOP instances: not exported.
        masks = mask_rows[(mask_rows.series_uid == series.series_uid) & (mask_rows.source_kind != MaskSource.FILE)]
        features = feature_rows[feature_rows.series_uid == series.series_uid]
        if len(masks):
            _export_series(root, key, series, masks, features, inputs, settings, outcome, out_dir)
    if settings.deidentify:
        from radiomics_assets.exports.deidentify import write_deidentified

        outcome.deidentified = write_deidentified(root, key, outcome.files)
    return outcome


def stored_exports(root: DataRoot, keys: list[str] | None = None) -> list[Path]:
    """The export files of ``keys`` (default: every patient), for sending."""
    base = root.path / "exports"
    folders = [base / k for k in keys] if keys else sorted(p for p in base.glob("*") if p.is_dir())
    return [path for folder in folders for path in sorted(folder.glob("*.dcm"))]
