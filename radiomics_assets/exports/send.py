"""Send export files to a DICOM node (PACS, Orthanc, a viewer) with C-STORE (pynetdicom)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pydicom

CALLING_AE_TITLE = "RADIOMICS"


@dataclass
class SendResult:
    sent: list[Path] = field(default_factory=list)
    failed: dict[Path, str] = field(default_factory=dict)
    """File -> why the node refused it (the C-STORE status) or why it was not sent."""


def send_files(
    files: list[Path], *, host: str, port: int, ae_title: str, calling_ae_title: str = CALLING_AE_TITLE
) -> SendResult:
    """C-STORE every file over one association; a file the node refuses is reported, the others still go.

    Raises ``ConnectionError`` when no association can be made (wrong host, port or AE title).
    """
    from pynetdicom import AE

    datasets = {path: pydicom.dcmread(path) for path in files}
    ae = AE(ae_title=calling_ae_title)
    for ds in datasets.values():
        # Each SOP class with the transfer syntax it is stored in, so nothing needs converting.
        ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    result = SendResult()
    if not datasets:
        return result
    association = ae.associate(host, port, ae_title=ae_title)
    if not association.is_established:
        raise ConnectionError(f"no DICOM association with {ae_title}@{host}:{port} (rejected, aborted or unreachable)")
    try:
        for path, ds in datasets.items():
            try:
                status = association.send_c_store(ds)
            except (ValueError, RuntimeError) as error:  # e.g. no accepted presentation context for its SOP class
                result.failed[path] = f"not sent: {error}"
                continue
            code = getattr(status, "Status", None)
            if code == 0x0000:
                result.sent.append(path)
            else:
                result.failed[path] = "no response" if code is None else f"C-STORE status 0x{code:04X}"
    finally:
        association.release()
    return result
