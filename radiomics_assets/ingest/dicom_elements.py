"""The raw bytes of a few DICOM header elements, found without building a pydicom data set.

Indexing an archive reads hundreds of thousands of headers, and pydicom spends ~1 ms per file building and
decoding elements the index never looks at. This reader walks the element stream of the common encodings
(explicit or implicit VR little endian, and the encapsulated syntaxes, whose data set is explicit VR little
endian) with ``struct``, skips everything it is not asked for (sequences of defined or undefined length
included) and stops at the first top-level tag after ``last_tag``, as ``pydicom.filereader.read_partial`` with
``stop_when`` does.

It answers only when the file is plainly readable: anything else (no preamble, big endian, deflated, no
transfer syntax, a command set, a VR it does not know, an element cut off by the end of the file, a wanted
element of undefined length or seen twice) gives None, and the caller reads the file with pydicom, whose result
(or error message) is then the one used. So this is a shortcut, never a second opinion.
"""

from __future__ import annotations

import struct
from pathlib import Path

FIRST_READ_BYTES = 16384
"""Bytes read at once; a longer header (big sequences before the last wanted tag) is read on in doublings."""
MAX_HEADER_BYTES = 8 << 20
"""Beyond this the header is left to pydicom (the pixel data of a small file would be read otherwise)."""

IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
_ENCAPSULATED_PREFIXES = ("1.2.840.10008.1.2.4.", "1.2.840.10008.1.2.5")  # JPEG family, RLE: explicit VR LE
_LONG_VRS = frozenset(b"OB OD OF OL OV OW SQ SV UC UN UR UT UV".split())
"""Explicit VRs with two reserved bytes and a 32-bit length."""
_VRS = _LONG_VRS | frozenset(b"AE AS AT CS DA DS DT FD FL IS LO LT PN SH SL SS ST TM UI UL US".split())
_UNDEFINED = 0xFFFFFFFF
_ITEM, _ITEM_END, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_TAG_AND_LENGTH = struct.Struct("<HHL")
_TAG_VR_SHORT_LENGTH = struct.Struct("<HH2sH")
_LONG_LENGTH = struct.Struct("<L")
_SHORT_LENGTH = struct.Struct("<H")
_TAG = struct.Struct("<HH")


class _NotPlain(Exception):
    """The file is not in a form this reader handles: pydicom reads it."""


class _Stream:
    """The start of a file, read further on demand."""

    def __init__(self, fp):
        self.fp = fp
        self.data = fp.read(FIRST_READ_BYTES)
        self.at_end = len(self.data) < FIRST_READ_BYTES

    def has(self, end: int) -> bool:
        """Whether the first ``end`` bytes are there (reading more as needed)."""
        while end > len(self.data) and not self.at_end:
            if len(self.data) >= MAX_HEADER_BYTES:
                raise _NotPlain
            more = self.fp.read(len(self.data))
            self.at_end = len(more) < len(self.data)
            self.data += more
        return end <= len(self.data)

    def need(self, end: int) -> None:
        if not self.has(end):
            raise _NotPlain


def _element_header(stream: _Stream, pos: int, explicit: bool) -> tuple[int, bytes | None, int, int]:
    """(tag, VR or None, value length, header length) of the element at ``pos``."""
    stream.need(pos + 8)
    if not explicit:
        group, element, length = _TAG_AND_LENGTH.unpack_from(stream.data, pos)
        return group << 16 | element, None, length, 8
    group, element, vr, length = _TAG_VR_SHORT_LENGTH.unpack_from(stream.data, pos)
    tag = group << 16 | element
    if tag in (_ITEM, _ITEM_END, _SEQUENCE_END):  # no VR in either encoding
        return tag, None, _TAG_AND_LENGTH.unpack_from(stream.data, pos)[2], 8
    if vr not in _VRS:
        raise _NotPlain
    if vr in _LONG_VRS:
        stream.need(pos + 12)
        return tag, vr, _LONG_LENGTH.unpack_from(stream.data, pos + 8)[0], 12
    return tag, vr, length, 8


def _skip_sequence(stream: _Stream, pos: int, explicit: bool) -> int:
    """Past the items of a sequence of undefined length starting at ``pos`` (after its header)."""
    while True:
        tag, _, length, size = _element_header(stream, pos, explicit=False)  # item tags have no VR
        pos += size
        if tag == _SEQUENCE_END:
            return pos
        if tag != _ITEM:
            raise _NotPlain
        if length != _UNDEFINED:
            stream.need(pos + length)
            pos += length
            continue
        while True:  # an item of undefined length: its elements up to the item delimiter
            tag, vr, length, size = _element_header(stream, pos, explicit)
            pos += size
            if tag == _ITEM_END:
                break
            if length == _UNDEFINED:
                if explicit and vr != b"SQ":  # UN of undefined length holds implicit VR: not handled here
                    raise _NotPlain
                pos = _skip_sequence(stream, pos, explicit)
            else:
                stream.need(pos + length)
                pos += length


def read_elements(path: Path | str, wanted: frozenset[int], last_tag: int) -> tuple[bool, dict[int, tuple]] | None:
    """(explicit VR?, {tag: (VR or None, value bytes)}) for the ``wanted`` top-level tags up to ``last_tag``
    that the file holds, or None when the file is not plainly readable (see the module docstring)."""
    try:
        with open(path, "rb") as fp:
            return _read(_Stream(fp), wanted, last_tag)
    except (_NotPlain, OSError, struct.error, ValueError, RecursionError):  # ValueError: a UID that is not ASCII
        return None


def _read(stream: _Stream, wanted: frozenset[int], last_tag: int) -> tuple[bool, dict[int, tuple]]:
    stream.need(132)
    if stream.data[128:132] != b"DICM":
        raise _NotPlain
    pos, syntax = 132, None
    while stream.has(pos + 8):  # the file meta group (0002): always explicit VR little endian
        if _TAG_AND_LENGTH.unpack_from(stream.data, pos)[0] != 0x0002:
            break
        tag, _, length, size = _element_header(stream, pos, explicit=True)
        if length == _UNDEFINED:
            raise _NotPlain
        stream.need(pos + size + length)
        if tag == 0x00020010:
            syntax = stream.data[pos + size : pos + size + length].decode("ascii").rstrip("\0 ")
        pos += size + length
    if syntax == IMPLICIT_VR_LITTLE_ENDIAN:
        explicit = False
    elif syntax == EXPLICIT_VR_LITTLE_ENDIAN or (syntax or "").startswith(_ENCAPSULATED_PREFIXES):
        explicit = True
    else:  # none, big endian, deflated, private: pydicom knows what to do
        raise _NotPlain
    found: dict[int, tuple] = {}
    # The loop below is _element_header inlined for the common case: it runs ~30 times per file.
    data, size = stream.data, len(stream.data)
    while True:
        if pos + 12 > size and stream.has(pos + 12):
            data, size = stream.data, len(stream.data)
        if pos + 8 > size:  # fewer bytes left than a tag and length: the end of the file, as for pydicom
            break
        group, element = _TAG.unpack_from(data, pos)
        if group == 0x0000:  # a command set, read apart by pydicom
            raise _NotPlain
        tag = group << 16 | element
        if tag > last_tag:  # pydicom's stop_when: nothing of this element is read
            break
        if not explicit:
            vr, length = None, _LONG_LENGTH.unpack_from(data, pos + 4)[0]
            pos += 8
        else:
            vr = data[pos + 4 : pos + 6]
            if vr in _LONG_VRS:
                if pos + 12 > size:
                    raise _NotPlain
                length = _LONG_LENGTH.unpack_from(data, pos + 8)[0]
                pos += 12
            elif vr in _VRS:
                length = _SHORT_LENGTH.unpack_from(data, pos + 6)[0]
                pos += 8
            else:
                raise _NotPlain
        if length == _UNDEFINED:
            if tag in wanted or (explicit and vr != b"SQ"):
                raise _NotPlain
            pos = _skip_sequence(stream, pos, explicit)
            data, size = stream.data, len(stream.data)
            continue
        end = pos + length
        if end > size:
            stream.need(end)
            data, size = stream.data, len(stream.data)
        if tag in wanted:
            if tag in found:
                raise _NotPlain
            found[tag] = (vr, data[pos:end])
        pos = end
    return explicit, found
