"""radiomics_assets: the radiomics workflow as Dagster software-defined assets.

The domain subpackages follow the workflow (``ingest`` -> ``masks`` -> ``features``, run per patient by ``batch``;
``modelling`` over the warehouse) and import no Dagster; the Dagster layer is ``defs/``, loaded by ``definitions``.
"""

__version__ = "0.1.0"
