"""The patient-key rule (``paths.patient_key``): safe characters, bounded length, one key per PatientID."""

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from radiomics_assets.paths import KEY_MAX_CHARS, patient_key

SAFE_KEY = re.compile(rf"[A-Za-z0-9_-]{{1,{KEY_MAX_CHARS}}}")
# Every kind of character an ID may hold: letters of any script, spaces, slashes, and the lone surrogates of a
# file name that is not UTF-8 (PNG stems come from file names).
ids = st.text(st.characters(exclude_categories=()), max_size=300)


@given(ids)
@settings(max_examples=500, deadline=None)
def test_every_key_is_safe_bounded_and_its_own_key(patient_id):
    key = patient_key(patient_id)
    assert SAFE_KEY.fullmatch(key), key
    assert patient_key(key) == key


@given(ids, ids)
@settings(max_examples=1000, deadline=None)
def test_different_ids_never_share_a_key(first, second):
    # DICOM pads values with spaces: leading and trailing spaces are not part of the ID.
    if first.strip() != second.strip():
        assert patient_key(first) != patient_key(second)


@given(st.from_regex(rf"[A-Za-z0-9_-]{{0,{KEY_MAX_CHARS}}}", fullmatch=True).filter(lambda s: s.strip("_")))
def test_an_id_that_is_already_safe_is_its_own_key(patient_id):
    if not patient_id.startswith("_") and not patient_id.endswith("_"):
        assert patient_key(patient_id) == patient_id


def test_keys_of_ids_that_sanitising_would_merge():
    merged_before = ["AB 20", "AB/20", "AB_20", "AB__20", " AB 20 "]
    keys = [patient_key(i) for i in merged_before]
    assert keys[2] == "AB_20" and keys[3] == "AB__20"
    assert keys[0] == keys[4] and len(set(keys[:4])) == 4
    assert re.fullmatch(r"AB_20-[0-9a-f]{8}", keys[0]) and re.fullmatch(r"AB_20-[0-9a-f]{8}", keys[1])
    assert patient_key("SYN-0001") == "SYN-0001"
    assert re.fullmatch(r"benign_3-[0-9a-f]{8}", patient_key("benign (3)"))
    # No usable character (Cyrillic), nothing at all, and too long for a file name.
    assert re.fullmatch(r"id-[0-9a-f]{8}", patient_key("Иванов")) and patient_key("Иванов") != patient_key("Петров")
    assert re.fullmatch(r"id-[0-9a-f]{8}", patient_key(""))
    long_a, long_b = "X" * 300, "X" * 299 + "Y"
    assert len(patient_key(long_a)) == KEY_MAX_CHARS and patient_key(long_a) != patient_key(long_b)
    assert patient_key("X" * KEY_MAX_CHARS) == "X" * KEY_MAX_CHARS
