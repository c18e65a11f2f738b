"""What the datasets layer returns: CIDs that are text, and status readable as a mapping."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar, cast

from rubix_integration.ipfs.base import AddedEntry, AddResult, FieldsAsMapping

__all__ = ["ContentCID", "DatasetsAvailability", "DatasetsStatus", "DirectoryCID", "LoggedCID"]


class ContentCID(str):
    """A CID (the text ``ipfs add`` prints) of content added local first.

    ``published`` tells whether an IPFS node holds it already; when not, it waits in the push
    queue (see :mod:`rubix_integration.ipfs._push`).
    """

    published: bool

    def __new__(cls, cid: str, *, published: bool) -> ContentCID:
        self = super().__new__(cls, cid)
        object.__setattr__(self, "published", bool(published))
        return self

    @property
    def cid(self) -> str:
        """The CID as a plain string."""
        return str.__str__(self)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable; cannot set {name!r}")

    def __getnewargs_ex__(self) -> tuple[tuple[str], dict[str, bool]]:
        return (self.cid,), {"published": self.published}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.cid!r}, published={self.published})"


class LoggedCID(ContentCID):
    """The CID of a provenance record, with the datasets API's truth value.

    The text is the record's CID whether or not it reached an IPFS node; ``published`` says
    whether it did. Its truth value is ``published`` too, so that ``if manager.log_event(...):``
    tells "logged to IPFS" from "logged locally" (the record is stored in both cases). Compare
    with ``is None`` to tell "not recorded" (audit or provenance switched off).
    """

    def __bool__(self) -> bool:
        return self.published


class DirectoryCID(AddResult):
    """The root CID of a directory added local first (an :class:`AddResult`, so text with
    ``entries``), with ``published`` as in :class:`ContentCID`."""

    published: bool

    def __new__(cls, cid: str, entries: Iterable[AddedEntry] = (), *,
                published: bool = False) -> DirectoryCID:
        self = cast("DirectoryCID", super().__new__(cls, cid, entries))
        object.__setattr__(self, "published", bool(published))
        return self

    def __getnewargs_ex__(self) -> tuple[tuple[str, tuple[AddedEntry, ...]], dict[str, bool]]:
        return (self.cid, self.entries), {"published": self.published}

    def __repr__(self) -> str:
        return (f"DirectoryCID(cid={self.cid!r}, entries=<{len(self.entries)}>, "
                f"published={self.published})")


@dataclass(frozen=True)
class DatasetsAvailability(FieldsAsMapping):
    """:func:`get_datasets_status`: whether content and records reach an IPFS node, and why.

    ``available``: the integration is on and an IPFS node can be reached. ``path``: where
    content goes (the daemon's RPC URL, the node's repo, or the embedded store's folder).
    ``reason``: why that backend was chosen. ``enabled``: the setting (``auto``, ``1``, ``0``)
    and ``enabled_by`` the variable it came from (``RUBIX_INTEGRATION_ENABLED``,
    ``IPFS_DATASETS_ENABLED``, ``default``, ...). ``backend``: the chosen backend's name.
    """

    _keys: ClassVar[tuple[str, ...]] = ("available", "path", "reason", "enabled",
                                        "enabled_by", "backend")

    available: bool
    path: str | None
    reason: str
    enabled: str
    enabled_by: str
    backend: str


@dataclass(frozen=True)
class DatasetsStatus(FieldsAsMapping):
    """:meth:`DatasetsManager.get_status`, readable as ``status.enabled`` or
    ``status["enabled"]``.

    ``enabled``: records and content reach an IPFS node (the integration is on and a node is
    reachable); otherwise everything is kept locally. ``audit``, ``provenance``, ``p2p``: the
    config switches. ``records`` / ``local_only``: provenance records held, and how many no node
    holds yet. ``pending_push``: added content waiting for a node. The rest as in
    :class:`DatasetsAvailability`; ``cache_dir`` is the data dir, ``store`` the store backend.
    """

    _keys: ClassVar[tuple[str, ...]] = (
        "enabled", "available", "path", "reason", "setting", "enabled_by", "backend",
        "audit", "provenance", "p2p", "cache_dir", "store", "records", "local_only",
        "pending_push")

    enabled: bool
    available: bool
    path: str | None
    reason: str
    setting: str
    enabled_by: str
    backend: str
    audit: bool
    provenance: bool
    p2p: bool
    cache_dir: str
    store: str
    records: int
    local_only: int
    pending_push: int
