"""Make an IPFS backend pin what a pin state lists for one peer."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from rubix_integration.errors import IPFSError, UnsupportedOperationError
from rubix_integration.pins._pin import Pin
from rubix_integration.pins._state import PinStateBackend

__all__ = ["ApplyResult", "apply_state", "wanted_pins"]


@dataclass
class ApplyResult:
    """What :func:`apply_state` did: CIDs ``pinned``, already ``present``, and ``failed``
    (``(cid, why)``: content that could not be fetched, or a backend that cannot pin)."""

    pinned: list[str] = field(default_factory=list)
    present: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)


def wanted_pins(state: PinStateBackend, peer: str | None) -> Iterator[Pin]:
    """The pins ``peer`` should hold: those allocated to it, and those with no allocations
    (pinned everywhere); every pin when ``peer`` is ``None``. Meta and cluster-DAG pins are
    bookkeeping and never pinned on IPFS."""
    for pin in state.list():
        if pin.type in ("meta-pin", "clusterdag-pin"):
            continue
        if peer is None or not pin.allocations or peer in pin.allocations:
            yield pin


def apply_state(state: PinStateBackend, ipfs: Any, *, peer: str | None = None,
                timeout: float | None = None, dry_run: bool = False) -> ApplyResult:
    """Pin on ``ipfs`` (an :class:`~rubix_integration.IPFSBackend`) every pin the state lists
    for ``peer`` that it does not hold yet; report what cannot be fetched."""
    result = ApplyResult()
    for pin in wanted_pins(state, peer):
        try:
            held = ipfs.has(pin.cid, timeout=timeout)
        except UnsupportedOperationError:
            held = False
        except IPFSError as exc:
            result.failed.append((pin.cid, f"{type(exc).__name__}: {exc}"))
            continue
        if held:
            result.present.append(pin.cid)
            if dry_run:
                continue
        if dry_run:
            result.pinned.append(pin.cid)
            continue
        try:
            ipfs.pin(pin.cid, timeout=timeout)
        except IPFSError as exc:
            result.failed.append((pin.cid, f"{type(exc).__name__}: {exc}"))
            continue
        if not held:
            result.pinned.append(pin.cid)
    return result
