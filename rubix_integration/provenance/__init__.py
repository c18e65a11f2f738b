"""The provenance log: tamper-evident, content-addressed records of what happened.

Use it through the Manager (``manager.log_event(...)``, ``manager.provenance``) or build a
:class:`ProvenanceLogger` on a Manager (or with no argument: the default store). See
:mod:`rubix_integration.provenance.logger` for the record format and chains,
:mod:`~rubix_integration.codecs.dagjson` for the encoding,
:mod:`~rubix_integration.provenance.checkpoints` for signed checkpoints that anchor the chains and
:mod:`~rubix_integration.provenance.prov_export` for W3C PROV export. Names are imported on
first use: importing a module of this package (its models, say) runs no other.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rubix_integration._lazy import lazy_names as _lazy_names

_PUBLIC: dict[str, str] = {
    "ChainProblem": "rubix_integration.provenance.logger",
    "Checkpoint": "rubix_integration.provenance.checkpoints",
    "InvalidDataError": "rubix_integration.errors",
    "InvalidFilterError": "rubix_integration.errors",
    "MAX_RECORD_BYTES": "rubix_integration.provenance.logger",
    "PayloadTooLargeError": "rubix_integration.errors",
    "ProvenanceLogger": "rubix_integration.provenance.logger",
    "ProvenanceRecord": "rubix_integration.provenance.logger",
    "RecordNotFoundError": "rubix_integration.errors",
    "Recording": "rubix_integration.provenance.logger",
    "VerifyReport": "rubix_integration.provenance.logger",
}

if TYPE_CHECKING:
    from rubix_integration.errors import InvalidDataError as InvalidDataError
    from rubix_integration.errors import InvalidFilterError as InvalidFilterError
    from rubix_integration.errors import PayloadTooLargeError as PayloadTooLargeError
    from rubix_integration.errors import RecordNotFoundError as RecordNotFoundError
    from rubix_integration.provenance.checkpoints import Checkpoint as Checkpoint
    from rubix_integration.provenance.logger import MAX_RECORD_BYTES as MAX_RECORD_BYTES
    from rubix_integration.provenance.logger import ChainProblem as ChainProblem
    from rubix_integration.provenance.logger import ProvenanceLogger as ProvenanceLogger
    from rubix_integration.provenance.logger import ProvenanceRecord as ProvenanceRecord
    from rubix_integration.provenance.logger import Recording as Recording
    from rubix_integration.provenance.logger import VerifyReport as VerifyReport

__all__ = sorted(_PUBLIC)

__getattr__, __dir__ = _lazy_names(__name__, _PUBLIC, globals())
