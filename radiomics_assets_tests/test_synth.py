import numpy as np
import pydicom
import SimpleITK as sitk

from radiomics_assets.synth import SynthConfig, cohort_labels, make_patient, write_cohort


def test_ct_series_reads_back_with_intended_geometry_and_hu(tmp_path, small_config):
    ids = write_cohort(small_config, tmp_path)
    assert ids == [f"SYN-{i:04d}" for i in range(1, small_config.n_patients + 1)]
    patient = make_patient(small_config, 0, cohort_labels(small_config)[0])
    files = sorted((tmp_path / "inbox" / ids[0] / "CT").glob("*.dcm"))
    assert len(files) == small_config.slices

    first, second = pydicom.dcmread(files[0]), pydicom.dcmread(files[1])
    assert first.Modality == "CT" and first.RescaleIntercept == -1024 and first.RescaleSlope == 1
    assert [float(v) for v in first.PixelSpacing] == [0.8, 0.8]
    assert float(second.ImagePositionPatient[2]) - float(first.ImagePositionPatient[2]) == np.float64(2.0)
    assert first.StudyInstanceUID == second.StudyInstanceUID and first.SOPInstanceUID != second.SOPInstanceUID
    assert first.PatientID == ids[0] and "Synthetic" in str(first.PatientName)

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(files[0].parent)))
    image = reader.Execute()
    assert image.GetSize() == (64, 64, 20)
    assert np.allclose(image.GetSpacing(), (0.8, 0.8, 2.0))
    assert np.allclose(image.GetOrigin(), patient.origin_mm, atol=1e-3)
    hu = sitk.GetArrayFromImage(image)
    assert np.array_equal(hu, np.clip(np.rint(patient.hu), -1024, 3071))
    lesion_hu = hu[patient.lesion]
    assert -50 < lesion_hu.mean() < 120 and (hu < -900).any()  # soft-tissue lesion, air outside the body


def test_generator_is_deterministic_and_classes_differ(small_config):
    a, b = make_patient(small_config, 3, 1), make_patient(small_config, 3, 1)
    assert np.array_equal(a.hu, b.hu) and np.array_equal(a.lesion, b.lesion)

    config = SynthConfig(n_patients=20, seed=3, rows=64, columns=64, slices=20, noise=0.0)
    spread = {0: [], 1: []}
    for i in range(6):
        for label in (0, 1):
            p = make_patient(config, i, label)
            spread[label].append(np.std(p.hu[p.lesion]))
    # Without noise, every malignant lesion is more heterogeneous than every benign one.
    assert min(spread[1]) > max(spread[0])
    assert sum(cohort_labels(config)) == 10
