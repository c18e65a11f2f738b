"""Contract suites that backend plugins run in their own pytest session.

Subclass :class:`~rubix_integration.testing.ipfs_contract.IPFSBackendContract` or
:class:`~rubix_integration.testing.store_contract.StoreContract` in a test module, name the backend
and provide one fixture that builds it; every test of the suite then runs on that backend. The
built-in backends are tested with the same classes. :mod:`.roundtrips` counts the round trips a
client makes to a server (the workflow's tests and benchmark use it).

This package needs pytest and is imported only by tests: ``import rubix_integration`` never loads
it, and its names are not part of ``rubix_integration.__all__``.
"""

from __future__ import annotations

try:
    import pytest
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "rubix_integration.testing needs pytest; install it with: pip install 'pytest>=8'"
    ) from exc

# the suites' own assert statements explain their failures only when pytest rewrites them
pytest.register_assert_rewrite(
    "rubix_integration.testing.ipfs_contract", "rubix_integration.testing.store_contract"
)

from rubix_integration.testing.ipfs_contract import (  # noqa: E402
    ContractContent,
    IPFSBackendContract,
    IPFSBackendFactory,
    serve_by_adding,
)
from rubix_integration.testing.store_contract import StoreContract  # noqa: E402

__all__ = [
    "ContractContent",
    "IPFSBackendContract",
    "IPFSBackendFactory",
    "StoreContract",
    "serve_by_adding",
]
