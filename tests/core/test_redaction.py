"""Secrets never reach a log line or a message (asyncmig.redaction)."""

from __future__ import annotations

import io
import logging

from asyncmig.connection import parse_connection_string
from asyncmig.redaction import RedactingFilter, install_redaction, redact, register_secret
from tests.core.support import account_key as new_key
from tests.core.support import connection_string as conn


def test_a_jwt_is_masked_even_when_it_was_never_registered() -> None:
    token = "eyJhbGciOiJSUzI1NiJ9.eyJhdWQiOiJodHRwczovL2Nvc21vcyJ9.c2lnbmF0dXJlLXBhcnQ"
    assert redact(f"authorization: type=aad&ver=1.0&sig={token} failed") == (
        "authorization: type=aad&ver=1.0&sig=*** failed")


# -------------------------------------------------------------------------------- redaction


def test_parsing_registers_key_and_whole_string() -> None:
    key = new_key()
    text = conn(key, "https://registered.example/")
    parse_connection_string(text)
    assert redact(f"x {key} y") == "x *** y"
    assert key not in redact(f"dump: {text}")


def test_redact_masks_account_key_patterns_never_registered() -> None:
    assert redact("AccountEndpoint=https://a/;AccountKey=abc+/def==; more") == (
        "AccountEndpoint=https://a/;AccountKey=***; more"
    )
    assert redact("accountkey = zzz next") == "accountkey = *** next"


def test_redact_masks_long_base64_after_key_labels_only() -> None:
    value = "A" * 30 + "b+/9" * 5
    assert redact(f'"masterKey": "{value}"') == '"masterKey": "***"'
    assert redact(f"sig={value}&x") == "sig=***&x"
    # a document field named partition_key is data, not a secret
    assert redact(f"partition_key={value}") == f"partition_key={value}"
    assert redact("key=short") == "key=short"


def test_short_secrets_are_not_registered() -> None:
    register_secret("ab")
    register_secret("")
    assert redact("abba cab") == "abba cab"


def _capture_logger(name: str) -> tuple[logging.Logger, io.StringIO, logging.Handler]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger(name)
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    return logger, stream, handler


def test_redacting_filter_masks_message_args_and_traceback() -> None:
    key = new_key()
    register_secret(key)
    logger, stream, handler = _capture_logger("asyncmig.test.redact")
    handler.addFilter(RedactingFilter())
    logger.info("connecting with %s and %r", key, {"k": key})
    try:
        raise RuntimeError(f"failed AccountKey={key}")
    except RuntimeError:
        logger.exception("boom %d", 3)
    output = stream.getvalue()
    assert key not in output
    assert "connecting with *** and {'k': '***'}" in output
    assert "boom 3" in output
    assert "RuntimeError: failed AccountKey=***" in output


def test_redacting_filter_survives_a_broken_format_string() -> None:
    key = new_key()
    register_secret(key)
    logger, stream, handler = _capture_logger("asyncmig.test.broken")
    handler.addFilter(RedactingFilter())
    logger.info("value %d", key)
    assert key not in stream.getvalue()
    assert "value %d" in stream.getvalue()


def test_install_redaction_is_idempotent() -> None:
    key = new_key()
    register_secret(key)
    logger, stream, handler = _capture_logger("asyncmig.test.install")
    install_redaction(logger)
    install_redaction(logger)
    assert sum(isinstance(f, RedactingFilter) for f in handler.filters) == 1
    logger.warning("key is %s", key)
    assert stream.getvalue() == "key is ***\n"
