from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.sr.codedict import codes

from radiomics_assets.synth import SynthConfig, write_ct_series

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

# Small volumes keep the suite fast; geometry and DICOM structure are the same as the default cohort.
SMALL = SynthConfig(n_patients=8, seed=11, rows=64, columns=64, slices=20)


@pytest.fixture
def small_config() -> SynthConfig:
    return SMALL


def requested_runs(result) -> list[tuple[str, str]]:
    """(patient key, run key) for every patient a sensor result's run requests cover.

    A request names one partition, or a range of the partitions the same result adds (new patients
    arriving together share one run).
    """
    from radiomics_assets.defs.partitions import PARTITION_RANGE_END, PARTITION_RANGE_START

    added = [key for request in result.dynamic_partitions_requests or [] for key in request.partition_keys]
    covered = []
    for request in result.run_requests or []:
        if request.partition_key is not None:
            covered.append((request.partition_key, request.run_key))
            continue
        first, last = added.index(request.tags[PARTITION_RANGE_START]), added.index(request.tags[PARTITION_RANGE_END])
        covered += [(key, request.run_key) for key in added[first : last + 1]]
    return covered


def write_ct(patient, folder, seed=SMALL.seed):
    """Write the patient's CT series; returns the slices as read back from disk (what a SEG tool would see)."""
    write_ct_series(patient, folder, seed)
    return [pydicom.dcmread(path) for path in sorted(folder.glob("CT_*.dcm"))]


def write_seg(slices, segments: dict[str, np.ndarray], path, shuffle_seed=0, kind="BINARY", pixels=None):
    """SEG of ``segments`` (label -> (z, y, x) bool array on the CT grid), frames in shuffled slice order.

    ``pixels`` replaces the stacked segments for LABELMAP (segment numbers) or FRACTIONAL (probabilities) SEGs.
    """
    order = np.random.default_rng(shuffle_seed).permutation(len(slices))
    stacked = (np.stack(list(segments.values()), axis=-1) if pixels is None else pixels)[order]
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=label,
            segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
            segmented_property_type=codes.SCT.Neoplasm,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
        )
        for number, label in enumerate(segments, start=1)
    ]
    seg = hd.seg.Segmentation(
        source_images=[slices[i] for i in order],
        pixel_array=stacked,
        segmentation_type=kind,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=7,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="radiomics_assets tests",
        manufacturer_model_name="synthetic",
        software_versions="0",
        device_serial_number="0",
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    seg.save_as(path)
    return seg


def write_us(path, rgb, *, photometric="RGB", delta_cm=(0.01, 0.012), units=(3, 3), patient_id="US-0001"):
    """A DICOM US image file (Ultrasound Image Storage) of ``rgb`` ((rows, columns, 3) uint8, or (frames, rows,
    columns, 3) for a cine loop) stored as ``photometric`` (MONOCHROME2 stores the first channel), with one
    calibrated region of PhysicalDeltaX/Y ``delta_cm`` in units ``units`` (3 = cm)."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.pixels import convert_color_space
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    rgb = np.asarray(rgb, dtype=np.uint8)
    frames = rgb if rgb.ndim == 4 else rgb[None]
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.6.1" if rgb.ndim == 3 else "1.2.840.10008.5.1.4.1.1.3.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.PatientID, ds.PatientName, ds.Modality = patient_id, "Anonymous^Test", "US"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Rows, ds.Columns = frames.shape[1:3]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PhotometricInterpretation = photometric
    if rgb.ndim == 4:
        ds.NumberOfFrames = len(frames)
    if photometric == "MONOCHROME2":
        ds.SamplesPerPixel, data = 1, frames[..., 0].tobytes()
    else:
        ds.SamplesPerPixel, ds.PlanarConfiguration = 3, 0
        if photometric == "RGB":
            data = frames.tobytes()
        else:  # YBR_FULL_422: Y of each pixel, Cb and Cr shared by each horizontal pair (their mean)
            ybr = convert_color_space(frames.reshape(-1, *frames.shape[2:]), "RGB", "YBR_FULL").astype(int)
            pairs = ybr.reshape(ybr.shape[0], -1, 2, 3)
            chroma = (pairs[..., 1:].sum(axis=2) // 2).astype(np.uint8)
            data = np.concatenate([pairs[..., 0].astype(np.uint8), chroma], axis=-1).tobytes()
    ds.PixelData = data
    region = pydicom.Dataset()
    region.RegionSpatialFormat, region.RegionDataType = 1, 1
    region.RegionLocationMinX0, region.RegionLocationMinY0 = 0, 0
    region.RegionLocationMaxX1, region.RegionLocationMaxY1 = ds.Columns - 1, ds.Rows - 1
    region.PhysicalUnitsXDirection, region.PhysicalUnitsYDirection = units
    region.PhysicalDeltaX, region.PhysicalDeltaY = delta_cm
    ds.SequenceOfUltrasoundRegions = [region]
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path
