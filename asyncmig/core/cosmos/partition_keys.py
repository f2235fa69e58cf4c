"""Partition key values and effective partition keys (EPKs), computed as Cosmos DB computes them.

The sink groups documents by target physical range and the emulator places them; both use this
module so client and server can never disagree. Every version is hashed here, with MurmurHash3 in C
(``mmh3``): the Python SDK's pure-Python hash cost ~25 us per key, a fifth of the copier's CPU per
document on a container keyed by ``/id``. Hash V2 and MultiHash keys are encoded exactly as
``azure.cosmos.partition_key`` encodes them (tests/core/test_partition_keys.py compares the two).
Hash V1 keys (containers created without ``version: 2``, which is what the JavaScript SDK and
older tools create) follow the service: the Python SDK 4.17.1 renders them in lower case and
mis-hashes negative integers and ``null``, so its V1 EPKs do not match the ones Cosmos DB, .NET,
Java and JavaScript compute (upper-case hex, test vectors in tests/emulator/test_hash_v1.py).
"""

from __future__ import annotations

import functools
import math
import struct
from typing import TYPE_CHECKING, Any

import mmh3

if TYPE_CHECKING:
    from azure.cosmos.partition_key import PartitionKey

MIN_EPK = ""
MAX_EPK = "FF"

# Binary-encoding type markers shared by both hash versions.
_UNDEFINED, _NULL, _FALSE, _TRUE, _NUMBER, _STRING = 0x00, 0x01, 0x02, 0x03, 0x05, 0x08
_V1_MAX_STRING_CHARS = 100   # V1 hashes and encodes only the first 100 characters of a string
_V1_MAX_STRING_BYTES = 100   # a longer UTF-8 encoding is cut at 101 bytes with no terminator
_SIGN = 1 << 63
_U64 = (1 << 64) - 1
_V2_STRING_END = b"\xff"
_V2_MASK = (1 << 126) - 1  # the top two bits are cleared: every EPK sorts below "FF"


def is_hash_v1(definition: dict[str, Any]) -> bool:
    """Single-path Hash containers without ``version: 2`` (the service's default when it is absent)."""
    return definition.get("kind", "Hash") == "Hash" and int(definition.get("version") or 1) == 1


def partition_key_object(definition: dict[str, Any]) -> PartitionKey:
    """The SDK's ``PartitionKey`` for a definition (to create a container with it)."""
    from azure.cosmos.partition_key import PartitionKey

    kind = definition.get("kind", "Hash")
    paths = definition["paths"]
    return PartitionKey(
        path=paths if kind == "MultiHash" else paths[0], kind=kind, version=definition.get("version", 1)
    )


def sdk_partition_key(values: list[Any]) -> Any:
    """The ``partition_key`` argument of the SDK's point and batch operations for a key's values
    (:func:`partition_key_values`): the value of a single path, the list of a hierarchical key, the
    SDK's ``NonePartitionKeyValue`` for an undefined one."""
    if values == [{}]:
        from azure.cosmos.partition_key import NonePartitionKeyValue

        return NonePartitionKeyValue
    return values[0] if len(values) == 1 else values


def effective_partition_key(definition: dict[str, Any], values: list[Any]) -> str:
    """EPK of a partition key value list (the JSON array of the ``x-ms-documentdb-partitionkey`` header)."""
    if values == []:
        return MIN_EPK
    if is_hash_v1(definition):
        return hash_v1(values[0])
    if definition.get("kind", "Hash") == "MultiHash":
        return "".join(_hash_v2(_v2_encode(value)) for value in values)
    return _hash_v2(b"".join(map(_v2_encode, values)))


# -- Hash V2 and MultiHash -------------------------------------------------------------------
def _v2_encode(value: Any) -> bytes:
    """One key component as V2 hashing reads it: a type marker, then the value (a number as its
    IEEE double, a string as UTF-8 closed by 0xFF); ``{}`` is undefined."""
    if value is True:
        return b"\x03"
    if value is False:
        return b"\x02"
    if value is None:
        return b"\x01"
    if isinstance(value, str):
        return b"\x08" + value.encode("utf-8") + _V2_STRING_END
    if isinstance(value, int | float):
        return struct.pack("<Bd", _NUMBER, float(value))
    if isinstance(value, dict) and not value:
        return b"\x00"
    raise TypeError(f"a partition key value cannot be a {type(value).__name__}")


def _hash_v2(data: bytes) -> str:
    """MurmurHash3 x64 128-bit, seed 0, as big-endian hex with the top two bits cleared."""
    return f"{mmh3.hash128(data, 0, True, signed=False) & _V2_MASK:032X}"


# -- Hash V1 ---------------------------------------------------------------------------------
def murmur3_32(data: bytes, seed: int = 0) -> int:
    """MurmurHash3 x86 32-bit, the hash V1 partitioning uses."""
    return mmh3.hash(data, seed, signed=False)


def _scalar_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "undefined"  # {} on the wire, and objects/arrays, which Cosmos treats as undefined


class _UndefinedKey:
    """The hashable stand-in for an undefined component (``{}`` is not hashable)."""


_UNDEFINED_KEY = _UndefinedKey()


def _v1_hash_input(value: Any) -> bytes:
    kind = _scalar_kind(value)
    if kind == "string":
        text: str = value[:_V1_MAX_STRING_CHARS]
        return bytes([_STRING]) + text.encode("utf-8") + bytes([_UNDEFINED])
    if kind == "number":
        return bytes([_NUMBER]) + struct.pack("<d", float(value))
    if kind == "bool":
        return bytes([_TRUE if value else _FALSE])
    return bytes([_NULL if kind == "null" else _UNDEFINED])


def encode_number(value: float) -> bytes:
    """Cosmos' order-preserving binary encoding of a number (type byte, 8 bits, then 7-bit groups)."""
    (bits,) = struct.unpack(">Q", struct.pack(">d", float(value)))
    payload = bits ^ _SIGN if bits < _SIGN else (~bits + 1) & _U64
    out = bytearray([_NUMBER, payload >> 56])
    payload = (payload << 8) & _U64
    byte = 0
    first = True
    while payload:
        if not first:
            out.append(byte)
        first = False
        byte = (payload >> 56) | 0x01
        payload = (payload << 7) & _U64
    out.append(byte & 0xFE)
    return bytes(out)


def decode_number(encoded: bytes) -> tuple[float, int]:
    """Inverse of :func:`encode_number` on a prefix of ``encoded``: (value, bytes consumed)."""
    if len(encoded) < 2 or encoded[0] != _NUMBER:
        raise ValueError("not an encoded number")
    payload = encoded[1] << 56
    filled = 8  # payload bits decoded so far, from the top
    used = 2
    for byte in encoded[2:]:
        used += 1
        free = 64 - filled - 7
        payload |= (byte >> 1) << free if free >= 0 else (byte >> 1) >> -free
        filled += 7
        if not byte & 0x01:
            break
    bits = payload ^ _SIGN if payload >= _SIGN else (~payload + 1) & _U64
    (value,) = struct.unpack(">d", struct.pack(">Q", bits))
    return value, used


def _v1_encode(value: Any) -> bytes:
    kind = _scalar_kind(value)
    if kind == "string":
        utf8 = value[:_V1_MAX_STRING_CHARS].encode("utf-8")
        short = len(utf8) <= _V1_MAX_STRING_BYTES
        body = bytes(min(b + 1, 0xFF) for b in (utf8 if short else utf8[:_V1_MAX_STRING_BYTES + 1]))
        return bytes([_STRING]) + body + (bytes([_UNDEFINED]) if short else b"")
    if kind == "number":
        return encode_number(value)
    if kind == "bool":
        return bytes([_TRUE if value else _FALSE])
    return bytes([_NULL if kind == "null" else _UNDEFINED])


@functools.lru_cache(maxsize=65536)
def _hash_v1_cached(kind: str, value: Any, negative_zero: bool) -> str:
    # (``negative_zero`` only keeps -0.0 and 0.0 apart in the cache: they hash differently.)
    hashed = murmur3_32(_v1_hash_input(value))
    return (encode_number(hashed) + _v1_encode(value)).hex().upper()


def hash_v1(value: Any) -> str:
    """The Hash V1 EPK of one partition key value: the encoded 32-bit hash, then the encoded value."""
    kind = _scalar_kind(value)
    negative_zero = kind == "number" and value == 0 and math.copysign(1.0, value) < 0
    return _hash_v1_cached(kind, _UNDEFINED_KEY if kind == "undefined" else value, negative_zero)


def v1_boundary(hash_value: int) -> str:
    """A range boundary in the V1 key space: EPKs of keys hashing below it sort below it."""
    return encode_number(hash_value).hex().upper()


def v1_boundary_hash(boundary: str) -> int:
    """The 32-bit hash position of a V1 boundary (``""`` is 0, ``"FF"`` is 2**32)."""
    if boundary == MIN_EPK:
        return 0
    if boundary == MAX_EPK:
        return 1 << 32
    return int(decode_number(bytes.fromhex(boundary))[0])


# -- extracting values from documents ------------------------------------------------------------
_MISSING = object()


@functools.lru_cache(maxsize=1024)
def parse_path(path: str) -> tuple[str, ...]:
    """Segments of a partition key path as Cosmos parses it: ``/"a'b"/'c/d'/e`` is (a'b, c/d, e)."""
    parts: list[str] = []
    at = 0
    while at < len(path):
        if path[at] != "/":
            raise ValueError(f"partition key path {path!r} is invalid at index {at}")
        at += 1
        if at == len(path):
            break
        if path[at] in "\"'":
            quote = path[at]
            end = at + 1
            while True:
                end = path.find(quote, end)
                if end < 0:
                    raise ValueError(f"partition key path {path!r} has an unterminated quote")
                if path[end - 1] != "\\":
                    break
                end += 1
            parts.append(path[at + 1:end])
            at = end + 1
        else:
            end = path.find("/", at)
            end = len(path) if end < 0 else end
            parts.append(path[at:end].strip())
            at = end
    return tuple(parts)


def _value_at(document: dict[str, Any], path: str) -> Any:
    node: Any = document
    for part in parse_path(path):
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node


def partition_key_values(definition: dict[str, Any], document: dict[str, Any]) -> list[Any]:
    """The partition key component values of a document, as on the wire: ``{}`` stands for undefined.

    An object or array at the path counts as undefined too, as the service extracts keys (only
    strings, numbers, booleans and null are key values; :func:`partition_key_problem` is the
    copier's stricter check). A ``systemKey`` container (one migrated from the non-partitioned
    kind: its key path is the system's ``/_partitionKey``) keeps documents without a key value in
    the "empty" partition, whose value list is ``[]``; the SDK sends that too.
    """
    values = []
    for path in definition["paths"]:
        value = _value_at(document, path)
        if value is _MISSING and definition.get("systemKey"):
            return []
        values.append({} if value is _MISSING or isinstance(value, dict | list) else value)
    return values


def partition_key_problem(definition: dict[str, Any], document: dict[str, Any]) -> str | None:
    """Why Cosmos DB would refuse this document's partition key value, or ``None``.

    A key value must be a string, number, boolean or null (or absent); an object or array is
    refused by the service, so it is caught before a request is spent on it.
    """
    for path in definition["paths"]:
        value = _value_at(document, path)
        if isinstance(value, dict | list):
            kind = "object" if isinstance(value, dict) else "array"
            return (f"partition key {path} holds a JSON {kind}; a partition key value must be a string, "
                    "number, boolean or null: fix the document (or the transform) and restore it from here")
    return None


def same_partition_key(a: list[Any], b: list[Any]) -> bool:
    """Compare two component lists the way Cosmos does: 5 and 5.0 are the same key, True is not 1."""
    if len(a) != len(b):
        return False
    for x, y in zip(a, b, strict=True):
        if isinstance(x, bool) or isinstance(y, bool):
            if x is not y:
                return False
        elif isinstance(x, int | float) and isinstance(y, int | float):
            if float(x) != float(y):
                return False
        elif x != y:
            return False
    return True
