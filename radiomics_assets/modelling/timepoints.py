"""Baseline and follow-up studies of one patient: which one the feature matrix uses (``timepoint`` in study.yaml).

A patient scanned twice (a baseline and a follow-up CT) has features of both studies, stored with each series'
StudyDate (``series.study_date``). The wide matrix has one column per modality, ROI and feature, so it must be told
which study fills it; before this rule the pivot silently kept whichever came first. Per patient, modality and ROI
(a *block*) the studies are ordered by StudyDate (then StudyInstanceUID) and ``Timepoint`` decides:

- ``baseline`` (default): the first study;
- ``latest``: the last one;
- ``all``: every study, as ROI ``<roi>@t<k>`` (k = 0 the first): columns of the k-th timepoint;
- ``delta``: the first study, plus ``<roi>@delta`` (last minus first) and ``<roi>@relative`` ((last - first) /
  |first|; empty where the first is 0) for patients with two or more studies (others miss those blocks).

A block whose studies cannot be ordered (a StudyDate missing, or the same date twice) is left out for that patient,
never guessed, and listed. Table ``timepoints`` lists every block with more than one study and what was used.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from radiomics_assets.modelling.study import Timepoint
from radiomics_assets.warehouse import Warehouse, write_derived_table

log = logging.getLogger(__name__)

BLOCK = ["patient_id", "modality", "roi"]
FEATURE = ["image_type", "feature_class", "feature"]
SUMMARY_COLUMNS = ["patient_id", "block", "n_timepoints", "study_dates", "used"]


def select_timepoints(rows: pd.DataFrame, rule: Timepoint | str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Extracted feature rows (with ``study_uid`` and ``study_date``) reduced to ``rule``; returns the rows in the
    layout of ``matrix.all_feature_rows`` and a summary of the blocks with several studies."""
    rule = Timepoint(rule)
    columns = [*BLOCK, *FEATURE, "value"]
    if rows.empty:
        return rows.reindex(columns=columns), pd.DataFrame(columns=SUMMARY_COLUMNS)
    rows = rows.assign(study_date=rows.study_date.fillna("").astype(str), study_uid=rows.study_uid.fillna(""))
    studies = (
        rows[[*BLOCK, "study_date", "study_uid"]].drop_duplicates().sort_values([*BLOCK, "study_date", "study_uid"])
    )
    studies["t"] = studies.groupby(BLOCK).cumcount()
    studies["n"] = studies.groupby(BLOCK).t.transform("size")
    dates = studies.groupby(BLOCK).study_date.agg(list)
    orderable = dates.map(lambda d: len(d) == 1 or ("" not in d and len(set(d)) == len(d)))
    rows = rows.merge(studies, on=[*BLOCK, "study_date", "study_uid"])
    summary = []
    for block, block_dates in dates[dates.map(len) > 1].items():
        if not orderable[block]:
            used = "none: the studies cannot be ordered (StudyDate missing or equal); block left out"
        elif rule == Timepoint.baseline:
            used = f"baseline ({block_dates[0]})"
        elif rule == Timepoint.latest:
            used = f"latest ({block_dates[-1]})"
        elif rule == Timepoint.all:
            used = f"all, as {block[2]}@t0..t{len(block_dates) - 1}"
        else:
            used = f"baseline ({block_dates[0]}) and delta to {block_dates[-1]}"
        summary.append(
            {
                "patient_id": block[0],
                "block": f"{block[1]}__{block[2]}",
                "n_timepoints": len(block_dates),
                "study_dates": ", ".join(d or "?" for d in block_dates),
                "used": used,
            }
        )
    keep = rows.set_index(BLOCK).index.map(orderable).to_numpy(dtype=bool)
    rows = rows[keep]
    if rule == Timepoint.baseline:
        out = rows[rows.t == 0]
    elif rule == Timepoint.latest:
        out = rows[rows.t == rows.n - 1]
    elif rule == Timepoint.all:
        out = rows.assign(roi=rows.roi + "@t" + rows.t.astype(str))
    else:
        first = rows[rows.t == 0]
        last = rows[(rows.t == rows.n - 1) & (rows.n > 1)]
        paired = first.merge(last[[*BLOCK, *FEATURE, "value"]], on=[*BLOCK, *FEATURE], suffixes=("", "_last"))
        change = paired.value_last - paired.value
        with np.errstate(divide="ignore", invalid="ignore"):
            relative = np.where(paired.value != 0, change / paired.value.abs(), np.nan)
        out = pd.concat(
            [
                first,
                paired.assign(roi=paired.roi + "@delta", value=change),
                paired.assign(roi=paired.roi + "@relative", value=relative),
            ],
            ignore_index=True,
        )
    return out[columns].reset_index(drop=True), pd.DataFrame(summary, columns=SUMMARY_COLUMNS)


def feature_rows_at_timepoint(warehouse: Warehouse, rule: Timepoint | str) -> pd.DataFrame:
    """``matrix.all_feature_rows`` with the extracted rows reduced to ``rule``; writes table ``timepoints``."""
    from radiomics_assets.ingest.feature_tables import imported_feature_rows

    extracted = warehouse.query(
        "SELECT f.patient_id, f.modality, f.roi, f.image_type, f.feature_class, f.feature, f.value, s.study_uid, "
        "s.study_date FROM features f LEFT JOIN series s ON s.patient_id = f.patient_id AND s.series_uid = f.series_uid"
    )
    selected, summary = select_timepoints(extracted, rule)
    typed = {c: "string" for c in SUMMARY_COLUMNS} | {"n_timepoints": "int64"}  # typed also when empty
    write_derived_table(warehouse, "timepoints", summary.astype(typed))
    if len(summary):
        log.info(
            "%d patient(s) have several studies of a modality and ROI; timepoint rule %r: %s",
            summary.patient_id.nunique(),
            Timepoint(rule).value,
            "; ".join(f"{r.patient_id} {r.block}: {r.used}" for r in summary.head(10).itertuples()),
        )
    imported = imported_feature_rows(warehouse)
    if imported.empty:
        return selected
    return pd.concat([selected, imported[selected.columns]], ignore_index=True)
