"""Settings: what the environment and ``.env`` say about the connection and the database."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from dotenv import dotenv_values

from asyncmig.connection import (
    AUTH_MODES,
    WHERE_TO_FIND_KEY,
    AuthMode,
    CosmosEndpoint,
    parse_connection_string,
)
from asyncmig.errors import ConnectionStringError, UsageError

__all__ = [
    "DEFAULT_DATABASE", "ENV_AUTH", "ENV_CONNECTION_STRING", "ENV_DATABASE", "Settings", "load_settings",
]

ENV_CONNECTION_STRING = "AZURE_COSMOS_CONNECTION_STRING"
ENV_DATABASE = "AZURE_COSMOS_DATABASE_NAME"
ENV_AUTH = "ASYNCMIG_AUTH"
DEFAULT_DATABASE = "vimarsh-multi-personality"


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
                f"{ENV_CONNECTION_STRING} is not set; put it in .env or the environment ({WHERE_TO_FIND_KEY})"
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
