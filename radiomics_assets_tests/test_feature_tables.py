"""Bring your own features: feature tables made elsewhere (CSV, .csv.gz, Parquet) imported as feature sources.

Real files, a real DuckDB warehouse and a real Dagster instance: what is read, what is refused (and the message
naming the file, the problem and the fix), what is stored with its provenance, and how the folder, the CLI, the
sensor and the asset keep the warehouse equal to ``feature_tables/``.
"""

import gzip
import hashlib
import os
import time

import dagster as dg
import duckdb
import pandas as pd
import pytest
import yaml

from radiomics_assets.cli import main
from radiomics_assets.defs.feature_table_assets import feature_tables_sensor, imported_features
from radiomics_assets.defs.resources import RadiomicsConfig
from radiomics_assets.errors import FileInputError
from radiomics_assets.failure_log import domain_error_message
from radiomics_assets.ingest import (
    folder_fingerprint,
    import_feature_table,
    import_folder,
    imported_feature_rows,
    read_feature_table,
)
from radiomics_assets.ingest.feature_tables import FEATURE_ROW_COLUMNS
from radiomics_assets.paths import DATA_DIR_ENV, DataRoot, patient_key
from radiomics_assets.warehouse import Warehouse, write_derived_table

# Values written as text and compared with float(text): the import must not round them.
VALUES = {
    "P1": ("0.1", "-2.5", "1e-300"),
    "AB 20": ("123456789.123456789", "0", "3.141592653589793"),
    "007": ("-0.0", "7", "2.2250738585072014e-308"),
}
COLUMNS = ("original_firstorder_Mean", "original_shape_Elongation", "wavelet-LLH_glcm_Idmn")


def _csv(path, header, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "\n".join([",".join(header), *(",".join(map(str, row)) for row in rows)]) + "\n"
    if path.name.endswith(".gz"):
        with gzip.open(path, "wt") as handle:
            handle.write(text)
    else:
        path.write_text(text)
    return path


def _feature_csv(path, values=VALUES, extra_header=(), extra=()):
    rows = [(pid, *cells, *extra) for pid, cells in values.items()]
    return _csv(path, ("patient_id", *COLUMNS, *extra_header), rows)


def _expected(values=VALUES) -> pd.DataFrame:
    table = pd.DataFrame(
        [[float(v) if v else float("nan") for v in cells] for cells in values.values()],
        index=pd.Index([patient_key(pid) for pid in values], name="patient_id"),
        columns=list(COLUMNS),
    )
    return table


def _stored(root, sql):
    with duckdb.connect(str(DataRoot(root).warehouse), read_only=True) as con:
        return con.execute(sql).df()


@pytest.fixture
def root(tmp_path):
    data = DataRoot(tmp_path / "data")
    data.path.mkdir()
    _csv(data.labels_csv, ("patient_id", "label"), [("P1", 0), ("AB 20", 1), ("007", 0), ("P4", 1), ("P5", 0)])
    return data


# --- reading -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["features.csv", "features.csv.gz"])
def test_csv_round_trip_keeps_every_value_exactly_and_maps_ids_to_patient_keys(tmp_path, name):
    path = _feature_csv(tmp_path / name)
    table = read_feature_table(path)
    assert patient_key("AB 20") != "AB 20" and patient_key("AB 20").startswith("AB_20-")  # hashed key
    assert list(table.index) == ["P1", patient_key("AB 20"), "007"]  # "007" stays text, not the number 7
    assert table.dtypes.eq("float64").all()
    pd.testing.assert_frame_equal(table, _expected(), check_exact=True)


def test_parquet_round_trip_through_duckdb(tmp_path):
    path = tmp_path / "mirp [v2].parquet"  # '[' would be a glob pattern to read_parquet
    with duckdb.connect() as con:
        con.execute(
            "CREATE TABLE t AS SELECT * FROM (VALUES (1, 0.1::DOUBLE, 7::INTEGER, 'text'), "
            "(2, -2.5::DOUBLE, NULL, 'more'), (30, 1e-300::DOUBLE, 9::INTEGER, 'x')) v(pid, mean, count, note)"
        )
        con.execute(f"COPY t TO '{path}' (FORMAT PARQUET)")
    table = read_feature_table(path, id_column="pid", exclude=["note"])
    assert list(table.index) == ["1", "2", "30"]
    assert table["mean"].tolist() == [0.1, -2.5, 1e-300]
    assert table["count"].iloc[0] == 7.0 and pd.isna(table["count"].iloc[1])


def test_exclude_takes_names_and_shell_patterns_like_pyradiomics_output(tmp_path):
    path = _feature_csv(
        tmp_path / "pyradiomics.csv",
        extra_header=("Image", "Mask", "diagnostics_Versions_PyRadiomics", "diagnostics_Mask-original_BoundingBox"),
        extra=("ct.nrrd", "mask.nrrd", "v3.1.0", '"(1, 2, 3)"'),
    )
    table = read_feature_table(path, exclude=["Image", "Mask", "diagnostics_*"])
    assert list(table.columns) == list(COLUMNS)


def test_double_underscore_in_a_column_name_becomes_one(tmp_path):
    path = _csv(tmp_path / "t.csv", ("patient_id", "glcm__Contrast", "shape___Volume"), [("P1", 1, 2)])
    assert list(read_feature_table(path).columns) == ["glcm_Contrast", "shape_Volume"]


def _refused(path, **options) -> str:
    with pytest.raises(FileInputError) as raised:
        read_feature_table(path, **options)
    message = str(raised.value)
    assert str(path) in message and "; fix: " in message
    return message


def test_missing_id_column_lists_the_columns_and_suggests_id_column(tmp_path):
    path = _csv(tmp_path / "t.csv", ("ID", "f1"), [("P1", 1)])
    message = _refused(path)
    assert "'patient_id'" in message and "'ID'" in message and "'f1'" in message and "--id-column" in message
    assert read_feature_table(path, id_column="ID").index.tolist() == ["P1"]


def test_non_numeric_columns_are_named_with_a_bad_value_and_the_exclude_fix(tmp_path):
    rows = [("P1", 1, "ct.nrrd", '"1,5"'), ("P2", 2, "b", 3)]
    message = _refused(_csv(tmp_path / "t.csv", ("patient_id", "f1", "Image", "f2"), rows))
    assert "'Image'" in message and "'ct.nrrd'" in message and "'f2'" in message and "'1,5'" in message
    assert "'f1'" not in message and "--exclude" in message


def test_a_row_with_more_fields_than_the_header_is_refused_not_shifted(tmp_path):
    # Unquoted, the decimal comma makes one field too many: pandas alone would shift the row into an index.
    message = _refused(_csv(tmp_path / "t.csv", ("patient_id", "f1", "f2"), [("P1", 1, 2), ("P2", 1, 5, 3)]))
    assert "line 3 holds 4 fields, more than the 3 columns" in message
    every_row = _refused(_csv(tmp_path / "a.csv", ("patient_id", "f1"), [("P1", 1, 5), ("P2", 1, 5)]))
    assert "line(s) 2, 3 hold more fields than the 2 columns" in every_row
    # A trailing delimiter (a column with neither name nor value) is not a column.
    assert list(read_feature_table(_csv(tmp_path / "e.csv", ("patient_id", "f1", ""), [("P1", 1, "")]))) == ["f1"]


def test_non_numeric_message_names_at_most_ten_columns(tmp_path):
    header = ("patient_id", *(f"text{i}" for i in range(12)))
    message = _refused(_csv(tmp_path / "t.csv", header, [("P1", *("x" * 12))]))
    assert "12 column(s)" in message and "'text9'" in message and "'text10'" not in message


def test_duplicate_patients_are_listed_also_when_two_ids_share_a_key(tmp_path):
    rows = [("P1", 1), ("P2", 2), ("P1", 3), ("AB 20", 4), (patient_key("AB 20"), 5)]
    message = _refused(_csv(tmp_path / "t.csv", ("patient_id", "f1"), rows))
    assert "P1" in message and patient_key("AB 20") in message and "'AB 20'" in message and "P2" not in message


def test_no_feature_columns(tmp_path):
    message = _refused(_csv(tmp_path / "t.csv", ("patient_id", "Image"), [("P1", "x")]), exclude=["Image"])
    assert "no feature columns" in message


def test_no_rows(tmp_path):
    assert "no rows" in _refused(_csv(tmp_path / "t.csv", ("patient_id", "f1"), []))


def test_infinite_values_name_their_columns(tmp_path):
    path = _csv(tmp_path / "t.csv", ("patient_id", "f1", "f2", "f3"), [("P1", 1, "inf", 2), ("P2", 2, 3, "-Infinity")])
    message = _refused(path)
    assert "infinite" in message and "'f2'" in message and "'f3'" in message and "'f1'" not in message


def test_empty_cells_are_allowed_but_a_column_without_any_value_is_not(tmp_path):
    path = _csv(tmp_path / "t.csv", ("patient_id", "f1", "f2"), [("P1", "", 1), ("P2", 2, "NaN")])
    table = read_feature_table(path)
    assert int(table.isna().sum().sum()) == 2
    empty = _csv(tmp_path / "e.csv", ("patient_id", "f1", "Unused"), [("P1", 1, ""), ("P2", 2, "")])
    assert "'Unused'" in _refused(empty)


def test_names_that_would_be_one_matrix_column_are_refused(tmp_path):
    message = _refused(_csv(tmp_path / "t.csv", ("patient_id", "a__b", "a_b"), [("P1", 1, 2)]))
    assert "'a__b' and 'a_b'" in message
    # DuckDB column names ignore case: the wide table could not hold both.
    assert "'Age' and 'age'" in _refused(_csv(tmp_path / "c.csv", ("patient_id", "Age", "age"), [("P1", 1, 2)]))


def test_an_exclude_that_matches_nothing_is_a_typo(tmp_path):
    message = _refused(_feature_csv(tmp_path / "t.csv"), exclude=["Imgae"])
    assert "'Imgae'" in message and "matches no column" in message


def test_unreadable_files_are_refused_with_their_name(tmp_path):
    (tmp_path / "broken.parquet").write_bytes(b"not parquet")
    assert "unreadable Parquet" in _refused(tmp_path / "broken.parquet")
    (tmp_path / "broken.csv.gz").write_bytes(b"not gzip")
    assert "unreadable CSV" in _refused(tmp_path / "broken.csv.gz")
    (tmp_path / "empty.csv").write_text("")
    assert "empty" in _refused(tmp_path / "empty.csv")


# --- importing into the warehouse ----------------------------------------------------------------------------


def test_import_stores_values_and_provenance_with_notes_on_labels(root, tmp_path):
    values = {**VALUES, "NEW 1": ("1", "", "2")}
    path = _feature_csv(tmp_path / "Study A (2021).csv", values)
    result = import_feature_table(root, path)
    assert result.source == "Study_A_2021"
    assert result.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert (result.n_patients, result.n_features, result.n_missing_values) == (4, 3, 1)
    notes = "\n".join(result.notes)
    assert f"1 of 4 patients are not in labels.csv ({patient_key('NEW 1')})" in notes  # scored as unlabelled
    assert "2 patient(s) of labels.csv are not in this table" in notes  # P4, P5
    assert "1 empty values" in notes

    stored = _stored(root.path, "SELECT * FROM imported_features")
    assert len(stored) == 4 * 3 - 1  # an empty cell is not a row
    assert set(stored.source) == {"Study_A_2021"} and set(stored.source_hash) == {result.sha256}
    wide = stored.pivot(index="patient_id", columns="feature", values="value")
    expected = _expected(values)
    pd.testing.assert_frame_equal(
        wide.loc[expected.index, list(COLUMNS)], expected, check_exact=True, check_names=False
    )
    (source,) = _stored(root.path, "SELECT * FROM feature_sources").to_dict("records")
    assert source["file"] == str(path.resolve()) and source["sha256"] == result.sha256
    assert (source["n_patients"], source["n_features"], source["n_missing_values"]) == (4, 3, 1)
    assert source["id_column"] == "patient_id" and source["excluded"] == ""
    assert source["imported_at"] == result.imported_at


def test_without_labels_csv_there_are_no_label_notes(tmp_path):
    root = DataRoot(tmp_path)
    result = import_feature_table(root, _feature_csv(tmp_path / "t.csv"))
    assert not any("labels.csv" in note for note in result.notes)


def test_reimport_replaces_its_source_and_keeps_the_others(root, tmp_path):
    first = import_feature_table(root, _feature_csv(tmp_path / "a.csv"))
    other = import_feature_table(root, _feature_csv(tmp_path / "b.csv"))
    fewer = {"P1": ("9.5", "8.5", "7.5"), "007": ("1", "2", "3")}
    again = import_feature_table(root, _feature_csv(tmp_path / "a.csv", fewer))
    assert again.sha256 != first.sha256 and again.n_patients == 2
    a = _stored(root.path, "SELECT * FROM imported_features WHERE source = 'a'")
    assert sorted(a.patient_id.unique()) == ["007", "P1"]
    assert a.set_index(["patient_id", "feature"]).value[("P1", COLUMNS[0])] == 9.5
    assert (a.source_hash == again.sha256).all()
    b = _stored(root.path, "SELECT * FROM imported_features WHERE source = 'b'")
    assert len(b) == 9 and (b.source_hash == other.sha256).all()
    sources = _stored(root.path, "SELECT source, sha256, n_patients FROM feature_sources ORDER BY source")
    assert sources.values.tolist() == [["a", again.sha256, 2], ["b", other.sha256, 3]]


def test_an_unchanged_table_keeps_its_rows_and_import_time(root, tmp_path):
    path = _feature_csv(tmp_path / "a.csv")
    first = import_feature_table(root, path)
    again = import_feature_table(root, path)
    assert again.imported_at == first.imported_at and again.sha256 == first.sha256
    assert _stored(root.path, "SELECT DISTINCT imported_at FROM imported_features").imported_at.tolist() == [
        pd.Timestamp(first.imported_at)
    ]
    other_options = import_feature_table(root, path, exclude=[COLUMNS[2]])  # the same bytes read otherwise
    assert other_options.imported_at > first.imported_at and other_options.n_features == 2
    assert len(_stored(root.path, "SELECT * FROM imported_features")) == 6


def test_a_source_name_is_one_file(root, tmp_path):
    import_feature_table(root, _feature_csv(tmp_path / "a.csv"))
    with pytest.raises(FileInputError, match="source 'a' is already imported from"):
        import_feature_table(root, _feature_csv(tmp_path / "b.csv"), source="a")
    with pytest.raises(FileInputError, match="'bad__name' is not usable"):
        import_feature_table(root, tmp_path / "a.csv", source="bad__name")
    renamed = import_feature_table(root, tmp_path / "a.csv", source="study_a")  # the same file, a new name
    assert any("source 'a'" in note for note in renamed.notes)
    assert _stored(root.path, "SELECT DISTINCT source FROM imported_features").source.tolist() == ["study_a"]


def test_imported_feature_rows_have_the_layout_of_extracted_features(root, tmp_path):
    warehouse = Warehouse(root.warehouse)
    empty = imported_feature_rows(warehouse)
    assert list(empty.columns) == FEATURE_ROW_COLUMNS and empty.empty
    import_feature_table(root, _feature_csv(tmp_path / "radiomics_v1.csv"))
    rows = imported_feature_rows(warehouse)
    assert list(rows.columns) == FEATURE_ROW_COLUMNS and len(rows) == 9
    assert set(rows.modality) == {"TABLE"} and set(rows.roi) == {"radiomics_v1"}
    assert set(rows.image_type) == {"imported"} and set(rows.feature_class) == {"table"}
    assert set(rows.feature) == set(COLUMNS)
    extracted = warehouse.query("SELECT * FROM features")
    assert set(FEATURE_ROW_COLUMNS) <= set(extracted.columns)  # the same names as table features


def test_imported_sources_are_blocks_of_the_feature_matrix(root, tmp_path):
    from radiomics_assets.modelling.matrix import build_feature_matrix

    warehouse = Warehouse(root.warehouse)
    write_derived_table(warehouse, "labels", pd.DataFrame({"patient_id": ["P1", "007"], "label": [0, 1]}))
    import_feature_table(root, _feature_csv(tmp_path / "mirp.csv"))
    matrix, _ = build_feature_matrix(warehouse)
    column = f"TABLE__mirp__imported__table__{COLUMNS[0]}"
    assert column in matrix.columns and matrix.loc["P1", column] == 0.1
    assert matrix.loc[patient_key("AB 20")].isna()["label"]  # in the table, not labelled: kept, unlabelled


# --- the folder ----------------------------------------------------------------------------------------------


def test_import_folder_imports_the_good_tables_reports_the_bad_and_removes_stale_sources(root):
    folder = root.feature_tables
    _feature_csv(folder / "good.csv")
    _csv(folder / "bad.csv", ("patient_id", "f1"), [("P1", "oops")])
    _csv(folder / "by_id.csv.gz", ("ID", "f1", "Image"), [("P1", 1, "x"), ("P2", 2, "y")])
    (folder / "by_id.csv.gz.import.yaml").write_text("id_column: ID\nexclude: [Image]\nsource: byid\n")
    _csv(folder / "typo.csv", ("patient_id", "f1"), [("P1", 1)])
    (folder / "typo.csv.import.yaml").write_text("id_colum: ID\n")
    (folder / "nested").mkdir()
    _feature_csv(folder / "nested" / "ignored.csv")  # not recursive

    results, failures = import_folder(root)
    assert sorted(r.source for r in results) == ["byid", "good"]
    failed = dict(failures)
    assert sorted(path.name for path in failed) == ["bad.csv", "typo.csv"]
    assert "'oops'" in failed[folder / "bad.csv"]
    assert "'id_colum'" in failed[folder / "typo.csv"] and "typo.csv.import.yaml" in failed[folder / "typo.csv"]
    sources = _stored(root.path, "SELECT source, file, id_column, excluded FROM feature_sources ORDER BY source")
    assert sources.values.tolist() == [
        ["byid", "feature_tables/by_id.csv.gz", "ID", "Image"],
        ["good", "feature_tables/good.csv", "patient_id", ""],
    ]

    (folder / "good.csv").unlink()
    results, failures = import_folder(root)
    assert [r.source for r in results] == ["byid"] and len(failures) == 2
    assert _stored(root.path, "SELECT DISTINCT source FROM imported_features").source.tolist() == ["byid"]
    assert _stored(root.path, "SELECT source FROM feature_sources").source.tolist() == ["byid"]


def test_two_tables_with_one_source_name_both_fail(root):
    _feature_csv(root.feature_tables / "t.csv")
    _feature_csv(root.feature_tables / "t.parquet.csv")
    (root.feature_tables / "t.parquet.csv.import.yaml").write_text("source: t\n")
    results, failures = import_folder(root)
    assert results == [] and len(failures) == 2
    assert all("source name 't'" in message for _, message in failures)


# --- the CLI -------------------------------------------------------------------------------------------------


def test_cli_copies_writes_the_sidecar_and_imports(root, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(DATA_DIR_ENV, str(root.path))  # main() sets it; monkeypatch restores it
    path = _feature_csv(tmp_path / "elsewhere" / "pyrad.csv", extra_header=("Image",), extra=("ct.nrrd",))
    code = main(["--data-dir", str(root.path), "import-features", str(path), "--exclude", "Image", "--name", "pyr"])
    out = capsys.readouterr().out
    assert code == 0
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    assert f"imported pyr: 3 patients, 3 features, 0 missing values, sha256 {sha[:12]}" in out
    assert "note: 2 patient(s) of labels.csv are not in this table" in out
    copied = root.feature_tables / "pyrad.csv"
    assert copied.read_bytes() == path.read_bytes()
    sidecar = yaml.safe_load((root.feature_tables / "pyrad.csv.import.yaml").read_text())
    assert sidecar == {"exclude": ["Image"], "source": "pyr"}
    # The folder import (the asset) reads it as the CLI did.
    results, failures = import_folder(root)
    assert failures == [] and [(r.source, r.sha256) for r in results] == [("pyr", sha)]


def test_cli_takes_a_published_tables_outcome_into_labels_csv(tmp_path, capsys, monkeypatch):
    """A published table (radMLBench style: ``<table>.gz``, gzip CSV with ``ID``, ``Target`` and the features) is
    imported as it comes: ``--outcome Target`` writes labels.csv and a binary study.yaml instead of a feature."""
    from radiomics_assets.modelling.study import load_outcomes, load_study

    root = DataRoot(tmp_path / "data")
    monkeypatch.setenv(DATA_DIR_ENV, str(root.path))
    rows = [("S1", 0, 0.5, 1.5), ("S2", 1, 0.25, 2.5), ("S3", 1, 0.125, 3.5), ("S4", 0, 1.0, 4.5)]
    table = _csv(tmp_path / "published" / "Study2024.gz", ("ID", "Target", "f1", "f2"), rows)
    command = ["--data-dir", str(root.path), "import-features", str(table), "--id-column", "ID", "--outcome", "Target"]
    assert main(command) == 0
    out = capsys.readouterr().out
    assert "imported Study2024: 4 patients, 2 features" in out and "labels.csv" in out and "binary" in out
    assert root.labels_csv.read_text() == "patient_id,Target\nS1,0\nS2,1\nS3,1\nS4,0\n"
    assert yaml.safe_load((root.path / "study.yaml").read_text()) == {"outcome": {"type": "binary", "column": "Target"}}
    outcomes = load_outcomes(root, load_study(root)).table.set_index("patient_id").label
    assert outcomes.to_dict() == {"S1": 0, "S2": 1, "S3": 1, "S4": 0}
    # The folder import reads the copy (a .gz is a gzip CSV) with its sidecar: Target is never a feature.
    (result,), failures = import_folder(root)
    assert failures == [] and (result.source, result.n_features) == ("Study2024", 2)
    assert main(command) == 0  # the same table again: labels.csv already says the same
    # Other patients, other columns, another row order: labels.csv still holds this table's outcome, and is kept.
    kept = "patient_id,cohort,Target\nS9,train,1\nS4,test,0\nS3,train,1\nS2,train,1\nS1,train,0\n"
    root.labels_csv.write_text(kept)
    assert main(command) == 0 and root.labels_csv.read_text() == kept
    root.labels_csv.write_text("patient_id,Target\nS1,1\nS2,1\nS3,1\nS4,0\n")  # S1 says otherwise: refused
    assert main(command) == 2
    error = capsys.readouterr().err
    assert f"{root.labels_csv} exists and does not hold the outcome Target" in error and "--exclude Target" in error
    assert main([*command[:-1], "Outcome"]) == 2
    assert f"{table}: no outcome column 'Outcome'" in capsys.readouterr().err
    assert main([*command[:-1], "ID"]) == 2
    assert f"{table}: the ID column 'ID' cannot be an outcome" in capsys.readouterr().err


def test_cli_writes_no_study_it_cannot_read_and_takes_only_name_dot_gz_as_a_table(tmp_path, capsys, monkeypatch):
    """Cells are taken without surrounding spaces (a re-import finds labels.csv equal); 1.0/0.0 do not say which class
    is 1, so no study.yaml is written; ``notes.txt.gz`` or ``backup.tar.gz`` in the folder are not tables."""
    root = DataRoot(tmp_path / "data")
    monkeypatch.setenv(DATA_DIR_ENV, str(root.path))
    rows = [("S1", "1.0 ", 0.5), ("S2", " 0.0", 0.25), ("S3", "1.0", 0.125)]
    table = _csv(tmp_path / "published" / "Floats.gz", ("ID", "Target", "f1"), rows)
    command = ["--data-dir", str(root.path), "import-features", str(table), "--id-column", "ID", "--outcome", "Target"]
    assert main(command) == 0
    out = capsys.readouterr().out
    assert root.labels_csv.read_text() == "patient_id,Target\nS1,1.0\nS2,0.0\nS3,1.0\n"
    assert not (root.path / "study.yaml").exists() and "note: no " in out and "positive" in out
    assert main(command) == 0
    for name in ("notes.txt.gz", "backup.tar.gz"):
        (root.feature_tables / name).write_bytes(gzip.compress(b"not,a\ntable,1\n"))
    (result,), failures = import_folder(root)
    assert failures == [] and result.source == "Floats"


def test_cli_refuses_a_bad_table_and_a_different_file_of_the_same_name(root, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(DATA_DIR_ENV, str(root.path))
    bad = _csv(tmp_path / "bad.csv", ("ID", "f1"), [("P1", 1)])
    assert main(["import-features", str(bad), "--data-dir", str(root.path)]) == 2
    error = capsys.readouterr().err
    assert str(bad) in error and "--id-column" in error
    assert not (root.feature_tables / "bad.csv").exists()  # refused tables never reach the watched folder

    first = _feature_csv(tmp_path / "one" / "t.csv")
    second = _feature_csv(tmp_path / "two" / "t.csv", {"P1": ("1", "2", "3")})
    assert main(["--data-dir", str(root.path), "import-features", str(first)]) == 0
    assert main(["--data-dir", str(root.path), "import-features", str(second)]) == 2
    assert "--replace" in capsys.readouterr().err
    assert (root.feature_tables / "t.csv").read_bytes() == first.read_bytes()
    assert main(["--data-dir", str(root.path), "import-features", str(second), "--replace"]) == 0
    assert _stored(root.path, "SELECT n_patients FROM feature_sources WHERE source = 't'").n_patients.tolist() == [1]
    assert not (root.feature_tables / "t.csv.import.yaml").exists()  # default options: no sidecar
    assert [p.name for p in root.feature_tables.iterdir()] == ["t.csv"]  # no temporary copies left


# --- Dagster: the sensor and the asset -----------------------------------------------------------------------


def test_sensor_requests_a_run_when_the_folder_changes(root):
    resources = {"radiomics": RadiomicsConfig(data_dir=str(root.path), inbox_settle_seconds=0)}
    with dg.instance_for_test() as instance:

        def tick(cursor=None):
            return feature_tables_sensor(dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources))

        nothing = tick()
        assert not nothing.run_requests and "no feature tables" in nothing.skip_reason.skip_message
        table = _feature_csv(root.feature_tables / "a.csv")
        first = tick(nothing.cursor)
        (request,) = first.run_requests
        assert folder_fingerprint(root) in request.run_key
        unchanged = tick(first.cursor)
        assert not unchanged.run_requests and "unchanged" in unchanged.skip_reason.skip_message
        _feature_csv(table, {"P1": ("1", "2", "3")})
        os.utime(table, ns=(time.time_ns(), time.time_ns() + 1_000_000))  # a new mtime even on coarse clocks
        changed = tick(first.cursor)
        (again,) = changed.run_requests
        assert again.run_key != request.run_key and folder_fingerprint(root) in again.run_key

        settling = {"radiomics": RadiomicsConfig(data_dir=str(root.path), inbox_settle_seconds=3600)}
        (root.feature_tables / "b.csv").write_text("patient_id,f1\nP1,1\n")
        waiting = feature_tables_sensor(
            dg.build_sensor_context(instance=instance, cursor=changed.cursor, resources=settling)
        )
        assert not waiting.run_requests and "inbox_settle_seconds" in waiting.skip_reason.skip_message


def _materialise(root):
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [imported_features],
            resources={"radiomics": RadiomicsConfig(data_dir=str(root.path))},
            instance=instance,
            raise_on_error=False,
        )
        failures = [event for event in result.all_events if event.is_step_failure]
    return result, failures


def test_asset_imports_the_folder_and_fails_naming_the_bad_file_after_the_good_ones_landed(root):
    result, _ = _materialise(root)
    assert result.success
    (event,) = result.get_asset_materialization_events()
    assert event.materialization.metadata["status"].value == "no feature tables"

    _feature_csv(root.feature_tables / "good.csv")
    result, _ = _materialise(root)
    assert result.success
    metadata = {k: v.value for k, v in result.get_asset_materialization_events()[0].materialization.metadata.items()}
    assert metadata["n_sources"] == 1 and metadata["n_patients"] == 3
    assert "| good | 3 | 3 |" in metadata["sources"]

    _csv(root.feature_tables / "bad.csv", ("patient_id", "f1"), [("P1", "oops")])
    result, failures = _materialise(root)
    assert not result.success
    (failure,) = failures
    message = domain_error_message(failure.event_specific_data.error)  # what the failure log and the CLI show
    assert message.startswith(f"{root.feature_tables / 'bad.csv'}: 1 column(s) are not numeric: 'f1' ('oops'")
    assert "; fix: " in message
    assert failure.event_specific_data.user_failure_data.metadata["n_failed"].value == 1
    assert _stored(root.path, "SELECT source FROM feature_sources").source.tolist() == ["good"]


def test_definitions_hold_the_asset_its_job_and_a_running_sensor():
    from radiomics_assets.definitions import defs

    sensor = defs.resolve_sensor_def("feature_tables_sensor")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING and sensor.minimum_interval_seconds == 30
    assert sensor.job_name == "import_feature_tables"
    job_assets = defs.resolve_job_def("import_feature_tables").asset_layer.executable_asset_keys
    assert job_assets == {dg.AssetKey("imported_features")}
    assert dg.AssetKey("imported_features") in defs.resolve_job_def("retrain_cohort").asset_layer.executable_asset_keys
    node = defs.resolve_asset_graph().get(dg.AssetKey("imported_features"))
    assert node.group_name == "modelling" and set(node.kinds) == {"csv", "duckdb"}
