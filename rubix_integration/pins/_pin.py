"""``Pin``: one entry of a pinset, with IPFS-Cluster's ``api.Pin`` fields and JSON encoding.

Times are kept as the text Go writes (RFC 3339 with up to nine fractional digits, ``Z`` for
UTC), so that a state exported by a cluster peer and imported here exports back unchanged,
nanoseconds included; :func:`parse_time` turns one into a :class:`~datetime.datetime`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any

from rubix_integration.errors import InvalidCIDError, InvalidPinError

__all__ = [
    "PIN_TYPES",
    "ZERO_TIME",
    "Pin",
    "format_time",
    "parse_time",
]

#: Go's zero ``time.Time`` as ``encoding/json`` writes it: an unset time.
ZERO_TIME = "0001-01-01T00:00:00Z"

#: ipfs-cluster's pin types: JSON name -> the number older exports (2021) wrote.
PIN_TYPES: dict[str, int] = {"pin": 1, "meta-pin": 2, "clusterdag-pin": 4, "shard-pin": 8}
_TYPE_NAMES = {number: name for name, number in PIN_TYPES.items()}
_MODES = ("recursive", "direct")

_TIME = re.compile(r"^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?"
                   r"(Z|[+-]\d\d:\d\d)$")


def parse_time(text: str) -> datetime | None:
    """The UTC datetime of a Go RFC 3339 time (microseconds kept), ``None`` for the zero time."""
    match = _TIME.match(text)
    if match is None:
        raise ValueError(f"not an RFC 3339 time: {text!r}")
    if text == ZERO_TIME:
        return None
    year, month, day, hour, minute, second, frac, zone = match.groups()
    micro = int((frac or "0").ljust(6, "0")[:6])
    stamp = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second),
                     micro, tzinfo=timezone.utc)
    if zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        from datetime import timedelta

        stamp -= sign * timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))
    return stamp


def format_time(value: datetime | None) -> str:
    """``value`` as Go writes a UTC time (trailing fractional zeros dropped); ``None`` is the
    zero time."""
    if value is None:
        return ZERO_TIME
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    value = value.astimezone(timezone.utc)
    text = value.strftime("%Y-%m-%dT%H:%M:%S")
    if value.microsecond:
        text += "." + f"{value.microsecond:06d}".rstrip("0")
    return text + "Z"


def _normal_time(value: object, what: str, cid: str | None) -> str:
    if value is None or value == "" or value == ZERO_TIME:
        return ZERO_TIME
    if isinstance(value, datetime):
        return format_time(value)
    if isinstance(value, str) and _TIME.match(value):
        if value.endswith("Z"):
            return value
        return format_time(parse_time(value))
    raise InvalidPinError(f"{what}: {value!r} is not an RFC 3339 time", cid=cid)


@dataclass(slots=True)
class Pin:
    """One pin: ipfs-cluster's ``api.Pin`` (with its ``PinOptions``), field for field.

    ``type`` is one of :data:`PIN_TYPES`; ``max_depth`` is -1 for a recursive pin, 0 for a
    direct one (``mode`` derives from it); replication factors of 0 mean the cluster default
    and -1 everywhere; ``timestamp`` and ``expire_at`` are RFC 3339 text, :data:`ZERO_TIME`
    when unset; ``reference`` and ``pin_update`` are CIDs or ``None``. Building a pin checks
    nothing: :meth:`validated` (which every state's ``add`` calls) does.
    """

    cid: str
    type: str = "pin"
    allocations: tuple[str, ...] = ()
    max_depth: int = -1
    reference: str | None = None
    timestamp: str = ZERO_TIME
    replication_factor_min: int = 0
    replication_factor_max: int = 0
    name: str = ""
    shard_size: int = 0
    user_allocations: tuple[str, ...] = ()
    expire_at: str = ZERO_TIME
    metadata: dict[str, str] = field(default_factory=dict)
    pin_update: str | None = None
    origins: tuple[str, ...] = ()

    @property
    def mode(self) -> str:
        """``"direct"`` when ``max_depth`` is 0, else ``"recursive"``."""
        return "direct" if self.max_depth == 0 else "recursive"

    # --- validation ----------------------------------------------------------------------------

    def validated(self) -> Pin:
        """This pin with its CIDs in canonical text and its times normalised to UTC; raise
        :class:`~rubix_integration.errors.InvalidPinError` naming the field that is wrong."""
        if _is_canonical(self):
            return self  # the common case of a bulk load: every check passes, nothing changes
        return self._checked()

    def _checked(self) -> Pin:
        """:meth:`validated`, every field checked one by one (the errors come from here)."""
        cid = _canonical_cid(self.cid, "cid", None)
        assert cid is not None
        if self.type not in PIN_TYPES:
            raise InvalidPinError(f"type: unknown pin type {self.type!r}; known: "
                                  f"{', '.join(PIN_TYPES)}", cid=cid)
        if not (type(self.max_depth) is int and type(self.replication_factor_min) is int
                and type(self.replication_factor_max) is int and type(self.shard_size) is int):
            for name in ("max_depth", "replication_factor_min", "replication_factor_max",
                         "shard_size"):
                value = getattr(self, name)
                if not isinstance(value, int) or isinstance(value, bool):
                    raise InvalidPinError(f"{name}: {value!r} is not an integer", cid=cid)
        if self.max_depth < -1:
            raise InvalidPinError(f"max_depth: {self.max_depth} (-1 recursive, 0 direct, or a "
                                  "depth)", cid=cid)
        rmin, rmax = self.replication_factor_min, self.replication_factor_max
        if rmin < -1 or rmax < -1:
            raise InvalidPinError(f"replication factors must be -1 (everywhere), 0 (default) or "
                                  f"positive; got min {rmin}, max {rmax}", cid=cid)
        if rmax > 0 and (rmin > rmax or rmin == -1):
            raise InvalidPinError(f"replication_factor_min ({rmin}) is greater than "
                                  f"replication_factor_max ({rmax})", cid=cid)
        if self.shard_size < 0:
            raise InvalidPinError(f"shard_size: {self.shard_size} is negative", cid=cid)
        if not isinstance(self.name, str):
            raise InvalidPinError(f"name: {self.name!r} is not text", cid=cid)
        if not isinstance(self.metadata, Mapping) or (self.metadata and not all(
                isinstance(k, str) and isinstance(v, str) for k, v in self.metadata.items())):
            raise InvalidPinError("metadata: must map text to text", cid=cid)
        for name in ("allocations", "user_allocations", "origins"):
            value = getattr(self, name)
            if value == ():
                continue
            if isinstance(value, str) or not all(isinstance(v, str) and v and "," not in v
                                                  for v in value):
                raise InvalidPinError(f"{name}: must be a list of non-empty text without commas",
                                      cid=cid)
        reference = _canonical_cid(self.reference, "reference", cid)
        pin_update = _canonical_cid(self.pin_update, "pin_update", cid)
        timestamp = _normal_time(self.timestamp, "timestamp", cid)
        expire_at = _normal_time(self.expire_at, "expire_at", cid)
        if (cid == self.cid and reference == self.reference and pin_update == self.pin_update
                and timestamp == self.timestamp and expire_at == self.expire_at
                and type(self.metadata) is dict and type(self.allocations) is tuple
                and type(self.user_allocations) is tuple and type(self.origins) is tuple):
            return self  # already canonical: the common case of a bulk load
        return replace(
            self, cid=cid, reference=reference, pin_update=pin_update, timestamp=timestamp,
            expire_at=expire_at, metadata=dict(self.metadata),
            allocations=tuple(self.allocations), user_allocations=tuple(self.user_allocations),
            origins=tuple(self.origins))

    # --- JSON ----------------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """The pin as ipfs-cluster's JSON encodes ``api.Pin`` (field names and order)."""
        return {
            "replication_factor_min": self.replication_factor_min,
            "replication_factor_max": self.replication_factor_max,
            "name": self.name,
            "mode": self.mode,
            "shard_size": self.shard_size,
            "user_allocations": list(self.user_allocations) or None,
            "expire_at": self.expire_at,
            "metadata": dict(sorted(self.metadata.items())) or None,  # Go sorts map keys
            "pin_update": self.pin_update,
            "origins": list(self.origins),
            "cid": self.cid,
            "type": self.type,
            "allocations": list(self.allocations),
            "max_depth": self.max_depth,
            "reference": self.reference,
            "timestamp": self.timestamp,
        }

    def to_ndjson(self) -> str:
        """One line of ``state export`` (no newline)."""
        return json.dumps(self.to_json(), separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Pin:
        """A validated pin from ipfs-cluster's JSON: the current shape, or the older one whose
        CIDs are ``{"/": "…"}`` and whose ``type`` is a number. ``mode`` sets ``max_depth``
        when that is missing."""
        if not isinstance(data, Mapping):
            raise InvalidPinError(f"a pin is a JSON object, not {type(data).__name__}")
        unknown = set(data) - _JSON_FIELDS
        cid = _cid_text(data.get("cid"), "cid")
        if unknown:
            raise InvalidPinError(f"unknown field(s) {', '.join(sorted(unknown))}", cid=cid)
        if cid is None:
            raise InvalidPinError("cid: missing")
        kind = data.get("type", "pin")
        if isinstance(kind, int) and not isinstance(kind, bool):
            if kind not in _TYPE_NAMES:
                raise InvalidPinError(f"type: unknown pin type number {kind}", cid=cid)
            kind = _TYPE_NAMES[kind]
        mode = data.get("mode")
        if mode is not None and mode not in _MODES:
            raise InvalidPinError(f"mode: {mode!r} is not one of {', '.join(_MODES)}", cid=cid)
        depth = data.get("max_depth")
        if depth is None:
            depth = 0 if mode == "direct" else -1
        pin = cls(
            cid=cid, type=kind, allocations=_peers(data.get("allocations"), "allocations", cid),
            max_depth=depth, reference=_cid_text(data.get("reference"), "reference"),
            timestamp=data.get("timestamp") or ZERO_TIME,
            replication_factor_min=_int(data, "replication_factor_min", cid),
            replication_factor_max=_int(data, "replication_factor_max", cid),
            name=data.get("name") or "", shard_size=_int(data, "shard_size", cid),
            user_allocations=_peers(data.get("user_allocations"), "user_allocations", cid),
            expire_at=data.get("expire_at") or ZERO_TIME,
            metadata=data.get("metadata") or {},
            pin_update=_cid_text(data.get("pin_update"), "pin_update"),
            origins=_peers(data.get("origins"), "origins", cid))
        return pin.validated()


_JSON_FIELDS = frozenset(Pin(cid="").to_json())
#: A UTC time as :data:`_TIME` takes it (ASCII digits only, a subset): nothing to normalise.
_time_match = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}"
                         r"(?:\.[0-9]{1,9})?Z").fullmatch


def _is_canonical(pin: Pin) -> bool:
    """Whether :meth:`Pin._checked` would find nothing wrong and return ``pin`` unchanged,
    judged in one pass for the usual pin (CIDs in canonical base32 of a known codec and hash
    function, times in UTC, plain tuples and dict); ``False`` leaves the judgement to
    :meth:`Pin._checked`."""
    cid = pin.cid
    depth, rmin, rmax, shard = (pin.max_depth, pin.replication_factor_min,
                                pin.replication_factor_max, pin.shard_size)
    if type(cid) is not str:
        return False
    # _fits_shape, inlined: this runs once per pin of a bulk load
    lengths, shapes = _SHAPES or _cid_shapes()
    for size in lengths:
        shape = shapes.get(cid[:size])
        if shape is not None:
            if len(cid) != shape[0] or cid[-1] not in shape[1] or _b32_text(cid) is None:
                return False
            break
    else:
        return False
    stamp, expire = pin.timestamp, pin.expire_at
    allocations, user, origins = pin.allocations, pin.user_allocations, pin.origins
    kind = pin.type
    return (type(kind) is str and kind in PIN_TYPES
            and type(depth) is int and type(rmin) is int and type(rmax) is int
            and type(shard) is int and depth >= -1 and rmin >= -1 and rmax >= -1
            and (rmax <= 0 or -1 < rmin <= rmax) and shard >= 0
            and (pin.reference is None or _fits_shape(pin.reference))
            and (pin.pin_update is None or _fits_shape(pin.pin_update))
            and type(pin.name) is str and type(pin.metadata) is dict
            and (not pin.metadata or all(type(k) is str and type(v) is str
                                         for k, v in pin.metadata.items()))
            and (stamp == ZERO_TIME or (type(stamp) is str and _time_match(stamp) is not None))
            and (expire == ZERO_TIME or _utc_time(expire))
            and (allocations == () or _peer_ids(allocations))
            and (user == () or _peer_ids(user)) and (origins == () or _peer_ids(origins)))


def _utc_time(value: object) -> bool:
    """Whether ``value`` is RFC 3339 text in UTC (``Z``), which validation keeps as it is."""
    return type(value) is str and _time_match(value) is not None


def _peer_ids(value: object) -> bool:
    """Whether ``value`` is a tuple of non-empty text without commas."""
    if type(value) is not tuple:
        return False
    if not value:
        return True
    try:
        joined = ",".join(value)
    except TypeError:
        return False
    return joined.count(",") == len(value) - 1 and "" not in value


def _int(data: Mapping[str, Any], name: str, cid: str | None) -> int:
    value = data.get(name) or 0
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidPinError(f"{name}: {value!r} is not an integer", cid=cid)
    return value


def _peers(value: object, name: str, cid: str | None) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidPinError(f"{name}: must be a list of text", cid=cid)
    return tuple(value)


def _cid_text(value: object, name: str) -> str | None:
    """The text of a CID as JSON gives it: ``"Qm…"``, ``{"/": "Qm…"}`` or null/empty."""
    if isinstance(value, Mapping) and set(value) == {"/"}:
        value = value["/"]
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InvalidPinError(f"{name}: {value!r} is not a CID")
    return value


def _canonical_cid(value: str | None, name: str, cid: str | None) -> str | None:
    if value is None or value == "":
        if name == "cid":
            raise InvalidPinError("cid: missing")
        return None
    fast = _base32_cid(value)
    if fast is not None:
        return fast
    from rubix_integration.codecs import parse_cid

    try:
        return str(parse_cid(value))
    except (InvalidCIDError, TypeError, ValueError) as exc:
        raise InvalidPinError(f"{name}: {value!r} is not a valid CID ({exc})",
                              cid=cid if name != "cid" else value) from exc


_B32_DIGITS = "abcdefghijklmnopqrstuvwxyz234567"
_B32 = str.maketrans(_B32_DIGITS, "0123456789abcdefghijklmnopqrstuv")
_B32_CHARS = frozenset(_B32_DIGITS)
_b32_text = re.compile("[a-z2-7]+").fullmatch


_Shapes = tuple[tuple[int, ...], dict[str, tuple[int, frozenset[str]]]]
#: :func:`_cid_shapes`, once built.
_SHAPES: _Shapes | None = None


def _cid_shapes() -> _Shapes:
    """The text shapes of canonical base32 version 1 CIDs of every codec and hash function the
    parser accepts (identity excepted): for each header (version, codec, hash function, digest
    length), the texts of its first characters that hold header bits, mapped to the text
    length and the last characters whose spare low bits are zero. Such a header fixes the
    digest length and takes any digest, so a text that fits a shape is a valid CID."""
    from rubix_integration.codecs._cid import (
        CID,
        CODEC_NAMES,
        HASH_NAMES,
        IDENTITY,
        decode_multihash,
        encode_multihash,
        multihash_digest,
        parse_cid,
    )

    shapes: dict[str, tuple[int, frozenset[str]]] = {}
    for codec in CODEC_NAMES:
        for code in HASH_NAMES:
            if code == IDENTITY:
                continue
            size = len(decode_multihash(multihash_digest(b"", code))[1])
            header = len(CID(1, codec, encode_multihash(code, bytes(size))).to_bytes()) - size
            total_bits = 8 * (header + size)
            chars = -(-total_bits // 5)
            spare = 5 * chars - total_bits
            last = frozenset(c for i, c in enumerate(_B32_DIGITS) if not i & ((1 << spare) - 1))
            prefix = 1 + -(-8 * header // 5)
            for top in range(32):  # every value of the digest bits sharing a header character
                digest = bytes([top << 3]) + bytes(size - 1)
                text = str(CID(1, codec, encode_multihash(code, digest)))
                if str(parse_cid(text)) != text or len(text) != 1 + chars:  # pragma: no cover
                    raise AssertionError(f"CID shape of codec {codec:#x}, hash {code:#x}")
                shapes[text[:prefix]] = (1 + chars, last)
    global _SHAPES
    _SHAPES = (tuple(sorted({len(k) for k in shapes})), shapes)
    return _SHAPES


def _fits_shape(text: str) -> bool:
    """Whether ``text`` is a canonical base32 version 1 CID of a known codec and hash function
    (identity excepted), judged from its text alone: its header characters, its length, its
    alphabet and the zero spare bits of its last character."""
    if type(text) is not str:
        return False
    lengths, shapes = _SHAPES or _cid_shapes()
    for size in lengths:
        shape = shapes.get(text[:size])
        if shape is not None:
            return (len(text) == shape[0] and text[-1] in shape[1]
                    and _b32_text(text) is not None)
    return False


def _base32_cid(text: str) -> str | None:
    """``text`` when it is a version 1 CID in canonical base32 (``b…``, the form
    ``state export`` writes), checked from its shape (no decoding) when its codec and hash
    function are known, else through integer decoding (much faster than ``base64``); ``None``
    when it is anything else, for the general parser to judge."""
    if len(text) < 8 or len(text) > 200 or text[0] != "b":
        return None
    if _fits_shape(text):
        return text
    if not _B32_CHARS.issuperset(text[1:]):
        return None
    digits = text[1:]
    bits = 5 * len(digits)
    size, spare = divmod(bits, 8)
    if spare >= 5:
        return None  # a whole character of padding bits: no base32 text is so long
    value = int(digits.translate(_B32), 32)
    if value & ((1 << spare) - 1):
        return None  # non-zero trailing bits: not the canonical form
    data = (value >> spare).to_bytes(size, "big")
    from rubix_integration.codecs import parse_cid

    try:
        cid = parse_cid(data)
    except (InvalidCIDError, TypeError, ValueError):
        return None
    return text if cid.version == 1 else None


def new_pin(cid: str, *, name: str = "", rmin: int = 0, rmax: int = 0,
            allocations: Iterable[str] = (), metadata: Mapping[str, str] | None = None,
            expire_at: datetime | str | None = None, direct: bool = False) -> Pin:
    """A validated ``"pin"`` of ``cid`` stamped now, as ``pins add`` makes it."""
    return Pin(cid=cid, name=name, replication_factor_min=rmin, replication_factor_max=rmax,
               allocations=tuple(allocations), metadata=dict(metadata or {}),
               max_depth=0 if direct else -1,
               expire_at=expire_at if isinstance(expire_at, str) else format_time(expire_at),
               timestamp=format_time(datetime.now(timezone.utc))).validated()
