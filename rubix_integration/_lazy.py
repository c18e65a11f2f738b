"""Public names imported on first use, for a package's ``__init__``."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any

__all__ = ["lazy_names"]


def lazy_names(
    package: str, public: Mapping[str, str], namespace: MutableMapping[str, Any]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The module ``__getattr__`` and ``__dir__`` of ``package`` for ``public`` (name -> module).

    A name is imported from its module on first access and kept in ``namespace`` (the package's
    ``globals()``), so later accesses cost nothing.
    """

    def get(name: str) -> Any:
        module = public.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    def names() -> list[str]:
        return sorted(set(namespace.get("__all__", ())) | {n for n in namespace
                                                           if n.startswith("_")})

    return get, names
