"""Master-key request signing, exactly as ``azure.cosmos`` 4.17.1 signs (``_auth_policy``/``auth.py``).

One implementation for both ends: the lean write path signs requests with it and the emulator
verifies signatures with it, so the two can only disagree with the SDK together, and the
emulator's signature check (which verified every request the SDK sent, including RID-based links
and names with spaces and non-ASCII characters) also guards the lean writer.

The SDK signs ``verb``, the resource type, the resource link and ``x-ms-date`` (the ``date``
header is always empty because the SDK never sends one) with HMAC-SHA256 of the base64-decoded
account key. Which link it signs depends on the path shape and on whether the link is name-based
or a RID; the SDK's rule, restated in :func:`~asyncmig.core.cosmos.links.is_name_based` (tested
against the SDK's own), decides, including its quirk of treating a database name of 8 valid base64
characters as a RID.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence
from email.utils import formatdate
from urllib.parse import quote

from asyncmig.core.cosmos.links import is_name_based

__all__ = ["authorization", "decode_key", "http_date", "resource_type_and_link", "signature"]

# The SDK quotes the whole token with these characters left alone (_base.py:GetHeaders).
_TOKEN_SAFE = "-_.!~*'()"


def decode_key(key: str) -> bytes:
    """The HMAC key for an account key as it appears in a connection string (base64).

    :raises binascii.Error: the key is not base64.
    """
    return base64.b64decode(key, validate=True)


def http_date() -> str:
    """``x-ms-date`` for a request sent now: RFC 1123, always GMT, whatever the locale."""
    return formatdate(usegmt=True)


def resource_type_and_link(segments: Sequence[str]) -> tuple[str, str]:
    """The resource type and link the SDK signs for a request path, split and URL-unquoted.

    An even number of segments ends in an id (``dbs/d/colls/c/docs/a`` signs ``docs`` and the
    whole link); an odd number ends in a type (``dbs/d/colls/c/docs`` signs ``docs`` and
    ``dbs/d/colls/c``). RID-based links sign only their last RID, lower-cased.
    """
    if not segments:
        return "", ""
    if len(segments) >= 2 and segments[-2] == "operations" and segments[-1] == "partitionkeydelete":
        return "colls", "/".join(segments[:-2])
    if len(segments) % 2 == 0:
        resource_type, link = segments[-2], "/".join(segments)
    else:
        resource_type, link = segments[-1], "/".join(segments[:-1])
    if link and not is_name_based(link):
        link = link.split("/")[-1].lower()
    return resource_type, link


def signature(key: bytes, verb: str, resource_type: str, link: str, x_ms_date: str) -> str:
    """The base64 HMAC-SHA256 signature of one request (``key`` from :func:`decode_key`)."""
    text = f"{verb.lower()}\n{resource_type.lower()}\n{link}\n{x_ms_date.lower()}\n\n"
    return base64.b64encode(hmac.new(key, text.encode("utf-8"), hashlib.sha256).digest()).decode("ascii")


def authorization(key: bytes, verb: str, resource_type: str, link: str, x_ms_date: str) -> str:
    """The ``authorization`` header value: the URL-quoted master token carrying :func:`signature`."""
    token = f"type=master&ver=1.0&sig={signature(key, verb, resource_type, link, x_ms_date)}"
    return quote(token, safe=_TOKEN_SAFE)
