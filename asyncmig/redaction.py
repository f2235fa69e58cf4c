"""Secret redaction: the one place that knows which strings must never reach a log or a message.

asyncmig handles two kinds of secret: an account key, registered with :func:`register_secret` the
moment it is parsed, and the Microsoft Entra ID access tokens the transport obtains, registered as
each arrives. :func:`redact` — applied to every log record by :class:`RedactingFilter` and to every
error message built from outside text — replaces them wherever they appear, and masks anything
shaped like a JWT even if it was never registered.
"""

from __future__ import annotations

import logging
import re
import threading

__all__ = ["MASK", "RedactingFilter", "install_redaction", "redact", "register_secret"]

MASK = "***"
# Shorter strings are not secrets worth the damage: masking every "abc" would garble ordinary logs.
_MIN_SECRET_LENGTH = 4


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
