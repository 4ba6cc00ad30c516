"""Bring your own features: a feature table made elsewhere, imported as a feature source with its provenance.

A feature table (PyRadiomics CLI output, MIRP, an earlier study) is a CSV (``.csv``, ``.csv.gz``, ``.gz``) or Parquet
file with one row per patient: an id column and numeric feature columns. Each imported file is one *source*
(named after the file, or ``--name`` / ``source:``): its values go to the long table ``imported_features`` with
the file's SHA-256 and the import time, its provenance to a row of ``feature_sources``, both in one transaction.
The modelling stage reads the values through :func:`imported_feature_rows` in the layout of extracted features,
so a source is a block ``TABLE__<source>`` of the wide matrix, selected, imputed and validated exactly like a
modality and ROI of extracted features.

The folder ``<data root>/feature_tables/`` is the source of truth of the ``imported_features`` asset:
:func:`import_folder` imports every table in it (options from an optional ``<file name>.import.yaml``) and
removes the sources whose file left it. No Dagster here: the asset, its job and its sensor are in
``defs/feature_table_assets.py``; the CLI's ``import-features`` calls :func:`import_feature_table`.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import hashlib
import logging
import re
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import yaml

from radiomics_assets.errors import FileInputError, InputError
from radiomics_assets.failure_log import FIX_SEPARATOR
from radiomics_assets.paths import DataRoot, patient_key
from radiomics_assets.warehouse import Warehouse, insert_frame, transaction

log = logging.getLogger(__name__)

DEFAULT_ID_COLUMN = "patient_id"
TABLE_SUFFIXES = (".csv.gz", ".csv", ".parquet", ".gz")
"""What the folder import reads (case-insensitive); ``.csv.gz`` first so that it wins over ``.gz``: ``<name>.gz`` is
a gzip-compressed CSV (published tables come so, e.g. radMLBench's ``<table>.gz``; see :func:`table_suffix`)."""
SIDECAR_SUFFIX = ".import.yaml"
"""``<file name>.import.yaml`` beside a table holds its import options (keys :data:`SIDECAR_KEYS`)."""
SIDECAR_KEYS = ("id_column", "exclude", "source")
MATRIX_SEPARATOR = "__"
"""Separates ``<modality>__<roi>__<image_type>__<class>__<feature>`` in the wide matrix: never inside a part."""
IMPORTED_MODALITY = "TABLE"
IMPORTED_IMAGE_TYPE = "imported"
IMPORTED_FEATURE_CLASS = "table"
FEATURE_ROW_COLUMNS = ["patient_id", "modality", "roi", "image_type", "feature_class", "feature", "value"]
"""The long layout of table ``features`` that the wide-matrix builder concatenates imported rows with."""
SOURCE_MAX_CHARS = 64
LISTED = 10
"""At most this many names in one message: enough to recognise the problem, short enough to read."""

_SOURCE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
_REPEATED_UNDERSCORES = re.compile(r"_{2,}")
_GLOB_CHARACTERS = frozenset("*?[]{}")
_FIX_EXCLUDE = (
    "leave them out with --exclude NAME (shell patterns such as 'diagnostics_*' work; `exclude:` in the sidecar)"
)


@dataclass(frozen=True)
class ImportOptions:
    """How to read one table: the id column, the columns left out (names or shell patterns), the source name."""

    id_column: str = DEFAULT_ID_COLUMN
    exclude: tuple[str, ...] = ()
    source: str | None = None
    """None: named after the file (:func:`default_source_name`)."""

    def non_default(self) -> dict:
        """The options that differ from the defaults, as the sidecar writes them."""
        chosen = {"id_column": self.id_column, "exclude": list(self.exclude), "source": self.source}
        defaults = {"id_column": DEFAULT_ID_COLUMN, "exclude": [], "source": None}
        return {key: value for key, value in chosen.items() if value != defaults[key]}


@dataclass(frozen=True)
class ImportResult:
    """One imported table: where it came from (file, content hash, time), what it holds, and what to know."""

    source: str
    file: Path
    sha256: str
    n_patients: int
    n_features: int
    n_missing_values: int
    imported_at: dt.datetime
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"imported source {self.source!r}: {self.n_patients} patients, {self.n_features} features, "
            f"{self.n_missing_values} missing values, sha256 {self.sha256[:12]} ({self.file})"
        )


def _with_fix(problem: str, fix: str) -> str:
    """``<problem>; fix: <fix>``: the form the failure log and the CLI recognise as carrying its own fix."""
    return f"{problem}{FIX_SEPARATOR}{fix}"


def _listed(items: Sequence[str], limit: int = LISTED) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" ... ({len(items)} in all)" if len(items) > limit else "")


def table_suffix(path: Path) -> str | None:
    """The feature-table suffix of ``path`` (``.csv.gz``, ``.csv``, ``.parquet`` or ``.gz``), or None. A ``.gz`` is a
    table only as ``<name>.gz`` with no other suffix: ``notes.txt.gz`` or ``backup.tar.gz`` are not tables."""
    name = Path(path).name.lower()
    suffix = next((suffix for suffix in TABLE_SUFFIXES if name.endswith(suffix)), None)
    if suffix == ".gz" and "." in name[: -len(suffix)]:
        return None
    return suffix


def default_source_name(path: Path) -> str:
    """The file name without its table suffix, reduced to ``[A-Za-z0-9_-]`` without ``__`` (which separates the
    parts of a wide-matrix column): ``PyRadiomics out (v2).csv.gz`` -> ``PyRadiomics_out_v2``."""
    path = Path(path)
    suffix = table_suffix(path)
    stem = path.name[: -len(suffix)] if suffix else path.stem
    name = _REPEATED_UNDERSCORES.sub("_", _UNSAFE.sub("_", stem)).strip("_-")[:SOURCE_MAX_CHARS].rstrip("_-")
    if not name:
        raise FileInputError(
            _with_fix(
                f"{path}: its file name gives no usable source name",
                "name the source with --name (or `source:` in its sidecar), using A-Z, a-z, 0-9, _ and -",
            )
        )
    return name


def check_source_name(source: str, path: Path) -> str:
    """A source name given by the user, refused rather than changed (it names the block in the model)."""
    if (
        not _SOURCE_NAME.match(source)
        or MATRIX_SEPARATOR in source
        or source.endswith(("_", "-"))
        or len(source) > SOURCE_MAX_CHARS
    ):
        raise FileInputError(
            _with_fix(
                f"{path}: source name {source!r} is not usable (it becomes part of feature-matrix column names)",
                f"use at most {SOURCE_MAX_CHARS} of A-Z, a-z, 0-9, _ and -, starting with a letter or digit, "
                "ending with a letter or digit, without '__'",
            )
        )
    return source


def file_sha256(path: Path) -> str:
    """Full SHA-256 of the file's bytes (read in blocks: a feature table may be large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _first_line(error: BaseException) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def _read_csv(path: Path) -> pd.DataFrame:
    """Every cell as text (so ``007`` stays an ID and a bad value can be shown as it is written).

    The header and the rows are read apart: given a header, pandas would silently take the first column as the
    index of rows with one field too many (``1,5`` written with a decimal comma), shifting every value."""
    fix = "save it as comma-separated UTF-8 text with a header row (gzip-compressed when it ends in .gz)"
    options = {"header": None, "dtype": str, "skipinitialspace": True}
    try:
        header = pd.read_csv(path, nrows=1, keep_default_na=False, **options)
    except pd.errors.EmptyDataError:
        raise FileInputError(_with_fix(f"{path}: the file is empty (no header row, no rows)", fix)) from None
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, EOFError, ValueError) as error:
        raise FileInputError(_with_fix(f"{path}: unreadable CSV ({_first_line(error)})", fix)) from None
    names = [name if name else f"Unnamed: {i}" for i, name in enumerate(header.iloc[0].tolist())]
    too_many = "quote values that contain a comma (or use a decimal point), or name every column in the header"
    try:
        rows = pd.read_csv(path, skiprows=1, **options)
    except pd.errors.EmptyDataError:  # a header only
        rows = pd.DataFrame(columns=range(len(names)), dtype=str)
    except pd.errors.ParserError as error:
        counted = re.search(r"Expected \d+ fields in line (\d+), saw (\d+)", str(error))
        if counted and int(counted.group(2)) > len(names):
            line, fields = counted.groups()
            problem = f"line {line} holds {fields} fields, more than the {len(names)} columns of the header"
            raise FileInputError(_with_fix(f"{path}: {problem}", too_many)) from None
        raise FileInputError(_with_fix(f"{path}: unreadable CSV ({_first_line(error)})", fix)) from None
    except (UnicodeDecodeError, OSError, EOFError, ValueError) as error:
        raise FileInputError(_with_fix(f"{path}: unreadable CSV ({_first_line(error)})", fix)) from None
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise FileInputError(
            _with_fix(
                f"{path}: column name(s) {_listed([repr(n) for n in twice])} appear more than once",
                "give each column its own name in the header row",
            )
        )
    long = np.flatnonzero(rows.iloc[:, len(names) :].notna().any(axis=1).to_numpy())
    if len(long):
        raise FileInputError(
            _with_fix(
                f"{path}: {_row_label(path, long)} hold more fields than the {len(names)} columns of the header",
                too_many,
            )
        )
    rows = rows.reindex(columns=range(len(names)))  # rows shorter than the header: the rest is empty
    rows.columns = names
    # A column without a name or a value is a trailing delimiter (spreadsheet exports), not data.
    return rows.drop(columns=[n for i, n in enumerate(names) if n == f"Unnamed: {i}" and rows[n].isna().all()])


def _read_parquet(path: Path) -> pd.DataFrame:
    """Through DuckDB (no pyarrow needed). ``read_parquet`` takes a glob pattern, so a path holding ``[`` or ``*``
    is read from a copy under a plain name."""
    fix = "write it again as Parquet, or export the table as CSV"
    with tempfile.TemporaryDirectory(prefix="feature-table-") as scratch:
        readable = path
        if _GLOB_CHARACTERS & set(str(path)):
            readable = Path(scratch) / "table.parquet"
            shutil.copyfile(path, readable)
        try:
            with duckdb.connect() as con:
                return con.execute("SELECT * FROM read_parquet(?)", [str(readable)]).df()
        except duckdb.Error as error:
            raise FileInputError(_with_fix(f"{path}: unreadable Parquet file ({_first_line(error)})", fix)) from None


def _read_raw(path: Path) -> pd.DataFrame:
    suffix = table_suffix(path)
    if suffix is None:
        raise FileInputError(
            _with_fix(
                f"{path}: not a feature table (expected a .csv, .csv.gz, .parquet file or a gzip CSV named <name>.gz)",
                "export the table as CSV or Parquet",
            )
        )
    if not path.is_file():
        raise FileInputError(_with_fix(f"{path}: no such file", "check the path"))
    raw = _read_parquet(path) if suffix == ".parquet" else _read_csv(path)
    raw.columns = [str(column) for column in raw.columns]
    return raw


def _row_label(path: Path, positions: Iterable[int]) -> str:
    """Where rows are in the file: CSV line numbers (the header is line 1), else 1-based row numbers."""
    positions = list(positions)
    if table_suffix(path) == ".parquet":
        return "row(s) " + _listed([str(i + 1) for i in positions])
    return "line(s) " + _listed([str(i + 2) for i in positions])


def _id_text(value: object) -> str:
    """An ID as text: a Parquet integer column read with gaps arrives as float (``7.0`` is ID ``7``)."""
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    return str(value).strip()


def _check_id_column(path: Path, raw: pd.DataFrame, id_column: str) -> None:
    if id_column in raw.columns:
        return
    hint = ""
    if len(raw.columns) == 1 and any(separator in raw.columns[0] for separator in (";", "\t")):
        hint = " (the header is one column: is the file separated by ';' or tabs? save it comma-separated)"
    raise FileInputError(
        _with_fix(
            f"{path}: no id column {id_column!r}{hint}; its columns are {_listed([repr(c) for c in raw.columns])}",
            "name the column that holds the patient IDs with --id-column COL (`id_column:` in the sidecar)",
        )
    )


def _excluded_columns(path: Path, columns: list[str], exclude: Sequence[str]) -> set[str]:
    """Columns named by ``exclude`` (exact names or shell patterns); a name that matches nothing is a typo."""
    excluded, unmatched = set(), []
    for pattern in exclude:
        matched = {c for c in columns if c == pattern or fnmatch.fnmatchcase(c, pattern)}
        if not matched:
            unmatched.append(repr(pattern))
        excluded |= matched
    if unmatched:
        raise FileInputError(
            _with_fix(
                f"{path}: --exclude {_listed(unmatched)} matches no column; its columns are "
                f"{_listed([repr(c) for c in columns])}",
                "spell the excluded columns as in the header (names or shell patterns, case-sensitive)",
            )
        )
    return excluded


def _patient_keys(path: Path, ids: pd.Series) -> list[str]:
    texts = ["" if pd.isna(value) else _id_text(value) for value in ids]
    empty = [i for i, text in enumerate(texts) if not text]
    if empty:
        raise FileInputError(
            _with_fix(
                f"{path}: {len(empty)} row(s) without a patient ID in column {ids.name!r}: {_row_label(path, empty)}",
                "fill in the IDs or delete those rows",
            )
        )
    keys = [patient_key(text) for text in texts]
    ids_of: dict[str, list[str]] = {}
    for key, text in zip(keys, texts, strict=True):
        ids_of.setdefault(key, []).append(text)
    twice = [key for key, given in ids_of.items() if len(given) > 1]
    if twice:
        described = [
            key if len(set(ids_of[key])) == 1 else f"{key} (IDs {', '.join(repr(i) for i in sorted(set(ids_of[key])))})"
            for key in twice
        ]
        raise FileInputError(
            _with_fix(
                f"{path}: {len(twice)} patient(s) appear more than once (IDs that differ only in characters "
                f"outside A-Z, a-z, 0-9, _ and - are one patient key): {_listed(described)}",
                "keep one row per patient (one lesion per row: give each lesion its own ID)",
            )
        )
    return keys


def _as_numbers(column: pd.Series) -> pd.Series:
    """Floats; a cell that is not empty but is not a number becomes NaN (the caller compares)."""
    if pd.api.types.is_bool_dtype(column) or pd.api.types.is_numeric_dtype(column):
        return column.astype("float64")
    if pd.api.types.is_string_dtype(column) or pd.api.types.is_object_dtype(column):
        try:
            return pd.to_numeric(column, errors="coerce").astype("float64")
        except (TypeError, ValueError):  # lists or structs from Parquet: not a feature
            pass
    return pd.Series(np.nan, index=column.index, dtype="float64")  # dates, durations: not a feature


def _numeric_values(path: Path, raw: pd.DataFrame, features: list[str], ids: list[str]) -> pd.DataFrame:
    values, bad = {}, []
    for name in features:
        numbers = _as_numbers(raw[name])
        written = raw[name]
        if pd.api.types.is_string_dtype(written):
            written = written.where(written.str.strip().ne(""))
        wrong = np.flatnonzero((written.notna() & numbers.isna()).to_numpy())
        if len(wrong):
            first = wrong[0]
            bad.append(f"{name!r} ({raw[name].iloc[first]!r} for patient {ids[first]})")
        values[name] = numbers.to_numpy()
    if bad:
        raise FileInputError(
            _with_fix(
                f"{path}: {len(bad)} column(s) are not numeric: {_listed(bad)}",
                f"{_FIX_EXCLUDE}, or correct the values (numbers with a decimal point, empty when missing)",
            )
        )
    table = pd.DataFrame(values, index=pd.Index(ids, name="patient_id"), columns=features)
    infinite = [
        f"{name!r} (patient {table.index[np.flatnonzero(np.isinf(table[name].to_numpy()))[0]]})"
        for name in features
        if np.isinf(table[name].to_numpy()).any()
    ]
    if infinite:
        raise FileInputError(
            _with_fix(
                f"{path}: infinite values in {len(infinite)} column(s): {_listed(infinite)}",
                f"make them empty cells (missing values are imputed inside the CV folds), or {_FIX_EXCLUDE}",
            )
        )
    empty = [repr(name) for name in features if table[name].isna().all()]
    if empty:
        raise FileInputError(
            _with_fix(f"{path}: {len(empty)} column(s) hold no value at all: {_listed(empty)}", _FIX_EXCLUDE)
        )
    return table


def _matrix_safe_names(path: Path, columns: list[str]) -> dict[str, str]:
    """Column -> its name in the matrix: ``__`` becomes ``_``. Names must stay distinct ignoring case, because
    DuckDB column names are case-insensitive (it would rename one of ``Age`` and ``age`` in the wide table)."""
    renamed = {name: _REPEATED_UNDERSCORES.sub("_", name) if MATRIX_SEPARATOR in name else name for name in columns}
    owners: dict[str, list[str]] = {}
    for original, new in renamed.items():
        owners.setdefault(new.lower(), []).append(original)
    clashes = [" and ".join(repr(name) for name in names) for names in owners.values() if len(names) > 1]
    if clashes:
        raise FileInputError(
            _with_fix(
                f"{path}: column names that are one feature-matrix column ('__' becomes '_', case is ignored): "
                f"{_listed(clashes)}",
                f"rename the columns in the file, or {_FIX_EXCLUDE}",
            )
        )
    return {original: new for original, new in renamed.items() if new != original}


def _read_table(
    path: Path, id_column: str = DEFAULT_ID_COLUMN, exclude: Sequence[str] = ()
) -> tuple[pd.DataFrame, dict[str, str]]:
    """:func:`read_feature_table` and the columns it renamed (original -> matrix-safe name)."""
    path = Path(path)
    raw = _read_raw(path)
    _check_id_column(path, raw, id_column)
    excluded = _excluded_columns(path, list(raw.columns), exclude)
    features = [c for c in raw.columns if c != id_column and c not in excluded]
    if not features:
        left_out = f" and the {len(excluded)} excluded" if excluded else ""
        raise FileInputError(
            _with_fix(
                f"{path}: no feature columns besides the id column {id_column!r}{left_out}",
                "check --id-column and --exclude: a feature table has one numeric column per feature",
            )
        )
    if raw.empty:
        raise FileInputError(_with_fix(f"{path}: no rows (only a header)", "export the table with its patients' rows"))
    ids = _patient_keys(path, raw[id_column])
    table = _numeric_values(path, raw.reset_index(drop=True), features, ids)
    renamed = _matrix_safe_names(path, features)
    return table.rename(columns=renamed), renamed


def read_feature_table(path: Path, *, id_column: str = DEFAULT_ID_COLUMN, exclude: Sequence[str] = ()) -> pd.DataFrame:
    """A feature table as patients (index ``patient_id``: each ID's :func:`patient_key`, as the warehouse stores
    patients) x float feature columns, in the file's order; raises :class:`FileInputError` naming the file, the
    problem and its fix.

    CSV (compression inferred from the name) is read with pandas, Parquet with DuckDB. ``exclude`` holds column
    names or shell patterns left out (PyRadiomics CLI output carries ``Image``, ``Mask`` and ``diagnostics_*``
    text columns). Empty cells are allowed (NaN: the modelling pipeline imputes inside the CV folds); infinite
    values, text, repeated patients and columns without any value are not. ``__`` in a column name becomes ``_``
    (it separates the parts of a wide-matrix column name).
    """
    return _read_table(Path(path), id_column, exclude)[0]


def outcome_columns(path: Path, *, id_column: str, columns: Sequence[str]) -> pd.DataFrame:
    """``patient_id`` and the named outcome columns of a feature table, as ``labels.csv`` holds them (a published
    table often carries its outcome beside the features): cells as written without surrounding spaces, integral numbers
    of a Parquet column as integers (``1.0`` -> ``1``); raises :class:`FileInputError` naming the file when the ID
    column or an outcome column is missing, or the ID column is named as an outcome."""
    path = Path(path)
    raw = _read_raw(path)
    _check_id_column(path, raw, id_column)
    if id_column in columns:
        raise FileInputError(
            _with_fix(f"{path}: the ID column {id_column!r} cannot be an outcome", "name only outcome columns")
        )
    missing = [repr(c) for c in columns if c not in raw.columns]
    if missing:
        raise FileInputError(
            _with_fix(
                f"{path}: no outcome column {_listed(missing)}; "
                f"its columns are {_listed([repr(c) for c in raw.columns])}",
                "name the outcome column(s) as the header does (case-sensitive)",
            )
        )
    labels = raw[[id_column, *dict.fromkeys(columns)]].rename(columns={id_column: "patient_id"})
    return labels.map(lambda value: None if pd.isna(value) else _id_text(value))


def _recorded_file(root: DataRoot, path: Path) -> str:
    """How ``feature_sources.file`` names a file: relative to the data root when inside it (the root may move)."""
    resolved = Path(path).resolve()
    try:
        return resolved.relative_to(root.path.resolve()).as_posix()
    except ValueError:
        return str(resolved)


def _labelled_keys(root: DataRoot) -> tuple[set[str] | None, str | None]:
    """Patient keys of ``labels.csv`` (only its ``patient_id`` column is read), or None and why not."""
    if not root.labels_csv.is_file():
        return None, None
    from radiomics_assets.modelling.study import read_table_csv  # the one labels.csv reader (BOM, `;`, spaces)

    try:
        ids = read_table_csv(root.labels_csv)["patient_id"]
    except (KeyError, ValueError, OSError) as error:  # StudyError is a ValueError; KeyError: no patient_id column
        return None, f"{root.labels_csv} not compared with the table ({_first_line(error)})"
    return {patient_key(i) for i in ids.dropna() if str(i).strip()}, None


def _notes(root: DataRoot, table: pd.DataFrame, renamed: dict[str, str]) -> list[str]:
    """What an importer should know but that does not stop the import."""
    notes = [
        f"column {old!r} is feature {new!r} ('__' separates the parts of feature-matrix column names)"
        for old, new in renamed.items()
    ]
    n_missing = int(table.isna().sum().sum())
    if n_missing:
        columns = table.columns[table.isna().any()].tolist()
        notes.append(
            f"{n_missing} empty values in {len(columns)} column(s) ({_listed([repr(c) for c in columns], 5)}): "
            "imputed inside the CV folds"
        )
    without_values = table.index[table.isna().all(axis=1)].tolist()
    if without_values:
        notes.append(
            f"{len(without_values)} patient(s) have no value in any column ({_listed(without_values, 5)}): they "
            "count as missing this source in the feature matrix"
        )
    labelled, problem = _labelled_keys(root)
    if problem:
        notes.append(problem)
    if labelled is not None:
        unknown = sorted(set(table.index) - labelled)
        if unknown:
            notes.append(
                f"{len(unknown)} of {len(table)} patients are not in labels.csv ({_listed(unknown, 5)}): they will "
                "be scored as unlabelled"
            )
        absent = labelled - set(table.index)
        if absent:
            notes.append(
                f"{len(absent)} patient(s) of labels.csv are not in this table: they count as missing this source "
                "in the feature matrix"
            )
    return notes


def _long_values(table: pd.DataFrame, source: str, sha256: str, imported_at: dt.datetime) -> pd.DataFrame:
    """One row per value present: an empty cell is not stored (the wide matrix has NaN there all the same)."""
    long = table.rename_axis("patient_id").reset_index().melt(id_vars="patient_id", var_name="feature")
    long = long[long.value.notna()].reset_index(drop=True)
    return long.assign(source=source, source_hash=sha256, imported_at=imported_at)[
        ["patient_id", "source", "feature", "value", "source_hash", "imported_at"]
    ]


def _store(
    con: duckdb.DuckDBPyConnection,
    source: str,
    values: pd.DataFrame,
    provenance: pd.DataFrame,
    replaced: Sequence[str] = (),
) -> None:
    """Replace every row of ``source`` (and of the ``replaced`` sources) in both tables, in one transaction: a
    failed write leaves the previous import as it was."""
    with transaction(con):
        for table, frame in (("imported_features", values), ("feature_sources", provenance)):
            con.execute(f"DELETE FROM {table} WHERE list_contains(?, source)", [[source, *replaced]])
            insert_frame(con, table, frame)


def _delete_sources(con: duckdb.DuckDBPyConnection, sources: Iterable[str]) -> None:
    sources = list(sources)
    if not sources:
        return
    con.execute("BEGIN TRANSACTION")
    try:
        for table in ("imported_features", "feature_sources"):
            con.execute(f"DELETE FROM {table} WHERE list_contains(?, source)", [sources])
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise


def _import(root: DataRoot, path: Path, options: ImportOptions, *, claim: bool) -> ImportResult:
    """Import one table; ``claim``: take over the source name even when another existing file holds it (the
    folder import has already made each name unique among the files present)."""
    path = Path(path)
    source = check_source_name(options.source, path) if options.source else default_source_name(path)
    table, renamed = _read_table(path, options.id_column, options.exclude)
    sha256 = file_sha256(path)
    imported_at = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    notes = _notes(root, table, renamed)
    recorded = _recorded_file(root, path)
    n_missing = int(table.isna().sum().sum())
    provenance = pd.DataFrame(
        [
            {
                "source": source,
                "file": recorded,
                "sha256": sha256,
                "id_column": options.id_column,
                "excluded": ",".join(options.exclude),
                "n_patients": len(table),
                "n_features": table.shape[1],
                "n_missing_values": n_missing,
                "imported_at": imported_at,
            }
        ]
    )
    with Warehouse(root.warehouse).connect() as con:
        holders = con.execute(
            "SELECT source, file, sha256, id_column, excluded, imported_at FROM feature_sources "
            "WHERE source = ? OR file = ?",
            [source, recorded],
        ).fetchall()
        same = (source, recorded, sha256, options.id_column, ",".join(options.exclude))
        unchanged = len(holders) == 1 and holders[0][:-1] == same
        if unchanged:
            # The same bytes read the same way (the asset re-reads the folder on every cohort run): the stored rows
            # stand, and imported_at stays the time they were imported.
            imported_at = holders[0][-1]
            holders = []
        replaced = []
        for held_source, held_file, *_ in holders:
            if held_source == source and held_file != recorded and not claim and _is_present(root, held_file):
                raise FileInputError(
                    _with_fix(
                        f"{path}: source {source!r} is already imported from {held_file}",
                        f"give this table another name (--name, or `source:` in its sidecar), or remove {held_file}",
                    )
                )
            if held_source != source:  # one file is one source: a new name replaces the old one
                replaced.append(held_source)
                notes.append(f"source {held_source!r} (the same file {recorded}) removed: it is now {source!r}")
        if not unchanged:
            _store(con, source, _long_values(table, source, sha256, imported_at), provenance, replaced)
    return ImportResult(
        source=source,
        file=path,
        sha256=sha256,
        n_patients=len(table),
        n_features=table.shape[1],
        n_missing_values=n_missing,
        imported_at=imported_at,
        notes=notes,
    )


def _is_present(root: DataRoot, recorded: str) -> bool:
    path = Path(recorded)
    return (path if path.is_absolute() else root.path / path).is_file()


def import_feature_table(
    root: DataRoot,
    path: Path,
    *,
    id_column: str = DEFAULT_ID_COLUMN,
    exclude: Sequence[str] = (),
    source: str | None = None,
) -> ImportResult:
    """Read and validate a feature table (:func:`read_feature_table`), then replace its source's rows in tables
    ``imported_features`` and ``feature_sources`` in one transaction, with the file's SHA-256 and the time.

    ``source`` defaults to the file name without suffix (:func:`default_source_name`). A source name held by
    another file that still exists is refused (two tables would silently be one); re-importing the same file
    under a new name replaces its old source. The notes say which patients are not in ``labels.csv`` (they will
    be scored, not trained on), how many of labels.csv are missing, the empty values and renamed columns.
    """
    options = ImportOptions(id_column=id_column, exclude=tuple(exclude), source=source)
    return _import(root, Path(path), options, claim=False)


def sidecar_path(table_path: Path) -> Path:
    """``<file name>.import.yaml`` beside the table: ``pyrad.csv.gz`` -> ``pyrad.csv.gz.import.yaml``."""
    table_path = Path(table_path)
    return table_path.with_name(table_path.name + SIDECAR_SUFFIX)


def read_import_options(table_path: Path) -> ImportOptions:
    """The table's options from its sidecar (defaults without one); an unknown key or a wrong type is refused,
    naming the key and the sidecar, rather than ignored (a misspelt ``exclude`` would import text columns)."""
    sidecar = sidecar_path(table_path)
    if not sidecar.is_file():
        return ImportOptions()
    fix = f"write it as YAML with the keys {', '.join(SIDECAR_KEYS)}, e.g. 'id_column: ID' and 'exclude: [Image, Mask]'"
    try:
        document = yaml.safe_load(sidecar.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise FileInputError(_with_fix(f"{sidecar}: unreadable YAML ({_first_line(error)})", fix)) from None
    if document is None:
        return ImportOptions()
    if not isinstance(document, dict):
        raise FileInputError(_with_fix(f"{sidecar}: expected keys and values, got {type(document).__name__}", fix))
    unknown = [repr(key) for key in document if key not in SIDECAR_KEYS]
    if unknown:
        raise FileInputError(
            _with_fix(f"{sidecar}: unknown key(s) {', '.join(unknown)} (known: {', '.join(SIDECAR_KEYS)})", fix)
        )
    id_column = document.get("id_column", DEFAULT_ID_COLUMN)
    if not isinstance(id_column, str) or not id_column:
        raise FileInputError(_with_fix(f"{sidecar}: key 'id_column' must be a column name, got {id_column!r}", fix))
    exclude = document.get("exclude") or []
    exclude = [exclude] if isinstance(exclude, str) else exclude
    if not isinstance(exclude, list) or not all(isinstance(name, str) for name in exclude):
        raise FileInputError(
            _with_fix(f"{sidecar}: key 'exclude' must be a list of column names, got {exclude!r}", fix)
        )
    source = document.get("source")
    if source is not None and not isinstance(source, str):
        raise FileInputError(_with_fix(f"{sidecar}: key 'source' must be a name, got {source!r}", fix))
    return ImportOptions(id_column=id_column, exclude=tuple(exclude), source=source or None)


def write_import_options(table_path: Path, options: ImportOptions) -> Path | None:
    """Write the options that differ from the defaults to the table's sidecar, so that the folder import (the
    asset, the sensor) reads the table as it was imported; with defaults only, remove a sidecar left from before.
    Returns the sidecar written, or None."""
    sidecar = sidecar_path(table_path)
    chosen = options.non_default()
    if not chosen:
        sidecar.unlink(missing_ok=True)
        return None
    comment = "# Import options of the feature table beside this file (written by radiomics-assets import-features)\n"
    sidecar.write_text(comment + yaml.safe_dump(chosen, sort_keys=False), encoding="utf-8")
    return sidecar


def feature_table_files(root: DataRoot) -> list[Path]:
    """The tables the folder import reads: ``*.csv``, ``*.csv.gz``, ``*.gz``, ``*.parquet`` directly in
    ``feature_tables/`` (not in subfolders; hidden files such as macOS ``._x.csv`` or an unfinished ``.x.csv.tmp``
    are not tables)."""
    folder = root.feature_tables
    if not folder.is_dir():
        return []
    return sorted(
        path for path in folder.iterdir() if not path.name.startswith(".") and table_suffix(path) and path.is_file()
    )


def _watched_files(root: DataRoot) -> list[Path]:
    tables = feature_table_files(root)
    return sorted([*tables, *(s for s in map(sidecar_path, tables) if s.is_file())])


def folder_fingerprint(root: DataRoot) -> str:
    """SHA-256 of (name, size, mtime_ns) of every file the folder import would read, sidecars included: the
    sensor's cursor, which changes when a table or its options are added, changed or removed."""
    digest = hashlib.sha256()
    for path in _watched_files(root):
        try:
            stat = path.stat()
        except FileNotFoundError:  # removed since the listing: the next tick sees it gone
            continue
        digest.update(f"{path.name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def newest_change(root: DataRoot) -> float | None:
    """Modification time (seconds since the epoch) of the most recently changed file the folder import reads,
    None when there is none: the sensor waits until a table being copied has stopped changing."""
    times = []
    for path in _watched_files(root):
        try:
            times.append(path.stat().st_mtime)
        except FileNotFoundError:
            continue
    return max(times, default=None)


def imported_sources(warehouse: Warehouse) -> pd.DataFrame:
    """Rows of ``feature_sources`` (one per imported source, by name); empty when nothing was imported."""
    columns = [
        "source",
        "file",
        "sha256",
        "id_column",
        "excluded",
        "n_patients",
        "n_features",
        "n_missing_values",
        "imported_at",
    ]
    try:
        return warehouse.query(f"SELECT {', '.join(columns)} FROM feature_sources ORDER BY source")
    except duckdb.CatalogException:
        return pd.DataFrame(columns=columns)


def imported_feature_rows(warehouse: Warehouse) -> pd.DataFrame:
    """Imported values in the long layout of table ``features`` (:data:`FEATURE_ROW_COLUMNS`), so the wide-matrix
    builder concatenates them with extracted features: modality ``TABLE``, roi the source, image_type
    ``imported``, feature_class ``table``; each source becomes the block ``TABLE__<source>``."""
    sql = f"""
        SELECT patient_id, '{IMPORTED_MODALITY}' AS modality, source AS roi, '{IMPORTED_IMAGE_TYPE}' AS image_type,
            '{IMPORTED_FEATURE_CLASS}' AS feature_class, feature, value
        FROM imported_features WHERE value IS NOT NULL ORDER BY source, patient_id, feature"""
    try:
        return warehouse.query(sql)
    except duckdb.CatalogException:  # a warehouse written before feature tables could be imported
        return pd.DataFrame({c: pd.Series(dtype="float64" if c == "value" else "str") for c in FEATURE_ROW_COLUMNS})


def _plan_folder(tables: list[Path]) -> tuple[dict[Path, ImportOptions], list[tuple[Path, str]]]:
    """Each table's options and source name, or why it cannot be imported; a name that two tables would share
    fails both (one would silently replace the other)."""
    planned: dict[Path, ImportOptions] = {}
    failed: list[tuple[Path, str]] = []
    for path in tables:
        try:
            options = read_import_options(path)
            source = check_source_name(options.source, path) if options.source else default_source_name(path)
            planned[path] = ImportOptions(options.id_column, options.exclude, source)
        except InputError as error:
            failed.append((path, str(error)))
    by_source: dict[str, list[Path]] = {}
    for path, options in planned.items():
        by_source.setdefault(options.source, []).append(path)
    for source, paths in by_source.items():
        if len(paths) > 1:
            for path in paths:
                others = ", ".join(p.name for p in paths if p != path)
                failed.append(
                    (
                        path,
                        _with_fix(
                            f"{path}: source name {source!r} is also that of {others}",
                            f"name each table's source apart: `source: <name>` in {sidecar_path(path).name}",
                        ),
                    )
                )
                del planned[path]
    return planned, sorted(failed)


def import_folder(root: DataRoot) -> tuple[list[ImportResult], list[tuple[Path, str]]]:
    """Import every table of ``feature_tables/`` (options from its sidecar) and remove the sources whose file
    left the folder: the folder is the source of truth of tables ``imported_features`` and ``feature_sources``.

    Returns the imports and the failed tables as (path, message); a failing table does not stop the others and
    keeps the rows of its previous import. Removed sources are logged; a source imported with
    :func:`import_feature_table` from a file outside the folder is removed too.
    """
    tables = feature_table_files(root)
    planned, failed = _plan_folder(tables)
    results = []
    for path, options in planned.items():
        try:
            results.append(_import(root, path, options, claim=True))
        except (InputError, OSError) as error:
            failed.append((path, str(error)))
    failed_files = {_recorded_file(root, path) for path, _ in failed}
    keep = {options.source for options in planned.values()}
    with Warehouse(root.warehouse).connect() as con:
        recorded = con.execute("SELECT source, file FROM feature_sources").fetchall()
        orphans = con.execute(
            "SELECT DISTINCT source FROM imported_features WHERE source NOT IN (SELECT source FROM feature_sources)"
        ).fetchall()
        keep |= {source for source, file in recorded if file in failed_files}  # unreadable options: keep the last
        stale = sorted(({source for source, _ in recorded} | {source for (source,) in orphans}) - keep)
        _delete_sources(con, stale)
    for source in stale:
        log.info("feature source %r removed: its file is no longer in %s", source, root.feature_tables)
    return results, sorted(failed)
