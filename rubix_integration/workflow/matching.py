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

__all__ = ["PREFERRED_SUFFIX", "TagSet", "normalise_capabilities", "parse_tags", "task_matches"]

PREFERRED_SUFFIX = "_PREFERRED"
_MAX_TAG_LENGTH = 100


@dataclass(frozen=True)
class TagSet:
    """A task's tags as given, and the capabilities they require or prefer."""

    tags: tuple[str, ...]
    required: tuple[str, ...]
    preferred: tuple[str, ...]


def _check(tag: object) -> str:
    if not isinstance(tag, str) or not tag.strip() or len(tag) > _MAX_TAG_LENGTH:
        raise ValueError(f"a tag must be non-empty text of at most {_MAX_TAG_LENGTH} characters, "
                         f"not {tag!r}")
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
    """Capabilities as sorted upper-case names; a string may list several, comma-separated."""
    if capabilities is None:
        return ()
    if isinstance(capabilities, str):
        capabilities = capabilities.split(",")
    out = {c.strip().upper() for c in capabilities if c and c.strip()}
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
