"""Errors an operator can act on: real bad inputs fail their patient with the file, the problem and the fix, in the
batch outcome, the run-failure sensor's log line and the CLI summary (``failure_log.with_fix``)."""

import json
from dataclasses import replace

import dagster as dg

from radiomics_assets import failure_log
from radiomics_assets.batch import PatientSettings, run_patients
from radiomics_assets.defs.partitions import patients
from radiomics_assets.defs.resources import RadiomicsConfig
from radiomics_assets.defs.sensors import run_failure_log
from radiomics_assets.masks.autoseg import AutoSegmentation
from radiomics_assets.masks.build import MaskOptions
from radiomics_assets.synth import SynthConfig, write_cohort

TINY = SynthConfig(n_patients=4, seed=5, rows=32, columns=32, slices=8)


def _settings(root, **mask_options) -> PatientSettings:
    return replace(RadiomicsConfig(data_dir=str(root)).patient_settings(), mask_options=MaskOptions(**mask_options))


def _failures(root, keys, settings) -> dict[str, str]:
    outcomes = run_patients(keys, {"studies", "roi_masks"}, settings, workers=1)
    return {outcome.key: failure_log.with_fix(outcome.error) for outcome in outcomes if outcome.error}


def test_real_bad_inputs_get_the_fix_that_applies(tmp_path):
    write_cohort(TINY, tmp_path)
    inbox = tmp_path / "inbox"
    truncated = sorted((inbox / "SYN-0001" / "CT").glob("*.dcm"))[3]
    truncated.write_bytes(truncated.read_bytes()[:200])
    missing = sorted((inbox / "SYN-0002" / "CT").glob("*.dcm"))[4]
    missing.unlink()
    (inbox / "SYN-0003" / "RTSTRUCT" / "RS.dcm").unlink()

    seeded = _settings(tmp_path, auto=AutoSegmentation(method="connected_threshold"))
    failures = _failures(tmp_path, ["SYN-0001", "SYN-0002", "SYN-0003", "SYN-0004"], seeded)
    assert set(failures) == {"SYN-0001", "SYN-0002", "SYN-0003"}, failures  # SYN-0004 is fine

    # A truncated slice also leaves a gap in its series: the corrupt file is named as the cause, and the fix.
    assert truncated.name in failures["SYN-0001"] and "incomplete DICOM header" in failures["SYN-0001"]
    assert failures["SYN-0001"].endswith(
        "; fix: copy the file again from its source (it is truncated or corrupt), or remove it from the inbox"
    ), failures["SYN-0001"]
    assert "a slice is missing" in failures["SYN-0002"]
    assert "fix: re-export the complete series" in failures["SYN-0002"], failures["SYN-0002"]
    assert "needs a seed" in failures["SYN-0003"] and "fix: add a seed for this patient" in failures["SYN-0003"]

    other_name = _failures(tmp_path, ["SYN-0004"], _settings(tmp_path, roi_pattern="PTV.*"))
    message = other_name["SYN-0004"]
    assert "RS.dcm: no ROI matches 'PTV.*' (ROIs present: ['GTV'])" in message, message
    assert "fix: set `roi_pattern`" in message
    assert failure_log.with_fix(message) == message  # applied once, wherever the line passes through again


def test_unknown_problems_get_no_made_up_fix():
    assert failure_log.fix_hint("KeyError: 'x' (at driver.py:12)") is None
    assert failure_log.with_fix("SYN-0001 features: KeyError: 'x'") == "SYN-0001 features: KeyError: 'x'"


def test_failure_sensor_line_and_ui_metadata_carry_the_fix(tmp_path, monkeypatch):
    """A real failed partition run: the batch step's failure metadata (what the UI shows) and the sensor's JSON
    line name the patient, the stage, the file, the problem and the fix."""
    data_root = tmp_path / "data"
    monkeypatch.setenv("RADIOMICS_DATA_DIR", str(data_root))
    write_cohort(replace(TINY, n_patients=1), data_root)
    broken = sorted((data_root / "inbox" / "SYN-0001" / "CT").glob("*.dcm"))[3]
    broken.write_bytes(broken.read_bytes()[:200])
    from radiomics_assets.definitions import defs

    with dg.DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions(patients.name, ["SYN-0001"])
        job = defs.resolve_job_def("ingest_patient")
        result = job.execute_in_process(partition_key="SYN-0001", instance=instance, raise_on_error=False)
        assert not result.success
        (failure,) = [event for event in result.all_events if event.is_step_failure]
        table = failure.step_failure_data.user_failure_data.metadata["failures"].value
        assert "| SYN-0001 | studies |" in table and broken.name in table and "copy the file again" in table, table
        context = dg.build_run_status_sensor_context(
            sensor_name="run_failure_log",
            dagster_instance=instance,
            dagster_run=result.dagster_run,
            dagster_event=result.get_run_failure_event(),
            resources={"radiomics": RadiomicsConfig(data_dir=str(data_root))},
        ).for_run_failure()
        run_failure_log(context)
    (error,) = json.loads((data_root / "logs" / "failures.log").read_text())["errors"]
    assert error.startswith("patient_batch: SYN-0001 studies: ") and broken.name in error, error
    assert error.endswith(
        "; fix: copy the file again from its source (it is truncated or corrupt), or remove it from the inbox"
    ), error


def test_every_broken_input_of_the_corpus_has_a_fix(tmp_path):
    """Each failure of the bad-input corpus (test_bad_input.CASES, run for real) comes with a non-empty fix; so do
    messages whose fix is written in their own last clause (PET, ultrasound, cine loops)."""
    from radiomics_assets_tests.test_bad_input import CASES, COHORT

    fixes = {}
    for breakage, stage, _ in CASES:
        root = tmp_path / breakage.__name__
        write_cohort(COHORT, root)
        breakage(root)
        (outcome,) = run_patients(["SYN-0002"], {"studies", "roi_masks"}, _settings(root, roi_pattern="GTV.*"), 1)
        assert outcome.failed_stage == stage, outcome.error
        fixes[breakage.__name__] = failure_log.fix_hint(outcome.error)
    assert all(fixes.values()), fixes
    assert fixes["truncated_pixels"].startswith("copy the file again from its source")
    assert fixes["empty_roi"].startswith("draw the lesion in the mask")
    assert fixes["contour_outside_image"].startswith("the RTSTRUCT was drawn on another series")

    inline = "x.dcm: a cine loop of 12 frames; choose one in <data root>/frames.csv (patient_id,frame)"
    assert failure_log.fix_hint(inline) == "choose one in <data root>/frames.csv (patient_id,frame)"
    assert failure_log.with_fix(inline) == inline  # the fix is there already: not repeated
    assert failure_log.fix_hint("SYN-0001 features: ValueError: bad thing; at step 3") is None
