"""The Dagster layer, one file per role, loaded by ``radiomics_assets.definitions`` with ``load_from_defs_folder``.

Thin: every asset, check, sensor and schedule calls the domain subpackages and attaches metadata.
"""
