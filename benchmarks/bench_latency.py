"""Benchmark: latency from a study landing in the inbox to its features being queryable in DuckDB, through
the real `dagster dev` daemon (the path operators use: sensor, run queue, run worker).

What is measured
----------------
`dagster dev` (webserver, daemon, code server; the shipped ``dagster_instance.yaml``) is started on a free
127.0.0.1 port with a temporary data root and DAGSTER_HOME. Then N synthetic studies (real DICOM CT + RTSTRUCT,
``radiomics_assets.synth``) are written into the inbox one at a time; the next is written only after the
previous one's features are queryable. For each study:

- landed: wall-clock time just after its last file (the RTSTRUCT) is written;
- queryable: first time ``SELECT count(*) FROM features WHERE patient_id = ?`` returns rows (polled every
  0.5 s through ``Warehouse``, i.e. under the same file lock as the pipeline's writers, so polling never makes
  a run fail on DuckDB's lock);
- latency = queryable - landed, split with the run's GraphQL times into: sensor (landed -> run created:
  waiting for a tick, the settle time, then a second tick), queue (created -> started: run coordinator and
  process launch) and run (started -> queryable: the run worker ingests, extracts and commits the rows).

The sensor interval and settle time set the floor: a study is requested once its files were unchanged on two
ticks and are older than the settle time, so expect roughly settle + 1 to 2 intervals before the run exists.

How to run
----------
    .venv/bin/python benchmarks/bench_latency.py --studies 3
    .venv/bin/python benchmarks/bench_latency.py --studies 5 --settle-seconds 5 --keep /tmp/latency
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from radiomics_assets.dagster_dev import running_dagster_dev
from radiomics_assets.paths import patient_key
from radiomics_assets.synth import SynthConfig, write_patient
from radiomics_assets.warehouse import Warehouse

SETTLE_ENV = "RADIOMICS_INBOX_SETTLE_SECONDS"
RUNS_QUERY = """
query PartitionRuns($filter: RunsFilter) {
  runsOrError(filter: $filter) {
    __typename
    ... on Runs { results { runId status creationTime startTime endTime } }
  }
}
"""


def sensor_settings(settle_override: float | None) -> tuple[int | None, float | None]:
    """The inbox sensor's minimum interval and the settle time the code location will use."""
    if settle_override is not None:  # read when the definitions load, here and in dagster dev's code server
        os.environ[SETTLE_ENV] = f"{settle_override:g}"
    from radiomics_assets.definitions import defs
    from radiomics_assets.defs.resources import RadiomicsConfig

    interval = defs.resolve_sensor_def("inbox_sensor").minimum_interval_seconds
    settle = RadiomicsConfig().inbox_settle_seconds
    return interval, settle


def feature_rows(warehouse: Warehouse, key: str) -> int:
    return int(warehouse.query("SELECT count(*) AS n FROM features WHERE patient_id = ?", [key]).n.iloc[0])


def partition_run(dev, key: str) -> dict | None:
    filter_ = {"pipelineName": "ingest_patient", "tags": [{"key": "dagster/partition", "value": key}]}
    runs = dev.gql(RUNS_QUERY, {"filter": filter_})["runsOrError"]
    return runs["results"][0] if runs["__typename"] == "Runs" and runs["results"] else None


def measure(dev, config: SynthConfig, n: int, timeout_s: float) -> list[dict]:
    warehouse = Warehouse(dev.data_root / "radiomics.duckdb")
    inbox = dev.data_root / "inbox"
    rows = []
    for index in range(n):
        patient = write_patient(config, index, index % 2, inbox)
        landed = time.time()
        key = patient_key(patient.patient_id)
        deadline = time.monotonic() + timeout_s
        while (count := feature_rows(warehouse, key)) == 0:
            dev.check_alive()
            run = partition_run(dev, key)
            if run and run["status"] in ("FAILURE", "CANCELED"):
                sys.exit(f"{key}: run {run['runId']} ended {run['status']}\n{dev.log_tail()}")
            if time.monotonic() > deadline:
                sys.exit(f"{key}: no features after {timeout_s} s (run: {run})\n{dev.log_tail()}")
            time.sleep(0.5)
        queryable = time.time()
        row = {"study": key, "features": count, "latency": queryable - landed}
        run = partition_run(dev, key) or {}
        if run.get("startTime"):  # the rows are committed before the run has finished its bookkeeping
            row.update(
                sensor=run["creationTime"] - landed,
                queue=run["startTime"] - run["creationTime"],
                run=queryable - run["startTime"],
            )
        rows.append(row)
        print(
            "  " + "  ".join(f"{k} {v:.1f} s" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()),
            flush=True,
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--studies", type=int, default=3, help="studies dropped one at a time (default 3)")
    parser.add_argument("--settle-seconds", type=float, help=f"override the settle time (${SETTLE_ENV})")
    parser.add_argument(
        "--size",
        type=int,
        nargs=3,
        default=(64, 64, 20),
        metavar=("ROWS", "COLUMNS", "SLICES"),
        help="synthetic CT size (default 64 64 20)",
    )
    parser.add_argument("--timeout", type=float, default=600, help="per study, seconds (default 600)")
    parser.add_argument("--keep", help="folder for data root, DAGSTER_HOME and the dagster dev log (kept)")
    args = parser.parse_args(argv)

    interval, settle = sensor_settings(args.settle_seconds)
    rows_, columns, slices = args.size
    config = SynthConfig(n_patients=args.studies, seed=13, rows=rows_, columns=columns, slices=slices)
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench_latency_"))
    env = {SETTLE_ENV: f"{args.settle_seconds:g}"} if args.settle_seconds is not None else {}
    print(
        f"inbox sensor interval {interval} s, settle time {settle} s; {args.studies} studies of "
        f"{rows_}x{columns}x{slices} voxels; cores {os.cpu_count()}; work dir {work}",
        flush=True,
    )
    started = time.monotonic()
    with running_dagster_dev(work / "data", work / "dagster_home", work / "dagster_dev.log", env=env) as dev:
        print(f"dagster dev ready after {time.monotonic() - started:.1f} s", flush=True)
        rows = measure(dev, config, args.studies, args.timeout)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    latencies = [row["latency"] for row in rows]
    print(
        f"latency last file landed -> features queryable: median {statistics.median(latencies):.1f} s, "
        f"max {max(latencies):.1f} s over {len(latencies)} studies "
        f"(sensor interval {interval} s, settle {settle} s)"
    )
    for part in ("sensor", "queue", "run"):
        values = [row[part] for row in rows if part in row]
        if values:
            print(f"  {part:<8} median {statistics.median(values):.1f} s, max {max(values):.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
