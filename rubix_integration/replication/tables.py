"""Which tables replicate, and how their rows travel as JSON.

Every table of :data:`sqlmodel.SQLModel.metadata` that follows the rule of
:mod:`rubix_integration.stores.replicated` (a model mixing in
:class:`~rubix_integration.stores.replicated.ReplicatedMixin`: token records, processed
databases, workflow tasks, pin state, a plugin's own) replicates without further ado; provenance
records, which never change, are copied where missing (:data:`APPEND_ONLY`). A host app whose
tables live in a metadata of its own registers them with :meth:`ReplicatedTables.register`.

Each incoming row is checked against its table before anything is written: an unknown table or
column, a missing column, a value of the wrong type or too long for its column is refused with
:class:`~rubix_integration.errors.ChangeRejectedError`.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import sqlalchemy as sa
from sqlmodel import SQLModel

from rubix_integration.errors import ChangeRejectedError
from rubix_integration.stores.replicated import REPLICATED_COLUMNS, replicated_tables

__all__ = ["APPEND_ONLY", "AppendOnly", "ReplicatedTables", "TableCodec"]

#: Bookkeeping tables that carry the columns of the rule by accident never replicate.
_NEVER = frozenset({"rubix_meta"})

Decoder = Callable[[Any], Any]


class TableCodec:
    """Encodes rows of one table to JSON values and decodes (and checks) them back."""

    def __init__(self, table: sa.Table, *, key: Sequence[str] | None = None,
                 local: Sequence[str] = ()) -> None:
        self.table = table
        wire = [c for c in table.columns if c.name not in local]
        # plain str names (SQLAlchemy's are a subclass orjson does not take as keys)
        self.columns = [str(c.name) for c in wire]
        self.key = (list(key) if key is not None
                    else [str(c.name) for c in table.primary_key.columns])
        self._encoders = [(str(c.name), _encoder(c)) for c in wire]
        self._decoders = {str(c.name): _decoder(c) for c in wire}
        self._names = frozenset(self.columns)
        self._checks = [(str(c.name), bool(c.nullable), _bulk_check(c)) for c in wire]
        #: Columns holding floats (checked for NaN and infinities before orjson writes them).
        self.floats = [c.name for c in wire if isinstance(_unwrap(c.type), sa.Float)]

    def encode(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """The JSON form of ``row`` (a mapping of every column)."""
        out: dict[str, Any] = {}
        for name, enc in self._encoders:
            value = row[name]
            out[name] = value if value is None or enc is None else enc(value)
        return out

    def decode(self, row: object, *, peer: str | None = None) -> dict[str, Any]:
        """The Python values of the JSON row ``row``; refuse a row that does not fit the table."""
        name = self.table.name
        if not isinstance(row, dict):
            raise ChangeRejectedError(f"a change to {name!r} is not an object", peer=peer,
                                      table=name)
        unknown = [k for k in row if k not in self._decoders]
        if unknown:
            raise ChangeRejectedError(
                f"a change to {name!r} names unknown column(s) {', '.join(map(str, unknown))}",
                peer=peer, table=name)
        missing = [c for c in self.columns if c not in row]
        if missing:
            raise ChangeRejectedError(
                f"a change to {name!r} lacks column(s) {', '.join(missing)}", peer=peer,
                table=name)
        out: dict[str, Any] = {}
        for col, dec in self._decoders.items():
            try:
                out[col] = dec(row[col])
            except (TypeError, ValueError, decimal.InvalidOperation) as exc:
                raise ChangeRejectedError(f"a change to {name}.{col} is refused: {exc}",
                                          peer=peer, table=name) from None
        return out

    def decode_many(self, rows: Iterable[object], *, peer: str | None = None,
                    copy: bool = True) -> list[dict[str, Any]]:
        """:meth:`decode` of every row of ``rows``, checked a column at a time (one type test
        per column over the whole batch); a batch that fails any check is decoded row by row,
        so the refusal names the first bad row as :meth:`decode` does. With ``copy=False``
        the rows given (just parsed, owned by the caller) are decoded in place."""
        batch = rows if isinstance(rows, list) else list(rows)
        names = self._names
        if not all(type(r) is dict and r.keys() == names for r in batch):
            return [self.decode(r, peer=peer) for r in batch]
        changed: list[tuple[str, list[Any]]] = []
        for col, nullable, check in self._checks:
            values = [r[col] for r in batch]  # type: ignore[index]
            if not nullable and values.count(None):
                return [self.decode(r, peer=peer) for r in batch]
            if check is None:
                continue
            try:
                converted = check(values)
            except (TypeError, ValueError, decimal.InvalidOperation, OverflowError):
                return [self.decode(r, peer=peer) for r in batch]
            if converted is not None:
                changed.append((col, converted))
        # every check passed: only now are values replaced
        out: list[dict[str, Any]] = ([dict(cast("dict[str, Any]", r)) for r in batch] if copy
                                     else cast("list[dict[str, Any]]", batch))
        for col, converted in changed:
            for r, v in zip(out, converted, strict=True):
                r[col] = v
        return out

    def encode_many(self, rows: Sequence[Sequence[Any]],
                    columns: Sequence[str]) -> list[dict[str, Any]]:
        """:meth:`encode` of rows given as tuples in ``columns`` order (a query's result)."""
        where = {name: i for i, name in enumerate(columns)}
        plan = [(name, where[name], enc) for name, enc in self._encoders]
        wire = [name for name, _, _ in plan]
        if wire == list(columns):
            # the values as they came (a dict per row), then each column that needs an encoder
            out = [dict(zip(wire, r, strict=True)) for r in rows]
            for name, _, enc in plan:
                if enc is not None:
                    for row in out:
                        value = row[name]
                        if value is not None:
                            row[name] = enc(value)
            return out
        out = []
        for r in rows:
            item: dict[str, Any] = {}
            for name, i, enc in plan:
                value = r[i]
                item[name] = value if value is None or enc is None else enc(value)
            out.append(item)
        return out


#: A check of one column's values over a batch: raises on a bad value; returns the converted
#: values, or ``None`` when they are kept as they came.
BulkCheck = Callable[[list[Any]], "list[Any] | None"]
_NONE = type(None)


def _bulk_check(column: sa.Column[Any]) -> BulkCheck | None:
    kind = _unwrap(column.type)
    if isinstance(kind, sa.Boolean):
        return _bulk_types(frozenset({bool, _NONE}))
    if isinstance(kind, sa.Integer):
        return _bulk_int
    if isinstance(kind, sa.Float):
        return _bulk_float
    if isinstance(kind, sa.String) and not isinstance(kind, sa.Uuid):
        length = getattr(kind, "length", None)
        return _bulk_string(length)
    if isinstance(kind, sa.Numeric | sa.DateTime | sa.Date | sa.Time | sa.LargeBinary | sa.Uuid):
        one = _decoder(column)
        return lambda values: [one(v) for v in values]
    return None  # JSON and the types a plugin brings: taken as they come


def _bulk_types(allowed: frozenset[type]) -> BulkCheck:
    def check(values: list[Any]) -> None:
        if not set(map(type, values)) <= allowed:
            raise TypeError("a value of the wrong type")
        return None

    return check


def _bulk_int(values: list[Any]) -> None:
    kinds = set(map(type, values))
    if not kinds <= {int, _NONE}:
        raise TypeError("expected an integer")
    present = [v for v in values if v is not None] if _NONE in kinds else values
    if present and not (min(present) >= -(1 << 63) and max(present) < (1 << 63)):
        raise ValueError("integer out of the 64-bit range")
    return None


def _bulk_float(values: list[Any]) -> list[Any] | None:
    kinds = set(map(type, values))
    if not kinds <= {int, float, _NONE}:
        raise TypeError("expected a number")
    if int not in kinds:
        return None
    return [v if v is None else float(v) for v in values]


def _bulk_string(length: int | None) -> BulkCheck:
    def check(values: list[Any]) -> None:
        kinds = set(map(type, values))
        if not kinds <= {str, _NONE}:
            raise TypeError("expected text")
        if length is not None and values:
            present = [v for v in values if v is not None] if _NONE in kinds else values
            if present and max(map(len, present)) > length:
                raise ValueError("text too long")
        return None

    return check


def _encoder(column: sa.Column[Any]) -> Callable[[Any], Any] | None:
    kind = _unwrap(column.type)
    if isinstance(kind, sa.DateTime | sa.Date | sa.Time):
        return lambda v: v.isoformat()
    if isinstance(kind, sa.LargeBinary):
        return lambda v: base64.b64encode(bytes(v)).decode("ascii")
    if isinstance(kind, sa.Numeric) and not isinstance(kind, sa.Float):
        return str
    if isinstance(kind, sa.Uuid):
        return str
    return None


def _unwrap(kind: Any) -> Any:
    # a TypeDecorator (SQLModel's AutoString, a JSON variant) checks as the type it stores
    while isinstance(kind, sa.types.TypeDecorator):
        kind = kind.impl_instance
    return kind


def _decoder(column: sa.Column[Any]) -> Decoder:
    kind = _unwrap(column.type)
    nullable = bool(column.nullable)
    inner: Decoder
    if isinstance(kind, sa.Boolean):
        inner = _bool
    elif isinstance(kind, sa.Integer):
        inner = _int
    elif isinstance(kind, sa.Float):
        inner = _float
    elif isinstance(kind, sa.Numeric):
        inner = _decimal
    elif isinstance(kind, sa.DateTime):
        inner = _datetime(bool(getattr(kind, "timezone", False)))
    elif isinstance(kind, sa.Date):
        inner = _typed_iso(dt.date)
    elif isinstance(kind, sa.Time):
        inner = _typed_iso(dt.time)
    elif isinstance(kind, sa.LargeBinary):
        inner = _binary
    elif isinstance(kind, sa.Uuid):
        inner = _uuid
    elif isinstance(kind, sa.String):
        inner = _string(getattr(kind, "length", None))
    else:  # JSON and the types a plugin brings: taken as they come, checked by the database
        inner = _any

    def decode(value: Any) -> Any:
        if value is None:
            if not nullable:
                raise ValueError("null where the column requires a value")
            return None
        return inner(value)

    return decode


def _any(value: Any) -> Any:
    return value


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"expected a boolean, got {type(value).__name__}")
    return value


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an integer, got {type(value).__name__}")
    if not -(1 << 63) <= value < (1 << 63):
        raise ValueError("integer out of the 64-bit range")
    return value


def _float(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"expected a number, got {type(value).__name__}")
    return float(value)


def _decimal(value: Any) -> decimal.Decimal:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise TypeError(f"expected a decimal, got {type(value).__name__}")
    return decimal.Decimal(str(value))


def _datetime(aware: bool) -> Decoder:
    def decode(value: Any) -> dt.datetime:
        if not isinstance(value, str):
            raise TypeError(f"expected an ISO 8601 timestamp, got {type(value).__name__}")
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        if aware and parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=dt.timezone.utc)
        return parsed

    return decode


def _typed_iso(kind: type[dt.date] | type[dt.time]) -> Decoder:
    def decode(value: Any) -> Any:
        if not isinstance(value, str):
            raise TypeError(f"expected an ISO 8601 value, got {type(value).__name__}")
        return kind.fromisoformat(value)

    return decode


def _binary(value: Any) -> bytes:
    if not isinstance(value, str):
        raise TypeError("expected base64 text")
    return base64.b64decode(value, validate=True)


def _uuid(value: Any) -> uuid.UUID:
    if not isinstance(value, str):
        raise TypeError("expected a UUID")
    return uuid.UUID(value)


def _string(length: int | None) -> Decoder:
    def decode(value: Any) -> str:
        if not isinstance(value, str):
            raise TypeError(f"expected text, got {type(value).__name__}")
        if length is not None and len(value) > length:
            raise ValueError(f"text of {len(value)} characters exceeds the column's {length}")
        return value

    return decode


@dataclass(frozen=True)
class AppendOnly:
    """A table whose rows never change once written (provenance records): a peer copies the rows
    it lacks. ``key`` names a row everywhere, ``order`` is the local insertion order the feed
    follows, ``local`` the columns that stay behind (the local id, local state)."""

    key: tuple[str, ...]
    order: str
    local: tuple[str, ...]


#: The built-in append-only tables.
APPEND_ONLY: dict[str, AppendOnly] = {
    "provenance_records": AppendOnly(key=("chain", "seq"), order="id",
                                     local=("id", "published")),
}


class ReplicatedTables:
    """The tables that replicate: those of the rule in ``metadata``, plus those registered.

    Thread-safe. A table named in ``exclude`` never replicates.
    """

    def __init__(self, metadata: sa.MetaData | None = None, *,
                 exclude: Iterable[str] = ()) -> None:
        self._metadata = metadata if metadata is not None else SQLModel.metadata
        self._extra: dict[str, sa.Table] = {}
        self._exclude = set(exclude) | _NEVER
        self._codecs: dict[str, TableCodec] = {}
        self._lock = threading.Lock()

    def register(self, table: sa.Table | type[Any]) -> sa.Table:
        """Replicate ``table`` (a Core table or a SQLModel/ORM class with ``__table__``).

        It must carry the columns of the rule (``origin_node``, ``change_version``,
        ``deleted_at``) and a primary key; raises ``ValueError`` otherwise.
        """
        found = table if isinstance(table, sa.Table) else getattr(table, "__table__", None)
        if not isinstance(found, sa.Table):
            raise ValueError(f"not a table or a table model: {table!r}")
        missing = [c for c in REPLICATED_COLUMNS if c not in found.c]
        if missing:
            raise ValueError(f"table {found.name!r} cannot replicate: it lacks the column(s) "
                             f"{', '.join(missing)} (mix in ReplicatedMixin)")
        if not found.primary_key.columns:
            raise ValueError(f"table {found.name!r} cannot replicate: it has no primary key")
        with self._lock:
            self._extra[found.name] = found
            self._exclude.discard(found.name)
            self._codecs.pop(found.name, None)
        return found

    def unregister(self, name: str) -> None:
        """Stop replicating table ``name``."""
        with self._lock:
            self._extra.pop(name, None)
            self._exclude.add(name)
            self._codecs.pop(name, None)

    def tables(self) -> dict[str, sa.Table]:
        """Every replicated table by name, sorted (append-only ones included)."""
        with self._lock:
            found = {t.name: t for t in replicated_tables(self._metadata)}
            found.update({n: self._metadata.tables[n] for n in APPEND_ONLY
                          if n in self._metadata.tables})
            found.update(self._extra)
            return {n: found[n] for n in sorted(found) if n not in self._exclude}

    def append_only(self, name: str) -> AppendOnly | None:
        """How table ``name`` replicates when its rows never change, else ``None``."""
        return APPEND_ONLY.get(name) if name not in self._extra else None

    def names(self) -> list[str]:
        """The names of :meth:`tables`."""
        return list(self.tables())

    def codec(self, name: str, *, peer: str | None = None) -> TableCodec:
        """The codec of table ``name``; refuse a table that does not replicate here."""
        with self._lock:
            codec = self._codecs.get(name)
        if codec is not None:
            return codec
        table = self.tables().get(name)
        if table is None:
            raise ChangeRejectedError(f"table {name!r} does not replicate on this node",
                                      peer=peer, table=name)
        spec = self.append_only(name)
        codec = (TableCodec(table, key=spec.key, local=spec.local) if spec is not None
                 else TableCodec(table))
        with self._lock:
            self._codecs[name] = codec
        return codec
