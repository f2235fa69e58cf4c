"""Connections, settings and secret redaction.

asyncmig handles two kinds of secret: an account key, which lives in :class:`CosmosEndpoint` (whose
repr never shows it) and is registered with :func:`register_secret` the moment it is parsed, and the
Microsoft Entra ID access tokens the transport obtains, registered as each arrives. :func:`redact` —
applied to every log record by :class:`RedactingFilter` and to every error message built from
outside text — replaces them wherever they appear, and masks anything shaped like a JWT even if it
was never registered.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import logging
import os
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal, cast, get_args
from urllib.parse import SplitResult, urlsplit

from dotenv import dotenv_values

from asyncmig.errors import ConnectionStringError, UsageError

__all__ = [
    "AUTH_MODES",
    "DEFAULT_DATABASE",
    "ENV_AUTH",
    "ENV_CONNECTION_STRING",
    "ENV_DATABASE",
    "CosmosEndpoint",
    "RedactingFilter",
    "AuthMode",
    "Settings",
    "install_redaction",
    "load_settings",
    "parse_connection_string",
    "redact",
    "register_secret",
    "tls_verify",
]

log = logging.getLogger(__name__)

ENV_CONNECTION_STRING = "AZURE_COSMOS_CONNECTION_STRING"
ENV_DATABASE = "AZURE_COSMOS_DATABASE_NAME"
ENV_AUTH = "ASYNCMIG_AUTH"

# "auto": the account key when the connection string has one, else Microsoft Entra ID.
AuthMode = Literal["auto", "key", "entra"]
AUTH_MODES: tuple[str, ...] = get_args(AuthMode)
DEFAULT_DATABASE = "vimarsh-multi-personality"

MASK = "***"
_WHERE_TO_FIND = "copy it from the Azure portal (Keys blade) or the emulator's start-up line"
_DEFAULT_PORTS = {"https": 443, "http": 80}
# Shorter strings are not secrets worth the damage: masking every "abc" would garble ordinary logs.
_MIN_SECRET_LENGTH = 4


# --------------------------------------------------------------------------------------------
# Redaction


_secrets_lock = threading.Lock()
# Longest first, so a whole connection string is masked before the key inside it. Replaced as a
# whole (never mutated) so that redact() can read it from any thread without the lock.
_secrets: tuple[str, ...] = ()

_ACCOUNT_KEY = re.compile(r"(AccountKey\s*=\s*)[^;\s]+", re.IGNORECASE)
# Long base64 after a key-like label ("key=", "masterKey": "...", "sig=") is masked even when the
# secret was never registered, e.g. a key pasted into an unrelated environment variable.
_LABELLED_BASE64 = re.compile(
    r"""(\b(?:(?:account|master|primary|secondary)_?key|key|sig|secret|password)["']?\s*[:=]\s*["']?)"""
    r"[A-Za-z0-9+/]{40,}={0,2}",
    re.IGNORECASE,
)
# An account key pasted without "AccountKey=": 64 bytes of base64 (the parser sees "<key>" = "").
_BARE_KEY = re.compile(r"[A-Za-z0-9+/]{40,}={0,2}")
# A JWT (an Entra access token): three base64url parts, the first two JSON objects ("eyJ" = '{"').
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]+")


def register_secret(secret: str) -> None:
    """Remember ``secret`` so that :func:`redact` masks it from now on.

    Empty and very short strings (under 4 characters) are ignored: masking them would garble
    ordinary text without protecting anything.
    """
    global _secrets
    secret = secret.strip()
    if len(secret) < _MIN_SECRET_LENGTH:
        return
    with _secrets_lock:
        if secret not in _secrets:
            _secrets = tuple(sorted((*_secrets, secret), key=len, reverse=True))


def redact(text: str) -> str:
    """``text`` with every registered secret, every ``AccountKey=...`` value and every JWT replaced by ``***``."""
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    text = _ACCOUNT_KEY.sub(lambda m: m.group(1) + MASK, text)
    text = _JWT.sub(MASK, text)
    return _LABELLED_BASE64.sub(lambda m: m.group(1) + MASK, text)


class RedactingFilter(logging.Filter):
    """A handler filter that redacts the formatted message, the traceback and the stack of a record.

    The message is formatted here (``msg % args``) and the arguments dropped, because an argument's
    ``str()`` — an exception, an endpoint, a dict of headers — is where secrets hide.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a broken format string: keep everything, masked
            message = f"{record.msg} {record.args!r}"
        record.msg = redact(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def install_redaction(logger: logging.Logger | None = None) -> None:
    """Add a :class:`RedactingFilter` to every handler of ``logger`` (the root logger by default).

    Call it after logging is configured: handlers added later are not covered. Idempotent.
    """
    target = logger if logger is not None else logging.getLogger()
    for handler in target.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())


# --------------------------------------------------------------------------------------------
# Endpoints


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
            raise ConnectionStringError(f"--auth key needs AccountKey=... in the connection string; {_WHERE_TO_FIND}")
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
        raise ConnectionStringError(f"the connection string is empty; {_WHERE_TO_FIND}")
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
                f"it must look like AccountEndpoint=https://...;AccountKey=...; ({_WHERE_TO_FIND})"
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
        raise ConnectionStringError(f"the connection string has no AccountEndpoint=...; {_WHERE_TO_FIND}")
    if "accountkey" in fields and not key:
        raise ConnectionStringError(f"the connection string has an empty AccountKey=; {_WHERE_TO_FIND}, "
                                    "or leave AccountKey out to sign in with Microsoft Entra ID")
    try:
        parts = urlsplit(url)
        _check_port = parts.port  # raises ValueError for a non-numeric or out-of-range port
    except ValueError:
        raise ConnectionStringError(
            f"AccountEndpoint is not a valid URL (bad port?); {_WHERE_TO_FIND}"
        ) from None
    if parts.scheme.lower() not in _DEFAULT_PORTS:
        raise ConnectionStringError(
            "AccountEndpoint must start with https:// (or http:// for a local emulator); " + _WHERE_TO_FIND
        )
    if not parts.hostname:
        raise ConnectionStringError(f"AccountEndpoint has no host name; {_WHERE_TO_FIND}")
    try:
        if key:
            base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError):
        raise ConnectionStringError(
            f"AccountKey is not valid base64 (was it cut short or wrapped in quotes?); {_WHERE_TO_FIND}"
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


# --------------------------------------------------------------------------------------------
# Settings


@dataclass(frozen=True)
class Settings:
    """What the environment (and ``.env``) say about the connection.

    ``endpoint`` is ``None`` when no connection string is configured; callers that need one use
    :meth:`require_endpoint`. ``env_file`` is the ``.env`` file that was read, if any.
    """

    endpoint: CosmosEndpoint | None
    database: str = DEFAULT_DATABASE
    env_file: Path | None = None
    auth: AuthMode = "auto"

    def require_endpoint(self) -> CosmosEndpoint:
        """The configured endpoint.

        :raises ConnectionStringError: when no connection string is configured.
        """
        if self.endpoint is None:
            raise ConnectionStringError(
                f"{ENV_CONNECTION_STRING} is not set; put it in .env or the environment ({_WHERE_TO_FIND})"
            )
        return self.endpoint


def load_settings(
    env_file: Path | None = None, environ: Mapping[str, str] | None = None, *, auth: AuthMode | None = None
) -> Settings:
    """Read ``env_file`` (default: ``./.env`` if it exists), then the environment, which wins.

    The process environment is not modified. Empty values count as unset.

    :param environ: the environment to read (``os.environ`` by default; tests pass their own).
    :param auth: how to authenticate (``--auth``); default ``ASYNCMIG_AUTH``, else ``auto``.
    :raises UsageError: when an explicitly given ``env_file`` does not exist, or the auth mode is unknown.
    :raises ConnectionStringError: when the connection string is malformed.
    """
    if env_file is None:
        default = Path(".env")
        env_file = default if default.is_file() else None
    elif not env_file.is_file():
        raise UsageError(f"env file {env_file} does not exist; create it or leave the option out")
    values: dict[str, str] = {}
    if env_file is not None:
        values.update({k: v for k, v in dotenv_values(env_file).items() if v is not None})
    values.update(os.environ if environ is None else environ)

    named = auth or values.get(ENV_AUTH, "").strip().lower() or "auto"
    if named not in AUTH_MODES:
        raise UsageError(f"{ENV_AUTH}={named!r} is not one of {', '.join(AUTH_MODES)}")
    mode = cast(AuthMode, named)
    text = values.get(ENV_CONNECTION_STRING, "").strip()
    endpoint = parse_connection_string(text).with_auth(mode) if text else None
    database = values.get(ENV_DATABASE, "").strip() or DEFAULT_DATABASE
    return Settings(endpoint=endpoint, database=database, env_file=env_file, auth=mode)
