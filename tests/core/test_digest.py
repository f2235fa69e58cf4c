"""Digests must be exact (every bit of every value counts), blind to system properties and to order,
and sensitive to duplicates."""

from __future__ import annotations

import hashlib
import random

import pytest

from asyncmig.core import jsoncodec
from asyncmig.core.digest import ContainerDigest, document_digest
from asyncmig.core.engine.transform import SYSTEM_PROPERTIES

SYSTEM = {
    "_rid": "AAAA==",
    "_self": "dbs/x/colls/y/docs/z/",
    "_etag": '"00-11"',
    "_attachments": "attachments/",
}


def test_document_digest_is_sha256_of_canonical_json() -> None:
    document = {"id": "x", "a": 1}
    assert document_digest(document) == hashlib.sha256(b'{"a":1,"id":"x"}').digest()


def test_system_properties_do_not_count() -> None:
    body = {"id": "v1", "embedding": [0.1, -0.25], "personality": "Krishna"}
    as_read = {**body, **SYSTEM, "_ts": 1722850000, "_lsn": 42}
    assert set(SYSTEM_PROPERTIES) <= set(as_read)
    assert document_digest(as_read) == document_digest(body)


def test_user_fields_starting_with_underscore_count() -> None:
    # The original backup removed every key starting with "_"; only Cosmos's own are ignored.
    assert document_digest({"id": "a", "_ttl": 60}) != document_digest({"id": "a"})


def test_key_order_does_not_count_but_array_order_does() -> None:
    assert document_digest({"id": "a", "x": 1, "y": 2}) == document_digest({"y": 2, "x": 1, "id": "a"})
    assert document_digest({"id": "a", "v": [1, 2]}) != document_digest({"id": "a", "v": [2, 1]})


@pytest.mark.parametrize(
    ("left", "right"),
    [
        (0.1, 0.1000000000000001),  # one ulp apart
        (2100.607537417505, 2100.6075374175053),
        (-0.0, 0.0),
        (1, 1.0),  # JSON text distinguishes them: the conservative choice
        (True, 1),
        (None, 0),
        ("1", 1),
        (2**64, 2**64 + 1),  # beyond orjson's integers: the standard-library path
        (2**53, 2**53 + 1),  # beyond exact doubles
    ],
)
def test_every_bit_of_a_value_counts(left: object, right: object) -> None:
    assert document_digest({"id": "a", "v": left}) != document_digest({"id": "a", "v": right})


def test_equal_values_give_equal_digests_whatever_the_parse_path() -> None:
    text = b'{"id":"a","big":123456789012345678901234567890,"f":1e-7,"lone":"\\ud800"}'
    assert document_digest(jsoncodec.loads(text)) == document_digest(jsoncodec.loads(text))


def _documents(n: int) -> list[dict[str, object]]:
    return [{"id": f"d{i}", "n": i, "embedding": [i / 7, -i / 3]} for i in range(n)]


def test_container_digest_is_order_independent() -> None:
    documents = _documents(50)
    shuffled = documents[:]
    random.Random(7).shuffle(shuffled)
    forward, backward = ContainerDigest(), ContainerDigest()
    for document in documents:
        forward.add(document)
    for document in shuffled:
        backward.add(document)
    assert forward == backward
    assert forward.count == 50


def test_container_digest_is_sensitive_to_duplicates() -> None:
    a, b = _documents(2)
    once, twice, b_only = ContainerDigest(), ContainerDigest(), ContainerDigest()
    for document in (a, b):
        once.add(document)
    for document in (a, a, b):
        twice.add(document)
    b_only.add(b)
    assert twice != once
    # XOR would let the two copies of a cancel out, leaving the digest of {b}
    assert twice.total != b_only.total


def test_container_digest_sees_a_changed_document() -> None:
    documents = _documents(10)
    original, changed = ContainerDigest(), ContainerDigest()
    for document in documents:
        original.add(document)
    documents[4] = {**documents[4], "n": 4.0}
    for document in documents:
        changed.add(document)
    assert original.count == changed.count
    assert original != changed


def test_merge_equals_adding_everything() -> None:
    documents = _documents(30)
    whole, first, second = ContainerDigest(), ContainerDigest(), ContainerDigest()
    for document in documents:
        whole.add(document)
    for document in documents[:11]:
        first.add(document)
    for document in documents[11:]:
        second.add(document)
    first.merge(second)
    assert first == whole


def test_add_digest_matches_add() -> None:
    document = {"id": "x", "v": [1.5]}
    by_document, by_digest = ContainerDigest(), ContainerDigest()
    by_document.add(document)
    by_digest.add_digest(document_digest(document))
    assert by_document == by_digest


def test_sum_wraps_modulo_2_256() -> None:
    digest = ContainerDigest()
    digest.add_digest(b"\xff" * 32)
    digest.add_digest(b"\xff" * 32)
    assert digest.total == (2 * (2**256 - 1)) % 2**256
    assert digest.hexdigest == "2:" + "f" * 63 + "e"


def test_text_form_round_trips() -> None:
    digest = ContainerDigest()
    assert digest.to_json() == "0:" + "0" * 64
    for document in _documents(5):
        digest.add(document)
    text = digest.to_json()
    assert text.startswith("5:") and len(text) == 66
    assert str(digest) == text
    assert ContainerDigest.from_json(jsoncodec.loads(jsoncodec.dumps(text))) == digest


@pytest.mark.parametrize(
    "value",
    [
        None,
        5,
        "",
        "5",
        "5:abc",
        "-1:" + "0" * 64,
        "05:" + "0" * 64,
        "5:" + "A" * 64,
        "5:" + "0" * 65,
        " 5:" + "0" * 64,
    ],
)
def test_malformed_text_is_refused(value: object) -> None:
    with pytest.raises(ValueError, match="content digest"):
        ContainerDigest.from_json(value)
