from pathlib import Path

import pytest

from radiomics_assets.synth import SynthConfig

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

# Small volumes keep the suite fast; geometry and DICOM structure are the same as the default cohort.
SMALL = SynthConfig(n_patients=8, seed=11, rows=64, columns=64, slices=20)


@pytest.fixture
def small_config() -> SynthConfig:
    return SMALL
