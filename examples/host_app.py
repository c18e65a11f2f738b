"""A small host application embedding rubix_integration.

Run it with ``.venv/bin/python examples/host_app.py``: it prints what the package detected, adds a
token-like text to whichever IPFS backend was chosen (the embedded store when no node is around),
reads it back by CID, and listens to an event hook through a plugin defined right here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import rubix_integration
from rubix_integration import hookimpl
from rubix_integration.hookspecs import Host


class AuditTrail:
    """A plugin object: collects every database_processed event it is told about."""

    def __init__(self) -> None:
        self.seen: list[Mapping[str, Any]] = []

    @hookimpl
    def database_processed(self, manager: Host, result: Mapping[str, Any]) -> None:
        self.seen.append(result)


def main() -> None:
    audit = AuditTrail()
    with rubix_integration.connect(plugins=[audit]) as manager:
        report = manager.status()
        print(f"IPFS via {report.ipfs_mode}, store {report.store}")
        backend = manager.ipfs()
        token = b"TRI 0 bafybmibeud2c4ucgew6m5tttj7zneosplm4eiklwg4migdimdwmezkzi6u"
        cid = backend.add_bytes(token)
        print(f"added {cid}: {manager.cat(cid).decode()}")
        manager.notify("database_processed", result={"db_path": "example", "status": "processed"})
        print(f"events seen by the host's plugin: {len(audit.seen)}")


if __name__ == "__main__":
    main()
