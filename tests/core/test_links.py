"""The link, path and range rules the lean paths use without importing the SDK are the SDK's own:
each is compared with the ``azure-cosmos`` function it restates, on drawn and on fixed inputs."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from azure.cosmos._base import GetPathFromLink, IsNameBased
from azure.cosmos._routing.routing_range import Range
from hypothesis import given, settings
from hypothesis import strategies as st

from asyncmig.core.cosmos.links import is_name_based, normalized_bounds, parsed_range, path_from_link

# Names of every kind, and RID-like database segments (8 base64 characters decoding to 4 bytes).
names = st.one_of(
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=0x2FFF, exclude_characters="/"), min_size=1,
            max_size=20),
    st.binary(min_size=4, max_size=4).map(lambda b: base64.b64encode(b).decode().replace("/", "-")),
    st.sampled_from(["abcdefgh", "vimarsh!", "AAAAAA==", "db with space", "naïve-db", "1234567="]),
)
hex_keys = st.binary(max_size=8).map(lambda b: b.hex().upper())


def _sdk_is_name_based(link: str) -> bool | None:
    try:
        return bool(IsNameBased(link))
    except ValueError:  # the SDK raises on non-ASCII 8-character database names
        return None


@settings(max_examples=300, deadline=None)
@given(names, names, st.sampled_from(["", "/"]), st.sampled_from(["", "docs", "pkranges"]))
def test_paths_and_name_rules_match_the_sdk(database: str, container: str, slash: str, child: str) -> None:
    link = f"{slash}dbs/{database}/colls/{container}{slash}"
    expected = _sdk_is_name_based(link)
    if expected is None:
        assert is_name_based(link)  # where the SDK raises, a name is a name
        return
    assert is_name_based(link) == expected
    assert path_from_link(link, child) == GetPathFromLink(link, child)


@pytest.mark.parametrize("link", ["", "/", "colls/x", "dbs/", "dbs//colls/c", "dbs/AAAAAA==/colls/c", "DBS/name"])
def test_edge_links_match_the_sdk(link: str) -> None:
    assert is_name_based(link) == bool(IsNameBased(link))


@settings(max_examples=300, deadline=None)
@given(hex_keys, hex_keys, st.booleans(), st.booleans(), st.booleans())
def test_ranges_match_the_sdk(low: str, high: str, min_inclusive: bool, max_inclusive: bool, lower: bool) -> None:
    bounds: dict[str, Any] = {"min": low.lower() if lower else low, "max": high.lower() if lower else high,
                              "isMinInclusive": min_inclusive, "isMaxInclusive": max_inclusive}
    sdk = Range.ParseFromDict(bounds)
    assert parsed_range(bounds) == sdk.to_dict()
    normal = sdk.to_normalized_range()
    assert normalized_bounds(bounds) == (normal.min, normal.max)


def test_an_odd_length_key_is_refused_as_by_the_sdk() -> None:
    bounds = {"min": "ABC", "max": "FF", "isMinInclusive": False, "isMaxInclusive": False}
    with pytest.raises(ValueError, match="odd number"):
        Range.ParseFromDict(bounds).to_normalized_range()
    with pytest.raises(ValueError, match="odd number"):
        normalized_bounds(bounds)
