"""Exact JSON: fragile numbers survive byte for byte; NaN is refused rather than turned into null."""

from __future__ import annotations

import pytest

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
