"""How task tags and worker capabilities match.

A task's ``tags`` are read as follows (case does not matter; names are kept upper case):

- ``NAME_REQUIRED`` (e.g. ``GPU_REQUIRED``), or ``NAME`` given in ``requires=``: a **required**
  capability. Only a worker that declares ``NAME`` among its capabilities may claim the task.
- ``NAME_ELIGIBLE`` (e.g. ``P2P_ELIGIBLE``): an **eligibility label**. It says who may run the
  task (``P2P_ELIGIBLE``: peers on other machines, see ``enable_p2p`` in
  :class:`rubix_integration.WorkflowCoordinator`) and never blocks a worker.
- ``NAME_PREFERRED`` (e.g. ``GPU_PREFERRED``): a **preferred** capability. A worker that has
  ``NAME`` may claim the task at once; a worker without it may claim it only once the task has
  waited ``preferred_wait`` seconds (a coordinator setting, 30 by default), so capable workers get
  the first chance and the task still runs when none is around.
- a tag containing ``:`` (e.g. ``team:ml``, ``source:cli``) is a **label**: kept and listable
  (``list_tasks({"tag": ...})``), never matched against capabilities.
- a bare ``NAME`` (e.g. ``GPU``) is read as ``NAME_REQUIRED``, as it always was, so code that
  tags that way keeps its meaning; write ``NAME_REQUIRED`` (or ``requires=``) to make the intent
  plain.

Stored tasks keep the meaning they were submitted with, without any migration: the required and
preferred capabilities are worked out once, at submit time, and stored with the task
(``required_caps``, ``preferred_caps``); claiming reads only those. A task stored before
``*_ELIGIBLE`` and ``*_REQUIRED`` were understood keeps requiring what it required then (a stored
``P2P_ELIGIBLE`` still requires a ``P2P_ELIGIBLE`` capability; resubmit it to read it anew).

A worker's capabilities are plain names (``GPU``, ``CUDA``, ``HIGHMEM``). Among the tasks a
worker may claim, higher ``priority`` comes first, then the oldest submission.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "ELIGIBLE_SUFFIX",
    "P2P_ELIGIBLE",
    "PREFERRED_SUFFIX",
    "REQUIRED_SUFFIX",
    "TagSet",
    "normalise_capabilities",
    "parse_tags",
    "requirement_tags",
    "storable_text",
    "task_matches",
]

PREFERRED_SUFFIX = "_PREFERRED"
REQUIRED_SUFFIX = "_REQUIRED"
ELIGIBLE_SUFFIX = "_ELIGIBLE"
#: The label of a task that workers on other machines may run (when ``enable_p2p`` is on).
P2P_ELIGIBLE = "P2P_ELIGIBLE"
_MAX_TAG_LENGTH = 100


@dataclass(frozen=True)
class TagSet:
    """A task's tags as given, the capabilities they require or prefer, and its eligibility
    labels (``P2P`` for ``P2P_ELIGIBLE``)."""

    tags: tuple[str, ...]
    required: tuple[str, ...]
    preferred: tuple[str, ...]
    eligible: tuple[str, ...] = ()


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


def _strip(name: str, suffix: str) -> str | None:
    if name.endswith(suffix) and len(name) > len(suffix):
        return name[: -len(suffix)]
    return None


def requirement_tags(requires: Iterable[str] | str | None) -> list[str]:
    """``requires=`` names as the ``NAME_REQUIRED`` tags that store them with the task."""
    out: list[str] = []
    for name in normalise_capabilities(requires):
        tag = name if _strip(name, REQUIRED_SUFFIX) else name + REQUIRED_SUFFIX
        out.append(_check(tag))
    return out


def parse_tags(tags: Iterable[str] | None) -> TagSet:
    """Split ``tags`` into required and preferred capabilities and eligibility labels (the
    rules are in this module's docstring)."""
    if isinstance(tags, str):
        tags = [tags]
    given: list[str] = []
    required: set[str] = set()
    preferred: set[str] = set()
    eligible: set[str] = set()
    for raw in tags or ():
        tag = _check(raw)
        if tag not in given:
            given.append(tag)
        if ":" in tag:
            continue
        name = tag.upper()
        if (base := _strip(name, PREFERRED_SUFFIX)) is not None:
            preferred.add(base)
        elif (base := _strip(name, ELIGIBLE_SUFFIX)) is not None:
            eligible.add(base)
        elif (base := _strip(name, REQUIRED_SUFFIX)) is not None:
            required.add(base)
        else:
            required.add(name)
    return TagSet(tuple(given), tuple(sorted(required)), tuple(sorted(preferred - required)),
                  tuple(sorted(eligible)))


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
