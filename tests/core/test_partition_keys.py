"""Effective partition keys computed by asyncmig (MurmurHash3 in C through ``mmh3``) are the SDK's
own, value for value: Hash V2 single keys and MultiHash (hierarchical) keys, strings (unicode, long),
numbers (integers, floats, -0.0), booleans, null and undefined."""

from __future__ import annotations

from typing import Any

from azure.cosmos.partition_key import PartitionKey, _Undefined
from hypothesis import given, settings
from hypothesis import strategies as st

from asyncmig.core.cosmos.partition_keys import effective_partition_key

V2 = {"paths": ["/pk"], "kind": "Hash", "version": 2}
MULTI = {"paths": ["/a", "/b", "/c"], "kind": "MultiHash", "version": 2}

scalars = st.one_of(
    st.text(max_size=120),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.none(),
    st.just({}),  # undefined
)


def _sdk(definition: dict[str, Any], values: list[Any]) -> str:
    paths = definition["paths"]
    key = PartitionKey(path=paths if definition["kind"] == "MultiHash" else paths[0], kind=definition["kind"],
                       version=2)
    return str(key._get_effective_partition_key_string([_Undefined() if v == {} else v for v in values]))


@settings(max_examples=400, deadline=None)
@given(scalars)
def test_hash_v2_matches_the_sdk(value: Any) -> None:
    assert effective_partition_key(V2, [value]) == _sdk(V2, [value])


@settings(max_examples=200, deadline=None)
@given(st.lists(scalars, min_size=1, max_size=3))
def test_multi_hash_matches_the_sdk(values: list[Any]) -> None:
    assert effective_partition_key(MULTI, values) == _sdk(MULTI, values)


def test_known_values() -> None:
    """Anchors that do not depend on the SDK: upper-case hex, 32 digits per component, the top two
    bits cleared, -0.0 apart from 0.0 (their IEEE bytes differ)."""
    assert effective_partition_key(V2, ["intake_00ccde93_6464"]) == "257EF46EA2E5A6A7985B5FC0C69BC307"
    assert effective_partition_key(V2, ["a"]) == "3A5381E1114EB8D3FCC90795045B49B7"
    assert effective_partition_key(V2, [-0.0]) != effective_partition_key(V2, [0.0])
    assert effective_partition_key(V2, [1]) == effective_partition_key(V2, [1.0])
    assert effective_partition_key(V2, []) == ""
    three = effective_partition_key(MULTI, ["x", 1, None])
    assert len(three) == 96 and three[:32] == effective_partition_key(MULTI, ["x"])
