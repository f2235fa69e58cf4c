"""Master-key signature verification for the emulator.

Signing itself lives in :mod:`asyncmig.core.cosmos.signing`, shared with the lean write path, so there is
one implementation of the SDK's algorithm (including which link it signs for RID-based paths);
this module only checks a request's ``authorization`` header against it.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from urllib.parse import unquote

from asyncmig.core.cosmos.signing import resource_type_and_link, signature


def verify(key: bytes, verb: str, segments: list[str], headers: Mapping[str, str]) -> bool:
    """True when the ``authorization`` header is a valid master-key signature for this request."""
    # Split by hand: the base64 signature may hold '+', which query-string parsers turn into spaces.
    fields = dict(part.partition("=")[::2] for part in unquote(headers.get("authorization", "")).split("&"))
    if fields.get("type") != "master" or "sig" not in fields:
        return False
    resource_type, link = resource_type_and_link(segments)
    expected = signature(key, verb, resource_type, link, headers.get("x-ms-date", ""))
    return hmac.compare_digest(expected.encode(), fields["sig"].encode())
