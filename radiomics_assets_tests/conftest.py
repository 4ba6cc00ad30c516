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
