"""Replication: nodes that each keep their own store and converge over HTTP.

- :mod:`~rubix_integration.replication.tables`: which tables replicate, row checks and JSON form;
- :mod:`~rubix_integration.replication.engine`: change feeds, last-writer-wins merge by hybrid
  logical clock, checkpoints, tombstone collection;
- :mod:`~rubix_integration.replication.service`: peers, notify-then-pull, periodic sync;
- :mod:`~rubix_integration.replication.app`: the ``/p2p/...`` HTTP endpoints;
- :mod:`~rubix_integration.replication.auth`: bearer tokens, HMAC, roles;
- :mod:`~rubix_integration.replication.discovery`: zeroconf;
- :mod:`~rubix_integration.replication.facade`: ``Manager.replication``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rubix_integration._lazy import lazy_names

# imported on first use: the built-in plugin module below this package stays cheap to import
_PUBLIC: dict[str, str] = {
    "ApplyResult": "rubix_integration.replication.engine",
    "Authenticator": "rubix_integration.replication.auth",
    "Conflict": "rubix_integration.replication.engine",
    "Credential": "rubix_integration.replication.auth",
    "Feed": "rubix_integration.replication.engine",
    "Peer": "rubix_integration.replication.service",
    "ReplicatedTables": "rubix_integration.replication.tables",
    "Replication": "rubix_integration.replication.facade",
    "ReplicationService": "rubix_integration.replication.service",
    "Replicator": "rubix_integration.replication.engine",
    "SyncConfig": "rubix_integration.replication.service",
}

if TYPE_CHECKING:
    from rubix_integration.replication.auth import Authenticator as Authenticator
    from rubix_integration.replication.auth import Credential as Credential
    from rubix_integration.replication.engine import ApplyResult as ApplyResult
    from rubix_integration.replication.engine import Conflict as Conflict
    from rubix_integration.replication.engine import Feed as Feed
    from rubix_integration.replication.engine import Replicator as Replicator
    from rubix_integration.replication.facade import Replication as Replication
    from rubix_integration.replication.service import Peer as Peer
    from rubix_integration.replication.service import ReplicationService as ReplicationService
    from rubix_integration.replication.service import SyncConfig as SyncConfig
    from rubix_integration.replication.tables import ReplicatedTables as ReplicatedTables

__all__ = sorted(_PUBLIC)

__getattr__, __dir__ = lazy_names(__name__, _PUBLIC, globals())
