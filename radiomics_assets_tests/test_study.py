"""study.yaml and labels.csv: the outcome is typed, the positive class explicit, and every error names the file and
the key."""

import numpy as np
import pandas as pd
import pytest

from radiomics_assets.modelling.study import (
    CLINICAL_PREFIX,
    OutcomeType,
    Predictors,
    StudyError,
    load_outcomes,
    load_study,
)
from radiomics_assets.paths import DataRoot


def _root(tmp_path, labels: str, study: str | None = None, clinical: str | None = None) -> DataRoot:
    (tmp_path / "labels.csv").write_text(labels)
    (tmp_path / "study.yaml").unlink(missing_ok=True)
    if study is not None:
        (tmp_path / "study.yaml").write_text(study)
    if clinical is not None:
        (tmp_path / "clinical.csv").write_text(clinical)
    return DataRoot(tmp_path)


SURVIVAL_STUDY = """
outcome:
  type: survival
  time: time_to_event
  event: event
  unit: months
  horizons: [24, 12, 36]
covariates:
  numeric: [age]
  categorical: [sex, grade]
"""


def test_the_issue_keys_work_as_written(tmp_path):
    root = _root(
        tmp_path,
        "patient_id,time_to_event,event,age,sex,grade\nP1,10.5,1,60,M,G2\nP2,30,0,,F,G1\nP3,,1,50,M,G3\nP4,5,1,70,,\n",
        SURVIVAL_STUDY,
    )
    study = load_study(root)
    assert study.task == OutcomeType.survival and study.outcome.unit == "months"
    assert study.outcome.horizons == (12.0, 24.0, 36.0)  # sorted
    assert study.covariates.numeric == ("age",) and study.covariates.categorical == ("sex", "grade")
    assert study.predictors == Predictors.compare  # the default when covariates exist
    outcomes = load_outcomes(root, study)
    table = outcomes.table.set_index("patient_id")
    # A missing outcome excludes the patient from analysis with a note; the row stays (for predictions).
    assert [e["patient_id"] for e in outcomes.excluded] == ["P3"] and "time_to_event" in outcomes.excluded[0]["reason"]
    assert table.loc["P1", "time"] == 10.5 and table.loc["P1", "event"] == 1 and table.loc["P2", "event"] == 0
    assert np.isnan(table.loc["P3", "time"])
    assert np.isnan(table.loc["P2", CLINICAL_PREFIX + "age"]) and table.loc["P1", CLINICAL_PREFIX + "age"] == 60
    assert pd.isna(table.loc["P4", CLINICAL_PREFIX + "sex"]) and table.loc["P2", CLINICAL_PREFIX + "sex"] == "F"


@pytest.mark.parametrize(
    ("names", "positive"),
    [
        (("0", "1"), "1"),
        (("no", "yes"), "yes"),
        (("False", "True"), "True"),
        (("benign", "Malignant"), "Malignant"),  # case-sensitive sorting once made benign the positive class
        (("Malignant", "benign"), "Malignant"),
        (("alive", "dead"), "dead"),
    ],
)
def test_without_study_yaml_the_positive_class_is_explicit_in_the_data(tmp_path, names, positive):
    rows = "".join(f"P{i},{names[i % 2]}\n" for i in range(6))
    root = _root(tmp_path, "patient_id,label\n" + rows)
    outcomes = load_outcomes(root, load_study(root))
    table = outcomes.table
    assert outcomes.classes[1] == positive
    assert (table.label == (table.label_name == positive).astype(int)).all()


def test_two_unknown_class_names_ask_for_positive(tmp_path):
    root = _root(tmp_path, "patient_id,label\nP1,luminal\nP2,basal\n")
    with pytest.raises(StudyError, match=r"labels\.csv.*which is the positive class.*positive:"):
        load_outcomes(root, load_study(root))
    (tmp_path / "study.yaml").write_text("outcome: {type: binary, column: label, positive: BASAL}\n")
    outcomes = load_outcomes(root, load_study(root))  # case-insensitive
    assert outcomes.classes == ("luminal", "basal") and list(outcomes.table.label) == [0, 1]


@pytest.mark.parametrize(
    ("study", "message"),
    [
        ("outcome: {type: ordinal}\n", r"study\.yaml: key 'outcome\.type' must be one of"),
        ("outcomes: {type: binary}\n", r"study\.yaml: unknown key\(s\) \['outcomes'\]"),
        ("outcome: {type: binary, horizons: [12]}\n", r"study\.yaml: key\(s\) \['outcome\.horizons'\] do not apply"),
        ("outcome: {type: survival, horizons: [-1]}\n", r"study\.yaml: key 'outcome\.horizons' must hold times > 0"),
        ("outcome: {type: binary}\npredictors: both\n", r"study\.yaml: key 'predictors' is 'both' but no covariates"),
        ("outcome: {type: binary}\npredictors: all\n", r"study\.yaml: key 'predictors' must be one of"),
        ("outcome: {type: binary}\ncovariates: {numeric: [label]}\n", r"outcome column\(s\) \['label'\] cannot also"),
        ("outcome: [binary]\n", r"study\.yaml: key 'outcome' must be a mapping"),
        ("outcome: {type: binary\n", r"study\.yaml: not valid YAML"),
    ],
)
def test_study_errors_name_the_file_and_the_key(tmp_path, study, message):
    root = _root(tmp_path, "patient_id,label\nP1,0\nP2,1\n", study)
    with pytest.raises(StudyError, match=message):
        load_study(root)


def test_labels_errors_name_the_file_and_the_column(tmp_path):
    root = _root(tmp_path, "patient_id,time,event\nP1,12,1\nP2,0,0\n", "outcome: {type: survival, time: time}\n")
    with pytest.raises(StudyError, match=r"labels\.csv: column 'time' must hold follow-up times > 0 \(patient P2\)"):
        load_outcomes(root, load_study(root))
    root = _root(tmp_path, "patient_id,time,event\nP1,12,2\n", "outcome: {type: survival, time: time}\n")
    with pytest.raises(StudyError, match=r"column 'event' must hold 1 \(event\) or 0 \(censored\)"):
        load_outcomes(root, load_study(root))
    root = _root(tmp_path, "patient_id,label\nP1,1\nP1,0\n")
    with pytest.raises(StudyError, match=r"patient\(s\) appear more than once with different values: P1 \(lines 2, 3"):
        load_outcomes(root, load_study(root))
    root = _root(tmp_path, "patient_id,label\nP1,a\nP2,b\nP3,c\n")
    with pytest.raises(StudyError, match=r"must hold two classes.*type: multiclass"):
        load_outcomes(root, load_study(root))
    root = _root(tmp_path, "patient_id,value\nP1,1.5\nP2,high\n", "outcome: {type: continuous, column: value}\n")
    with pytest.raises(StudyError, match=r"column 'value' must hold numbers; 'high'"):
        load_outcomes(root, load_study(root))


def test_multiclass_codes_follow_the_declared_order(tmp_path):
    root = _root(
        tmp_path,
        "patient_id,grade\nP1,G3\nP2,G1\nP3,G2\nP4,G1\n",
        "outcome: {type: multiclass, column: grade, classes: [G1, G2, G3]}\n",
    )
    outcomes = load_outcomes(root, load_study(root))
    assert list(outcomes.table.label) == [2, 0, 1, 0] and outcomes.classes == ("G1", "G2", "G3")


def test_covariates_may_come_from_clinical_csv(tmp_path):
    root = _root(
        tmp_path,
        "patient_id,label\nP 1,malignant\nP2,benign\n",
        "outcome: {type: binary, positive: malignant}\ncovariates: {numeric: [age], categorical: [stage]}\n",
        clinical="patient_id,age,stage\nP 1,61,II\nP2,48,\n",
    )
    outcomes = load_outcomes(root, load_study(root))
    table = outcomes.table.set_index("patient_id")
    key = table.index[0]
    assert key.startswith("P_1-")  # the sanitised partition key, the same one labels.csv gets
    assert table.loc[key, CLINICAL_PREFIX + "age"] == 61 and table.loc[key, CLINICAL_PREFIX + "stage"] == "II"
    assert pd.isna(table.loc["P2", CLINICAL_PREFIX + "stage"])
    (tmp_path / "clinical.csv").unlink()
    with pytest.raises(StudyError, match=r"covariate column\(s\) \['age', 'stage'\] are in neither"):
        load_outcomes(root, load_study(root))
