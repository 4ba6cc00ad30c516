"""The report's PDF step never fails the report and never leaves a stale PDF: setting off, a browser that fails, a
browser that hangs (its whole process group is stopped). The print itself is tested on the real report in
``test_report_checklist.py`` (Chromium, A4 pages)."""

import os
import stat
import time

import pytest

from radiomics_assets.modelling import report_pdf


@pytest.fixture
def report(tmp_path):
    html = tmp_path / "report.html"
    html.write_text("<!doctype html><title>r</title><p>report</p>")
    stale = tmp_path / "report.pdf"
    stale.write_bytes(b"%PDF-1.4 from an earlier report")
    return html, stale


def _browser(tmp_path, body: str) -> str:
    path = tmp_path / "browser.sh"
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


@pytest.mark.parametrize("setting", ["off", "0", "OFF", "false"])
def test_off_writes_no_pdf_and_removes_the_stale_one(report, monkeypatch, setting):
    html, stale = report
    monkeypatch.setenv("RADIOMICS_REPORT_PDF", setting)
    outcome = report_pdf.print_report_pdf(html)
    assert outcome.path is None and f"RADIOMICS_REPORT_PDF={setting}" in outcome.note and not stale.exists()


def test_a_failing_browser_is_a_note_not_an_error(report, tmp_path, monkeypatch):
    html, stale = report
    monkeypatch.setenv("RADIOMICS_REPORT_PDF", _browser(tmp_path, "echo 'cannot open display' >&2; exit 3"))
    outcome = report_pdf.print_report_pdf(html)
    assert outcome.path is None and not stale.exists()
    assert "exit code 3: cannot open display" in outcome.note


def test_a_hung_browser_is_stopped_with_its_children(report, tmp_path, monkeypatch):
    html, stale = report
    pid_file = tmp_path / "child.pid"
    # The "browser" starts a helper process (as Chromium does) and both hang.
    script = f"sleep 300 & echo $! > {pid_file}; sleep 300"
    monkeypatch.setenv("RADIOMICS_REPORT_PDF", _browser(tmp_path, script))
    monkeypatch.setattr(report_pdf, "PRINT_TIMEOUT_S", 1.0)
    started = time.monotonic()
    outcome = report_pdf.print_report_pdf(html)
    assert time.monotonic() - started < 20 and outcome.path is None and not stale.exists()
    assert "no PDF within 1 s" in outcome.note
    child = int(pid_file.read_text())
    for _ in range(50):  # the killed helper may take a moment to go
        try:
            os.kill(child, 0)
            with open(f"/proc/{child}/stat") as fh:  # a zombie (killed, not yet reaped by init) counts as stopped
                if fh.read().split(")")[-1].split()[0] == "Z":
                    break
        except (ProcessLookupError, FileNotFoundError):
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"helper process {child} still running")
