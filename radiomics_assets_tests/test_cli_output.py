"""What `radiomics-assets run` shows people: one plain line per patient through a pipe, progress bars in a terminal,
then a summary whose numbers are the run's; Dagster's own event log goes to a file."""

import json
import os
import pty
import re
import select
import subprocess
import sys
from dataclasses import replace

import duckdb

from radiomics_assets.synth import SynthConfig, write_cohort
from radiomics_assets.terminal import headline_metrics

TINY = SynthConfig(n_patients=4, seed=5, rows=32, columns=32, slices=8)
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # anything but tab and newline
CLI_TIMEOUT_S = 300


def _command(root, *args):
    return [sys.executable, "-m", "radiomics_assets.cli", "--data-dir", str(root), "run", "--no-cohort", *args]


def _env(tmp_path, **extra):
    return {**os.environ, "DAGSTER_HOME": str(tmp_path / "dagster_home"), "RADIOMICS_WORKERS": "2", **extra}


def test_piped_run_prints_one_line_per_patient_and_a_true_summary(tmp_path):
    root = tmp_path / "data"
    write_cohort(TINY, root)
    broken = sorted((root / "inbox" / "SYN-0003" / "CT").glob("*.dcm"))[3]
    broken.write_bytes(broken.read_bytes()[:200])

    done = subprocess.run(
        _command(root), capture_output=True, text=True, env=_env(tmp_path), timeout=CLI_TIMEOUT_S, check=False
    )
    assert done.returncode == 1, done.stdout + done.stderr  # a patient failed: exit code as before
    out = done.stdout
    assert not CONTROL.search(out) and not CONTROL.search(done.stderr), repr(out)

    progress = re.findall(r"^\[(\d)/4\] (SYN-\d{4}) (ok: (\d+) features|FAILED at studies: .*) \(", out, re.M)
    assert sorted(p[1] for p in progress) == ["SYN-0001", "SYN-0002", "SYN-0003", "SYN-0004"], out
    assert [p[0] for p in progress] == ["1", "2", "3", "4"]  # counted in the order they finished
    (failed_line,) = [p[2] for p in progress if p[1] == "SYN-0003"]
    assert broken.name in failed_line and "fix: copy the file again" in failed_line, failed_line

    with duckdb.connect(str(root / "radiomics.duckdb"), read_only=True) as con:
        stored = dict(con.execute("SELECT patient_id, count(*) FROM features GROUP BY patient_id").fetchall())
    assert sorted(stored) == ["SYN-0001", "SYN-0002", "SYN-0004"]
    assert {p[1]: int(p[3]) for p in progress if p[3]} == stored
    assert re.search(r"^patient assets: 3 done, 1 failed of 4 in \d+\.\d s$", out, re.M), out
    assert "  patients materialised: 3 of 4\n" in out and "  patients failed: 1\n" in out
    assert f"  features per patient: {sorted(stored.values())[1]}" in out
    assert f"  FAILED SYN-0003 studies: {root / 'inbox'}" in out
    # Dagster's events are in the log file the summary names, not on the terminal.
    (log_path,) = re.findall(r"^  Dagster event log: (.*)$", out, re.M)
    log_text = open(log_path).read()
    materialised = re.findall(r" ASSET_MATERIALIZATION Materialized value features\. \(partition (\S+)\)", log_text)
    assert sorted(materialised) == sorted(stored), log_text[-2000:]
    assert "STEP_START" in log_text and "STEP_START" not in out + done.stderr and "DEBUG" not in out


def test_terminal_run_draws_progress_bars(tmp_path):
    root = tmp_path / "data"
    write_cohort(replace(TINY, n_patients=1), root)
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        _command(root),
        stdin=subprocess.DEVNULL,
        stdout=terminal,
        stderr=terminal,
        env=_env(tmp_path, TERM="xterm-256color", COLUMNS="120"),
    )
    os.close(terminal)
    screen = b""
    while True:
        ready, _, _ = select.select([controller], [], [], CLI_TIMEOUT_S)
        if not ready:
            process.kill()
            break
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # the terminal side closed: the CLI exited
            break
        if not chunk:
            break
        screen += chunk
    os.close(controller)
    assert process.wait(timeout=60) == 0, screen.decode(errors="replace")[-3000:]
    text = screen.decode(errors="replace")
    assert "\x1b[" in text  # drawn, not printed line by line
    assert "patient assets" in text and "━" in text and "1/1" in text and "0 failed" in text, text[-3000:]
    assert "[1/1] SYN-0001 ok" not in text  # the plain per-patient line is for pipes only
    assert "Summary" in text and "patients materialised" in text


def test_headline_metrics_reads_the_report(tmp_path):
    path = tmp_path / "metrics.json"
    assert headline_metrics(path) is None
    metrics = {"auc": 0.8123, "auc_ci_low": 0.70149, "auc_ci_high": 0.9133, "accuracy": 0.8, "f1": 0.7777}
    scheme = "nested CV: outer repeated stratified 5-fold x 2 (probabilities averaged), inner 3-fold grid search"
    path.write_text(json.dumps({**metrics, "n_patients": 30, "cv_scheme": scheme, "model": "logreg"}))
    assert headline_metrics(path) == (
        "AUC 0.812 (95% CI 0.701 to 0.913), accuracy 0.800, F1 0.778; 30 patients, "
        "nested CV: outer repeated stratified 5-fold x 2, model logreg"
    )
