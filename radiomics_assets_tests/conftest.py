import os
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.sr.codedict import codes

from radiomics_assets.synth import SynthConfig, write_ct_series

# The permutation test's default (199, so p can fall below 0.01) costs a few minutes per cohort job: the suite's
# CLI and daemon runs read this instead; test_report_checklist runs the default of 199 itself.
os.environ.setdefault("RADIOMICS_PERMUTATIONS", "9")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

# Small volumes keep the suite fast; geometry and DICOM structure are the same as the default cohort.
SMALL = SynthConfig(n_patients=8, seed=11, rows=64, columns=64, slices=20)


@pytest.fixture
def small_config() -> SynthConfig:
    return SMALL


def requested_runs(result) -> list[tuple[str, str]]:
    """(patient key, run key) for every patient a sensor result's run requests cover.

    A request names one partition, or a range of the partitions the same result adds (new patients
    arriving together share one run).
    """
    from radiomics_assets.defs.partitions import PARTITION_RANGE_END, PARTITION_RANGE_START

    added = [key for request in result.dynamic_partitions_requests or [] for key in request.partition_keys]
    covered = []
    for request in result.run_requests or []:
        if request.partition_key is not None:
            covered.append((request.partition_key, request.run_key))
            continue
        first, last = added.index(request.tags[PARTITION_RANGE_START]), added.index(request.tags[PARTITION_RANGE_END])
        covered += [(key, request.run_key) for key in added[first : last + 1]]
    return covered


def assert_extractor_follows(params_path: Path) -> None:
    """PyRadiomics read the parameter file as written: every setting, image type and feature class is in force."""
    import yaml

    from radiomics_assets.features import load_extractor

    written = yaml.safe_load(Path(params_path).read_text())
    extractor = load_extractor(params_path)
    assert {k: extractor.settings[k] for k in written["setting"]} == written["setting"], params_path
    assert set(extractor.enabledImagetypes) == set(written["imageType"]), params_path
    assert set(extractor.enabledFeatures) == set(written["featureClass"]), params_path


def write_ct(patient, folder, seed=SMALL.seed):
    """Write the patient's CT series; returns the slices as read back from disk (what a SEG tool would see)."""
    write_ct_series(patient, folder, seed)
    return [pydicom.dcmread(path) for path in sorted(folder.glob("CT_*.dcm"))]


def write_seg(slices, segments: dict[str, np.ndarray], path, shuffle_seed=0, kind="BINARY", pixels=None):
    """SEG of ``segments`` (label -> (z, y, x) bool array on the CT grid), frames in shuffled slice order.

    ``pixels`` replaces the stacked segments for LABELMAP (segment numbers) or FRACTIONAL (probabilities) SEGs.
    """
    order = np.random.default_rng(shuffle_seed).permutation(len(slices))
    stacked = (np.stack(list(segments.values()), axis=-1) if pixels is None else pixels)[order]
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=label,
            segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
            segmented_property_type=codes.SCT.Neoplasm,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
        )
        for number, label in enumerate(segments, start=1)
    ]
    seg = hd.seg.Segmentation(
        source_images=[slices[i] for i in order],
        pixel_array=stacked,
        segmentation_type=kind,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=7,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="radiomics_assets tests",
        manufacturer_model_name="synthetic",
        software_versions="0",
        device_serial_number="0",
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    seg.save_as(path)
    return seg


# --- real servers started by the tests: PostgreSQL (Debian's `postgresql`) and a Dask cluster ---------------


def _postgres_bindir() -> Path | None:
    """Debian keeps the server binaries under /usr/lib/postgresql/<major>/bin (not on PATH)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    if found:
        return found[-1].parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _run_as(user: str | None, command: list, **kwargs) -> subprocess.CompletedProcess:
    # initdb and postgres refuse to run as root: as root, run them as an unprivileged user.
    prefix = ["runuser", "-u", user, "--"] if user else []
    return subprocess.run(prefix + [str(part) for part in command], check=True, capture_output=True, **kwargs)


@pytest.fixture(scope="session")
def postgres_server():
    """A PostgreSQL server on a free 127.0.0.1 port (trust auth, user ``radiomics``) for the session; yields a
    function that creates a fresh database and returns its URL."""
    from radiomics_assets.dagster_dev import free_port

    bindir = _postgres_bindir()
    if bindir is None:
        pytest.skip("no PostgreSQL server binaries (initdb): `apt-get install postgresql` (.ci/run installs it)")
    user = None
    if os.geteuid() == 0:
        user = "postgres" if _user_exists("postgres") else "nobody"
    folder = Path(tempfile.mkdtemp(prefix="radiomics-pg-"))
    if user:
        shutil.chown(folder, user)
    data, port = folder / "data", free_port()
    _run_as(user, [bindir / "initdb", "-D", data, "-U", "radiomics", "--auth=trust", "-E", "UTF8", "--no-sync"])
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off"
    _run_as(
        user, [bindir / "pg_ctl", "-D", data, "-l", folder / "server.log", "-w", "-t", "60", "-o", options, "start"]
    )
    created = iter(range(1, 1000))

    def new_database() -> str:
        name = f"dagster_{next(created)}"
        _run_as(user, [bindir / "createdb", "-h", "127.0.0.1", "-p", port, "-U", "radiomics", name])
        return f"postgresql://radiomics@127.0.0.1:{port}/{name}"

    try:
        yield new_database
    finally:
        _run_as(user, [bindir / "pg_ctl", "-D", data, "-m", "fast", "-w", "stop"])
        shutil.rmtree(folder, ignore_errors=True)


def _user_exists(name: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


@dataclass
class DaskCluster:
    """A `dask scheduler` and two `dask worker` processes (each under its nanny, which restarts a killed worker)."""

    address: str
    processes: list[subprocess.Popen]
    log_dir: Path

    def client(self):
        from distributed import Client

        return Client(self.address, timeout=30, set_as_default=False)

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in self.log_dir.glob("*.log"))


ALLOWED_FAILURES = 3
"""Worker deaths a task may be part of before Dask fails it: a task that kills its worker every time fails after 4,
while an innocent task that shared a dying worker once or twice is re-run (the test cluster's
``distributed.scheduler.allowed-failures``)."""


@pytest.fixture(scope="session")
def dask_cluster(tmp_path_factory):
    """A scheduler and two one-thread workers on 127.0.0.1 for the session, as `deploy/` starts them."""
    from radiomics_assets.dagster_dev import free_port

    dask = Path(sys.executable).parent / "dask"
    if not dask.exists():
        pytest.skip(f"{dask} missing: install the project (`./dev` does) to get distributed's `dask` command")
    log_dir = tmp_path_factory.mktemp("dask")
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = {**os.environ, "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": str(ALLOWED_FAILURES)}
    from radiomics_assets.batch.dask_cluster import local_cluster_commands

    commands = local_cluster_commands(dask, port, 2, log_dir)
    processes = []
    try:
        for name, command in commands.items():
            with open(log_dir / f"{name}.log", "wb") as log:
                processes.append(
                    subprocess.Popen(
                        [str(part) for part in command],
                        env=env,
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
        cluster = DaskCluster(address, processes, log_dir)
        with cluster.client() as client:
            client.wait_for_workers(2, timeout=120)
        yield cluster
    finally:
        for process in reversed(processes):  # workers (their nannies) first, then the scheduler
            _stop_group(process)


def _stop_group(process: subprocess.Popen, grace_s: float = 20) -> None:
    """SIGTERM to the process group (nanny and worker), then SIGKILL whatever is left."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        try:
            process.wait(timeout=wait_s)
            break
        except subprocess.TimeoutExpired:
            continue


def write_us(path, rgb, *, photometric="RGB", delta_cm=(0.01, 0.012), units=(3, 3), patient_id="US-0001"):
    """A DICOM US image file (Ultrasound Image Storage) of ``rgb`` ((rows, columns, 3) uint8, or (frames, rows,
    columns, 3) for a cine loop) stored as ``photometric`` (MONOCHROME2 stores the first channel), with one
    calibrated region of PhysicalDeltaX/Y ``delta_cm`` in units ``units`` (3 = cm)."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.pixels import convert_color_space
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    rgb = np.asarray(rgb, dtype=np.uint8)
    frames = rgb if rgb.ndim == 4 else rgb[None]
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.6.1" if rgb.ndim == 3 else "1.2.840.10008.5.1.4.1.1.3.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.PatientID, ds.PatientName, ds.Modality = patient_id, "Anonymous^Test", "US"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Rows, ds.Columns = frames.shape[1:3]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PhotometricInterpretation = photometric
    if rgb.ndim == 4:
        ds.NumberOfFrames = len(frames)
    if photometric == "MONOCHROME2":
        ds.SamplesPerPixel, data = 1, frames[..., 0].tobytes()
    else:
        ds.SamplesPerPixel, ds.PlanarConfiguration = 3, 0
        if photometric == "RGB":
            data = frames.tobytes()
        else:  # YBR_FULL_422: Y of each pixel, Cb and Cr shared by each horizontal pair (their mean)
            ybr = convert_color_space(frames.reshape(-1, *frames.shape[2:]), "RGB", "YBR_FULL").astype(int)
            pairs = ybr.reshape(ybr.shape[0], -1, 2, 3)
            chroma = (pairs[..., 1:].sum(axis=2) // 2).astype(np.uint8)
            data = np.concatenate([pairs[..., 0].astype(np.uint8), chroma], axis=-1).tobytes()
    ds.PixelData = data
    region = pydicom.Dataset()
    region.RegionSpatialFormat, region.RegionDataType = 1, 1
    region.RegionLocationMinX0, region.RegionLocationMinY0 = 0, 0
    region.RegionLocationMaxX1, region.RegionLocationMaxY1 = ds.Columns - 1, ds.Rows - 1
    region.PhysicalUnitsXDirection, region.PhysicalUnitsYDirection = units
    region.PhysicalDeltaX, region.PhysicalDeltaY = delta_cm
    ds.SequenceOfUltrasoundRegions = [region]
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


SERVER_FIXTURES = {"postgres_server", "dask_cluster"}
"""Session fixtures that start a PostgreSQL server or a Dask scheduler and workers."""
SERVER_STARTERS = {"running_dagster_dev", "sync_api", "sync_playwright"}
"""Module-level names of a test module that starts `dagster dev` (and its daemon) or drives Chromium."""


def pytest_collection_modifyitems(config, items):
    """Mark every server-starting test `servers` (registered in pyproject.toml), so `./dev test --fast`, i.e.
    `-m "not servers"`, can leave them out. Found by what the test uses, not by a list of files: a fixture that
    starts a server (also through another fixture: ``fixturenames`` is the closure) or a module that imports the
    `dagster dev` starter or Playwright."""
    for item in items:
        module = getattr(item, "module", None)
        starts_dagster_or_browser = module is not None and SERVER_STARTERS & set(vars(module))
        if SERVER_FIXTURES & set(getattr(item, "fixturenames", ())) or starts_dagster_or_browser:
            item.add_marker(pytest.mark.servers)
