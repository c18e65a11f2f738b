"""Finding peers on the local network with zeroconf (mDNS/DNS-SD).

Each node announces a service of type :data:`SERVICE_TYPE` whose TXT record carries its node id
and the path of its endpoints; a browser turns every other node's announcement into a peer URL.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["SERVICE_TYPE", "Announcement", "Discovery", "parse_service", "service_info"]

#: The DNS-SD service type of a replicating node.
SERVICE_TYPE = "_rubix-repl._tcp.local."


@dataclass(frozen=True)
class Announcement:
    """What one node announces: its node id and the base URL of its ``/p2p`` endpoints."""

    node_id: str
    url: str


def service_info(node_id: str, host: str, port: int, *, scheme: str = "http") -> Any:
    """The zeroconf ``ServiceInfo`` announcing this node."""
    from zeroconf import ServiceInfo

    return ServiceInfo(
        SERVICE_TYPE, f"{node_id}.{SERVICE_TYPE}",
        addresses=[socket.inet_aton(host)], port=port,
        properties={"node_id": node_id, "scheme": scheme, "path": "/p2p"},
        server=f"{node_id}.local.")


def parse_service(addresses: list[str], port: int | None,
                  properties: Mapping[bytes, bytes | None]) -> Announcement | None:
    """The announcement of a resolved service, or ``None`` when it is not one of ours."""
    props = {k.decode(errors="replace"): (v or b"").decode(errors="replace")
             for k, v in properties.items()}
    node_id = props.get("node_id")
    scheme = props.get("scheme", "http")
    if not node_id or not addresses or not port or scheme not in ("http", "https"):
        return None
    return Announcement(node_id, f"{scheme}://{addresses[0]}:{port}")


class Discovery:
    """Announce this node and report the others through ``found(announcement)``."""

    def __init__(self, node_id: str, host: str, port: int,
                 found: Callable[[Announcement], None], *, scheme: str = "http",
                 interfaces: list[str] | None = None) -> None:
        self.node_id = node_id
        self.host = host
        self.port = port
        self.found = found
        self.scheme = scheme
        self.interfaces = interfaces
        self._zc: Any = None
        self._browser: Any = None

    def start(self) -> None:
        """Register the service and start browsing."""
        from zeroconf import ServiceBrowser, ServiceStateChange, Zeroconf

        self._zc = (Zeroconf(interfaces=self.interfaces) if self.interfaces
                    else Zeroconf())
        self._zc.register_service(service_info(self.node_id, self.host, self.port,
                                               scheme=self.scheme))

        def on_change(zeroconf: Any, service_type: str, name: str,
                      state_change: Any) -> None:
            if state_change is not ServiceStateChange.Added:
                return
            info = zeroconf.get_service_info(service_type, name, timeout=3000)
            if info is None:
                return
            found = parse_service(info.parsed_addresses(), info.port, info.properties)
            if found is not None and found.node_id != self.node_id:
                self.found(found)

        self._browser = ServiceBrowser(self._zc, SERVICE_TYPE, handlers=[on_change])

    def stop(self) -> None:
        """Withdraw the service and stop browsing."""
        if self._browser is not None:
            self._browser.cancel()
            self._browser = None
        if self._zc is not None:
            self._zc.unregister_all_services()
            self._zc.close()
            self._zc = None
