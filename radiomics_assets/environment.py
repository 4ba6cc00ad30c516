"""Every environment variable the project reads, defined once: its name, its default and what it sets.

Where a value comes from, in one step: a setting of a run (the Dagster resource ``RadiomicsConfig``, the CLI's
``run``) is loaded once per process by ``RadiomicsConfig.from_env`` from the variables below and passed down as
arguments (``PatientSettings``, ``MaskOptions``, ``ModellingSettings``); the study's outcome and covariates come
from ``study.yaml`` (``modelling.study``), extraction from the PyRadiomics parameter files (``PARAMS_DIR``,
``PARAMS_FILE``). The few process-wide switches that are not settings of a run (stock PyRadiomics, the inbox walk,
the warehouse lock, the colour policy, ...) are read through :func:`read` where they act, when called, so a
process uses the environment it was started with. No other module reads ``os.environ`` for a setting.
``docs/reference/configuration.md`` lists exactly these variables (``test_docs.py`` checks both ways).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Variable:
    """One environment variable: ``name``, the value used when it is unset or blank, and what it sets."""

    name: str
    default: str
    sets: str


# Run settings: the defaults of RadiomicsConfig's fields (from_env), overridable per run in the launchpad.
DATA_DIR = Variable("RADIOMICS_DATA_DIR", str(_PACKAGE.parent / "data"), "data_dir: the data root")
SHIPPED_PARAMS_DIR = _PACKAGE / "features" / "params"
"""The parameter files shipped with the package (``ct.yaml``, ``mr.yaml``, ``pt.yaml``, ``us.yaml``)."""
# Unset stays "" (not the shipped path) so a run's recorded config never pins this installation's folder.
PARAMS_DIR = Variable("RADIOMICS_PARAMS_DIR", "", "params_dir: per-modality parameter files (unset: the shipped ones)")


def configured_params_dir() -> Path:
    """``$RADIOMICS_PARAMS_DIR`` if set, else the shipped parameter files."""
    return Path(read(PARAMS_DIR) or SHIPPED_PARAMS_DIR)


PARAMS_FILE = Variable("RADIOMICS_PARAMS_FILE", "", "params_file: one parameter file for every modality")
WORKERS = Variable("RADIOMICS_WORKERS", "0", "workers: worker processes per run (0 = one per usable core)")
DASK_SCHEDULER = Variable("RADIOMICS_DASK_SCHEDULER", "", "dask_scheduler: the cluster running patient tasks")
INBOX_SETTLE_SECONDS = Variable("RADIOMICS_INBOX_SETTLE_SECONDS", "30", "inbox_settle_seconds")
AUC_REGRESSION_MARGIN = Variable("RADIOMICS_AUC_REGRESSION_MARGIN", "0.05", "auc_regression_margin")
ON_AUC_REGRESSION = Variable("RADIOMICS_ON_AUC_REGRESSION", "warn", "on_auc_regression: warn | block")
FAILURE_NOTIFY_COMMAND = Variable("RADIOMICS_FAILURE_NOTIFY_COMMAND", "", "failure_notify_command")
PERMUTATIONS = Variable("RADIOMICS_PERMUTATIONS", "199", "permutations of the permutation test")
PERMUTATION_SECONDS = Variable("RADIOMICS_PERMUTATION_SECONDS", "300", "permutation_seconds: its time budget")
MAX_GREY_LEVELS = Variable("RADIOMICS_MAX_GREY_LEVELS", "1000", "max_grey_levels")
EXPORT_DICOM = Variable("RADIOMICS_EXPORT_DICOM", "", "1 = export_dicom on")
EXPORT_DEIDENTIFIED = Variable("RADIOMICS_EXPORT_DEIDENTIFIED", "", "1 = export_deidentified on")
AUTO_SEGMENTATION = Variable("RADIOMICS_AUTO_SEGMENTATION", "", "auto_segmentation (also: mask-less images accepted)")
ROBUSTNESS_PERTURBATIONS = Variable("RADIOMICS_ROBUSTNESS_PERTURBATIONS", "0", "robustness_perturbations")
ULTRASOUND_CANDIDATE_FEATURES = Variable(
    "RADIOMICS_ULTRASOUND_CANDIDATE_FEATURES", "", "1 = ultrasound_candidate_features on"
)

# Process-wide switches, read where they act.
STOCK_PYRADIOMICS = Variable("RADIOMICS_STOCK_PYRADIOMICS", "", "1 = PyRadiomics as installed, no speed-ups")
COLOUR_IMAGES = Variable("RADIOMICS_COLOUR_IMAGES", "fail", "true-colour images: fail | luminance")
# 300 s: far above a patient's write (tens of ms) or a cohort table (seconds), short enough that a forgotten
# holder of the working store is reported the same hour.
WAREHOUSE_LOCK_TIMEOUT = Variable("RADIOMICS_WAREHOUSE_LOCK_TIMEOUT", "300", "seconds a write waits for the lock")
INBOX_READ_WORKERS = Variable("RADIOMICS_INBOX_READ_WORKERS", "0", "header-reading processes (0 = one per core)")
INBOX_FULL_SCAN_SECONDS = Variable("RADIOMICS_INBOX_FULL_SCAN_SECONDS", "1800", "period of the full inbox walk")
INBOX_RECENT_SECONDS = Variable("RADIOMICS_INBOX_RECENT_SECONDS", "120", "folders this recent are stat'ed each call")
RETRAIN_CRON = Variable("RADIOMICS_RETRAIN_CRON", "0 3 * * 1", "cron of the weekly_retrain schedule")
REPORT_PDF = Variable("RADIOMICS_REPORT_PDF", "auto", "report.pdf: auto (a browser on PATH) | off | a browser")
IBSI_PHANTOM_DIR = Variable(
    "IBSI_PHANTOM_DIR", str(_PACKAGE.parent.parent / "shared" / "data" / "ibsi_phantom"), "radiomics-assets ibsi"
)

# The Dagster instance (dagster_home.py chooses its dagster.yaml from these).
DAGSTER_HOME = Variable("DAGSTER_HOME", "", "the Dagster instance folder (CLI: <data root>/.dagster)")
DAGSTER_PG_URL = Variable("DAGSTER_PG_URL", "", "PostgreSQL instance URL")
POSTGRES_PARTS = tuple(
    Variable(name, "", "PostgreSQL instance, in parts")
    for name in ("DAGSTER_PG_HOST", "DAGSTER_PG_PORT", "DAGSTER_PG_USER", "DAGSTER_PG_PASSWORD", "DAGSTER_PG_DB")
)

VARIABLES: tuple[Variable, ...] = tuple(v for v in globals().values() if isinstance(v, Variable)) + POSTGRES_PARTS


def read(variable: Variable, environ: Mapping[str, str] | None = None) -> str:
    """The variable's value in ``environ`` (default: this process's environment), stripped; its default when
    unset or blank."""
    env = os.environ if environ is None else environ
    return env.get(variable.name, "").strip() or variable.default


def read_number(variable: Variable, environ: Mapping[str, str] | None = None) -> float:
    """:func:`read` as a non-negative number; a value that is not one is an error naming the variable."""
    raw = read(variable, environ)
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{variable.name}={raw!r}: not a number") from None
    if value < 0:
        raise ValueError(f"{variable.name}={raw!r}: must not be negative")
    return value


def read_flag(variable: Variable, environ: Mapping[str, str] | None = None) -> bool:
    """:func:`read` as on/off: anything but unset, blank or ``0`` is on."""
    return read(variable, environ) not in ("", "0")
