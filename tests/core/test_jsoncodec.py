"""Exact JSON: fragile numbers survive byte for byte; NaN is refused rather than turned into null."""

from __future__ import annotations

import json
import math
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asyncmig.core import jsoncodec

EXACT = [
    b'{"big":9007199254740993}',
    b'{"u64":18446744073709551615}',
    b'{"wider":18446744073709551616}',
    b'[123456789012345678901234567890,-99999999999999999999999]',
    b'{"long":2100.607537417505,"tiny":1e-7,"neg0":-0.0}',
    b'{"s":"12345678901234567890123","n":{"deep":[1,2.5,{"x":-0.0}]}}',
    '{"u":"धर्म 😀"}'.encode(),
]


@pytest.mark.parametrize("text", EXACT)
def test_round_trip_is_byte_exact(text: bytes) -> None:
    assert jsoncodec.dumps(jsoncodec.loads(text)) == text


def test_integers_wider_than_64_bits_stay_integers() -> None:
    value = jsoncodec.loads(b'{"a":18446744073709551616}')["a"]
    assert isinstance(value, int) and value == 2**64


def test_lone_surrogate_escapes_survive() -> None:
    value = jsoncodec.loads(b'{"s":"\\ud800"}')
    assert jsoncodec.loads(jsoncodec.dumps(value)) == value


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity"])
def test_non_finite_literals_are_refused(literal: bytes) -> None:
    with pytest.raises(jsoncodec.NonFiniteNumber):
        jsoncodec.loads(b'{"x":' + literal + b"}")


def test_ensure_finite_names_the_path() -> None:
    with pytest.raises(jsoncodec.NonFiniteNumber, match="nan at /e/1 is NaN or Infinity"):
        jsoncodec.ensure_finite({"e": [1.0, float("nan")]})


def test_canonical_sorts_keys_and_distinguishes_zero_signs() -> None:
    assert jsoncodec.canonical({"b": 1, "a": 2}) == b'{"a":2,"b":1}'
    assert jsoncodec.canonical({"x": 0.0}) != jsoncodec.canonical({"x": -0.0})


# Integers orjson cannot hold as 64-bit values: 19-digit negatives below -2**63, 20-digit values above
# 2**64 - 1. Each must come back as the same int, never a float.
@pytest.mark.parametrize("text", [
    b"-9999999999999999999", b"-9223372036854775809", b"18446744073709551616", b"-18446744073709551616",
    b"[-9999999999999999999]", b'{"n":-9223372036854775809}',
])
def test_every_integer_width_stays_an_exact_integer(text: bytes) -> None:
    value = jsoncodec.loads(text)
    assert value == json.loads(text) and _same_types(value, json.loads(text))
    assert jsoncodec.dumps(value) == text


@pytest.mark.parametrize("text", [b"1e400", b"-1e400", b'{"x":[1,1E309]}', b'{"a":"12345678901234567890","b":1e400}'])
def test_overflowing_numbers_are_refused_not_turned_into_infinity(text: bytes) -> None:
    with pytest.raises(jsoncodec.NonFiniteNumber):
        jsoncodec.loads(text)


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")])
def test_dumps_refuses_non_finite_numbers_instead_of_writing_null(value: float) -> None:
    with pytest.raises(jsoncodec.NonFiniteNumber, match="/v/0"):
        jsoncodec.dumps({"v": [value], "n": None})
    with pytest.raises(jsoncodec.NonFiniteNumber):
        jsoncodec.canonical({"v": [value]})


def _same_types(a: Any, b: Any, *, key_order: bool = True) -> bool:
    """Equal with the same types at every node and the same float bits (so -0.0 != 0.0)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return struct.pack("<d", a) == struct.pack("<d", b)
    if isinstance(a, dict):
        same_keys = list(a) == list(b) if key_order else a.keys() == b.keys()
        return same_keys and all(_same_types(a[k], b[k], key_order=key_order) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(
            _same_types(x, y, key_order=key_order) for x, y in zip(a, b, strict=True)
        )
    return bool(a == b)


def _finite_float(text: str) -> float:
    value = float(text)
    assert math.isfinite(value)
    return value


_scalars = (
    st.none() | st.booleans()
    | st.integers() | st.integers(min_value=-(2**200), max_value=2**200)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.just(-0.0)
    | st.text()
    | st.text(st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF) | st.characters(), max_size=4)
)  # the last: lone surrogates, which JSON can hold as escapes and the codec keeps as escapes
_trees = st.recursive(
    _scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5),
    max_leaves=25,
)


@settings(max_examples=400, deadline=None)
@given(_trees)
def test_property_round_trip_keeps_types_and_bits(value: Any) -> None:
    assert _same_types(jsoncodec.loads(jsoncodec.dumps(value)), value)
    assert _same_types(jsoncodec.loads(jsoncodec.canonical(value)), value, key_order=False)


@settings(max_examples=400, deadline=None)
@given(_trees, st.booleans())
def test_property_loads_matches_the_standard_library(value: Any, ascii_only: bool) -> None:
    text = json.dumps(value, ensure_ascii=ascii_only)
    if not ascii_only and not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # raw lone surrogates: no UTF-8 text can carry them, only escapes
            return
    expected = json.loads(text, parse_float=_finite_float, parse_int=int)
    assert _same_types(jsoncodec.loads(text), expected)
    if ascii_only:  # bytes input as well (a lone surrogate cannot be UTF-8 bytes unless escaped)
        assert _same_types(jsoncodec.loads(text.encode("ascii")), expected)


_number_texts = st.builds(
    lambda sign, digits, fraction, exponent: sign + digits + fraction + exponent,
    st.sampled_from(["", "-"]),
    st.from_regex(r"\A(0|[1-9][0-9]{0,45})\Z"),
    st.sampled_from([""]) | st.from_regex(r"\A\.[0-9]{1,25}\Z"),
    st.sampled_from([""]) | st.from_regex(r"\A[eE][+-]?[0-9]{1,3}\Z"),
)


@settings(max_examples=600, deadline=None)
@given(_number_texts)
def test_property_numbers_parse_like_python_or_are_refused(text: str) -> None:
    try:
        expected = json.loads(text, parse_float=_finite_float, parse_int=int)
    except AssertionError:  # overflows to infinity: the codec must refuse it, not round it
        with pytest.raises(jsoncodec.NonFiniteNumber):
            jsoncodec.loads(text)
        return
    assert _same_types(jsoncodec.loads(text), expected)
    assert _same_types(jsoncodec.loads(f'{{"n":[{text}]}}'), {"n": [expected]})
