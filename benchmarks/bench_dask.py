"""Benchmark: the same patients with the local process pool and with a Dask cluster on this machine.

What is measured
----------------
K synthetic patients (real DICOM CT + RTSTRUCT, ``radiomics_assets.synth``) are written twice, into two data
roots. Then, alternating for ``--repeats`` rounds (each round on fresh copies of the written inboxes' results
removed, so both paths do the same work):

- local: ``run_patients`` over all K patients with ``--workers`` local worker processes (fork server, pinned
  threads), the default path;
- dask: the same call with ``dask_scheduler`` set to a `dask scheduler` with ``--workers`` `dask worker`
  processes (``--nthreads 1``) on 127.0.0.1, started once before the rounds (a deployment keeps its cluster up);
  each run connects, checks versions and the data root, and registers the worker plugin, as a real run does.

The ratio of median wall times is the cost of the cluster path (goal <= 1.10). Then:

- start-up per run: from asking for the executor to its first results (local: fork server and workers
  started; Dask: connected, cluster checked, worker plugin registered);
- scheduler overhead per task: ``--noop-tasks`` no-op tasks (``abs``) through the same executor, wall time per
  task (the scheduler, not the workers, bounds this);
- the single DuckDB writer's time per patient: every patient's stored rows written again with
  ``Warehouse.replace_patient`` (one transaction per patient, as the driver does), time per patient.

From these the projected throughput for 10 and 100 workers is printed: per-patient worker time
(wall x workers / K, assuming the cores are saturated), limited by the scheduler (tasks per patient x overhead)
and by the one writer (writer time per patient).

How to run
----------
    .venv/bin/python benchmarks/bench_dask.py --patients 8 --repeats 2
    .venv/bin/python benchmarks/bench_dask.py --patients 16 --rows 96 --slices 32 --keep /tmp/bench_dask
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from radiomics_assets.batch import STAGES, run_patients
from radiomics_assets.batch.dask_cluster import local_cluster_commands
from radiomics_assets.batch.executors import executor
from radiomics_assets.dagster_dev import free_port
from radiomics_assets.defs.resources import RadiomicsConfig
from radiomics_assets.synth import SynthConfig, write_cohort
from radiomics_assets.warehouse import Warehouse

TABLES = ("series", "masks", "features", "diagnostics")


def start_cluster(workers: int, log_dir: Path) -> tuple[str, list[subprocess.Popen]]:
    dask = Path(sys.executable).parent / "dask"
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    commands = list(local_cluster_commands(dask, port, workers, log_dir).values())
    processes = []
    for i, command in enumerate(commands):
        with open(log_dir / f"process{i}.log", "wb") as log:
            processes.append(
                subprocess.Popen(
                    [str(part) for part in command], stdout=log, stderr=subprocess.STDOUT, start_new_session=True
                )
            )
    from distributed import Client

    with Client(address, timeout=60, set_as_default=False) as client:
        client.wait_for_workers(workers, timeout=120)
    return address, processes


def stop_cluster(processes: list[subprocess.Popen]) -> None:
    for process in reversed(processes):
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def reset(root: Path) -> None:
    """Remove what a run produced, so the next round does the same work again."""
    for name in ("radiomics.duckdb", ".radiomics", "volumes", "masks"):  # .radiomics: the working store
        path = root / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def timed_run(keys: list[str], root: Path, workers: int, scheduler: str) -> float:
    settings = RadiomicsConfig(data_dir=str(root)).patient_settings()
    started = time.perf_counter()
    outcomes = list(run_patients(keys, set(STAGES), settings, workers, dask_scheduler=scheduler))
    wall = time.perf_counter() - started
    failed = [f"{o.key}: {o.error}" for o in outcomes if o.error]
    if failed or len(outcomes) != len(keys):
        raise SystemExit(f"run failed: {failed}")
    return wall


def noop_overhead(n_tasks: int, workers: int, scheduler: str, root: Path) -> tuple[float, float]:
    """(start-up, per task) in seconds: from asking for the executor to the first results of ``workers`` no-op
    tasks (every run pays it: the local pool starts its fork server and workers, the Dask path connects, checks
    and registers the worker plugin), then the wall time per no-op task (submit, schedule, run, result back)."""
    started = time.perf_counter()
    pool = executor(workers, dask_scheduler=scheduler, data_dir=root)
    try:
        list(pool.map(abs, range(workers)))
        start_up = time.perf_counter() - started
        list(pool.map(abs, range(workers * 4)))  # warm
        started = time.perf_counter()
        futures = [pool.submit(abs, -i) for i in range(n_tasks)]
        assert [f.result() for f in futures] == list(range(n_tasks))
        return start_up, (time.perf_counter() - started) / n_tasks
    finally:
        pool.shutdown()


def writer_time_per_patient(keys: list[str], root: Path) -> float:
    warehouse = Warehouse(root / "radiomics.duckdb")
    frames = {
        key: {table: warehouse.query(f"SELECT * FROM {table} WHERE patient_id = ?", [key]) for table in TABLES}
        for key in keys
    }
    started = time.perf_counter()
    for key in keys:
        warehouse.replace_patient(key, frames[key])
    return (time.perf_counter() - started) / len(keys)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patients", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--rows", type=int, default=80)
    parser.add_argument("--slices", type=int, default=24)
    parser.add_argument("--noop-tasks", type=int, default=400)
    parser.add_argument("--keep", help="folder to keep the data roots and logs in (default: a temporary one)")
    args = parser.parse_args()

    base = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench_dask_"))
    base.mkdir(parents=True, exist_ok=True)
    cohort = SynthConfig(n_patients=args.patients, seed=3, rows=args.rows, columns=args.rows, slices=args.slices)
    roots = {kind: base / kind for kind in ("local", "dask")}
    keys = []
    for root in roots.values():
        keys = sorted(write_cohort(cohort, root))
    address, processes = start_cluster(args.workers, base)
    try:
        walls: dict[str, list[float]] = {"local": [], "dask": []}
        for round_ in range(args.repeats):
            for kind in ("local", "dask") if round_ % 2 == 0 else ("dask", "local"):
                reset(roots[kind])
                walls[kind].append(timed_run(keys, roots[kind], args.workers, address if kind == "dask" else ""))
                print(f"round {round_ + 1} {kind:<5}: {walls[kind][-1]:.1f} s", flush=True)
        start_dask, overhead_dask = noop_overhead(args.noop_tasks, args.workers, address, roots["dask"])
        start_local, overhead_local = noop_overhead(args.noop_tasks, args.workers, "", roots["local"])
        writer = writer_time_per_patient(keys, roots["dask"])
        rois = Warehouse(roots["dask"] / "radiomics.duckdb").query("SELECT count(*) AS n FROM masks").n.iloc[0]
    finally:
        stop_cluster(processes)
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)

    local, dask = statistics.median(walls["local"]), statistics.median(walls["dask"])
    tasks_per_patient = 1 + rois / len(keys)  # one prepare task + one extraction per (series, ROI)
    worker_s = dask * args.workers / len(keys)  # per patient, with the cores saturated
    print(
        f"\n{len(keys)} patients ({args.rows}x{args.rows}x{args.slices} CT, {rois} ROIs), {args.workers} workers, "
        f"{args.repeats} rounds (median):"
    )
    print(f"  local pool   {local:7.1f} s   {len(keys) / local * 3600:7.0f} patients/h")
    print(f"  dask cluster {dask:7.1f} s   {len(keys) / dask * 3600:7.0f} patients/h")
    print(f"  ratio dask/local {dask / local:.3f} (goal <= 1.10)")
    print(f"  scheduler overhead per task: dask {overhead_dask * 1e3:.2f} ms, local pool {overhead_local * 1e3:.2f} ms")
    print(f"  start-up per run: dask (connect, checks, plugin) {start_dask:.1f} s, local pool {start_local:.1f} s")
    print(f"  DuckDB writer per patient: {writer * 1e3:.1f} ms ({tasks_per_patient:.1f} tasks per patient)")
    print(f"  worker time per patient: {worker_s:.2f} s")
    for n in (10, 100):
        limits = {
            "workers": n / worker_s,
            "scheduler": 1 / (tasks_per_patient * overhead_dask),
            "writer": 1 / writer,
        }
        bound = min(limits, key=limits.get)
        print(
            f"  projected with {n:3d} workers: {limits[bound] * 3600:9.0f} patients/h, bound by the {bound} "
            f"(workers {limits['workers'] * 3600:.0f}, scheduler {limits['scheduler'] * 3600:.0f}, "
            f"writer {limits['writer'] * 3600:.0f} patients/h)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
