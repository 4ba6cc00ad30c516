from pathlib import Path

import pytest

from radiomics_assets.synth import SynthConfig

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
    from radiomics_assets.definitions import PARTITION_RANGE_END, PARTITION_RANGE_START

    added = [key for request in result.dynamic_partitions_requests or [] for key in request.partition_keys]
    covered = []
    for request in result.run_requests or []:
        if request.partition_key is not None:
            covered.append((request.partition_key, request.run_key))
            continue
        first, last = added.index(request.tags[PARTITION_RANGE_START]), added.index(request.tags[PARTITION_RANGE_END])
        covered += [(key, request.run_key) for key in added[first : last + 1]]
    return covered
