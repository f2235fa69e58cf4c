"""Master-key signature verification, mirroring ``azure.cosmos.auth`` byte for byte.

The SDK signs ``verb, resource type, resource link, x-ms-date`` with HMAC-SHA256 of the account
key. Which link it signs depends on the path shape and on whether the link is name-based or a RID
(the SDK's ``IsNameBased`` decides, including its quirk of treating an 8-character base64 database
name as a RID), so the server asks the SDK's own function.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from urllib.parse import unquote

from azure.cosmos._base import IsNameBased


def resource_type_and_link(segments: list[str]) -> tuple[str, str]:
    """What the SDK signs for a request path (already split and URL-unquoted)."""
    if not segments:
        return "", ""
    if len(segments) >= 2 and segments[-2] == "operations" and segments[-1] == "partitionkeydelete":
        return "colls", "/".join(segments[:-2])
    if len(segments) % 2 == 0:
        resource_type, link = segments[-2], "/".join(segments)
    else:
        resource_type, link = segments[-1], "/".join(segments[:-1])
    if link and not IsNameBased(link):
        link = link.split("/")[-1].lower()  # RID-based: only the last RID, lower-cased
    return resource_type, link


def signature(key: bytes, verb: str, resource_type: str, link: str, x_ms_date: str) -> str:
    text = f"{verb.lower()}\n{resource_type.lower()}\n{link}\n{x_ms_date.lower()}\n\n"
    return base64.b64encode(hmac.new(key, text.encode("utf-8"), hashlib.sha256).digest()).decode()


def verify(key: bytes, verb: str, segments: list[str], headers: Mapping[str, str]) -> bool:
    """True when the ``authorization`` header is a valid master-key signature for this request."""
    # Split by hand: the base64 signature may hold '+', which query-string parsers turn into spaces.
    fields = dict(part.partition("=")[::2] for part in unquote(headers.get("authorization", "")).split("&"))
    if fields.get("type") != "master" or "sig" not in fields:
        return False
    resource_type, link = resource_type_and_link(segments)
    expected = signature(key, verb, resource_type, link, headers.get("x-ms-date", ""))
    return hmac.compare_digest(expected.encode(), fields["sig"].encode())
