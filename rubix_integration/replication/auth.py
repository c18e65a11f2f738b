"""Who may call a node, and how a node proves itself to a peer.

A credential names a peer and its role, with a bearer token or an HMAC shared secret:

- bearer: ``Authorization: Bearer <token>``;
- HMAC: ``X-Rubix-Peer: <peer id>``, ``X-Rubix-Timestamp: <unix seconds>`` and
  ``X-Rubix-Signature: <hex HMAC-SHA256 of "METHOD\\nPATH?QUERY\\nTIMESTAMP\\nSHA256(BODY)">``,
  refused when the timestamp is more than :data:`SIGNATURE_WINDOW_S` away from the local clock.

Roles, each allowing what the one before allows: ``read-only`` (status, peers, history, change
feeds, the WebSocket; its changes are never applied here), ``peer`` (also notify and
bidirectional sync, whose pushed changes are applied), ``admin`` (also adding and removing peers
and manual sync). With no credential configured a node is open (for loopback use).

Secrets never appear in a ``repr``, a log line or a response.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from rubix_integration.errors import ReplicationAuthError

__all__ = ["ROLES", "SIGNATURE_WINDOW_S", "Authenticator", "Credential", "sign"]

#: The roles, weakest first.
ROLES = ("read-only", "peer", "admin")
#: How far a signed request's timestamp may be from the local clock (seconds).
SIGNATURE_WINDOW_S = 300


@dataclass(frozen=True)
class Credential:
    """What identifies one caller: ``peer_id``, ``role`` and a ``token`` or ``secret``."""

    peer_id: str
    role: str = "peer"
    token: str | None = field(default=None, repr=False)
    secret: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"unknown role {self.role!r}; expected one of {', '.join(ROLES)}")
        if not self.token and not self.secret:
            raise ValueError(f"credential of {self.peer_id!r} has neither a token nor a secret")

    def allows(self, role: str) -> bool:
        """Whether this credential's role includes ``role``."""
        return ROLES.index(self.role) >= ROLES.index(role)


def _digest(secret: str, method: str, target: str, stamp: str, body: bytes) -> str:
    message = "\n".join((method.upper(), target, stamp, hashlib.sha256(body).hexdigest()))
    return hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()


def sign(*, peer_id: str, token: str | None, secret: str | None, method: str, target: str,
         body: bytes = b"", now: float | None = None) -> dict[str, str]:
    """The headers that authenticate one request (``target`` is the path with its query)."""
    if token:
        return {"Authorization": f"Bearer {token}"}
    if secret:
        stamp = str(int(time.time() if now is None else now))
        return {"X-Rubix-Peer": peer_id, "X-Rubix-Timestamp": stamp,
                "X-Rubix-Signature": _digest(secret, method, target, stamp, body)}
    return {}


class Authenticator:
    """Checks incoming requests against the configured credentials."""

    def __init__(self, credentials: Iterable[Credential] = ()) -> None:
        self._by_token: dict[str, Credential] = {}
        self._by_peer: dict[str, Credential] = {}
        for cred in credentials:
            self.add(cred)

    def add(self, cred: Credential) -> None:
        """Accept ``cred`` from now on."""
        if cred.token:
            self._by_token[cred.token] = cred
        if cred.secret:
            self._by_peer[cred.peer_id] = cred

    @property
    def open(self) -> bool:
        """Whether no credential is configured (every request allowed)."""
        return not self._by_token and not self._by_peer

    def check(self, method: str, target: str, headers: Mapping[str, str], body: bytes,
              role: str, *, now: float | None = None) -> Credential | None:
        """The credential of the request, if it allows ``role``; ``None`` on an open node.

        Raises :class:`ReplicationAuthError` otherwise (never echoing what was sent).
        """
        if self.open:
            return None
        cred = self._identify(method, target, headers, body, now)
        if not cred.allows(role):
            raise ReplicationAuthError(
                f"peer {cred.peer_id!r} has role {cred.role!r}; this needs {role!r}",
                peer=cred.peer_id)
        return cred

    def _identify(self, method: str, target: str, headers: Mapping[str, str], body: bytes,
                  now: float | None) -> Credential:
        auth = headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            given = auth[7:].strip()
            for token, cred in self._by_token.items():
                if hmac.compare_digest(token.encode(), given.encode()):
                    return cred
            raise ReplicationAuthError("unknown bearer token")
        peer = headers.get("x-rubix-peer")
        if peer is not None:
            found = self._by_peer.get(peer)
            stamp = headers.get("x-rubix-timestamp", "")
            given = headers.get("x-rubix-signature", "")
            if found is None or found.secret is None:
                raise ReplicationAuthError("unknown peer", peer=peer)
            cred = found
            try:
                skew = abs((time.time() if now is None else now) - int(stamp))
            except ValueError:
                raise ReplicationAuthError("bad signature timestamp", peer=peer) from None
            if skew > SIGNATURE_WINDOW_S:
                raise ReplicationAuthError("signature timestamp outside the window", peer=peer)
            wanted = _digest(found.secret, method, target, stamp, body)
            if not hmac.compare_digest(wanted, given):
                raise ReplicationAuthError("bad signature", peer=peer)
            return cred
        raise ReplicationAuthError("no credentials")
