"""A small canonical DAG-JSON codec: the bytes a provenance record is hashed over.

Encoding follows the DAG-JSON rules so that any IPLD implementation storing the same data (for
example ``ipfs dag put --store-codec dag-json``) produces the same bytes, hence the same CID:

- map keys are strings, sorted by their UTF-8 bytes (the same order as Python's code-point
  order); no whitespace anywhere;
- strings are JSON strings in UTF-8, only ``"``, ``\\`` and control characters escaped (as
  ``JSON.stringify`` does); a string that is not valid Unicode (a lone surrogate) is refused;
- integers are written in decimal, limited to the 64-bit range of the IPLD data model;
- floats are written as ECMAScript's ``Number.prototype.toString`` writes them (the shortest
  form that reads back to the same value), with ``.0`` added to integral values so they stay
  floats; NaN and infinities are refused;
- bytes become ``{"/":{"bytes":"<base64, standard alphabet, no padding>"}}`` and links (a
  :class:`~rubix_integration.codecs.CID`) become ``{"/":"<CID text>"}``;
- a map of the data itself may not have a ``"/"`` key: it would read back as bytes or a link.

Tuples encode as lists. Anything else (sets, objects, non-string keys) raises
:class:`~rubix_integration.errors.InvalidDataError` naming where it was found.

Plain JSON data (the usual case) is written by the standard library's C encoder and accepted only
when reading the text back gives the value again and nothing in it can differ from the rules
above (a float in exponent form, ``-0.0``, an integer of more than 18 characters, a ``"/"``, deep
nesting); anything else goes through the encoder written out here, which gives the same bytes or
the error.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
from collections.abc import Callable, Mapping
from json.encoder import encode_basestring
from typing import Any

from rubix_integration.codecs._cid import CID, DAG_JSON, SHA2_256, parse_cid
from rubix_integration.errors import InvalidCIDError, InvalidDataError

__all__ = [
    "MAX_DEPTH",
    "cid_for_block",
    "cid_text_for_block",
    "decode",
    "encode",
    "encode_plain",
    "format_float",
    "from_json_form",
    "to_json_form",
]

#: Deepest nesting accepted; deeper data is refused rather than overflowing the stack.
MAX_DEPTH = 64

_INT_MIN = -(2**63)
_INT_MAX = 2**64 - 1

_encode_str: Callable[[str], str] = encode_basestring


def format_float(value: float) -> str:
    """Write a finite float as ECMAScript does, keeping ``.0`` on integral values."""
    if not math.isfinite(value):
        raise ValueError(f"{value!r} has no DAG-JSON form")
    if value == 0.0:
        return "0.0"
    sign = "-" if value < 0 else ""
    mantissa, _, exp_text = repr(abs(value)).partition("e")
    whole, _, frac = mantissa.partition(".")
    digits = whole + frac
    # value = 0.<digits> * 10**point
    point = len(whole) + (int(exp_text) if exp_text else 0)
    stripped = digits.lstrip("0")
    point -= len(digits) - len(stripped)
    digits = stripped.rstrip("0")
    k = len(digits)
    n = point
    if k <= n <= 21:
        return f"{sign}{digits}{'0' * (n - k)}.0"
    if 0 < n <= 21:
        return f"{sign}{digits[:n]}.{digits[n:]}"
    if -6 < n <= 0:
        return f"{sign}0.{'0' * -n}{digits}"
    exp = n - 1
    exp_sign = "+" if exp >= 0 else "-"
    body = digits if k == 1 else f"{digits[0]}.{digits[1:]}"
    return f"{sign}{body}e{exp_sign}{abs(exp)}"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _where(path: tuple[str | int, ...]) -> str:
    out = "data"
    for part in path:
        out += f"[{part!r}]"
    return out


def _fail(path: tuple[str | int, ...], message: str) -> InvalidDataError:
    return InvalidDataError(f"{_where(path)}: {message}", path=_where(path))


# sort_keys orders keys by code point, which is the order of their UTF-8 bytes
_c_encode: Callable[[Any], str] = json.JSONEncoder(
    ensure_ascii=False, allow_nan=False, sort_keys=True, separators=(",", ":")).encode


def _short_int(text: str) -> int:
    # 18 characters always fit in 64 bits; longer integers take the full encoder's range check
    if len(text) > 18:
        raise ValueError(text)
    return int(text)


_read_back: Callable[[str], Any] = json.JSONDecoder(parse_int=_short_int).decode


def encode_plain(value: Any) -> tuple[bytes, Any]:
    """The canonical DAG-JSON bytes of ``value`` and those bytes read back as plain JSON values.

    Links and bytes stay in their ``{"/": …}`` form in the second item (see :func:`from_json_form`).
    """
    try:
        text = _c_encode(value)
        # the C encoder differs from DAG-JSON on floats in exponent form and on negative zero;
        # "/" keys need the full encoder's checks
        if _exponent_in(text) or "-0.0" in text or '"/"' in text:
            raise ValueError(text)
        plain = _read_back(text)
        # reading back equal rules out tuples, links, bytes and keys that are not text
        if plain == value and (text.count("{") + text.count("[") <= MAX_DEPTH
                               or _within_depth(plain)):
            return text.encode("utf-8"), plain
    except (TypeError, ValueError, RecursionError):  # UnicodeEncodeError is a ValueError
        pass
    block = _encode_full(value)
    return block, json.loads(block)


def _exponent_in(text: str) -> bool:
    # a digit before "e-" or "e+": a float written in exponent form (or text that looks like one)
    for mark in ("e-", "e+"):
        at = text.find(mark)
        while at > 0:
            if text[at - 1].isdigit():
                return True
            at = text.find(mark, at + 2)
    return False


def _within_depth(plain: Any) -> bool:
    # whether no value of plain JSON data lies deeper than MAX_DEPTH, visiting containers only
    level = [plain]
    for _ in range(MAX_DEPTH):
        level = [child for item in level
                 for child in (item.values() if isinstance(item, dict) else item)
                 if isinstance(child, (dict, list))]
        if not level:
            return True
    return not any(level)


def encode(value: Any) -> bytes:
    """Return the canonical DAG-JSON bytes of ``value``."""
    return encode_plain(value)[0]


def _encode_full(value: Any) -> bytes:
    parts: list[str] = []
    _encode_into(value, parts, (), 0)
    text = "".join(parts)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidDataError(
            f"data holds a string that is not valid Unicode (lone surrogate at {exc.start})",
            path="data",
        ) from None


def _encode_into(value: Any, out: list[str], path: tuple[str | int, ...], depth: int) -> None:
    if depth > MAX_DEPTH:
        raise _fail(path, f"nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, str):
        out.append(_encode_str(value))
    elif value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int):
        if not _INT_MIN <= value <= _INT_MAX:
            raise _fail(path, f"integer {value} is outside the 64-bit range")
        out.append(str(int(value)))
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise _fail(path, f"{value!r} is not representable (NaN and infinities are not)")
        out.append(format_float(value))
    elif isinstance(value, CID):
        out.append('{"/":')
        out.append(_encode_str(str(value)))
        out.append("}")
    elif isinstance(value, Mapping):
        for key in value:
            if not isinstance(key, str):
                raise _fail(path, f"map key {key!r} is not a string")
        if "/" in value:
            raise _fail(path, 'a map key "/" is reserved for bytes and links')
        out.append("{")
        first = True
        for key in sorted(value):
            if not first:
                out.append(",")
            first = False
            out.append(_encode_str(key))
            out.append(":")
            _encode_into(value[key], out, (*path, key), depth + 1)
        out.append("}")
    elif isinstance(value, (list, tuple)):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _encode_into(item, out, (*path, i), depth + 1)
        out.append("]")
    elif isinstance(value, (bytes, bytearray, memoryview)):
        out.append('{"/":{"bytes":"')
        out.append(_b64(bytes(value)))
        out.append('"}}')
    else:
        raise _fail(path, f"a {type(value).__name__} is not representable in DAG-JSON "
                          "(use str, int, float, bool, None, list, dict, bytes or CID)")


def cid_for_block(block: bytes) -> CID:
    """The CIDv1 (dag-json, sha2-256) of canonical DAG-JSON ``block`` bytes."""
    return CID(1, DAG_JSON, b"\x12\x20" + hashlib.sha256(block).digest())


# version 1, codec dag-json (varint 0x0129), sha2-256, 32-byte digest
_CID_PREFIX = b"\x01\xa9\x02\x12\x20"
_B32 = "abcdefghijklmnopqrstuvwxyz234567"
_B32_PAIRS = [_B32[i >> 5] + _B32[i & 31] for i in range(1024)]
# the 5-byte prefix is exactly 8 base32 characters, so the digest's characters follow it unchanged
_CID_TEXT_PREFIX = "b" + "".join(_B32[(int.from_bytes(_CID_PREFIX, "big") >> s) & 31]
                                 for s in range(35, -1, -5))
_DIGEST_PAD_BITS = 52 * 5 - 256  # 32 bytes make 52 characters, the last padded with zero bits
_DIGEST_SHIFTS = range(25 * 10, -1, -10)


def cid_text_for_block(block: bytes) -> str:
    """``str(cid_for_block(block))``, computed without the general CID machinery (hot path)."""
    n = int.from_bytes(hashlib.sha256(block).digest(), "big") << _DIGEST_PAD_BITS
    pairs = _B32_PAIRS
    return _CID_TEXT_PREFIX + "".join([pairs[(n >> shift) & 1023] for shift in _DIGEST_SHIFTS])


def _revive(value: Any) -> Any:
    if isinstance(value, dict):
        if "/" in value and len(value) == 1:
            inner = value["/"]
            if isinstance(inner, str):
                try:
                    return parse_cid(inner)
                except InvalidCIDError as exc:
                    raise ValueError(f"bad link {inner!r}: {exc}") from None
            if isinstance(inner, dict) and set(inner) == {"bytes"} and isinstance(
                inner["bytes"], str
            ):
                text = inner["bytes"]
                try:
                    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
                except binascii.Error as exc:
                    raise ValueError(f"bad bytes {text[:40]!r}: {exc}") from None
        return {k: _revive(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_revive(v) for v in value]
    return value


def decode(block: bytes) -> Any:
    """Read DAG-JSON bytes back: links become :class:`CID`, bytes become :class:`bytes`."""
    return _revive(json.loads(block.decode("utf-8")))


def to_json_form(value: Any) -> Any:
    """Plain JSON values for ``value`` (links and bytes in their ``{"/": ...}`` form)."""
    return json.loads(encode(value))


def from_json_form(value: Any) -> Any:
    """The inverse of :func:`to_json_form`."""
    return _revive(value)


# sha2-256 is the only hash these blocks use; keep the constant visible for readers
assert SHA2_256 == 0x12
