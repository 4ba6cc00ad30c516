"""The Dagster code location: everything under ``defs/``, with the team's ownership applied once."""

from __future__ import annotations

import warnings
from pathlib import Path

import dagster as dg

OWNERS = ["team:radiomics"]

with warnings.catch_warnings():
    # map_resolved_asset_specs is marked preview in Dagster 1.13; it is the documented way to set owners once.
    warnings.simplefilter("ignore", dg.PreviewWarning)
    defs = dg.load_from_defs_folder(path_within_project=Path(__file__).parent).map_resolved_asset_specs(
        func=lambda spec: spec.replace_attributes(owners=OWNERS)
    )
