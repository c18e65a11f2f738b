"""Pin state: IPFS-Cluster's ``State``/``BatchingState`` and ``api.Pin``, in the store or a plugin.

:class:`Pin` carries ipfs-cluster's fields and JSON encoding; :class:`PinStateBackend` is the
contract every backend keeps; :class:`PinState` keeps the pinset in a store's ``pins`` table
(embedded SQLite, PostgreSQL); :class:`BatchingState` buffers writes; :func:`export_pins` and
:func:`import_pins` speak ``ipfs-cluster-service state export``'s NDJSON. Names are imported
on first use: importing the package loads no database library.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rubix_integration._lazy import lazy_names as _lazy_names

_PUBLIC: dict[str, str] = {
    "PIN_TYPES": "rubix_integration.pins._pin",
    "ZERO_TIME": "rubix_integration.pins._pin",
    "BatchingState": "rubix_integration.pins._state",
    "ImportResult": "rubix_integration.pins._ndjson",
    "Pin": "rubix_integration.pins._pin",
    "PinState": "rubix_integration.pins._sql",
    "PinStateBackend": "rubix_integration.pins._state",
    "PostgreSQLPinState": "rubix_integration.pins._sql",
    "SQLitePinState": "rubix_integration.pins._sql",
    "StateSummary": "rubix_integration.pins._state",
    "export_pins": "rubix_integration.pins._ndjson",
    "format_time": "rubix_integration.pins._pin",
    "import_pins": "rubix_integration.pins._ndjson",
    "new_pin": "rubix_integration.pins._pin",
    "open_pin_state": "rubix_integration.pins._open",
    "parse_time": "rubix_integration.pins._pin",
    "read_pins": "rubix_integration.pins._ndjson",
}

if TYPE_CHECKING:
    from rubix_integration.pins._ndjson import ImportResult as ImportResult
    from rubix_integration.pins._ndjson import export_pins as export_pins
    from rubix_integration.pins._ndjson import import_pins as import_pins
    from rubix_integration.pins._ndjson import read_pins as read_pins
    from rubix_integration.pins._open import open_pin_state as open_pin_state
    from rubix_integration.pins._pin import PIN_TYPES as PIN_TYPES
    from rubix_integration.pins._pin import ZERO_TIME as ZERO_TIME
    from rubix_integration.pins._pin import Pin as Pin
    from rubix_integration.pins._pin import format_time as format_time
    from rubix_integration.pins._pin import new_pin as new_pin
    from rubix_integration.pins._pin import parse_time as parse_time
    from rubix_integration.pins._sql import PinState as PinState
    from rubix_integration.pins._sql import PostgreSQLPinState as PostgreSQLPinState
    from rubix_integration.pins._sql import SQLitePinState as SQLitePinState
    from rubix_integration.pins._state import BatchingState as BatchingState
    from rubix_integration.pins._state import PinStateBackend as PinStateBackend
    from rubix_integration.pins._state import StateSummary as StateSummary

__all__ = sorted(_PUBLIC)

__getattr__, __dir__ = _lazy_names(__name__, _PUBLIC, globals())
