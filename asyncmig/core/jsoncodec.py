"""Exact JSON: every number comes back as the same value and type, and NaN/Infinity are refused.

orjson is the fast path. It holds integers only from -2**63 to 2**64 - 1 and silently parses wider
ones as floats, so text holding a run of 19 or more digits outside a fraction or exponent is parsed
by the standard library, which keeps integers of any width. Both write floats in their shortest
round-trip form, so ``2100.607537417505`` and ``-0.0`` survive unchanged.

Non-finite numbers are refused in both directions: :func:`loads` refuses ``NaN``/``Infinity``
literals and numbers such as ``1e400`` that overflow to infinity; :func:`dumps` and
:func:`canonical` refuse a NaN/Infinity float (which orjson would silently write as ``null``).
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


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise NonFiniteNumber(
            f"{text} overflows a 64-bit float (it would become Infinity, which Cosmos DB cannot store)"
        )
    return value


# -2**63 and 2**64 have 19 and 20 digits: an integer of 18 digits or fewer always fits orjson. In
# JSON a number starts the text or follows whitespace, ':', ',' or '[' (a '-' may come between), so
# mapping digits to '9' and those characters to '#' leaves every wide integer as '#' and 19 nines:
# one translate and one find, both at C speed, over the whole text. Runs inside fractions (the
# 18-20 digit runs of small floats such as 0.0123456789012345678) follow '.' and never match; a
# false positive (such digits inside a string) only costs a slower, still exact, parse.
_NUMBER_CONTEXT = bytes.maketrans(b"0123456789 \t\r\n:,[-", b"9" * 10 + b"#" * 8)
_WIDE_RUN = b"9" * 19
_WIDE_INTEGER = b"#" + _WIDE_RUN


def _may_hold_wide_integer(raw: bytes) -> bool:
    mapped = raw.translate(_NUMBER_CONTEXT)
    # rfind, not find: on vector pages (mostly '#9.999...') it measured 0.58 ms against 0.84 ms per 1.6 MB.
    return mapped.startswith(_WIDE_RUN) or mapped.rfind(_WIDE_INTEGER) != -1


def loads(data: bytes | bytearray | memoryview | str) -> Any:
    """Parse JSON exactly.

    :raises NonFiniteNumber: for NaN / Infinity literals and numbers that overflow to infinity.
    :raises ValueError: for malformed JSON.
    """
    raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    if not _may_hold_wide_integer(raw):
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass  # NaN, 1e400, lone surrogates, ...: let the standard library decide and explain
    return json.loads(raw.decode("utf-8"), parse_constant=_refuse_constant, parse_float=_finite_float)


def dumps(obj: Any, *, finite: bool = False) -> bytes:
    """Compact UTF-8 JSON.

    :param finite: ``obj`` is known to hold no NaN/Infinity (it passed :func:`ensure_finite` or
        came from :func:`loads`): the look for them, the costliest part for a vector, is skipped.
    :raises NonFiniteNumber: naming the first NaN/Infinity inside ``obj``.
    """
    return _dumps(obj, sort_keys=False, finite=finite)


def canonical(obj: Any) -> bytes:
    """Sorted-key compact JSON: equal documents give equal bytes (used for digests).

    :raises NonFiniteNumber: naming the first NaN/Infinity inside ``obj``.
    """
    return _dumps(obj, sort_keys=True, finite=False)


def _dumps(obj: Any, *, sort_keys: bool, finite: bool) -> bytes:
    try:
        encoded = orjson.dumps(obj, option=orjson.OPT_SORT_KEYS if sort_keys else None)
    except TypeError:  # an integer beyond 64 bits, or a lone surrogate from a \\uD800 escape
        return _stdlib_dumps(obj, sort_keys=sort_keys)
    if not finite and b"null" in encoded:  # orjson writes NaN/Infinity as null: only then is the walk needed
        ensure_finite(obj)
    return encoded


def _stdlib_dumps(obj: Any, *, sort_keys: bool) -> bytes:
    try:
        return _stdlib_encode(obj, sort_keys=sort_keys)
    except ValueError:  # allow_nan=False refused a NaN/Infinity: name where it is
        ensure_finite(obj)
        raise


def _stdlib_encode(obj: Any, *, sort_keys: bool) -> bytes:
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False, sort_keys=sort_keys)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates are legal JSON escapes but not UTF-8: keep them escaped
        return json.dumps(
            obj, separators=(",", ":"), ensure_ascii=True, allow_nan=False, sort_keys=sort_keys
        ).encode("ascii")


def _all_finite(obj: Any) -> bool:
    """No NaN/Infinity inside ``obj``: the quick answer, without the path an error message needs."""
    if isinstance(obj, float):
        return math.isfinite(obj)
    if isinstance(obj, dict):
        return all(map(_all_finite, obj.values()))
    if isinstance(obj, list):
        try:  # a list of numbers (an embedding): NaN and Infinity carry into the sum, at C speed
            if math.isfinite(sum(obj)):
                return True
        except (TypeError, OverflowError):  # not only numbers, or an integer beyond a float's range
            pass
        return all(map(_all_finite, obj))  # (a finite sum that overflowed also lands here)
    return True


def ensure_finite(obj: Any) -> None:
    """Raise :class:`NonFiniteNumber` naming the first NaN/Infinity inside ``obj``."""
    if not _all_finite(obj):
        path, value = _first_non_finite(obj, "")
        raise NonFiniteNumber(f"{value!r} at {path or '/'} is NaN or Infinity, which JSON and Cosmos DB cannot store")


def _first_non_finite(obj: Any, path: str) -> tuple[str, float]:
    if isinstance(obj, float):
        return path, obj
    items = obj.items() if isinstance(obj, dict) else enumerate(obj)
    return next(_first_non_finite(value, f"{path}/{key}") for key, value in items if not _all_finite(value))
