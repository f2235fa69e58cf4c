"""Cosmos endpoints: parsing the connection string and deciding whether to verify TLS.

The account key lives in :class:`CosmosEndpoint`, whose repr never shows it, and is registered as a
secret (see :mod:`asyncmig.redaction`) the moment it is parsed.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import logging
from dataclasses import dataclass, field
from urllib.parse import SplitResult, urlsplit

from asyncmig.errors import ConnectionStringError
from asyncmig.redaction import MASK, redact, register_secret

__all__ = ["WHERE_TO_FIND_KEY", "CosmosEndpoint", "parse_connection_string", "tls_verify"]

log = logging.getLogger(__name__)

WHERE_TO_FIND_KEY = "copy it from the Azure portal (Keys blade) or the emulator's start-up line"
_DEFAULT_PORTS = {"https": 443, "http": 80}

def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _without_credentials(parts: SplitResult) -> str:
    host = _bracket(parts.hostname or "")
    netloc = f"{host}:{parts.port}" if parts.port is not None else host
    return parts._replace(netloc=netloc).geturl()


@dataclass(frozen=True)
class CosmosEndpoint:
    """An account URL and its key. ``repr``/``str`` show the URL only (without any userinfo)."""

    url: str
    key: str = field(repr=False)

    def __post_init__(self) -> None:
        register_secret(self.key)
        password = urlsplit(self.url).password
        if password:
            register_secret(password)

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
        return f"CosmosEndpoint(url={_without_credentials(urlsplit(self.url))!r}, key={MASK})"

    def __str__(self) -> str:
        return _without_credentials(urlsplit(self.url))


def parse_connection_string(text: str) -> CosmosEndpoint:
    """Parse ``AccountEndpoint=https://...;AccountKey=...;``.

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
        if name in fields:
            raise ConnectionStringError(
                f"the connection string names {part.partition('=')[0].strip()} twice; keep one"
            )
        fields[name] = value.strip()

    url = fields.get("accountendpoint")
    key = fields.get("accountkey")
    if not url:
        raise ConnectionStringError(f"the connection string has no AccountEndpoint=...; {WHERE_TO_FIND_KEY}")
    if not key:
        raise ConnectionStringError(f"the connection string has no AccountKey=...; {WHERE_TO_FIND_KEY}")
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
        base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError):
        raise ConnectionStringError(
            f"AccountKey is not valid base64 (was it cut short or wrapped in quotes?); {WHERE_TO_FIND_KEY}"
        ) from None
    return CosmosEndpoint(url=url, key=key)


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
