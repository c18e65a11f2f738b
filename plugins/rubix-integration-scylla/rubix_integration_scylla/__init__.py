"""A ScyllaDB (or Cassandra) pin state backend for rubix_integration, as a plugin.

Registers :class:`~rubix_integration_scylla.state.ScyllaPinState` for the ``pin_state`` role
under the name ``scylla`` (URL schemes ``scylla://`` and ``cassandra://``). The driver
(``scylla-driver``) is imported only when a state is opened.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from rubix_integration.hookspecs import hookimpl
from rubix_integration_scylla.config import RetryPolicyConfig, ScyllaConfig, TLSConfig
from rubix_integration_scylla.state import ScyllaPinState

__all__ = ["RetryPolicyConfig", "ScyllaConfig", "ScyllaPinState", "TLSConfig",
           "register_backends"]


@hookimpl
def register_backends() -> Mapping[str, Sequence[type]]:
    """The ``scylla`` pin state backend."""
    return {"pin_state": [ScyllaPinState]}
