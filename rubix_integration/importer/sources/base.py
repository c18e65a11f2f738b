"""The ``source`` role: a live service that yields rows for one target table.

A source states its target ``table``, the ``key`` its rows are upserted by and, optionally,
the ``columns`` to create the table with; :meth:`Source.rows` yields mappings. The importer does
the rest (create, upsert, dry run, report). Credentials and options come in ``config`` (see
:func:`source_config`); a source never prints them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar

__all__ = ["Source", "read_dotenv", "source_config"]


class Source:
    """Base class of a row source. Subclasses set ``name``, ``table``, ``key`` (and
    ``columns``: name → ``integer``, ``real``, ``text``, ``boolean``, ``json`` or ``blob``),
    read what they need from ``config`` and implement :meth:`rows`.

    ``settings`` names the configuration keys the source reads (the environment variable
    names); ``secrets`` those never shown. :meth:`stats` returns figures for the report.
    """

    name: ClassVar[str] = ""
    table: ClassVar[str] = ""
    key: ClassVar[tuple[str, ...]] = ()
    columns: ClassVar[Mapping[str, str] | None] = None
    settings: ClassVar[tuple[str, ...]] = ()
    secrets: ClassVar[tuple[str, ...]] = ()
    #: Whether the target table is emptied before each load (a snapshot, like city counts).
    snapshot: ClassVar[bool] = False

    def __init__(self, config: Mapping[str, str] | None = None) -> None:
        self.config: dict[str, str] = dict(config or {})

    def rows(self) -> Iterator[Mapping[str, Any]]:
        """Yield the rows for :attr:`table`."""
        raise NotImplementedError

    def stats(self) -> dict[str, Any]:
        """Figures about the last :meth:`rows` run (requests made, cache hits, ...)."""
        return {}

    def close(self) -> None:
        """Release connections and files."""

    def __enter__(self) -> Source:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:  # never the config: it holds credentials
        return f"<{type(self).__name__} {self.name!r} → {self.table!r}>"


def read_dotenv(path: Path) -> dict[str, str]:
    """``KEY=value`` lines of a ``.env`` file (quotes stripped, comments skipped)."""
    out: dict[str, str] = {}
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return out
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        name, _, value = line.removeprefix("export ").partition("=")
        value = value.strip()
        end = value.find(value[0], 1) if value[:1] in ("'", '"') else -1
        # quoted: taken as it is, up to the closing quote; else up to a comment
        value = value[1:end] if end > 0 else value.split(" #", 1)[0].strip()
        out[name.strip()] = value
    return out


def source_config(names: tuple[str, ...], *, options: Mapping[str, str] | None = None,
                  env: Mapping[str, str] | None = None, dotenv: Path | None = None,
                  section: Mapping[str, Any] | None = None) -> dict[str, str]:
    """Each of ``names`` from, first found: ``options``, the environment, the ``.env`` file,
    the config ``section`` (keys matched case-insensitively)."""
    environ = os.environ if env is None else env
    file_values = read_dotenv(dotenv) if dotenv is not None else {}
    lowered = {str(k).lower(): v for k, v in (section or {}).items()}
    out: dict[str, str] = {}
    for name in names:
        for layer in (options or {}, environ, file_values):
            if layer.get(name) not in (None, ""):
                out[name] = str(layer[name])
                break
        else:
            if lowered.get(name.lower()) not in (None, ""):
                out[name] = str(lowered[name.lower()])
    for name, value in (options or {}).items():
        out.setdefault(name, value)
    return out
