"""Varints and the text encodings used by CIDs and block file names.

Everything here raises :class:`ValueError` on bad input; the callers turn it into the error class
that fits their context (an invalid CID text, or a corrupt block).
"""

from __future__ import annotations

import base64
import binascii

__all__ = [
    "b32_lower_decode",
    "b32_lower_encode",
    "b32_upper_encode",
    "b58_decode",
    "b58_encode",
    "decode_uvarint",
    "encode_uvarint",
    "multibase_decode",
    "multibase_encode",
]

_B58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_DIGITS = bytes(_B58_ALPHABET.index(chr(i)) if chr(i) in _B58_ALPHABET else 255
                    for i in range(256))

# the multiformats unsigned varint is at most 9 bytes (63 bits)
_MAX_UVARINT_BYTES = 9


def encode_uvarint(value: int) -> bytes:
    """Encode a non-negative integer as an unsigned LEB128 varint."""
    if value < 0:
        raise ValueError("varint must not be negative")
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def decode_uvarint(
    buf: bytes, pos: int = 0, max_bytes: int = _MAX_UVARINT_BYTES
) -> tuple[int, int]:
    """Decode a varint at ``buf[pos:]``; return ``(value, position after it)``.

    Rejects truncated varints, varints longer than ``max_bytes`` and non-minimal encodings
    (a trailing zero byte), as the multiformats spec asks.
    """
    b = buf[pos] if pos < len(buf) else -1
    if 0 <= b < 0x80:
        return b, pos + 1
    value = 0
    shift = 0
    end = min(len(buf), pos + max_bytes)
    i = pos
    while i < end:
        b = buf[i]
        value |= (b & 0x7F) << shift
        i += 1
        if b < 0x80:
            if b == 0 and i - pos > 1:
                raise ValueError("varint is not minimally encoded")
            return value, i
        shift += 7
    if end < pos + max_bytes:
        raise ValueError("truncated varint")
    raise ValueError("varint is too long")


# Below this many digits the digit-by-digit loop is fastest; above it, the conversions split the
# number in halves and recurse, so their cost follows big-integer multiplication (Karatsuba)
# instead of growing with the square of the length.
_B58_SPLIT = 256


def b58_encode(data: bytes) -> str:
    """Encode bytes as base58btc (the Bitcoin alphabet)."""
    zeros = len(data) - len(data.lstrip(b"\0"))
    n = int.from_bytes(data, "big")
    if not n:
        return "1" * zeros
    # enough digits for the number: log(256) / log(58) < 1.3658
    width = (len(data) - zeros) * 13658 // 10000 + 1
    digits = _b58_digits(n, width, {}).lstrip("1")
    return "1" * zeros + digits


def _b58_digits(n: int, width: int, powers: dict[int, int]) -> str:
    """``n`` as exactly ``width`` base58 digits (left-padded with ``1``, the zero digit)."""
    if width <= _B58_SPLIT:
        chars: list[str] = []
        alphabet = _B58_ALPHABET
        while n:
            n, r = divmod(n, 58)
            chars.append(alphabet[r])
        return "1" * (width - len(chars)) + "".join(reversed(chars))
    low = width // 2
    power = powers.get(low)
    if power is None:
        power = powers[low] = 58**low
    high, rest = divmod(n, power)
    return _b58_digits(high, width - low, powers) + _b58_digits(rest, low, powers)


def b58_decode(text: str) -> bytes:
    """Decode base58btc text; raise ``ValueError`` on a character outside the alphabet."""
    try:
        # one C-level translate to digit values, then small-int arithmetic: CIDv0 parsing is on
        # the hot path of every repo read
        digits = text.encode("ascii").translate(_B58_DIGITS)
    except UnicodeEncodeError as exc:
        raise ValueError(f"character {text[exc.start]!r} at position {exc.start} is outside "
                         "the base58btc alphabet") from None
    if 255 in digits:
        at = digits.index(255)
        raise ValueError(f"character {text[at]!r} at position {at} is outside the base58btc "
                         "alphabet")
    n = _b58_value(digits, {}) if len(digits) > _B58_SPLIT else _b58_small(digits)
    zeros = len(text) - len(text.lstrip("1"))
    body = n.to_bytes((n.bit_length() + 7) // 8, "big") if n else b""
    return b"\0" * zeros + body


def _b58_small(digits: bytes) -> int:
    n = 0
    for d in digits:
        n = n * 58 + d
    return n


def _b58_value(digits: bytes, powers: dict[int, int]) -> int:
    if len(digits) <= _B58_SPLIT:
        return _b58_small(digits)
    low = len(digits) // 2
    power = powers.get(low)
    if power is None:
        power = powers[low] = 58**low
    return _b58_value(digits[:-low], powers) * power + _b58_value(digits[-low:], powers)


_B32_UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
_B32_PAIRS = tuple(a + b for a in _B32_UPPER for b in _B32_UPPER)


def b32_upper_encode(data: bytes) -> str:
    """RFC 4648 base32, upper case, no padding (flatfs block file names).

    One big-integer conversion and a table of character pairs: about three times faster than
    :func:`base64.b32encode`, which matters when every block read needs its file name.
    """
    size = len(data)
    if size == 0:
        return ""
    pad = -size % 5
    number = int.from_bytes(data, "big") << (8 * pad)
    pairs = _B32_PAIRS
    text = "".join([pairs[(number >> shift) & 1023]
                    for shift in range((size + pad) * 8 - 10, -10, -10)])
    return text[: (size * 8 + 4) // 5]


def b32_lower_encode(data: bytes) -> str:
    """RFC 4648 base32, lower case, no padding (multibase ``b``)."""
    return base64.b32encode(data).decode("ascii").rstrip("=").lower()


def b32_lower_decode(text: str) -> bytes:
    """Decode unpadded base32 in either case."""
    if len(text) % 8 in (1, 3, 6):
        raise ValueError("impossible base32 length")
    try:
        return base64.b32decode(text.upper() + "=" * (-len(text) % 8))
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"invalid base32: {exc}") from None


def _b64_decode(text: str, altchars: bytes | None) -> bytes:
    if "=" in text or len(text) % 4 == 1:
        raise ValueError("invalid base64 length or padding")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), altchars=altchars, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"invalid base64: {exc}") from None


def _b16_decode(text: str) -> bytes:
    try:
        return bytes.fromhex(text)
    except ValueError as exc:
        raise ValueError(f"invalid base16: {exc}") from None


def multibase_decode(text: str) -> bytes:
    """Decode multibase text (prefix ``b``/``B`` base32, ``z`` base58btc, ``f``/``F`` base16,
    ``m`` base64, ``u`` base64url)."""
    if not text:
        raise ValueError("empty multibase text")
    prefix, body = text[0], text[1:]
    if prefix == "b":
        if body != body.lower():
            raise ValueError("base32 (b) text must be lower case")
        return b32_lower_decode(body)
    if prefix == "B":
        if body != body.upper():
            raise ValueError("base32upper (B) text must be upper case")
        return b32_lower_decode(body)
    if prefix == "z":
        return b58_decode(body)
    if prefix in "fF":
        return _b16_decode(body)
    if prefix == "m":
        return _b64_decode(body, None)
    if prefix == "u":
        return _b64_decode(body, b"-_")
    raise ValueError(f"unsupported multibase prefix {prefix!r} (CID text is Qm... for version 0, "
                     "or starts with b, B, z, f, F, m or u)")


def multibase_encode(data: bytes, base: str = "base32") -> str:
    """Encode ``data`` as multibase text in ``base32``, ``base32upper``, ``base58btc`` or
    ``base16``."""
    if base == "base32":
        return "b" + b32_lower_encode(data)
    if base == "base32upper":
        return "B" + b32_upper_encode(data)
    if base == "base58btc":
        return "z" + b58_encode(data)
    if base == "base16":
        return "f" + data.hex()
    raise ValueError(f"unsupported multibase {base!r}")
