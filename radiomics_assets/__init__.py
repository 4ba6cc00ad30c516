"""radiomics_assets: the radiomics workflow as Dagster software-defined assets.

Domain modules (``dicom_series``, ``rtstruct``, ``features``, ``warehouse``, ``modelling``, ``report``,
``synth``) import no Dagster; the Dagster layer lives in ``definitions`` and ``defs_*`` modules.
"""

__version__ = "0.1.0"
