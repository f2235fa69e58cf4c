"""Cosmos endpoints: parsing the connection string, how to authenticate, whether to verify TLS.

The account key lives in :class:`CosmosEndpoint`, whose repr never shows it, and is registered as a
secret (see :mod:`asyncmig.redaction`) the moment it is parsed. An endpoint without a key signs in
with Microsoft Entra ID.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import logging
import re
from dataclasses import dataclass, field, replace
from typing import Literal, get_args
from urllib.parse import SplitResult, urlsplit

from asyncmig.errors import ConnectionStringError
from asyncmig.redaction import MASK, redact, register_secret

__all__ = [
    "AUTH_MODES", "WHERE_TO_FIND_KEY", "AuthMode", "CosmosEndpoint", "parse_connection_string", "tls_verify",
]

log = logging.getLogger(__name__)

# "auto": the account key when the connection string has one, else Microsoft Entra ID.
AuthMode = Literal["auto", "key", "entra"]
AUTH_MODES: tuple[str, ...] = get_args(AuthMode)

WHERE_TO_FIND_KEY = "copy it from the Azure portal (Keys blade) or the emulator's start-up line"
_DEFAULT_PORTS = {"https": 443, "http": 80}
# An account key pasted without "AccountKey=": 64 bytes of base64 (the parser sees "<key>" = "").
_BARE_KEY = re.compile(r"[A-Za-z0-9+/]{40,}={0,2}")


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _without_credentials(parts: SplitResult) -> str:
    host = _bracket(parts.hostname or "")
    netloc = f"{host}:{parts.port}" if parts.port is not None else host
    return parts._replace(netloc=netloc).geturl()


@dataclass(frozen=True)
class CosmosEndpoint:
    """An account URL and how to authenticate to it: its key, or Microsoft Entra ID when ``key`` is
    None. ``repr``/``str`` show the URL only (without any userinfo)."""

    url: str
    key: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.key:
            register_secret(self.key)
        password = urlsplit(self.url).password
        if password:
            register_secret(password)

    @property
    def uses_entra(self) -> bool:
        """True when requests carry Entra ID tokens: data-plane rights only (no container creation)."""
        return not self.key

    def with_auth(self, mode: AuthMode) -> CosmosEndpoint:
        """This endpoint authenticated as ``mode`` asks.

        :raises ConnectionStringError: ``key`` was asked for but the connection string has no key.
        """
        if mode == "entra":
            return _entra_ready(replace(self, key=None))
        if mode == "key" and not self.key:
            raise ConnectionStringError(f"--auth key needs AccountKey=... in the connection string; {WHERE_TO_FIND_KEY}")
        return self

    @property
    def host(self) -> str:
        """``host[:port]`` without credentials, lower-cased, default port dropped: a stable run identity."""
        parts = urlsplit(self.url)
        host = _bracket(parts.hostname or "")
        port = parts.port
        if port is None or port == _DEFAULT_PORTS.get(parts.scheme.lower()):
            return host
        return f"{host}:{port}"

    @property
    def is_loopback(self) -> bool:
        """True for ``localhost`` (and ``*.localhost``), 127.0.0.0/8 and ``::1``."""
        hostname = urlsplit(self.url).hostname or ""
        if hostname == "localhost" or hostname.endswith(".localhost"):
            return True
        try:
            return ipaddress.ip_address(hostname).is_loopback
        except ValueError:
            return False

    def __repr__(self) -> str:
        auth = "entra" if self.uses_entra else f"key={MASK}"
        return f"CosmosEndpoint(url={_without_credentials(urlsplit(self.url))!r}, {auth})"

    def __str__(self) -> str:
        return _without_credentials(urlsplit(self.url))


def parse_connection_string(text: str) -> CosmosEndpoint:
    """Parse ``AccountEndpoint=https://...;AccountKey=...;`` (without ``AccountKey`` the endpoint
    authenticates with Microsoft Entra ID).

    Key names are case-insensitive and may come in any order, the trailing ``;`` is optional and
    values may contain ``=``. Other keys (e.g. ``Database=``) are ignored. The key and the whole
    string are registered as secrets before anything is validated, and no error message quotes
    either of them.

    :raises ConnectionStringError: naming the missing or malformed part and what to do about it.
    """
    text = text.strip()
    if not text:
        raise ConnectionStringError(f"the connection string is empty; {WHERE_TO_FIND_KEY}")
    register_secret(text)
    fields: dict[str, str] = {}
    for number, part in enumerate(text.split(";"), start=1):
        if not part.strip():
            continue
        name, sep, value = part.partition("=")
        name = name.strip().lower()
        if not sep or not name:
            raise ConnectionStringError(
                f"part {number} of the connection string is not Name=value; "
                f"it must look like AccountEndpoint=https://...;AccountKey=...; ({WHERE_TO_FIND_KEY})"
            )
        if name == "accountkey":
            register_secret(value.strip())
        elif _BARE_KEY.fullmatch(part.strip()):
            register_secret(part.strip())
            raise ConnectionStringError(
                f"part {number} of the connection string looks like an account key without its name; "
                f"write AccountKey=<key> (or leave the key out to sign in with Microsoft Entra ID)"
            )
        if name in fields:
            raise ConnectionStringError(
                f"the connection string names {part.partition('=')[0].strip()} twice; keep one"
            )
        fields[name] = value.strip()

    url = fields.get("accountendpoint")
    key = fields.get("accountkey")
    if not url:
        raise ConnectionStringError(f"the connection string has no AccountEndpoint=...; {WHERE_TO_FIND_KEY}")
    if "accountkey" in fields and not key:
        raise ConnectionStringError(f"the connection string has an empty AccountKey=; {WHERE_TO_FIND_KEY}, "
                                    "or leave AccountKey out to sign in with Microsoft Entra ID")
    try:
        parts = urlsplit(url)
        _check_port = parts.port  # raises ValueError for a non-numeric or out-of-range port
    except ValueError:
        raise ConnectionStringError(
            f"AccountEndpoint is not a valid URL (bad port?); {WHERE_TO_FIND_KEY}"
        ) from None
    if parts.scheme.lower() not in _DEFAULT_PORTS:
        raise ConnectionStringError(
            "AccountEndpoint must start with https:// (or http:// for a local emulator); " + WHERE_TO_FIND_KEY
        )
    if not parts.hostname:
        raise ConnectionStringError(f"AccountEndpoint has no host name; {WHERE_TO_FIND_KEY}")
    try:
        if key:
            base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError):
        raise ConnectionStringError(
            f"AccountKey is not valid base64 (was it cut short or wrapped in quotes?); {WHERE_TO_FIND_KEY}"
        ) from None
    return _entra_ready(CosmosEndpoint(url=url, key=key))


def _entra_ready(endpoint: CosmosEndpoint) -> CosmosEndpoint:
    """``endpoint``, refused when it would send Entra ID tokens over plain http (the SDK will not).

    :raises ConnectionStringError: an http:// endpoint without an account key.
    """
    if endpoint.uses_entra and urlsplit(endpoint.url).scheme.lower() != "https":
        raise ConnectionStringError(
            "Microsoft Entra ID sign-in (no AccountKey in the connection string, or --auth entra) needs an "
            "https:// AccountEndpoint: tokens are only sent over TLS; add AccountKey=... for a plain-http emulator"
        )
    return endpoint


_warned_insecure: set[str] = set()


def tls_verify(endpoint: CosmosEndpoint, *, insecure: bool) -> bool:
    """Whether to verify the endpoint's TLS certificate.

    Loopback endpoints are not verified: traffic never leaves the machine and local emulators use
    self-signed certificates. Any other endpoint is always verified unless ``insecure`` is set, in
    which case a warning is logged once per host.
    """
    if endpoint.is_loopback:
        return False
    if not insecure:
        return True
    if endpoint.host not in _warned_insecure:
        _warned_insecure.add(endpoint.host)
        log.warning(
            "%s",
            redact(
                f"TLS certificate verification is OFF for {endpoint.host} (--insecure): anyone on the "
                "network path can impersonate the account; use it only for a test endpoint"
            ),
        )
    return False
