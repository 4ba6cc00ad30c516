"""A series' radiomic features as a DICOM SR measurement report (TID 1500, Comprehensive 3D SR).

One Volumetric ROI Measurements group (TID 1411) per ROI, holding one measurement per stored feature row: the
feature's concept code (``codes``), its value exactly as stored (the NUM item carries the double in
FloatingPointValue beside the 16-character decimal string), its UCUM unit and the PyRadiomics image type as the
measurement method. The group carries the ROI's tracking identifier and UID, the algorithm (PyRadiomics, its
version, the parameter file's hash), and the ROI's geometry: the segment of the SEG it was measured on (the SEG
this export wrote, or the inbox SEG), or the RTSTRUCT ROI's contours as 3D polygons with the RTSTRUCT in the
report's evidence. Non-finite values have no DICOM numeric encoding and are left out (counted in the outcome).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pydicom

from radiomics_assets.exports.codes import (
    IBSI_SCHEME,
    IBSI_SCHEME_NAME,
    PRIVATE_SCHEME,
    PRIVATE_SCHEME_NAME,
    UCUM_SCHEME,
    UNIT_MEANINGS,
    feature_code,
    image_type_code_value,
    resolved_unit,
)
from radiomics_assets.exports.seg import Producer

DEVICE_OBSERVER_UID = "1.2.826.0.1.3680043.8.498.47210946311584327389105547358162510641"
"""Fixed UID of the radiomics_assets software as SR device observer (same in every report)."""


@dataclass(frozen=True)
class SegmentReference:
    """The ROI is segment ``segment_number`` of ``segmentation`` (a SEG dataset with its pixel data)."""

    segmentation: pydicom.Dataset
    segment_number: int


@dataclass(frozen=True)
class ContourReference:
    """The ROI is an RTSTRUCT ROI: its contours (each (N, 3), mm) in ``frame_of_reference_uid``, drawn on the
    image series ``series_uid``."""

    rtstruct: pydicom.Dataset
    contours_mm: list[np.ndarray]
    frame_of_reference_uid: str
    series_uid: str


@dataclass(frozen=True)
class RoiFeatures:
    """One ROI's stored feature rows (``features`` table) and what the ROI was measured on."""

    roi: str
    tracking_uid: str
    rows: pd.DataFrame
    reference: SegmentReference | ContourReference


@dataclass
class ReportContent:
    """What :func:`measurement_report` wrote: measurements per ROI and non-finite values left out."""

    measurements: dict[str, int] = field(default_factory=dict)
    non_finite: list[str] = field(default_factory=list)


def _coded(value: str, scheme: str, meaning: str):
    import highdicom as hd

    return hd.sr.CodedConcept(value=value, scheme_designator=scheme, meaning=meaning)


def _roi_reference(reference: SegmentReference | ContourReference) -> dict:
    import highdicom as hd

    if isinstance(reference, SegmentReference):
        seg = reference.segmentation
        # The source series of the segment, from the SEG's own references (highdicom's from_segmentation needs
        # per-frame segment identification, which a single-segment SEG keeps in the shared functional groups).
        source_series = hd.sr.SourceSeriesForSegmentation(str(seg.ReferencedSeriesSequence[0].SeriesInstanceUID))
        segment = hd.sr.ReferencedSegment(
            sop_class_uid=str(seg.SOPClassUID),
            sop_instance_uid=str(seg.SOPInstanceUID),
            segment_number=reference.segment_number,
            source_series=source_series,
        )
        return {"referenced_segment": segment}
    # A volume surface of the ROI's planar contours (TID 1411 takes no RTSTRUCT reference; the RTSTRUCT itself goes
    # into the report's evidence). SCOORD3D polygons are closed: the first point is repeated at the end.
    polygons = [
        np.asarray(points if np.array_equal(points[0], points[-1]) else np.vstack([points, points[:1]]), np.float64)
        for points in reference.contours_mm
    ]
    surface = hd.sr.VolumeSurface(
        graphic_type=hd.sr.GraphicTypeValues3D.POLYGON,
        graphic_data=polygons,
        frame_of_reference_uid=reference.frame_of_reference_uid,
        source_series=hd.sr.SourceSeriesForSegmentation(reference.series_uid),
    )
    return {"referenced_volume_surface": surface}


def _measurements(roi: RoiFeatures, intensity_units: dict[str, str], content: ReportContent) -> list:
    import highdicom as hd

    measurements = []
    for row in roi.rows.itertuples():
        name = f"{row.image_type}_{row.feature_class}_{row.feature}"
        if not math.isfinite(row.value):
            content.non_finite.append(f"{roi.roi}: {name} = {row.value}")
            continue
        code = feature_code(row.feature_class, row.feature)
        unit = resolved_unit(code, intensity_units[row.image_type])
        measurements.append(
            hd.sr.Measurement(
                name=_coded(code.value, code.scheme, code.meaning),
                value=float(row.value),
                unit=_coded(unit, UCUM_SCHEME, UNIT_MEANINGS[unit]),
                method=_coded(
                    image_type_code_value(row.image_type), PRIVATE_SCHEME, f"PyRadiomics image type {row.image_type}"
                ),
            )
        )
    content.measurements[roi.roi] = len(measurements)
    return measurements


def _algorithm(rows: pd.DataFrame):
    import highdicom as hd

    versions = sorted(rows.pyradiomics_version.unique())
    hashes = sorted(rows.params_hash.unique())
    parameters = [f"parameter file sha256 {h}" for h in hashes]
    parameters += [f"image hash {h}" for h in sorted(rows.image_hash.unique())]
    parameters += [f"mask hash {h}" for h in sorted(rows.mask_hash.unique())]
    return hd.sr.AlgorithmIdentification(name="PyRadiomics", version=", ".join(versions), parameters=parameters)


def _declare_coding_schemes(report: pydicom.Dataset) -> None:
    """Name the two non-DICOM coding schemes the report uses (Coding Scheme Identification Sequence)."""
    items = []
    for designator, name, organisation in (
        (IBSI_SCHEME, IBSI_SCHEME_NAME, "Image Biomarker Standardisation Initiative"),
        (PRIVATE_SCHEME, PRIVATE_SCHEME_NAME, "radiomics_assets"),
    ):
        item = pydicom.Dataset()
        item.CodingSchemeDesignator = designator
        item.CodingSchemeName = name
        item.CodingSchemeResponsibleOrganization = organisation
        items.append(item)
    report.CodingSchemeIdentificationSequence = items


def measurement_report(
    sources: list[pydicom.Dataset],
    rois: list[RoiFeatures],
    *,
    intensity_units: dict[str, str],
    series_uid: str,
    sop_uid: str,
    series_number: int,
    producer: Producer,
) -> tuple[pydicom.Dataset, ReportContent]:
    """The TID 1500 report of one series (``sources``: its slices' headers) and what it holds.

    ``intensity_units`` maps each PyRadiomics image type of the rows to the UCUM unit of its intensities
    (``codes.intensity_unit``).
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    content = ReportContent()
    groups = []
    evidence: dict[str, pydicom.Dataset] = {str(ds.SOPInstanceUID): ds for ds in sources}
    for roi in rois:
        measurements = _measurements(roi, intensity_units, content)
        if not measurements:
            continue
        groups.append(
            hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(uid=roi.tracking_uid, identifier=roi.roi),
                algorithm_id=_algorithm(roi.rows),
                measurements=measurements,
                **_roi_reference(roi.reference),
            )
        )
        reference = roi.reference
        linked = reference.segmentation if isinstance(reference, SegmentReference) else reference.rtstruct
        evidence[str(linked.SOPInstanceUID)] = linked
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=DEVICE_OBSERVER_UID,
            name=producer.model_name,
            manufacturer_name=producer.manufacturer,
            model_name=producer.model_name,
        ),
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=codes.SCT.ImagingProcedure,
        imaging_measurements=groups,
    )
    document = hd.sr.Comprehensive3DSR(
        evidence=list(evidence.values()),
        content=report[0],
        series_instance_uid=series_uid,
        series_number=series_number,
        sop_instance_uid=sop_uid,
        instance_number=1,
        manufacturer=producer.manufacturer,
        series_description="radiomics_assets radiomic features",
        is_complete=True,
        is_final=False,
        is_verified=False,
    )
    _declare_coding_schemes(document)
    return document, content
