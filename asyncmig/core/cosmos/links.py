"""Resource links, URL paths and feed-range bounds, spelled exactly as ``azure-cosmos`` 4.17.1 spells them.

The lean paths build their requests without importing the SDK (importing any ``azure.cosmos``
module loads all of it: ~60 ms of CPU, some 6 % of a 6,514-document copy), so these few rules are
restated here; tests/core/test_links.py checks each against the SDK's own function.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

__all__ = ["is_name_based", "normalized_bounds", "parsed_range", "path_from_link"]


def is_name_based(link: str | None) -> bool:
    """Whether ``link`` (``dbs/{db}/...``) addresses by names rather than resource ids (``_base.IsNameBased``).

    A database segment of eight characters that decodes as four bytes of base64 is taken for a
    resource id, as the SDK takes it (so a database *named* like one is treated as a RID too).
    """
    if not link:
        return False
    if link.startswith("/") and len(link) > 1:
        link = link[1:]
    parts = link.split("/")
    if not (parts and parts[0].lower() == "dbs"):
        return False
    if len(parts) < 2 or not parts[1]:
        return False
    database = parts[1]
    return len(database) != 8 or not _is_rid(database)


def _is_rid(text: str) -> bool:
    try:
        return len(base64.standard_b64decode(text.replace("-", "/"))) == 4
    except ValueError:  # not base64 (binascii.Error), or not ASCII, where the SDK itself raises
        return False


def path_from_link(link: str, resource_type: str = "") -> str:
    """The URL path for ``link`` and an optional child ``resource_type`` (``_base.GetPathFromLink``):
    names quoted with ``/`` safe, resource ids left alone, a slash before and after."""
    link = link.removeprefix("/").removesuffix("/")
    if is_name_based(link):
        link = quote(link)
    return f"/{link}/{resource_type}/" if resource_type else f"/{link}/"


def parsed_range(bounds: Mapping[str, Any]) -> dict[str, Any]:
    """A feed range's ``Range`` dict as the SDK re-writes it (``Range.ParseFromDict(...).to_dict()``):
    bounds upper-cased, the inclusiveness flags kept."""
    return {"min": str(bounds["min"]).upper(), "max": str(bounds["max"]).upper(),
            "isMinInclusive": bounds["isMinInclusive"], "isMaxInclusive": bounds["isMaxInclusive"]}


def normalized_bounds(bounds: Mapping[str, Any]) -> tuple[str, str]:
    """``(low, high)`` of the half-open range ``[low, high)`` equal to ``bounds``
    (``Range.to_normalized_range``): an exclusive minimum moves one key down, an inclusive maximum
    one key up, counting in the effective partition key's bytes."""
    parsed = parsed_range(bounds)
    low, high = parsed["min"], parsed["max"]
    if not parsed["isMinInclusive"]:
        low = _step(low, -1)
    if parsed["isMaxInclusive"]:
        high = _step(high, 1)
    return low, high


def _step(key: str, by: int) -> str:
    """``key`` (upper-case hex) plus or minus one, carrying across its bytes as the SDK does."""
    if len(key) % 2:
        raise ValueError("hex_binary_string must not have an odd number of characters")
    data = bytearray.fromhex(key)
    for i in range(len(data) - 1, -1, -1):
        if by == 1:
            if data[i] < 255:
                data[i] += 1
                break
            data[i] = 0
        else:
            if data[i] != 0:
                data[i] -= 1
                break
            data[i] = 255
    return binascii.hexlify(data).decode().upper()
