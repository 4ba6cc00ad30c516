"""Imported once by the workers' fork server (``workers._forkserver``), so that every worker it forks starts ready:
the driver's and the masks' imports (SimpleITK, PyRadiomics, pydicom), and PyRadiomics prepared, with the texture
kernels loaded from Numba's disk cache. Loading the kernels takes about 0.45 s; done in each worker's initialiser,
every pool paid it once per worker, on the run's critical path (the inbox index's pool, then the patients')."""

import contextlib

import radiomics_assets.batch.driver  # noqa: F401 - imported for the workers, not used here
import radiomics_assets.masks.build  # noqa: F401
from radiomics_assets.features.extraction import prepare_pyradiomics

# The fork server survives only an ImportError in its preload; anything else would leave every pool with a bare
# EOFError. Each worker's initialiser prepares PyRadiomics again, and there the error is raised and reported.
with contextlib.suppress(Exception):
    prepare_pyradiomics()
