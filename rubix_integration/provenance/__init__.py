"""The provenance log: tamper-evident, content-addressed records of what happened.

Use it through the Manager (``manager.log_event(...)``, ``manager.provenance``) or build a
:class:`ProvenanceLogger` on a Manager. See :mod:`rubix_integration.provenance.logger` for the
record format and chains, :mod:`~rubix_integration.codecs.dagjson` for the encoding,
:mod:`~rubix_integration.provenance.checkpoints` for signed checkpoints that anchor the chains and
:mod:`~rubix_integration.provenance.prov_export` for W3C PROV export.
"""

from __future__ import annotations

from rubix_integration.errors import (
    InvalidDataError,
    InvalidFilterError,
    PayloadTooLargeError,
    RecordNotFoundError,
)
from rubix_integration.provenance.checkpoints import Checkpoint
from rubix_integration.provenance.logger import (
    MAX_RECORD_BYTES,
    ChainProblem,
    ProvenanceLogger,
    ProvenanceRecord,
    Recording,
    VerifyReport,
)

__all__ = [
    "MAX_RECORD_BYTES",
    "ChainProblem",
    "Checkpoint",
    "InvalidDataError",
    "InvalidFilterError",
    "PayloadTooLargeError",
    "ProvenanceLogger",
    "ProvenanceRecord",
    "RecordNotFoundError",
    "Recording",
    "VerifyReport",
]
