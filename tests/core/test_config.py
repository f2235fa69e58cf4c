from __future__ import annotations

import base64
import io
import logging
import os
from pathlib import Path

import pytest

from asyncmig.config import (
    DEFAULT_DATABASE,
    ENV_AUTH,
    ENV_CONNECTION_STRING,
    ENV_DATABASE,
    CosmosEndpoint,
    RedactingFilter,
    install_redaction,
    load_settings,
    parse_connection_string,
    redact,
    register_secret,
    tls_verify,
)
from asyncmig.errors import ConnectionStringError, UsageError


def new_key() -> str:
    return base64.b64encode(os.urandom(64)).decode("ascii")


def conn(key: str, url: str = "https://acct.documents.azure.com:443/") -> str:
    return f"AccountEndpoint={url};AccountKey={key};"


# -------------------------------------------------------------------------------- parsing


def test_parse_standard_connection_string() -> None:
    key = new_key()
    endpoint = parse_connection_string(conn(key))
    assert endpoint.url == "https://acct.documents.azure.com:443/"
    assert endpoint.key == key
    assert endpoint.host == "acct.documents.azure.com"  # default port dropped: stable identity


@pytest.mark.parametrize(
    "template",
    [
        "accountkey={key};ACCOUNTENDPOINT=https://acct.documents.azure.com/",  # any case, any order
        "  AccountEndpoint = https://acct.documents.azure.com/ ; AccountKey = {key}  ",  # spaces, no ;
        "AccountEndpoint=https://acct.documents.azure.com/;;AccountKey={key};Database=x;",  # extras
    ],
)
def test_parse_is_lenient_about_layout(template: str) -> None:
    key = new_key()
    endpoint = parse_connection_string(template.format(key=key))
    assert endpoint.key == key
    assert endpoint.host == "acct.documents.azure.com"


def test_values_may_contain_equals_signs() -> None:
    key = base64.b64encode(b"x" * 61).decode()  # ends with "=="
    assert key.endswith("==")
    assert parse_connection_string(conn(key)).key == key


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "empty"),
        ("AccountEndpoint=https://acct.documents.azure.com/;AccountKey=;", "empty AccountKey="),
        ("AccountKey={key};", "no AccountEndpoint="),
        ("AccountEndpoint=ftp://acct/;AccountKey={key}", "https://"),
        ("AccountEndpoint=https://;AccountKey={key}", "no host"),
        ("AccountEndpoint=https://acct:99999/;AccountKey={key}", "not a valid URL"),
        ("AccountEndpoint=https://acct/;AccountKey={key}!!", "not valid base64"),
        ("AccountEndpoint=https://acct/;AccountKey={key};garbage", "not Name=value"),
        ("AccountEndpoint=https://acct/;{key}", "without its name"),  # key pasted without its name
        ("AccountEndpoint=https://acct/;AccountKey={key};accountKEY={key}", "twice"),
    ],
)
def test_malformed_strings_are_explained_without_leaking(text: str, fragment: str) -> None:
    key = new_key()
    full = text.format(key=key)
    with pytest.raises(ConnectionStringError) as info:
        parse_connection_string(full)
    message = str(info.value)
    assert fragment in message
    assert "\n" not in message
    assert key not in message
    assert not full or full not in message
    assert info.value.exit_code == 2


def test_empty_key_message_says_where_to_get_one() -> None:
    with pytest.raises(ConnectionStringError, match="Azure portal .*emulator.*Entra ID"):
        parse_connection_string("AccountEndpoint=https://acct.documents.azure.com/;AccountKey=")


def test_a_string_without_a_key_signs_in_with_entra_id_unless_key_is_forced() -> None:
    endpoint = parse_connection_string("AccountEndpoint=https://acct.documents.azure.com/")
    assert endpoint.uses_entra and endpoint.key is None
    assert "entra" in repr(endpoint)
    with pytest.raises(ConnectionStringError, match="--auth key needs AccountKey"):
        endpoint.with_auth("key")
    keyed = parse_connection_string(f"AccountEndpoint=https://acct.documents.azure.com/;AccountKey={new_key()}")
    assert not keyed.uses_entra and keyed.with_auth("entra").uses_entra and keyed.with_auth("auto") is keyed
    with pytest.raises(ConnectionStringError, match="needs an https:// AccountEndpoint"):
        parse_connection_string("AccountEndpoint=http://127.0.0.1:8081/;")
    plain = parse_connection_string(f"AccountEndpoint=http://127.0.0.1:8081/;AccountKey={new_key()}")
    with pytest.raises(ConnectionStringError, match="needs an https:// AccountEndpoint"):
        plain.with_auth("entra")


def test_the_auth_mode_comes_from_the_environment_or_the_option() -> None:
    text = f"AccountEndpoint=https://acct.documents.azure.com/;AccountKey={new_key()}"
    settings = load_settings(environ={ENV_CONNECTION_STRING: text, ENV_AUTH: "entra"})
    assert settings.auth == "entra" and settings.endpoint is not None and settings.endpoint.uses_entra
    overridden = load_settings(environ={ENV_CONNECTION_STRING: text, ENV_AUTH: "entra"}, auth="key")
    assert overridden.endpoint is not None and not overridden.endpoint.uses_entra
    with pytest.raises(UsageError, match="ASYNCMIG_AUTH='token' is not one of auto, key, entra"):
        load_settings(environ={ENV_CONNECTION_STRING: text, ENV_AUTH: "token"})


def test_a_jwt_is_masked_even_when_it_was_never_registered() -> None:
    token = "eyJhbGciOiJSUzI1NiJ9.eyJhdWQiOiJodHRwczovL2Nvc21vcyJ9.c2lnbmF0dXJlLXBhcnQ"
    assert redact(f"authorization: type=aad&ver=1.0&sig={token} failed") == (
        "authorization: type=aad&ver=1.0&sig=*** failed")


# -------------------------------------------------------------------------------- endpoint


def test_endpoint_repr_and_str_hide_the_key() -> None:
    key = new_key()
    endpoint = CosmosEndpoint(url="https://user:pw-secret@acct.example:8443/", key=key)
    for text in (repr(endpoint), str(endpoint), f"{endpoint}", repr([endpoint])):
        assert key not in text
        assert "pw-secret" not in text
        assert "acct.example:8443" in text
    assert endpoint.host == "acct.example:8443"


@pytest.mark.parametrize(
    ("url", "host", "loopback"),
    [
        ("https://localhost:8081/", "localhost:8081", True),
        ("http://127.0.0.1:8081", "127.0.0.1:8081", True),
        ("http://127.3.2.1/", "127.3.2.1", True),
        ("https://[::1]:8081/", "[::1]:8081", True),
        ("https://ACCT.documents.azure.com:443/", "acct.documents.azure.com", False),
        ("http://10.0.0.5:80/", "10.0.0.5", False),
        ("https://localhost.evil.example/", "localhost.evil.example", False),
    ],
)
def test_host_and_loopback(url: str, host: str, loopback: bool) -> None:
    endpoint = CosmosEndpoint(url=url, key=new_key())
    assert endpoint.host == host
    assert endpoint.is_loopback is loopback


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


# -------------------------------------------------------------------------------- TLS


def test_tls_verification_defaults(caplog: pytest.LogCaptureFixture) -> None:
    remote = CosmosEndpoint(url="https://verify.documents.azure.com/", key=new_key())
    local = CosmosEndpoint(url="https://localhost:8081/", key=new_key())
    with caplog.at_level(logging.WARNING, logger="asyncmig.config"):
        assert tls_verify(remote, insecure=False) is True
        assert tls_verify(local, insecure=False) is False
        assert tls_verify(local, insecure=True) is False
    assert caplog.records == []


def test_insecure_warns_once_per_host(caplog: pytest.LogCaptureFixture) -> None:
    remote = CosmosEndpoint(url="https://insecure-once.documents.azure.com/", key=new_key())
    with caplog.at_level(logging.WARNING, logger="asyncmig.config"):
        assert tls_verify(remote, insecure=True) is False
        assert tls_verify(remote, insecure=True) is False
    warnings = [r for r in caplog.records if "verification is OFF" in r.getMessage()]
    assert len(warnings) == 1
    assert "insecure-once.documents.azure.com" in warnings[0].getMessage()
    assert remote.key not in warnings[0].getMessage()


# -------------------------------------------------------------------------------- settings


def test_load_settings_reads_env_file(tmp_path: Path) -> None:
    key = new_key()
    env_file = tmp_path / ".env"
    env_file.write_text(f'{ENV_CONNECTION_STRING}="{conn(key)}"\n{ENV_DATABASE}=filedb\n')
    before = dict(os.environ)
    settings = load_settings(env_file, environ={})
    assert settings.endpoint is not None and settings.endpoint.key == key
    assert settings.database == "filedb"
    assert settings.env_file == env_file
    assert key not in repr(settings)
    assert dict(os.environ) == before  # the process environment is left alone


def test_environment_wins_over_env_file(tmp_path: Path) -> None:
    file_key, env_key = new_key(), new_key()
    env_file = tmp_path / ".env"
    env_file.write_text(f"{ENV_CONNECTION_STRING}={conn(file_key)}\n{ENV_DATABASE}=filedb\n")
    settings = load_settings(
        env_file, environ={ENV_CONNECTION_STRING: conn(env_key, "https://env.example/"), ENV_DATABASE: "envdb"}
    )
    assert settings.endpoint == CosmosEndpoint("https://env.example/", env_key)
    assert settings.database == "envdb"


def test_defaults_when_nothing_is_configured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no ./.env here
    settings = load_settings(environ={ENV_CONNECTION_STRING: "  ", ENV_DATABASE: ""})
    assert settings.endpoint is None
    assert settings.database == DEFAULT_DATABASE
    assert settings.env_file is None
    with pytest.raises(ConnectionStringError, match=ENV_CONNECTION_STRING):
        settings.require_endpoint()


def test_default_env_file_is_the_one_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = new_key()
    (tmp_path / ".env").write_text(f"{ENV_CONNECTION_STRING}={conn(key)}\n")
    monkeypatch.chdir(tmp_path)
    settings = load_settings(environ={})
    assert settings.require_endpoint().key == key
    assert settings.env_file == Path(".env")


def test_explicit_missing_env_file_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        load_settings(tmp_path / "nope.env", environ={})


def test_malformed_connection_string_in_environment_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConnectionStringError, match="no AccountEndpoint"):
        load_settings(environ={ENV_CONNECTION_STRING: "AccountKey=abcd;"})
