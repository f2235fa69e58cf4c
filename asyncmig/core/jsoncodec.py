"""Exact JSON: every number comes back as the same bits, and NaN/Infinity are refused.

orjson is the fast path. It cannot hold integers beyond 64 bits and (since 3.10) silently parses
them as floats, so text holding a run of 20 or more digits outside a fraction or exponent is
parsed by the standard library, which keeps arbitrary integers; both write floats in their shortest
round-trip form, so ``2100.607537417505`` and ``-0.0`` survive unchanged. orjson would silently
write NaN as ``null``: :func:`dumps` is therefore only given documents that came through
:func:`loads` (which refuses NaN) or were checked with :func:`ensure_finite`.
"""

from __future__ import annotations

import json
import math
from typing import Any

import orjson


class NonFiniteNumber(ValueError):
    """A NaN or Infinity, which JSON and Cosmos DB cannot store."""


def _refuse_constant(name: str) -> Any:
    raise NonFiniteNumber(f"{name} is not a valid JSON number (Cosmos DB cannot store it)")


# 2**64 has 20 digits: a shorter integer always fits orjson. Runs of 20+ digits are found at C speed
# (translate + find); only those few candidates are inspected, and a run that follows '.', 'e', 'E'
# or '+' belongs to a float (e.g. 0.00012345678901234567). A false positive (digits inside a string)
# only costs a slower, still exact, parse.
_DIGITS_TO_NINE = bytes.maketrans(b"012345678", b"999999999")
_TWENTY_NINES = b"9" * 20
_NINE = ord("9")
_FLOAT_PARTS = frozenset(b".eE+")


def _may_hold_wide_integer(raw: bytes) -> bool:
    mapped = raw.translate(_DIGITS_TO_NINE)
    start = mapped.find(_TWENTY_NINES)
    while start != -1:
        while start > 0 and mapped[start - 1] == _NINE:
            start -= 1
        before = start - 2 if start >= 1 and raw[start - 1] == ord("-") else start - 1
        if before < 0 or raw[before] not in _FLOAT_PARTS:
            return True
        end = start + 20
        while end < len(mapped) and mapped[end] == _NINE:
            end += 1
        start = mapped.find(_TWENTY_NINES, end)
    return False


def loads(data: bytes | bytearray | memoryview | str) -> Any:
    """Parse JSON exactly.

    :raises NonFiniteNumber: for NaN / Infinity literals.
    :raises ValueError: for malformed JSON.
    """
    raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    if not _may_hold_wide_integer(raw):
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass  # NaN, lone surrogates, ...: let the standard library decide and explain
    return json.loads(raw.decode("utf-8"), parse_constant=_refuse_constant)


def dumps(obj: Any) -> bytes:
    """Compact UTF-8 JSON of a finite document."""
    try:
        return orjson.dumps(obj)
    except TypeError:  # an integer beyond 64 bits, or a lone surrogate from a \\uD800 escape
        return _stdlib_dumps(obj, sort_keys=False)


def canonical(obj: Any) -> bytes:
    """Sorted-key compact JSON: equal documents give equal bytes (used for digests)."""
    try:
        return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)
    except TypeError:
        return _stdlib_dumps(obj, sort_keys=True)


def _stdlib_dumps(obj: Any, *, sort_keys: bool) -> bytes:
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False, sort_keys=sort_keys)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates are legal JSON escapes but not UTF-8: keep them escaped
        return json.dumps(
            obj, separators=(",", ":"), ensure_ascii=True, allow_nan=False, sort_keys=sort_keys
        ).encode("ascii")


def ensure_finite(obj: Any, path: str = "") -> None:
    """Raise :class:`NonFiniteNumber` naming the first NaN/Infinity inside ``obj``."""
    if isinstance(obj, float):
        if not math.isfinite(obj):
            raise NonFiniteNumber(f"{obj!r} at {path or '/'} is NaN or Infinity, which JSON and Cosmos DB cannot store")
    elif isinstance(obj, dict):
        for key, value in obj.items():
            ensure_finite(value, f"{path}/{key}")
    elif isinstance(obj, list):
        for index, value in enumerate(obj):
            ensure_finite(value, f"{path}/{index}")
