"""Everything an operator does in the UI, done headless: a `radiomics-assets run` that logs its failures, `status`
(each patient ok / failed with problem and fix / no mask, the last run, the model) and `export` (SEG and SR), on a
fresh data root with nothing else running; and seeds.csv for 2D images with or without a `z` column."""

import json
import os
import subprocess
import sys

import pydicom
import pytest

from radiomics_assets.errors import SeedFileError
from radiomics_assets.masks.autoseg import read_seeds
from radiomics_assets.paths import patient_key
from radiomics_assets.synth import SynthConfig, write_cohort

TINY = SynthConfig(n_patients=3, seed=5, rows=32, columns=32, slices=8)
CLI_TIMEOUT_S = 300


def _cli(root, tmp_path, *args):
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "dagster_home"), "RADIOMICS_WORKERS": "2"}
    command = [sys.executable, "-m", "radiomics_assets.cli", "--data-dir", str(root), *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=CLI_TIMEOUT_S, check=False)


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    """A fresh data root: three patients, one with a truncated slice and one without its RTSTRUCT; one `run`."""
    tmp_path = tmp_path_factory.mktemp("headless")
    root = tmp_path / "data"
    write_cohort(TINY, root)
    broken = sorted((root / "inbox" / "SYN-0002" / "CT").glob("*.dcm"))[3]
    broken.write_bytes(broken.read_bytes()[:200])
    for rtstruct in (root / "inbox" / "SYN-0003").rglob("RS*.dcm"):
        rtstruct.unlink()
    done = _cli(root, tmp_path, "run", "--no-cohort")
    return tmp_path, root, broken, done


def test_a_headless_run_writes_the_failure_log(ran):
    _, root, broken, done = ran
    assert done.returncode == 1, done.stdout + done.stderr
    (line,) = (root / "logs" / "failures.log").read_text().splitlines()
    record = json.loads(line)
    assert record["job"] == "ingest_patient" and record["partition"] == "SYN-0001...SYN-0003"
    assert record["failed_steps"] == ["patient_batch"]
    by_patient = {error.split(" ")[1]: error for error in record["errors"]}
    assert sorted(by_patient) == ["SYN-0002", "SYN-0003"], record["errors"]
    # The problem names the truncated file (the slice after it is reported first, as the gap it leaves).
    assert by_patient["SYN-0002"].startswith(f"patient_batch: SYN-0002 studies: {broken.parent}/")
    assert f"{broken}: incomplete DICOM header" in by_patient["SYN-0002"]
    assert by_patient["SYN-0002"].endswith(
        "; fix: copy the file again from its source (it is truncated or corrupt), or remove it from the inbox"
    )
    assert "SYN-0003 roi_masks: patient SYN-0003: no RTSTRUCT or DICOM-SEG" in by_patient["SYN-0003"]
    assert "; fix: add the patient's RTSTRUCT/DICOM-SEG" in by_patient["SYN-0003"]


def test_status_lists_each_patient_the_last_run_and_the_model(ran):
    tmp_path, root, broken, _ = ran
    done = _cli(root, tmp_path, "status")
    assert done.returncode == 1, done.stdout + done.stderr  # a patient failed
    lines = done.stdout.splitlines()
    assert lines[0].startswith("SYN-0001  ok: 107 features, extracted ")
    assert lines[1].startswith(f"SYN-0002  failed: at studies: {broken.parent}/") and broken.name in lines[1]
    assert (
        lines[2]
        == "    fix: copy the file again from its source (it is truncated or corrupt), or remove it from the inbox"
    )
    assert lines[3].startswith("SYN-0003  no mask: patient SYN-0003: no RTSTRUCT or DICOM-SEG in ")
    assert lines[4].startswith("    fix: add the patient's RTSTRUCT/DICOM-SEG (or <id>_mask file) to the inbox")
    assert "patients: 3 (1 ok, 1 failed, 1 no mask)" in lines
    (last_run,) = [line for line in lines if line.startswith("last run: ")]
    assert last_run.startswith("last run: ingest_patient failure started ")
    assert "model: none trained yet" in lines

    # A model in service (as the registry keeps it) is named with its cross-validated primary metric.
    version = root / "models" / "20261201T030000Z"
    version.mkdir(parents=True)
    card = {"cv_estimate": {"primary_metric": {"name": "auc", "value": 0.8771}}}
    (version / "model_card.json").write_text(json.dumps(card))
    (root / "models" / "current").write_text("20261201T030000Z\n")
    assert "model: 20261201T030000Z (auc 0.877, cross-validated)" in _cli(root, tmp_path, "status").stdout


def test_status_on_an_empty_data_root(tmp_path):
    done = _cli(tmp_path / "empty", tmp_path, "status")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[:3] == ["patients: 0 (none)", "last run: none recorded", "model: none trained yet"]
    assert not (tmp_path / "dagster_home").exists()  # looking creates no Dagster instance


def test_export_writes_the_sr_of_a_patient_to_the_folder(ran):
    tmp_path, root, _, _ = ran
    out = tmp_path / "out"
    done = _cli(root, tmp_path, "export", "SYN-0001", "SYN-0003", "--out", str(out))
    assert done.returncode == 1, done.stdout + done.stderr  # SYN-0003 has nothing to export
    assert "SYN-0003: nothing exported: no stored masks" in done.stdout
    (written,) = [line for line in done.stdout.splitlines() if line.startswith("SYN-0001: ")]
    assert written.startswith("SYN-0001: 0 SEG, 1 SR (") and written.endswith(f"-> {out / 'SYN-0001'}")
    (sr_path,) = sorted((out / "SYN-0001").glob("*.dcm"))
    assert sr_path.read_bytes() == next((root / "exports" / "SYN-0001").glob("*.dcm")).read_bytes()
    sr = pydicom.dcmread(sr_path)
    assert sr.Modality == "SR" and sr.PatientID == "SYN-0001"
    measurements = int(written.split("1 SR (")[1].split(" ")[0])
    assert measurements > 90  # the patient's features (107 rows, non-finite ones left out)


def test_seeds_csv_for_2d_images_with_or_without_a_z_column(tmp_path):
    without_z, with_z = tmp_path / "a.csv", tmp_path / "b.csv"
    without_z.write_text("patient_id,x,y\nbenign (3),90,70\nUS-1,12,5\n")
    with_z.write_text("patient_id,x,y,z,modality\nbenign (3),90,70,,\nCT-1,1.5,-2,30.25,ct\n")
    seeds = read_seeds(without_z)
    assert [(s.pixel, s.point_mm) for s in seeds[patient_key("benign (3)")]] == [((90, 70), None)]
    assert seeds["US-1"][0].pixel == (12, 5) and seeds["US-1"][0].source == f"{without_z}:3"
    both = read_seeds(with_z)
    assert [s.pixel for s in both[patient_key("benign (3)")]] == [(90, 70)]
    assert both["CT-1"][0].point_mm == (1.5, -2.0, 30.25) and both["CT-1"][0].modality == "CT"
    (tmp_path / "c.csv").write_text("patient_id,x\nA,1\n")
    with pytest.raises(SeedFileError, match=r"lacks column\(s\) \['y'\]; expected patient_id,x,y\[,z\]"):
        read_seeds(tmp_path / "c.csv")


def test_the_run_summary_lists_series_that_got_no_roi(ran):
    """A stored series without any ROI mask gets no features: the summary says which (issue 24), not only the
    failure log, so a PET beside a CT-only RTSTRUCT cannot pass unnoticed."""
    _, root, _, done = ran
    from radiomics_assets.paths import DataRoot
    from radiomics_assets.status import series_without_roi

    bare = series_without_roi(DataRoot(root))
    assert list(bare.patient_id) == ["SYN-0003"] and list(bare.modality) == ["CT"]
    assert "  series without an ROI (no features): 1: SYN-0003 CT\n" in done.stdout, done.stdout
