"""Many patients in one run, extracted by parallel worker processes; a broken patient fails only itself."""

import subprocess
import sys

import dagster as dg
import duckdb
import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from radiomics_assets.batch import run_patients
from radiomics_assets.cli import partition_ranges, step_failure_messages
from radiomics_assets.definitions import defs
from radiomics_assets.defs.partitions import patients
from radiomics_assets.defs.resources import RadiomicsConfig
from radiomics_assets.paths import DataRoot
from radiomics_assets.synth import SynthConfig, write_cohort

COHORT = SynthConfig(n_patients=5, seed=21, rows=48, columns=48, slices=16)
KEYS = [f"SYN-{i:04d}" for i in range(1, 6)]
RANGE_TAGS = {"dagster/asset_partition_range_start": KEYS[0], "dagster/asset_partition_range_end": KEYS[-1]}


def _features(root) -> pd.DataFrame:
    with duckdb.connect(str(root / "radiomics.duckdb"), read_only=True) as con:
        return con.sql("SELECT patient_id, series_uid, roi, feature_class, feature, value FROM features").df()


def test_one_run_for_all_patients_and_only_the_broken_one_fails(tmp_path, monkeypatch):
    monkeypatch.setenv("RADIOMICS_DATA_DIR", str(tmp_path))
    write_cohort(COHORT, tmp_path)
    (tmp_path / "inbox" / "SYN-0003" / "CT" / "CT_0007.dcm").unlink()
    job = defs.resolve_job_def("ingest_patient")
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(patients.name, KEYS)
        result = job.execute_in_process(
            instance=instance,
            tags=RANGE_TAGS,
            raise_on_error=False,
            resources={"radiomics": RadiomicsConfig(data_dir=str(tmp_path), workers=2)},
        )
        assert not result.success
        (message,) = step_failure_messages(result)
        assert message.startswith("SYN-0003 studies: ") and "CT_0008.dcm: slice spacing" in message, message
        good = set(KEYS) - {"SYN-0003"}
        for asset in ("studies", "roi_masks", "features"):
            assert instance.get_materialized_partitions(dg.AssetKey(asset)) == good
        checks = [e for e in result.get_asset_check_evaluations() if e.check_name == "all_values_finite"]
        assert sorted(e.partition for e in checks) == sorted(good) and all(e.passed for e in checks)
        assert len(instance.get_runs()) == 1
    stored = _features(tmp_path)
    assert set(stored.patient_id) == good
    assert stored.groupby("patient_id").size().nunique() == 1  # every patient has the full feature set


def test_parallel_workers_store_the_same_values_as_one_process(tmp_path):
    """Two worker processes and the single-process path give identical rows (order aside)."""
    results = {}
    for workers in (1, 2):
        root = tmp_path / f"w{workers}"
        write_cohort(SynthConfig(n_patients=3, seed=22, rows=48, columns=48, slices=16), root)
        settings = RadiomicsConfig(data_dir=str(root)).patient_settings()
        keys = [f"SYN-{i:04d}" for i in range(1, 4)]
        outcomes = list(run_patients(keys, {"studies", "roi_masks", "features"}, settings, workers=workers))
        assert sorted(o.key for o in outcomes) == keys and not any(o.error for o in outcomes)
        assert all(o.done_stages == ["studies", "roi_masks", "features"] for o in outcomes)
        rows = _features(root).drop(columns="series_uid")
        results[workers] = rows.sort_values(["patient_id", "roi", "feature_class", "feature"]).reset_index(drop=True)
        assert DataRoot(root).warehouse.exists()
    pd.testing.assert_frame_equal(results[1], results[2])
    assert len(results[2]) == 3 * 107


def test_pyradiomics_is_prepared_where_the_patients_tasks_run(tmp_path):
    """With one worker the tasks run in this process, which is then prepared as each worker is (speed-ups installed,
    kernels loaded); with worker processes it leaves PyRadiomics alone (the kernels' 0.45 s used to delay the first
    task). Each in a fresh interpreter: this one's PyRadiomics has been prepared by other tests."""
    write_cohort(SynthConfig(n_patients=2, seed=23, rows=32, columns=32, slices=8), tmp_path)
    script = (
        "import sys\n"
        "from radiomics_assets.batch import run_patients\n"
        "from radiomics_assets.defs.resources import RadiomicsConfig\n"
        "from radiomics_assets.features import speedups\n"
        f"settings = RadiomicsConfig(data_dir={str(tmp_path)!r}).patient_settings()\n"
        "stages = {'studies', 'roi_masks', 'features'}\n"
        "outcomes = list(run_patients(['SYN-0001', 'SYN-0002'], stages, settings, workers=int(sys.argv[1])))\n"
        "assert [o.error for o in outcomes] == [None, None], outcomes\n"
        "print(speedups.installed())\n"
    )
    for workers, prepared in ((1, "True"), (2, "False")):
        run = subprocess.run([sys.executable, "-c", script, str(workers)], capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, run.stderr[-3000:]
        assert run.stdout.split()[-1] == prepared


def test_the_run_process_does_not_import_pyradiomics():
    """The run process names and versions the parameter files and stores what its workers extracted: loading the
    definitions (and the CLI's inbox index) leaves PyRadiomics and the compiled kernels to the workers (0.4 s)."""
    script = (
        "import sys\n"
        "import radiomics_assets.cli, radiomics_assets.ingest.manifests\n"
        "from radiomics_assets.definitions import defs\n"
        "print(sorted(m for m in ('radiomics', 'numba', 'pywt') if m in sys.modules))\n"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.split("\n")[-2] == "[]"


def test_partition_ranges_cover_exactly_the_wanted_keys():
    registered = ["a", "b", "c", "d", "e"]
    assert partition_ranges(registered, ["a", "b", "c", "d", "e"]) == [("a", "e")]
    assert partition_ranges(registered, ["b", "c", "e"]) == [("b", "c"), ("e", "e")]
    assert partition_ranges(registered, []) == []


def test_features_with_studies_but_not_masks_uses_the_stored_masks(tmp_path, monkeypatch):
    """A run of `studies` + `features` (masks not selected) extracts from the masks stored earlier."""
    monkeypatch.setenv("RADIOMICS_DATA_DIR", str(tmp_path))
    write_cohort(SynthConfig(n_patients=1, seed=23, rows=48, columns=48, slices=16), tmp_path)
    job = defs.resolve_job_def("ingest_patient")
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(patients.name, ["SYN-0001"])
        assert job.execute_in_process(partition_key="SYN-0001", instance=instance).success
        before = _features(tmp_path)
        again = job.execute_in_process(
            partition_key="SYN-0001",
            instance=instance,
            raise_on_error=False,
            asset_selection=[dg.AssetKey("studies"), dg.AssetKey("features")],
        )
        assert again.success, step_failure_messages(again)
    pd.testing.assert_frame_equal(_features(tmp_path), before)


def test_interrupted_batch_keeps_the_stages_that_finished(tmp_path):
    """Patients whose extraction had not finished when the batch stopped keep their series and masks rows."""
    from radiomics_assets.batch.driver import STAGES, PatientOutcome, PatientSettings, _Batch
    from radiomics_assets.features import params_by_modality

    settings = PatientSettings(data_dir=tmp_path, params=params_by_modality())
    batch = _Batch(frozenset(STAGES), settings, workers=1, n_patients=2)
    for key in ("P1", "P2"):
        series = pd.DataFrame({"patient_id": [key], "series_uid": [f"{key}.1"], "modality": ["CT"]})
        masks = pd.DataFrame({"patient_id": [key], "series_uid": [f"{key}.1"], "roi": ["GTV"]})
        batch.waiting[key] = PatientOutcome(key, series=series, masks=masks)
    batch.store_unfinished()
    assert not batch.waiting
    with duckdb.connect(str(tmp_path / "radiomics.duckdb"), read_only=True) as con:
        assert con.sql("SELECT patient_id FROM series ORDER BY 1").fetchall() == [("P1",), ("P2",)]
        assert con.sql("SELECT count(*) FROM masks").fetchall() == [(2,)]
        assert con.sql("SELECT count(*) FROM features").fetchall() == [(0,)]


def test_patients_extracted_in_memory_get_the_values_of_their_stored_files(tmp_path):
    """With several patients each task extracts from the volumes and masks it has just stored, kept in memory: the
    stored features are exactly those of the stored files read back (what PyRadiomics itself would be given)."""
    from radiomics_assets.features import extract
    from radiomics_assets.features.extraction import ExtractionTarget

    # 0.7031249 mm: a spacing whose direction NRRD gives back a rounding step away from the identity
    write_cohort(
        SynthConfig(n_patients=2, seed=24, rows=48, columns=48, slices=16, pixel_spacing_mm=0.7031249), tmp_path
    )
    settings = RadiomicsConfig(data_dir=str(tmp_path)).patient_settings()
    outcomes = list(run_patients(["SYN-0001", "SYN-0002"], {"studies", "roi_masks", "features"}, settings, workers=1))
    assert not any(o.error for o in outcomes)
    with duckdb.connect(str(tmp_path / "radiomics.duckdb"), read_only=True) as con:
        pairs = con.sql(
            "SELECT patient_id, series_uid, modality, roi, volume_path, mask_path FROM masks JOIN series "
            "USING (patient_id, series_uid) ORDER BY patient_id"
        ).fetchall()
    stored = _features(tmp_path).set_index(["patient_id", "feature_class", "feature"]).value.sort_index()
    assert len(pairs) == 2 and len(stored) == 2 * 107
    for key, series_uid, modality, roi, volume_path, mask_path in pairs:
        volume, mask = sitk.ReadImage(volume_path), sitk.ReadImage(mask_path)
        assert volume.GetDirection() != (1, 0, 0, 0, 1, 0, 0, 0, 1)  # the case that needs care does occur
        assert (volume.GetSpacing(), volume.GetOrigin(), volume.GetDirection()) == (
            mask.GetSpacing(),
            mask.GetOrigin(),
            mask.GetDirection(),
        )
        target = ExtractionTarget(
            key, series_uid, modality, roi, sitk.ReadImage(volume_path), sitk.ReadImage(mask_path)
        )
        rows, _ = extract(target, settings.params[modality])
        from_files = rows.set_index(["patient_id", "feature_class", "feature"]).value.sort_index()
        pd.testing.assert_series_equal(stored.loc[[key]], from_files, check_exact=True)


def test_a_stored_image_kept_in_memory_is_what_its_file_gives(tmp_path):
    """NRRD stores the direction times the spacing, so the geometry can come back a rounding step away (an oblique
    series; even an identity direction at 0.7031249 mm), and writing what was read back can move it again. The copy
    kept in memory keeps the written geometry, a mask written on it gives back the volume file's grid, and what
    extraction gets from memory (``as_read_back``) is exactly the file: the same features as from the files."""
    from radiomics_assets.features import PARAMS_DIR, extract
    from radiomics_assets.features.extraction import ExtractionTarget
    from radiomics_assets.hashing import image_hash
    from radiomics_assets.stored_images import as_read_back, write_stored_image

    rng = np.random.default_rng(5)
    image = sitk.GetImageFromArray(rng.normal(40.0, 30.0, size=(12, 20, 20)).astype(np.float32))
    mask = sitk.GetImageFromArray(np.pad(np.ones((6, 10, 10), np.uint8), ((3, 3), (5, 5), (5, 5))))
    for direction, spacing in [
        (sitk.VersorTransform((0.3, -0.2, 0.9), 0.4).GetMatrix(), (0.7031249, 0.7031249, 2.5)),
        ((1, 0, 0, 0, 1, 0, 0, 0, 1), (0.7031249, 0.7031249, 2.5)),
        ((1, 0, 0, 0, 1, 0, 0, 0, 1), (0.5, 0.75, 2.5)),  # comes back exactly: nothing to copy
    ]:
        kept = {}
        for name, volume in (("image", image), ("mask", mask)):
            volume.SetSpacing(spacing)
            volume.SetOrigin((-180.123, -90.456, 33.3))
            volume.SetDirection(direction)
            write_stored_image(volume, tmp_path / f"{name}.nrrd")
            kept[str(tmp_path / f"{name}.nrrd")] = volume
            image_hash(volume, keep_voxel_digest=True)  # as ingest and the masks stage hash what they keep
        paths = list(kept)
        read = [sitk.ReadImage(path) for path in paths]
        from_memory = [as_read_back(path, kept) for path in paths]
        grids = [(i.GetSpacing(), i.GetOrigin(), i.GetDirection()) for i in read]
        assert grids[0] == grids[1]  # the mask file has the volume file's grid
        for in_memory, from_file in zip(from_memory, read, strict=True):
            assert image_hash(in_memory) == image_hash(from_file)
        exact = spacing[0] == 0.5
        assert (from_memory[0] is image) == exact and (read[0].GetDirection() == direction) == exact
        values = {}
        for source, (volume, roi) in (("memory", from_memory), ("files", read)):
            rows, _ = extract(ExtractionTarget("P", "1", "CT", "GTV", volume, roi), PARAMS_DIR / "ct.yaml")
            values[source] = rows.set_index(["feature_class", "feature"]).value
        pd.testing.assert_series_equal(values["memory"], values["files"], check_exact=True)


def test_a_kept_voxel_digest_gives_each_hash_of_its_image_and_goes_with_it():
    """Ingest and the masks stage keep the digest of the voxels they store; extraction's hash of the same image reuses
    it, with the geometry read from the image each time. Nothing outlives the image."""
    import gc
    import hashlib

    from radiomics_assets import hashing

    def plain(image: sitk.Image) -> str:  # the hash as it was computed before digests were kept
        digest = hashlib.sha256(sitk.GetArrayFromImage(image).tobytes())
        digest.update(repr((image.GetSize(), image.GetSpacing(), image.GetOrigin(), image.GetDirection())).encode())
        return digest.hexdigest()[:16]

    image = sitk.GetImageFromArray(np.arange(60, dtype=np.float32).reshape(3, 4, 5))
    assert hashing.image_hash(image, keep_voxel_digest=True) == plain(image)
    assert id(image) in hashing._kept_voxel_digests
    image.SetSpacing((0.5, 0.5, 2.0))
    image.SetOrigin((-1.5, 2.25, 7.0))
    for _ in range(2):  # the kept digest is copied, never extended
        assert hashing.image_hash(image) == plain(image)
    key = id(image)
    del image
    gc.collect()
    assert key not in hashing._kept_voxel_digests


def test_stored_nrrd_files_read_back_as_itks_own_files_do(tmp_path, monkeypatch):
    """The stored volumes are compressed by ISA-L behind a header written like ITK's: on random geometries (oblique
    and flipped directions, odd spacings, 2D and 3D, every scalar pixel type) the header is ITK's byte for byte, and
    reading the file gives ITK's file's voxels, pixel type and geometry bit for bit; so on DICOM series read as ingest
    reads them, less ITK's note of the slices' deviation from even steps. An image with metadata of our own (the
    ultrasound masks' seed and contrast) is written by ITK, metadata included, and so is a non-finite geometry,
    which ITK refuses as before. The same image gives the same bytes."""
    from radiomics_assets import stored_images
    from radiomics_assets.stored_images import NRRD_TYPES, itk_nrrd_header, write_stored_image

    def header(path):
        data = path.read_bytes()
        return data[: data.index(b"\n\n") + 2]

    compressed = []  # the fast path's streams, to see that it is the path taken
    compress = stored_images.igzip.compress
    monkeypatch.setattr(stored_images.igzip, "compress", lambda *a, **k: compressed.append(1) or compress(*a, **k))
    rng = np.random.default_rng(11)
    dtypes = [sitk.GetArrayViewFromImage(sitk.Image(1, 1, pixel)).dtype for pixel in NRRD_TYPES]
    for case in range(120):
        dimension = int(rng.integers(2, 4))  # not tied to the pixel type: 3D uint8 is a mask, 2D float an image
        array = (rng.standard_normal(rng.integers(1, 7, dimension)) * 300).astype(dtypes[case % len(dtypes)])
        image = sitk.GetImageFromArray(array)
        image.SetSpacing(rng.choice([0.7031249, 0.976562, 2.5, 3.3e-5, 123456.789], dimension) * rng.uniform(0.5, 2))
        image.SetOrigin(rng.standard_normal(dimension) * [1e-5, 1.0, 300.0][case % 3])
        if case % 3 == 0:  # oblique
            image.SetDirection(np.linalg.qr(rng.standard_normal((dimension, dimension)))[0].ravel())
        elif case % 3 == 1:  # axes swapped and flipped (-0.0 entries)
            image.SetDirection((np.eye(dimension)[rng.permutation(dimension)] * [-1.0, 1.0, -1.0][:dimension]).ravel())
        write_stored_image(image, tmp_path / "ours.nrrd")
        assert len(compressed) == case + 1
        sitk.WriteImage(image, str(tmp_path / "itk.nrrd"), useCompression=True)
        assert header(tmp_path / "ours.nrrd") == itk_nrrd_header(image) == header(tmp_path / "itk.nrrd"), case
        ours, itk = sitk.ReadImage(tmp_path / "ours.nrrd"), sitk.ReadImage(tmp_path / "itk.nrrd")
        assert ours.GetPixelID() == itk.GetPixelID() == image.GetPixelID()
        assert (ours.GetSpacing(), ours.GetOrigin(), ours.GetDirection()) == (
            itk.GetSpacing(),
            itk.GetOrigin(),
            itk.GetDirection(),
        )
        np.testing.assert_array_equal(sitk.GetArrayViewFromImage(ours), array)

    # ITK's series reader adds a note of the slices' deviation from even steps to most synthetic CTs: left out.
    write_cohort(SynthConfig(n_patients=4, seed=3), tmp_path / "cohort")
    noted = 0
    folders = sorted(tmp_path.glob("cohort/inbox/*/CT"))
    for folder in folders:
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
        reader.SetOutputPixelType(sitk.sitkFloat32)
        volume = reader.Execute()
        noted += volume.HasMetaDataKey("ITK_non_uniform_sampling_deviation")
        write_stored_image(volume, tmp_path / "ours.nrrd")
        sitk.WriteImage(volume, str(tmp_path / "itk.nrrd"), useCompression=True)
        itk_header = b"".join(
            line for line in header(tmp_path / "itk.nrrd").splitlines(True) if b"ITK_non_uniform" not in line
        )
        assert header(tmp_path / "ours.nrrd") == itk_header
        ours, itk = sitk.ReadImage(tmp_path / "ours.nrrd"), sitk.ReadImage(tmp_path / "itk.nrrd")
        assert (ours.GetSpacing(), ours.GetOrigin(), ours.GetDirection()) == (
            itk.GetSpacing(),
            itk.GetOrigin(),
            itk.GetDirection(),
        )
        np.testing.assert_array_equal(sitk.GetArrayViewFromImage(ours), sitk.GetArrayViewFromImage(itk))
    assert len(folders) == 4 and noted >= 1

    first, again = tmp_path / "first.nrrd", tmp_path / "again.nrrd"
    write_stored_image(volume, first)
    write_stored_image(volume, again)
    assert again.read_bytes() == first.read_bytes()
    assert first.read_bytes().split(b"\n\n", 1)[1][4:8] == bytes(4)  # the gzip stream's time stamp is 0

    mask = sitk.GetImageFromArray(np.eye(5, dtype=np.uint8))
    mask.SetMetaData("seed", "2,3")
    assert itk_nrrd_header(mask) is None
    write_stored_image(mask, tmp_path / "mask.nrrd")
    assert sitk.ReadImage(tmp_path / "mask.nrrd").GetMetaData("seed") == "2,3"
    mask = sitk.GetImageFromArray(np.eye(5, dtype=np.uint8))
    mask.SetOrigin((float("nan"), 0.0))
    with pytest.raises(RuntimeError):
        write_stored_image(mask, tmp_path / "nan.nrrd")


def test_a_lost_whole_patient_task_says_that_nothing_of_the_run_is_stored(tmp_path):
    """A patient task whose worker died has no outcome: the patient fails at its first selected stage, and a task that
    did every stage says that none of them was stored (it cannot know which one the worker died in)."""
    from concurrent.futures.process import BrokenProcessPool

    from radiomics_assets.batch.driver import STAGES, PatientSettings, _Batch
    from radiomics_assets.features import params_by_modality

    settings = PatientSettings(data_dir=tmp_path, params=params_by_modality())
    lost = BrokenProcessPool("A process in the process pool was terminated abruptly")
    whole = _Batch(frozenset(STAGES), settings, workers=2, n_patients=3).task_lost("patient", "P1", lost)
    assert (whole.failed_stage, whole.done_stages) == ("studies", [])
    assert whole.error.startswith("worker lost during the patient's ingest, masks or extraction; nothing of this run")
    assert whole.error.endswith("BrokenProcessPool: A process in the process pool was terminated abruptly")
    masks_only = _Batch(frozenset({"roi_masks", "features"}), settings, workers=2, n_patients=3)
    split = masks_only.task_lost("prepare", "P2", lost)
    assert split.failed_stage == "roi_masks" and split.error.startswith("BrokenProcessPool")
