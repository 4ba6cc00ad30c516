"""radiomics_assets: the radiomics workflow as Dagster software-defined assets.

The domain subpackages follow the workflow (``ingest`` -> ``masks`` -> ``features``, run per patient by ``batch``;
``modelling`` over the warehouse) and import no Dagster; the Dagster layer is ``defs/``, loaded by ``definitions``.
"""

__version__ = "0.1.0"


def open_features(root=None):
    """A read-only DuckDB connection to the published feature store (``<data root>/radiomics.duckdb``).

    ``root`` defaults to ``$RADIOMICS_DATA_DIR`` (else ``data/``). It never blocks the pipeline: the pipeline
    writes a private copy and replaces this file atomically after each write, so the connection keeps the view
    of when it was opened; open it again (after closing it) to see patients added since.
    """
    # Imported here: importing the package must stay cheap for worker processes that never read the store.
    from radiomics_assets.warehouse import open_features as _open_features

    return _open_features(root)
