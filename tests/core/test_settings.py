"""What the environment and .env say (asyncmig.settings)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from asyncmig.connection import CosmosEndpoint
from asyncmig.errors import ConnectionStringError, UsageError
from asyncmig.settings import DEFAULT_DATABASE, ENV_AUTH, ENV_CONNECTION_STRING, ENV_DATABASE, load_settings
from tests.core.support import account_key as new_key
from tests.core.support import connection_string as conn


def test_the_auth_mode_comes_from_the_environment_or_the_option() -> None:
    text = f"AccountEndpoint=https://acct.documents.azure.com/;AccountKey={new_key()}"
    settings = load_settings(environ={ENV_CONNECTION_STRING: text, ENV_AUTH: "entra"})
    assert settings.auth == "entra" and settings.endpoint is not None and settings.endpoint.uses_entra
    overridden = load_settings(environ={ENV_CONNECTION_STRING: text, ENV_AUTH: "entra"}, auth="key")
    assert overridden.endpoint is not None and not overridden.endpoint.uses_entra
    with pytest.raises(UsageError, match="ASYNCMIG_AUTH='token' is not one of auto, key, entra"):
        load_settings(environ={ENV_CONNECTION_STRING: text, ENV_AUTH: "token"})


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
