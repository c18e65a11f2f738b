"""Errors of the provenance log; they live in :mod:`rubix_integration.errors` with the others."""

from __future__ import annotations

from rubix_integration.errors import (
    InvalidDataError,
    InvalidFilterError,
    PayloadTooLargeError,
    RecordNotFoundError,
)

__all__ = ["InvalidDataError", "InvalidFilterError", "PayloadTooLargeError", "RecordNotFoundError"]
