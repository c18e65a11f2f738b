"""Open a pin state by URL, through the ``pin_state`` backends the plugins register."""

from __future__ import annotations

from typing import Any

from rubix_integration.errors import ConfigError
from rubix_integration.pins._state import PinStateBackend

__all__ = ["open_pin_state"]


def open_pin_state(url: str, *, plugins: Any = None, **options: Any) -> PinStateBackend:
    """The pin state at ``url``: the registered ``pin_state`` backend whose ``schemes`` hold the
    URL's scheme (``sqlite:///…``, ``postgresql://…``, ``scylla://…`` with the plugin) builds
    it with ``cls.open(url, plugins=..., **options)``."""
    from rubix_integration._plugins import Plugins
    from rubix_integration.stores.base import url_scheme

    if plugins is None:
        plugins = Plugins()
    scheme = url_scheme(url)
    backends = plugins.backends("pin_state")
    for cls in backends.values():
        if scheme in getattr(cls, "schemes", ()):
            found: PinStateBackend = cls.open(url, plugins=plugins, **options)
            return found
    known = sorted({s for cls in backends.values() for s in getattr(cls, "schemes", ())})
    raise ConfigError(f"no pin state backend opens URL scheme {scheme!r}; known: "
                      f"{', '.join(known) or 'none'}", name="url", value=scheme,
                      allowed=tuple(known))
