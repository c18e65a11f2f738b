"""How task tags and worker capabilities match.

A task's ``tags`` are read as follows (case does not matter; names are kept upper case):

- ``NAME`` (e.g. ``GPU``): a **required** capability. Only a worker that declares ``NAME``
  among its capabilities may claim the task.
- ``NAME_PREFERRED`` (e.g. ``GPU_PREFERRED``): a **preferred** capability. A worker that has
  ``NAME`` may claim the task at once; a worker without it may claim it only once the task has
  waited ``preferred_wait`` seconds (a coordinator setting, 30 by default), so capable workers get
  the first chance and the task still runs when none is around.
- a tag containing ``:`` (e.g. ``team:ml``, ``source:cli``) is a **label**: kept and listable
  (``list_tasks({"tag": ...})``), never matched against capabilities.

A worker's capabilities are plain names (``GPU``, ``CUDA``, ``HIGHMEM``). Among the tasks a
worker may claim, higher ``priority`` comes first, then the oldest submission.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "PREFERRED_SUFFIX",
    "TagSet",
    "normalise_capabilities",
    "parse_tags",
    "storable_text",
    "task_matches",
]

PREFERRED_SUFFIX = "_PREFERRED"
_MAX_TAG_LENGTH = 100


@dataclass(frozen=True)
class TagSet:
    """A task's tags as given, and the capabilities they require or prefer."""

    tags: tuple[str, ...]
    required: tuple[str, ...]
    preferred: tuple[str, ...]


def storable_text(text: str) -> bool:
    """Whether every store keeps ``text`` as given: no NUL character (PostgreSQL refuses it in
    text and JSON) and no lone surrogate (not encodable as UTF-8)."""
    if "\x00" in text:
        return False
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check(tag: object) -> str:
    if (not isinstance(tag, str) or not tag.strip() or len(tag) > _MAX_TAG_LENGTH
            or not storable_text(tag)):
        raise ValueError(f"a tag must be non-empty text of at most {_MAX_TAG_LENGTH} characters "
                         f"without NUL, not {tag!r:.120}")
    return tag.strip()


def parse_tags(tags: Iterable[str] | None) -> TagSet:
    """Split ``tags`` into required and preferred capabilities (labels are neither)."""
    if isinstance(tags, str):
        tags = [tags]
    given: list[str] = []
    required: set[str] = set()
    preferred: set[str] = set()
    for raw in tags or ():
        tag = _check(raw)
        if tag not in given:
            given.append(tag)
        if ":" in tag:
            continue
        name = tag.upper()
        if name.endswith(PREFERRED_SUFFIX) and len(name) > len(PREFERRED_SUFFIX):
            preferred.add(name[: -len(PREFERRED_SUFFIX)])
        else:
            required.add(name)
    return TagSet(tuple(given), tuple(sorted(required)), tuple(sorted(preferred - required)))


def normalise_capabilities(capabilities: Iterable[str] | str | None) -> tuple[str, ...]:
    """Capabilities as sorted upper-case names; a string may list several, comma-separated.

    ``ValueError`` for a name that is not text, is longer than a tag may be, or holds NUL.
    """
    if capabilities is None:
        return ()
    if isinstance(capabilities, str):
        capabilities = capabilities.split(",")
    out: set[str] = set()
    for name in capabilities:
        if (not isinstance(name, str) or len(name) > _MAX_TAG_LENGTH
                or not storable_text(name)):
            raise ValueError(f"a capability must be text of at most {_MAX_TAG_LENGTH} characters "
                             f"without NUL, not {name!r:.120}")
        if name.strip():
            out.add(name.strip().upper())
    return tuple(sorted(out))


def task_matches(
    required: Iterable[str], preferred: Iterable[str], capabilities: Iterable[str],
    *, waited: float, preferred_wait: float,
) -> bool:
    """Whether a worker with ``capabilities`` may claim a task now (the rule above)."""
    caps = set(capabilities)
    if not set(required) <= caps:
        return False
    prefs = set(preferred)
    return not prefs or bool(prefs & caps) or waited >= preferred_wait
