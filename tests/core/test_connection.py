"""Connection strings, endpoints and the TLS decision (asyncmig.connection)."""

from __future__ import annotations

import base64
import logging

import pytest

from asyncmig.connection import CosmosEndpoint, parse_connection_string, tls_verify
from asyncmig.errors import ConnectionStringError
from tests.core.support import account_key as new_key
from tests.core.support import connection_string as conn

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


# -------------------------------------------------------------------------------- TLS


def test_tls_verification_defaults(caplog: pytest.LogCaptureFixture) -> None:
    remote = CosmosEndpoint(url="https://verify.documents.azure.com/", key=new_key())
    local = CosmosEndpoint(url="https://localhost:8081/", key=new_key())
    with caplog.at_level(logging.WARNING, logger="asyncmig.connection"):
        assert tls_verify(remote, insecure=False) is True
        assert tls_verify(local, insecure=False) is False
        assert tls_verify(local, insecure=True) is False
    assert caplog.records == []


def test_insecure_warns_once_per_host(caplog: pytest.LogCaptureFixture) -> None:
    remote = CosmosEndpoint(url="https://insecure-once.documents.azure.com/", key=new_key())
    with caplog.at_level(logging.WARNING, logger="asyncmig.connection"):
        assert tls_verify(remote, insecure=True) is False
        assert tls_verify(remote, insecure=True) is False
    warnings = [r for r in caplog.records if "verification is OFF" in r.getMessage()]
    assert len(warnings) == 1
    assert "insecure-once.documents.azure.com" in warnings[0].getMessage()
    assert remote.key not in warnings[0].getMessage()
