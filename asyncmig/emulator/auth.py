"""Who sent a request: the account key's signature, or a Microsoft Entra ID token from a test issuer.

Signing itself lives in :mod:`asyncmig.core.cosmos.signing`, shared with the lean write path, so there
is one implementation of the SDK's algorithm (including which link it signs for RID-based paths);
this module checks a request's ``authorization`` header against it.

Entra ID tokens (``type=aad&ver=1.0&sig=<JWT>``) are accepted when the emulator is started with
``--entra-issuer-key FILE``: a PEM public key (RS256/ES256 tokens, as Entra signs them) or a shared
secret (HS256). Nothing is fetched from the network. A token must carry a valid signature, an
unexpired ``exp`` and an audience naming the account (``{scheme}://{host}``, the scope the SDK asks
for) or ``https://cosmos.azure.com``. A valid token grants what the Cosmos DB Built-in Data
Contributor role grants: reading metadata and reading and writing items, but not creating, replacing
or deleting databases and containers, nor changing throughput (:func:`is_management_write`), which
Cosmos DB refuses to Entra ID tokens on the data plane whatever the role.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from urllib.parse import unquote

import jwt

from asyncmig.core.cosmos.signing import resource_type_and_link, signature

__all__ = ["Caller", "EntraIssuer", "Refused", "authenticate", "is_management_write", "verify"]

# Accepted besides the account's own URL: the scope the SDK falls back to.
COSMOS_AUDIENCE = "https://cosmos.azure.com"
_ASYMMETRIC = ["RS256", "RS384", "RS512", "ES256", "ES384", "PS256"]
_SYMMETRIC = ["HS256"]


class Caller(Enum):
    KEY = "key"
    ENTRA = "entra"


class Refused(Exception):
    """The request carries no acceptable credential; ``message`` says why (never the token)."""


@dataclass(frozen=True, slots=True)
class EntraIssuer:
    """The key a local test issuer signs tokens with (``--entra-issuer-key``)."""

    key: str | bytes
    algorithms: tuple[str, ...]

    @classmethod
    def from_file(cls, path: Path) -> EntraIssuer:
        """A PEM public key (asymmetric algorithms) or, for any other content, a shared secret (HS256).

        :raises ValueError: the file cannot be read or is empty.
        """
        try:
            content = path.read_bytes()
        except OSError as exc:
            raise ValueError(f"--entra-issuer-key: cannot read {path}: {exc.strerror or exc}") from exc
        if not content.strip():
            raise ValueError(f"--entra-issuer-key: {path} is empty")
        if b"-----BEGIN" in content:
            return cls(content.decode("ascii"), tuple(_ASYMMETRIC))
        return cls(content.strip(), tuple(_SYMMETRIC))

    def check(self, token: str, audiences: list[str]) -> None:
        """Verify the token's signature, expiry and audience.

        :raises Refused: naming what is wrong.
        """
        try:
            jwt.decode(token, self.key, algorithms=list(self.algorithms), audience=audiences,
                       options={"require": ["exp", "aud"]})
        except jwt.ExpiredSignatureError:
            raise Refused("The Microsoft Entra ID token has expired; acquire a new one.") from None
        except jwt.InvalidAudienceError:
            raise Refused(f"The Microsoft Entra ID token's audience is not this account; request a token for "
                          f"{audiences[0]}/.default or {COSMOS_AUDIENCE}/.default.") from None
        except jwt.InvalidTokenError as exc:
            raise Refused(f"The Microsoft Entra ID token is not valid: {type(exc).__name__}.") from None


def verify(key: bytes, verb: str, segments: list[str], headers: Mapping[str, str]) -> bool:
    """True when the ``authorization`` header is a valid master-key signature for this request."""
    fields = _fields(headers)
    if fields.get("type") != "master" or "sig" not in fields:
        return False
    resource_type, link = resource_type_and_link(segments)
    expected = signature(key, verb, resource_type, link, headers.get("x-ms-date", ""))
    return hmac.compare_digest(expected.encode(), fields["sig"].encode())


def authenticate(
    key: bytes, issuer: EntraIssuer | None, verb: str, segments: list[str], headers: Mapping[str, str],
    account_url: str,
) -> Caller:
    """Who sent the request.

    :param account_url: ``{scheme}://{host}`` the request was addressed to (a token's audience).
    :raises Refused: neither a valid key signature nor an acceptable Entra ID token.
    """
    fields = _fields(headers)
    if fields.get("type") == "aad":
        if issuer is None:
            raise Refused("Microsoft Entra ID tokens are not accepted by this emulator (start it with "
                          "--entra-issuer-key).")
        account = account_url.rstrip("/")
        issuer.check(fields.get("sig", ""), [account, account + "/", COSMOS_AUDIENCE, COSMOS_AUDIENCE + "/"])
        return Caller.ENTRA
    if verify(key, verb, segments, headers):
        return Caller.KEY
    raise Refused("The input authorization token can't serve the request. The wrong key is being used or the "
                  "expected payload is not built as per the protocol.")


def is_management_write(verb: str, segments: list[str], headers: Mapping[str, str]) -> bool:
    """True for what only the account key (or the control plane) may do: create, replace or delete a
    database or container, or replace an offer (throughput). Item writes, queries (including offer
    queries) and every read are data-plane operations."""
    if verb in ("GET", "HEAD") or "docs" in segments or segments[-2:] == ["operations", "partitionkeydelete"]:
        return False
    is_query = any(headers.get(h, "").lower() == "true"
                   for h in ("x-ms-documentdb-isquery", "x-ms-cosmos-is-query-plan-request"))
    return not (verb == "POST" and is_query)


def _fields(headers: Mapping[str, str]) -> dict[str, str]:
    # Split by hand: the base64 signature may hold '+', which query-string parsers turn into spaces.
    return dict(part.partition("=")[::2] for part in unquote(headers.get("authorization", "")).split("&"))
