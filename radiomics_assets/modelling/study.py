"""The study: what the outcome is (``study.yaml``), which clinical columns are predictors, and the outcome table.

``study.yaml`` in the data root types the columns of ``labels.csv``::

    outcome:
      type: survival            # binary | multiclass | continuous | survival
      column: label             # binary, multiclass, continuous: the column of labels.csv
      positive: malignant       # binary: the class that is 1 (case-insensitive); never inferred from sort order
      classes: [G1, G2, G3]     # multiclass (optional): the class order (default: sorted names)
      time: time_to_event       # survival: follow-up time (numbers, > 0)
      event: event              # survival: 1 = event happened, 0 = censored
      unit: months              # survival: shown in the report
      horizons: [12, 24, 36]    # survival: times for time-dependent metrics and predictions
    covariates:                 # optional clinical predictors, columns of labels.csv or of clinical.csv
      numeric: [age]
      categorical: [sex, grade]
    predictors: compare         # radiomics | clinical | both | compare (default: compare when covariates exist)
    batch:                      # optional: the scanner / site of each patient (issue 27), one of
      from_dicom: [Manufacturer]  # DICOM header values of the patient's series (BATCH_TAGS), joined
      # column: hospital          # or a column of labels.csv
    harmonise: none             # none (default) | combat: ComBat inside every fold (modelling/harmonise.py)
    validation: cv              # cv (default: repeated stratified CV) | leave_site_out (one batch held out per fold)

Without ``study.yaml`` a two-class ``label`` column keeps working, with the positive class explicit in the data
(0/1, yes/no, true/false, or one of :data:`POSITIVE_NAMES`); anything else fails asking for ``positive:``.
Every error names the file and the key.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from radiomics_assets.errors import InputError
from radiomics_assets.paths import DataRoot, patient_key


class StudyError(InputError):
    """A ``study.yaml``, ``labels.csv`` or ``clinical.csv`` that does not describe a study the pipeline can model."""


class OutcomeType(StrEnum):
    binary = "binary"
    multiclass = "multiclass"
    continuous = "continuous"
    survival = "survival"


class Predictors(StrEnum):
    """Which predictors enter the model: ``compare`` fits clinical-only, radiomics-only and both on the same folds
    and keeps the combined model."""

    radiomics = "radiomics"
    clinical = "clinical"
    both = "both"
    compare = "compare"


class Harmonise(StrEnum):
    """How the batch (scanner, site) effect is corrected inside every fold: not at all, or by ComBat."""

    none = "none"
    combat = "combat"


class Validation(StrEnum):
    """The outer CV scheme: repeated grouped stratified k-fold, or one batch (site) held out per fold."""

    cv = "cv"
    leave_site_out = "leave_site_out"


BATCH_TAGS = (
    "Manufacturer",
    "ManufacturerModelName",
    "InstitutionName",
    "ConvolutionKernel",
    "MagneticFieldStrength",
    "SliceThickness",
)
"""DICOM header fields ``batch: from_dicom`` may name (SliceThickness is rounded to whole millimetres)."""


@dataclass(frozen=True, kw_only=True)
class Batch:
    """The batch (scanner, site) of each patient: DICOM header fields of its series, or a column of labels.csv."""

    from_dicom: tuple[str, ...] = ()
    column: str | None = None

    @property
    def configured(self) -> bool:
        return bool(self.from_dicom) or self.column is not None

    def describe(self) -> str:
        if self.column is not None:
            return f"labels.csv column {self.column!r}"
        return "DICOM " + " + ".join(self.from_dicom) if self.from_dicom else "none"


class Timepoint(StrEnum):
    """Which study of a patient with several (baseline and follow-up, by StudyDate) the feature matrix uses, per
    modality and ROI: the first, the last, every one (``<roi>@t<k>``, k = 0 the first), or the first with the change
    to the last (``<roi>@delta``: last minus first; ``<roi>@relative``: that change over the first's absolute
    value). See ``matrix.select_timepoints``."""

    baseline = "baseline"
    latest = "latest"
    all = "all"
    delta = "delta"


POSITIVE_NAMES = ("1", "yes", "true", "malignant", "positive", "event", "case", "abnormal", "present", "dead")
"""Class names taken as the positive class (1) of a two-class label without ``study.yaml`` (case-insensitive); the
other class is 0. 0/1, yes/no and true/false are explicit; two names outside this list need ``positive:``."""

STUDY_FILE = "study.yaml"
CLINICAL_FILE = "clinical.csv"


@dataclass(frozen=True, kw_only=True)
class Outcome:
    type: OutcomeType = OutcomeType.binary
    column: str = "label"
    positive: str | None = None
    """Binary: the class that is 1 (compared case-insensitively)."""
    classes: tuple[str, ...] = ()
    """Multiclass: the class order (codes 0..K-1); empty = sorted class names."""
    time: str = "time_to_event"
    event: str = "event"
    unit: str = ""
    horizons: tuple[float, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Covariates:
    numeric: tuple[str, ...] = ()
    categorical: tuple[str, ...] = ()

    @property
    def columns(self) -> tuple[str, ...]:
        return self.numeric + self.categorical


@dataclass(frozen=True, kw_only=True)
class Study:
    """The typed study, loaded once and passed whole to the matrix, the task, validation and the report."""

    outcome: Outcome = field(default_factory=Outcome)
    covariates: Covariates = field(default_factory=Covariates)
    predictors: Predictors = Predictors.radiomics
    timepoint: Timepoint = Timepoint.baseline
    batch: Batch = field(default_factory=Batch)
    harmonise: Harmonise = Harmonise.none
    validation: Validation = Validation.cv
    source: str = "(no study.yaml: a two-class label column)"
    """Where the study came from (the file, or the default), for messages and the report."""

    @property
    def task(self) -> OutcomeType:
        return self.outcome.type

    @property
    def has_covariates(self) -> bool:
        return bool(self.covariates.columns)


_TOP_KEYS = {"outcome", "covariates", "predictors", "timepoint", "batch", "harmonise", "validation"}
_OUTCOME_KEYS = {
    OutcomeType.binary: {"type", "column", "positive"},
    OutcomeType.multiclass: {"type", "column", "classes"},
    OutcomeType.continuous: {"type", "column"},
    OutcomeType.survival: {"type", "time", "event", "unit", "horizons"},
}
_COVARIATE_KEYS = {"numeric", "categorical"}


def _names(value, key: str, path: Path) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str | int) for v in value):
        raise StudyError(f"{path}: key {key!r} must be a list of column names, got {value!r}")
    return tuple(str(v).strip() for v in value)


def _mapping(value, key: str, path: Path) -> dict:
    if not isinstance(value, dict):
        raise StudyError(f"{path}: key {key!r} must be a mapping (key: value lines), got {value!r}")
    return value


def parse_study(document: dict, path: Path) -> Study:
    """A :class:`Study` from the parsed YAML; every problem names the key and the file."""
    document = _mapping(document if document is not None else {}, "(top level)", path)
    unknown = sorted(set(document) - _TOP_KEYS)
    if unknown:
        raise StudyError(f"{path}: unknown key(s) {unknown}; a study file has {sorted(_TOP_KEYS)}")
    if "outcome" not in document:
        raise StudyError(
            f"{path}: key 'outcome' is missing (outcome: type: binary | multiclass | continuous | survival)"
        )
    raw = _mapping(document["outcome"], "outcome", path)
    try:
        kind = OutcomeType(str(raw.get("type", "")).strip().lower())
    except ValueError:
        raise StudyError(
            f"{path}: key 'outcome.type' must be one of {[t.value for t in OutcomeType]}, got {raw.get('type')!r}"
        ) from None
    unknown = sorted(set(raw) - _OUTCOME_KEYS[kind])
    if unknown:
        raise StudyError(
            f"{path}: key(s) {['outcome.' + k for k in unknown]} do not apply to a {kind} outcome; "
            f"it takes {sorted(_OUTCOME_KEYS[kind])}"
        )
    values: dict = {"type": kind}
    for key in ("column", "time", "event", "unit"):
        if key in raw:
            if not isinstance(raw[key], str | int) or not str(raw[key]).strip():
                raise StudyError(f"{path}: key 'outcome.{key}' must be a column name, got {raw[key]!r}")
            values[key] = str(raw[key]).strip()
    if kind == OutcomeType.binary:
        if "positive" in raw:
            if raw["positive"] is None or str(raw["positive"]).strip() == "":
                raise StudyError(f"{path}: key 'outcome.positive' is empty: name the class that is 1")
            values["positive"] = str(raw["positive"]).strip()
    if kind == OutcomeType.multiclass and "classes" in raw:
        values["classes"] = _names(raw["classes"], "outcome.classes", path)
    if kind == OutcomeType.survival and "horizons" in raw:
        horizons = raw["horizons"] if isinstance(raw["horizons"], list) else [raw["horizons"]]
        try:
            values["horizons"] = tuple(float(h) for h in horizons)
        except (TypeError, ValueError):
            raise StudyError(
                f"{path}: key 'outcome.horizons' must be a list of times, got {raw['horizons']!r}"
            ) from None
        if any(not math.isfinite(h) or h <= 0 for h in values["horizons"]):
            raise StudyError(f"{path}: key 'outcome.horizons' must hold times > 0, got {raw['horizons']!r}")
        values["horizons"] = tuple(sorted(set(values["horizons"])))
    outcome = Outcome(**values)

    covariates = Covariates()
    if document.get("covariates") is not None:
        raw_cov = _mapping(document["covariates"], "covariates", path)
        unknown = sorted(set(raw_cov) - _COVARIATE_KEYS)
        if unknown:
            raise StudyError(f"{path}: unknown key(s) {['covariates.' + k for k in unknown]}; use numeric, categorical")
        covariates = Covariates(
            numeric=_names(raw_cov.get("numeric"), "covariates.numeric", path),
            categorical=_names(raw_cov.get("categorical"), "covariates.categorical", path),
        )
        twice = sorted(set(covariates.numeric) & set(covariates.categorical))
        if twice:
            raise StudyError(f"{path}: column(s) {twice} are both numeric and categorical covariates")
        outcome_columns = {outcome.column} if kind != OutcomeType.survival else {outcome.time, outcome.event}
        clash = sorted(set(covariates.columns) & outcome_columns)
        if clash:
            raise StudyError(f"{path}: outcome column(s) {clash} cannot also be covariates")
    default = Predictors.compare if covariates.columns else Predictors.radiomics
    try:
        predictors = Predictors(str(document.get("predictors") or default).strip().lower())
    except ValueError:
        raise StudyError(
            f"{path}: key 'predictors' must be one of {[p.value for p in Predictors]}, got {document['predictors']!r}"
        ) from None
    if predictors != Predictors.radiomics and not covariates.columns:
        raise StudyError(f"{path}: key 'predictors' is {predictors.value!r} but no covariates are listed")
    try:
        timepoint = Timepoint(str(document.get("timepoint") or Timepoint.baseline.value).strip().lower())
    except ValueError:
        raise StudyError(
            f"{path}: key 'timepoint' must be one of {[t.value for t in Timepoint]}, got {document['timepoint']!r}"
        ) from None
    batch = _batch(document.get("batch"), path)
    harmonise = _choice(document, "harmonise", Harmonise, Harmonise.none, path)
    validation = _choice(document, "validation", Validation, Validation.cv, path)
    if (harmonise != Harmonise.none or validation != Validation.cv) and not batch.configured:
        raise StudyError(
            f"{path}: key {'harmonise' if harmonise != Harmonise.none else 'validation'!r} needs a batch: add "
            "'batch: {from_dicom: [Manufacturer]}' or 'batch: {column: <labels.csv column>}'"
        )
    if batch.column is not None:
        outcome_columns = {outcome.column} if kind != OutcomeType.survival else {outcome.time, outcome.event}
        if batch.column in outcome_columns:
            # A batch equal to the outcome would make ComBat remove the signal it is asked to keep.
            raise StudyError(f"{path}: key 'batch.column' is the outcome column {batch.column!r}")
    return Study(
        outcome=outcome,
        covariates=covariates,
        predictors=predictors,
        timepoint=timepoint,
        batch=batch,
        harmonise=harmonise,
        validation=validation,
        source=str(path),
    )


def _choice(document: dict, key: str, kind: type[StrEnum], default: StrEnum, path: Path):
    value = document.get(key)
    if value is None:
        return default
    if value is False and key == "harmonise":  # YAML reads a bare ``none``-like ``no`` / ``off`` as False
        return default
    try:
        return kind(str(value).strip().lower())
    except ValueError:
        raise StudyError(f"{path}: key {key!r} must be one of {[v.value for v in kind]}, got {value!r}") from None


def _batch(value, path: Path) -> Batch:
    if value is None:
        return Batch()
    raw = _mapping(value, "batch", path)
    unknown = sorted(set(raw) - {"from_dicom", "column"})
    if unknown:
        raise StudyError(f"{path}: unknown key(s) {['batch.' + k for k in unknown]}; use from_dicom or column")
    if ("from_dicom" in raw) == ("column" in raw):
        raise StudyError(f"{path}: key 'batch' needs exactly one of 'from_dicom' (DICOM fields) or 'column'")
    if "column" in raw:
        if not isinstance(raw["column"], str | int) or not str(raw["column"]).strip():
            raise StudyError(f"{path}: key 'batch.column' must be a column name of labels.csv, got {raw['column']!r}")
        return Batch(column=str(raw["column"]).strip())
    tags = _names(raw["from_dicom"], "batch.from_dicom", path)
    wrong = [t for t in tags if t not in BATCH_TAGS]
    if not tags or wrong:
        raise StudyError(
            f"{path}: key 'batch.from_dicom' must list some of {list(BATCH_TAGS)}, got {raw['from_dicom']!r}"
        )
    return Batch(from_dicom=tuple(dict.fromkeys(tags)))


def load_study(root: DataRoot, label_column: str = "label") -> Study:
    """``<root>/study.yaml`` when present, else the default: a two-class ``label_column``, radiomics only."""
    path = root.path / STUDY_FILE
    if not path.exists():
        return Study(outcome=Outcome(column=label_column))
    try:
        document = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise StudyError(f"{path}: not valid YAML: {error}") from None
    return parse_study(document, path)


def write_study_file(path: Path, document: dict, comment: str = "") -> Path:
    """Write a study file (after checking that it parses), e.g. from ``labels-from-folders`` or the demo."""
    parse_study(document, path)
    header = "".join(f"# {line}\n" for line in comment.splitlines())
    path.write_text(header + yaml.safe_dump(document, sort_keys=False))
    return path


# --- the outcome table ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OutcomeTable:
    """``labels.csv`` read under a study: one row per patient key with the typed outcome and the covariates.

    Columns: ``patient_id``, ``cohort`` (train/test), ``group``; binary and multiclass ``label`` (code) and
    ``label_name``; continuous ``label`` (the value); survival ``time`` and ``event`` (and ``label`` = event);
    covariates as ``clinical__<name>`` (numeric: float, categorical: the category text). Patients whose outcome is
    missing are not rows: ``excluded`` lists them with the reason.
    """

    table: pd.DataFrame
    excluded: list[dict]
    classes: tuple[str, ...] = ()
    """Binary: (negative name(s), positive name); multiclass: names of codes 0..K-1."""
    notes: tuple[str, ...] = ()


CLINICAL_PREFIX = "clinical__"

_BINARY_PAIRS = ({"0", "1"}, {"no", "yes"}, {"false", "true"}, {"n", "y"})


SEPARATORS = (",", ";", "\t")
"""Column separators a table may use: comma, or semicolon (Excel where the decimal mark is a comma), or tab."""


def csv_separator(header_line: str) -> str:
    """The separator of a CSV table, sniffed from its header line: the one of :data:`SEPARATORS` it holds most
    of (a comma when it holds none: a one-column table). Column names hold none of them, so the header decides
    without guessing from the values (a decimal comma in a value cannot mislead it)."""
    counts = {sep: header_line.count(sep) for sep in SEPARATORS}
    best = max(SEPARATORS, key=lambda sep: counts[sep])
    return best if counts[best] else ","


def read_table_csv(path: Path) -> pd.DataFrame:
    """A CSV table as text cells: UTF-8 with or without the byte-order mark Excel writes, separator sniffed from
    the header (:func:`csv_separator`), spaces around column names and values removed."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
        separator = csv_separator(text.splitlines()[0] if text.strip() else "")
        table = pd.read_csv(io.StringIO(text), sep=separator, dtype=str, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise StudyError(f"{path}: cannot be read as CSV: {error}") from None
    table.columns = [str(c).strip() for c in table.columns]
    return table.apply(lambda column: column.str.strip())


_read_csv = read_table_csv


def _merge_duplicates(raw: pd.DataFrame, path: Path) -> tuple[pd.DataFrame, list[str]]:
    """One row per patient key: rows of one patient that agree in every column are merged with a note; rows that
    disagree fail naming the patients and the columns, before any work is done on them."""
    repeated = raw[raw.patient_key.duplicated(keep=False)]
    notes, conflicts = [], []
    for key, rows in repeated.groupby("patient_key", sort=True):
        values = rows.drop(columns=["patient_id", "patient_key"]).fillna("")
        differing = [c for c in values if values[c].nunique() > 1]
        if differing:
            lines = ", ".join(str(i + 2) for i in rows.index)  # file line numbers: the header is line 1
            conflicts.append(f"{key} (lines {lines} differ in {differing})")
        else:
            notes.append(key)
    if conflicts:
        raise StudyError(
            f"{path}: patient(s) appear more than once with different values: {'; '.join(conflicts[:10])}"
            + (f" and {len(conflicts) - 10} more" if len(conflicts) > 10 else "")
            + "; keep one row per patient"
        )
    merged = (
        [f"{path.name}: patient(s) {notes[:10]} appear more than once with identical values; one row kept"]
        if notes
        else []
    )
    return raw[~raw.patient_key.duplicated()].copy(), merged


def _require(raw: pd.DataFrame, columns: list[str], path: Path, why: str) -> None:
    missing = [c for c in columns if c not in raw]
    if missing:
        raise StudyError(f"{path}: column(s) {missing} ({why}) not found; it has {list(raw)}")


def _positive_class(names: list[str], study: Study, path: Path) -> str:
    """The positive class among two names: study.yaml's ``positive``, else an explicit pair or a known name."""
    lowered = {n.lower(): n for n in names}
    if study.outcome.positive is not None:
        wanted = study.outcome.positive.lower()
        if wanted not in lowered:
            raise StudyError(
                f"{study.source}: key 'outcome.positive' is {study.outcome.positive!r}, but column "
                f"{study.outcome.column!r} of {path} holds {names}"
            )
        return lowered[wanted]
    if set(lowered) in _BINARY_PAIRS:
        return lowered[next(v for v in ("1", "yes", "true", "y") if v in lowered)]
    known = [n for n in names if n.lower() in POSITIVE_NAMES]
    if len(known) == 1:
        return known[0]
    raise StudyError(
        f"{path}: column {study.outcome.column!r} holds {names}: which is the positive class (1)? Say it in "
        f"{STUDY_FILE}: 'outcome: {{type: binary, column: {study.outcome.column}, positive: <name>}}' (recognised "
        f"without it: 0/1, yes/no, true/false, or one of {list(POSITIVE_NAMES)})"
    )


def _numbers(values: pd.Series, path: Path, column: str) -> pd.Series:
    numbers = pd.to_numeric(values.str.strip(), errors="coerce")
    bad = values[values.notna() & values.str.strip().ne("") & numbers.isna()]
    if len(bad):
        raise StudyError(f"{path}: column {column!r} must hold numbers; {bad.iloc[0]!r} is not one")
    return numbers


def _clinical_columns(raw: pd.DataFrame, root: DataRoot, study: Study, labels_path: Path) -> pd.DataFrame:
    """Covariates from labels.csv, or from ``clinical.csv`` (patient_id + columns) for columns labels.csv lacks."""
    wanted = list(study.covariates.columns)
    have = raw.set_index("patient_key")
    missing = [c for c in wanted if c not in have]
    clinical = pd.DataFrame(index=have.index)
    for column in wanted:
        if column in have:
            clinical[column] = have[column]
    if missing:
        extra_path = root.path / CLINICAL_FILE
        if not extra_path.exists():
            raise StudyError(
                f"{study.source}: covariate column(s) {missing} are in neither {labels_path} nor {extra_path}"
            )
        extra = _read_csv(extra_path)
        _require(extra, ["patient_id", *missing], extra_path, "covariates named in study.yaml")
        extra["patient_key"] = extra.patient_id.map(patient_key)
        twice = sorted(extra.patient_key[extra.patient_key.duplicated()].unique())
        if twice:
            raise StudyError(f"{extra_path}: patient(s) {twice[:10]} appear more than once")
        extra = extra.set_index("patient_key")
        for column in missing:
            clinical[column] = extra[column].reindex(clinical.index)
    out = pd.DataFrame(index=clinical.index)
    for column in study.covariates.numeric:
        out[CLINICAL_PREFIX + column] = _numbers(clinical[column].astype("string").astype(object), labels_path, column)
    for column in study.covariates.categorical:
        text = clinical[column].astype(object).where(clinical[column].notna(), None)
        out[CLINICAL_PREFIX + column] = [None if v is None or str(v).strip() == "" else str(v).strip() for v in text]
    return out


def load_outcomes(root: DataRoot, study: Study, group_column: str = "group") -> OutcomeTable:
    """``labels.csv`` -> :class:`OutcomeTable` under ``study``; errors name the file, the column and the fix."""
    path = root.labels_csv
    if not path.exists():
        raise StudyError(f"{path}: labels file not found")
    raw = _read_csv(path)
    outcome = study.outcome
    columns = [outcome.time, outcome.event] if study.task == OutcomeType.survival else [outcome.column]
    _require(raw, ["patient_id", *columns], path, f"the {study.task} outcome of {study.source}")
    raw = raw[raw.patient_id.notna() & raw.patient_id.str.strip().ne("")].copy()
    raw["patient_key"] = raw.patient_id.map(patient_key)
    raw, merged = _merge_duplicates(raw, path)
    for column in columns:
        raw[column] = raw[column].where(raw[column].isna(), raw[column].str.strip()).replace("", np.nan)
    missing = raw[columns].isna().any(axis=1)
    excluded = [
        {"patient_id": key, "reason": f"no outcome ({', '.join(c for c in columns if pd.isna(row[c]))} empty)"}
        for key, (_, row) in zip(raw.patient_key[missing], raw[missing].iterrows(), strict=True)
    ]
    raw = raw.reset_index(drop=True)
    missing = missing.reset_index(drop=True)
    present = raw[~missing]
    cohort = raw["cohort"].fillna("train").str.strip().str.lower().replace("", "train") if "cohort" in raw else "train"
    table = pd.DataFrame(
        {
            "patient_id": raw.patient_key,
            "cohort": cohort,
            "group": raw[group_column].fillna("").str.strip() if group_column in raw else "",
        }
    )
    bad = sorted(set(table.cohort) - {"train", "test"})
    if bad:
        raise StudyError(f"{path}: column 'cohort' must hold train or test, found {bad}")
    classes: tuple[str, ...] = ()
    # Rows without an outcome keep NaN (and their covariates, for predictions); only rows with one are typed.
    table["label"] = np.nan
    table["label_name"] = pd.Series([None] * len(table), dtype=object)
    if study.task == OutcomeType.binary:
        names = sorted(present[outcome.column].unique())
        if len(names) != 2:
            raise StudyError(
                f"{path}: column {outcome.column!r} must hold two classes for a binary outcome, found {names}"
                + (f"; for more, set 'outcome: {{type: multiclass}}' in {STUDY_FILE}" if len(names) > 2 else "")
            )
        positive = _positive_class(names, study, path)
        negative = next(n for n in names if n != positive)
        classes = (negative, positive)
        table.loc[present.index, "label"] = (present[outcome.column] == positive).astype(int)
        table.loc[present.index, "label_name"] = present[outcome.column]
    elif study.task == OutcomeType.multiclass:
        names = sorted(present[outcome.column].unique())
        classes = outcome.classes or tuple(names)
        unknown = sorted(set(names) - set(classes))
        if unknown:
            raise StudyError(
                f"{path}: column {outcome.column!r} holds {unknown}, not in outcome.classes {list(classes)}"
            )
        if len(classes) < 3:
            raise StudyError(
                f"{path}: column {outcome.column!r} holds {len(classes)} classes {list(classes)}; a multiclass outcome "
                "needs 3 or more (use type: binary for two)"
            )
        code = {name: i for i, name in enumerate(classes)}
        table.loc[present.index, "label"] = present[outcome.column].map(code).astype(int)
        table.loc[present.index, "label_name"] = present[outcome.column]
    elif study.task == OutcomeType.continuous:
        values = _numbers(present[outcome.column], path, outcome.column)
        if not np.isfinite(values).all():
            raise StudyError(f"{path}: column {outcome.column!r} holds a non-finite value")
        table.loc[present.index, "label"] = values.astype(float)
        table.loc[present.index, "label_name"] = present[outcome.column]
    else:
        time = _numbers(present[outcome.time], path, outcome.time)
        event = _numbers(present[outcome.event], path, outcome.event)
        if (time <= 0).any() or not np.isfinite(time).all():
            bad_key = present.patient_key[(time <= 0) | ~np.isfinite(time)].iloc[0]
            raise StudyError(f"{path}: column {outcome.time!r} must hold follow-up times > 0 (patient {bad_key})")
        if not event.isin([0, 1]).all():
            raise StudyError(
                f"{path}: column {outcome.event!r} must hold 1 (event) or 0 (censored), found "
                f"{sorted(set(event) - {0, 1})[:5]}"
            )
        table["time"] = np.nan
        table["event"] = np.nan
        table.loc[present.index, "time"] = time.astype(float)
        table.loc[present.index, "event"] = event.astype(float)
        table["label"] = table["event"]
        table.loc[present.index, "label_name"] = np.where(event == 1, "event", "censored")
    table = table.reset_index(drop=True)
    if study.batch.column is not None:
        _require(raw, [study.batch.column], path, f"key 'batch.column' of {study.source}")
        # An empty cell is an unknown batch: kept as its own level rather than dropping the patient.
        table["batch"] = raw[study.batch.column].fillna("").replace("", "unknown").to_numpy()
    if study.has_covariates:
        clinical = _clinical_columns(raw, root, study, path)
        table = table.join(clinical.reset_index(drop=True).set_axis(table.index))
    notes = tuple(merged) + tuple(
        f"{len(excluded)} patient(s) of {path.name} have no outcome value: not analysed (scored as unlabelled when "
        "they have features)"
        for _ in excluded[:1]
    )
    return OutcomeTable(table=table, excluded=excluded, classes=classes, notes=notes)
