"""The dialect-dependent primitives every capability writes through, never by hand.

A store declares in ``primitives`` which of these it implements; a capability names the ones it
needs with :meth:`StorePrimitives.require` when it is built, so a store lacking one fails at
start-up with a :class:`~rubix_integration.errors.StoreError` naming the store and the primitive,
instead of running another dialect's SQL.

``upsert``
    :meth:`~StorePrimitives.upsert`: insert rows, or update the stored row with the same key
    when a column differs; an unchanged row is not rewritten.
``claim``
    :meth:`~StorePrimitives.claim`, :meth:`~StorePrimitives.claim_update` and
    :meth:`~StorePrimitives.locked`: select (and change) rows so that concurrent claimers get
    different rows (``FOR UPDATE SKIP LOCKED`` on PostgreSQL; on SQLite the transaction's write
    lock, taken by ``BEGIN IMMEDIATE``, serialises claimers); :meth:`~StorePrimitives.update_each`
    changes many rows by key, each with its own values and expectations, in one statement where
    the dialect allows.
``json``
    :meth:`~StorePrimitives.json_path_equals`, :meth:`~StorePrimitives.json_array_contains`,
    :meth:`~StorePrimitives.json_array_within` and :meth:`~StorePrimitives.json_array_overlaps`:
    SQL conditions on JSON columns.
``change_version``
    :meth:`~StorePrimitives.stamp`: ``origin_node`` and the next ``change_version`` (a hybrid
    logical clock stamp) for rows of a replicated table (see
    :mod:`rubix_integration.stores.replicated`).
``bulk_insert``
    :meth:`Store.bulk_insert <rubix_integration.stores.base.Store.bulk_insert>`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import sqlalchemy as sa

from rubix_integration.errors import StoreError
from rubix_integration.stores.replicated import StoreClock, is_replicated

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

__all__ = ["PRIMITIVES", "StorePrimitives"]

#: Every primitive a store may declare in ``primitives``.
PRIMITIVES = ("bulk_insert", "upsert", "claim", "json", "change_version")

#: Rows one upsert statement carries on stores that bind every value.
UPSERT_BATCH = 500


class StorePrimitives:
    """The primitives' public side; each store class implements the ``_`` hooks for its dialect.

    Methods here check the declaration and the arguments, then call the hook; a store that
    declares a primitive implements every hook it names.
    """

    name: ClassVar[str] = ""
    #: The primitives this store implements (names from :data:`PRIMITIVES`).
    primitives: ClassVar[frozenset[str]] = frozenset()
    #: Whether JSON numbers come back as SQL ``numeric`` (PostgreSQL's JSONB normalises
    #: ``1e2`` to ``100``), which the provenance verifier must allow for.
    json_numbers_as_numeric: ClassVar[bool] = False

    if TYPE_CHECKING:
        @property
        def masked_url(self) -> str: ...

        def transaction(self) -> Any: ...
        def _begin(self, conn: Connection) -> None: ...

    _node_id_cache: str | None = None
    _store_clock: StoreClock | None = None

    #: Whether keeping one connection for a loop of calls saves round trips (a pooled
    #: connection is pinged before use on a server database, not on an embedded one).
    reuses_connections: ClassVar[bool] = False

    # --- declaration ---------------------------------------------------------------------------

    def require(self, *names: str, by: str = "") -> None:
        """Raise :class:`StoreError` unless this store implements every primitive in ``names``.

        ``by`` names the capability asking, for the message.
        """
        unknown = [n for n in names if n not in PRIMITIVES]
        if unknown:
            raise ValueError(f"unknown store primitive(s) {', '.join(unknown)}; known: "
                             f"{', '.join(PRIMITIVES)}")
        missing = [n for n in names if n not in self.primitives]
        if missing:
            who = f" needed by {by}" if by else ""
            raise StoreError(
                f"store {self.name!r} ({type(self).__name__}) does not implement the store "
                f"primitive(s) {', '.join(missing)}{who}",
                url=self.masked_url, backend=self.name)

    def _need(self, primitive: str) -> None:
        if primitive not in self.primitives:
            self.require(primitive)

    # --- upsert --------------------------------------------------------------------------------

    def upsert(
        self,
        table: sa.Table,
        rows: Iterable[Mapping[str, Any]],
        *,
        key: Sequence[str] | None = None,
        connection: Connection | None = None,
        update: Sequence[str] | None = None,
    ) -> int:
        """Insert ``rows`` or update the stored rows with the same ``key``; return how many rows
        were inserted or changed (a row whose ``update`` columns already hold the given values
        is neither rewritten nor counted).

        ``key`` names a primary or unique key (default: the primary key); ``update`` the columns
        an existing row takes (default: every given column outside the key). Every row maps the
        same column names. With ``connection`` the rows join its transaction.
        """
        self._need("upsert")
        batch = list(rows)
        if not batch:
            return 0
        names = [str(n) for n in batch[0]]
        unknown = [n for n in names if n not in table.c]
        keys = list(key) if key is not None else [c.name for c in table.primary_key.columns]
        if unknown or not keys or any(k not in names for k in keys):
            raise StoreError(
                f"upsert into {table.name!r}: every row must give the key column(s) "
                f"{', '.join(keys) or '(none: the table has no primary key)'}"
                + (f"; unknown column(s) {', '.join(unknown)}" if unknown else ""),
                url=self.masked_url, backend=self.name)
        changed = [c for c in (update if update is not None else names) if c not in keys]
        if connection is not None:
            return self._upsert(connection, table, names, keys, changed, batch)
        with self.transaction() as conn:
            return self._upsert(conn, table, names, keys, changed, batch)

    def _upsert(self, conn: Connection, table: sa.Table, names: list[str], keys: list[str],
                update: list[str], rows: list[Mapping[str, Any]]) -> int:
        raise NotImplementedError

    def upsert_stamped(
        self,
        table: sa.Table,
        names: Sequence[str],
        rows: Sequence[tuple[Any, ...]],
        *,
        connection: Connection,
        values: Mapping[str, Any] | None = None,
    ) -> int:
        """Stamp rows of the replicated ``table`` and upsert them by primary key, in
        ``connection``'s transaction: the effect of :meth:`stamp` followed by :meth:`upsert`
        (every given column updated, unchanged rows not rewritten), for rows given as tuples.

        Each row holds the values of the columns ``names`` (Python values of the column types,
        the primary key among them) in that order; ``values`` maps further columns to a value
        every row takes. ``origin_node`` and ``change_version`` are the store's to set: naming
        them is an error. A store may write the tuples without building a mapping per row.
        Return how many rows were inserted or changed.
        """
        self._need("upsert")
        self._need("change_version")
        fixed = dict(values or {})
        given = [*names, *fixed]
        keys = [c.name for c in table.primary_key.columns]
        unknown = [n for n in given if n not in table.c]
        stamped = [n for n in given if n in ("origin_node", "change_version")]
        if not is_replicated(table) or unknown or stamped or len(set(given)) != len(given) \
                or not keys or any(k not in names for k in keys):
            raise StoreError(
                f"upsert_stamped into {table.name!r}: the table must be replicated and each row "
                f"give its key column(s) {', '.join(keys) or '(none)'} once, without "
                f"origin_node or change_version"
                + (f"; unknown column(s) {', '.join(unknown)}" if unknown else ""),
                url=self.masked_url, backend=self.name)
        if not rows:
            return 0
        return self._upsert_stamped(connection, table, list(names), rows, fixed)

    def _upsert_stamped(self, conn: Connection, table: sa.Table, names: list[str],
                        rows: Sequence[tuple[Any, ...]], values: dict[str, Any]) -> int:
        """Any store: mappings stamped by :meth:`stamp`, written by :meth:`upsert`."""
        mapped = [{**dict(zip(names, row, strict=True)), **values} for row in rows]
        return self.upsert(table, self.stamp(table, mapped, connection=conn), connection=conn)

    def insert_missing(
        self,
        table: sa.Table,
        rows: Sequence[Mapping[str, Any]],
        *,
        connection: Connection,
        returning: Sequence[sa.ColumnElement[Any]] = (),
    ) -> list[sa.Row[Any]]:
        """Insert the ``rows`` whose primary key is not stored yet, in ``connection``'s
        transaction; return the ``returning`` columns of the rows inserted (the others are left
        as they are)."""
        self._need("upsert")
        out: list[sa.Row[Any]] = []
        for start in range(0, len(rows), UPSERT_BATCH):
            out.extend(self._insert_missing(connection, table,
                                            list(rows[start:start + UPSERT_BATCH]),
                                            list(returning)))
        return out

    def _insert_missing(self, conn: Connection, table: sa.Table, rows: list[Mapping[str, Any]],
                        returning: list[sa.ColumnElement[Any]]) -> list[sa.Row[Any]]:
        keys = [c.name for c in table.primary_key.columns]
        stmt = self._dialect_insert(table).values(rows).on_conflict_do_nothing(
            index_elements=keys)
        if not returning:
            conn.execute(stmt)
            return []
        return list(conn.execute(stmt.returning(*returning)).all())

    def _dialect_insert(self, table: sa.Table) -> Any:
        """The dialect's ``INSERT`` construct (with ``ON CONFLICT``) for ``table``."""
        raise NotImplementedError

    # --- claim ---------------------------------------------------------------------------------

    def locked(self, query: sa.Select[Any], *, skip_locked: bool = False) -> sa.Select[Any]:
        """``query`` selecting rows to change in this transaction, locked against other writers
        until it ends; with ``skip_locked`` rows another transaction holds are passed over."""
        self._need("claim")
        return self._locked(query, skip_locked)

    def _locked(self, query: sa.Select[Any], skip_locked: bool) -> sa.Select[Any]:
        raise NotImplementedError

    def claim(
        self,
        conn: Connection,
        query: sa.Select[Any],
        *,
        limit: int,
    ) -> list[sa.Row[Any]]:
        """Up to ``limit`` rows of ``query`` (its conditions and order), locked so that
        concurrent claimers in other transactions get different rows.

        ``conn`` must be inside a transaction from :meth:`transaction`; the rows stay claimed
        until it ends.
        """
        self._need("claim")
        if not conn.in_transaction():
            raise StoreError("claim outside a transaction: the rows would not stay claimed",
                             url=self.masked_url, backend=self.name)
        return list(conn.execute(self._locked(query.limit(limit), True)).all())

    def claim_update(
        self,
        conn: Connection,
        table: sa.Table,
        query: sa.Select[Any],
        *,
        limit: int,
        values: Mapping[str, Any],
        per_row: Mapping[str, Sequence[Any]] | None = None,
        carry: Sequence[str] = (),
        returning: Sequence[sa.ColumnElement[Any]] = (),
        planner_hints: Sequence[str] = (),
    ) -> list[tuple[Any, ...]]:
        """Claim up to ``limit`` rows of ``query`` and change them; return, for each, the values
        of ``returning`` followed by those of the ``carry`` columns.

        ``query`` selects the key column of ``table`` (its single primary key) and the
        ``carry`` columns (as they were before the change), with the
        conditions and order of the claim. Each claimed row takes ``values``, the ``i``-th
        value of each ``per_row`` sequence (at least ``limit`` long), and a change stamp (see
        :meth:`stamp`). Concurrent claimers get different rows, in one statement on stores
        that can (the planner hints, ``SET LOCAL`` settings, apply to it where they mean
        something). ``conn`` must be in a transaction from :meth:`transaction`.
        """
        self._need("claim")
        self._need("change_version")
        if not conn.in_transaction():
            raise StoreError("claim outside a transaction: the rows would not stay claimed",
                             url=self.masked_url, backend=self.name)
        return self._claim_update(conn, table, query.limit(limit), dict(values),
                                  dict(per_row or {}), list(carry), list(returning),
                                  list(planner_hints))

    def _claim_update(self, conn: Connection, table: sa.Table, query: sa.Select[Any],
                      values: dict[str, Any], per_row: dict[str, Sequence[Any]],
                      carry: list[str], returning: list[sa.ColumnElement[Any]],
                      hints: list[str]) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def update_each(
        self,
        conn: Connection,
        table: sa.Table,
        items: Sequence[Mapping[str, Any]],
        *,
        assign: Sequence[str] = (),
        expect: Mapping[str, str] | None = None,
        values: Mapping[str, Any] | None = None,
        where: Sequence[sa.ColumnElement[bool]] = (),
        returning: Sequence[sa.ColumnElement[Any]] = (),
    ) -> list[sa.Row[Any]]:
        """Change each row of ``table`` named by an item (by its primary key, a field of the
        item) where the row still satisfies ``where`` and the item's expectations; return the
        changed rows (at most one per item, in no set order).

        Each item maps the key column, the columns named in ``assign`` (their new values, as
        Python values of the column's type) and the fields ``expect`` names: ``{column: field}``
        requires the column to equal the item's field, unless that field is ``None``.
        ``values`` are set on every changed row, with a change stamp when the table is
        replicated. One statement where the dialect allows, else one per item.
        """
        self._need("claim")
        keys = [c.name for c in table.primary_key.columns]
        if len(keys) != 1:
            raise StoreError(f"update_each on {table.name!r} needs a single-column primary key",
                             url=self.masked_url, backend=self.name)
        if not items:
            return []
        return self._update_each(conn, table, keys[0], list(items), list(assign),
                                 dict(expect or {}), dict(values or {}), list(where),
                                 list(returning))

    def _update_each(self, conn: Connection, table: sa.Table, key: str,
                     items: list[Mapping[str, Any]], assign: list[str], expect: dict[str, str],
                     values: dict[str, Any], where: list[sa.ColumnElement[bool]],
                     returning: list[sa.ColumnElement[Any]]) -> list[sa.Row[Any]]:
        raise NotImplementedError

    # --- JSON ----------------------------------------------------------------------------------

    def json_path_equals(self, column: Any, path: Sequence[str],
                         value: Any) -> sa.ColumnElement[bool]:
        """The JSON object in ``column`` holds the scalar ``value`` (text, number, bool or
        ``None``) at ``path`` (field names, outermost first)."""
        self._need("json")
        if not path:
            raise ValueError("a JSON path names at least one field")
        return self._json_path_equals(column, tuple(path), value)

    def json_array_contains(self, column: Any, item: str) -> sa.ColumnElement[bool]:
        """The JSON array of text in ``column`` holds ``item``."""
        self._need("json")
        return self._json_array("contains", column, item)

    def json_array_within(self, column: Any, items: Sequence[str]) -> sa.ColumnElement[bool]:
        """Every element of the JSON array of text in ``column`` is one of ``items``."""
        self._need("json")
        return self._json_array("within", column, list(items))

    def json_array_overlaps(self, column: Any, items: Sequence[str]) -> sa.ColumnElement[bool]:
        """The JSON array of text in ``column`` holds at least one of ``items``."""
        self._need("json")
        return self._json_array("overlaps", column, list(items))

    def _json_path_equals(self, column: Any, path: tuple[str, ...],
                          value: Any) -> sa.ColumnElement[bool]:
        raise NotImplementedError

    def _json_array(self, op: str, column: Any, arg: Any) -> sa.ColumnElement[bool]:
        raise NotImplementedError

    # --- change versions -----------------------------------------------------------------------

    @property
    def node_id(self) -> str:
        """This store's ``node_id`` (``rubix_meta``), created with the schema if missing."""
        if self._node_id_cache is None:
            from rubix_integration.stores.models import get_node_id

            self._node_id_cache = get_node_id(self)  # type: ignore[arg-type]
        return self._node_id_cache

    @property
    def store_clock(self) -> StoreClock:
        """This store's hybrid logical clock (see :mod:`rubix_integration.stores.replicated`)."""
        if self._store_clock is None:
            self._store_clock = StoreClock()
        return self._store_clock

    def stamp(self, table: sa.Table, rows: Sequence[Mapping[str, Any]], *,
              connection: Connection | None = None) -> list[dict[str, Any]]:
        """``rows`` (the values of an INSERT, or the SET of one UPDATE) with ``origin_node`` set
        to this store's node id and ``change_version`` to the next hybrid logical clock stamp.

        Every row written gets a version of its own, greater than any stored before. For one
        row without ``connection`` the version is an SQL expression evaluated as the row is
        written: give it to that statement's ``values()``. For several rows pass the
        ``connection`` of the transaction that writes them: their versions are plain numbers
        (so they are for one row given a ``connection``).
        """
        self._need("change_version")
        if not is_replicated(table):
            raise StoreError(f"table {table.name!r} is not replicated (no origin_node and "
                             "change_version columns)", url=self.masked_url, backend=self.name)
        if not rows:
            return []
        node = self.node_id
        versions = self._next_versions(connection, table, len(rows))
        return [{**row, "origin_node": node, "change_version": version}
                for row, version in zip(rows, versions, strict=True)]

    def stamp_each(self, conn: Connection, table: sa.Table, count: int,
                   ordinal: sa.ColumnElement[Any]) -> tuple[str, sa.ColumnElement[Any]]:
        """``origin_node`` and an SQL expression giving each of ``count`` rows written by one
        ``INSERT … SELECT`` (or one ``UPDATE``) in ``conn``'s transaction a stamp of its own.

        ``ordinal`` numbers the rows 1 to ``count`` in the statement (``row_number() OVER
        ()`` in a SELECT); a store whose stamps need no numbering ignores it.
        """
        self._need("change_version")
        if not is_replicated(table):
            raise StoreError(f"table {table.name!r} is not replicated", url=self.masked_url,
                             backend=self.name)
        return self.node_id, self._stamp_each(conn, table, max(count, 1), ordinal)

    def _stamp_each(self, conn: Connection, table: sa.Table, count: int,
                    ordinal: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
        raise NotImplementedError

    def _next_versions(self, conn: Connection | None, table: sa.Table,
                       count: int) -> list[Any]:
        """``count`` next stamps of ``table`` (values or SQL expressions), from
        :attr:`store_clock`."""
        raise NotImplementedError

