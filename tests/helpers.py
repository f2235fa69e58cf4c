"""Starting the emulator as a real server process for tests, and talking to its admin endpoints."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from asyncmig.emulator import process
from asyncmig.emulator.process import kill_after as _Deadline  # noqa: F401 - used by the CLI tests


class EmulatorProcess(process.EmulatorProcess):
    """The production process manager plus the admin endpoints tests use (split, faults, stats)."""

    def admin(self, action: str, body: dict[str, Any] | None = None) -> Any:
        request = urllib.request.Request(
            f"{self.endpoint}_admin/{action}", data=json.dumps(body or {}).encode(), method="POST",
            headers={"x-asyncmig-admin-key": self.key},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())


def run_asyncmig(connection_string: str | None, cwd: Path, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """``python -m asyncmig ARGS`` as a user runs it: in ``cwd``, against ``connection_string`` (None:
    without one in the environment), no stdin, output captured, killed after ``timeout`` seconds."""
    env = {k: v for k, v in os.environ.items() if k != "AZURE_COSMOS_CONNECTION_STRING"}
    if connection_string is not None:
        env["AZURE_COSMOS_CONNECTION_STRING"] = connection_string
    return subprocess.run([sys.executable, "-m", "asyncmig", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def raw_request(
    endpoint: str, key: str, method: str, path: str, *, headers: dict[str, str] | None = None,
    body: bytes | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """One master-key-signed request, built by hand as the SDK builds it (see asyncmig.core.cosmos.signing).

    For what the SDK refuses to send (an id with '/', a body whose partition key contradicts the
    header) and for raw protocol checks (pkranges 304, change-feed etags). Name-based paths only.
    """
    from urllib.parse import quote, unquote

    import aiohttp

    from asyncmig.core.cosmos import signing

    segments = [unquote(s) for s in path.strip("/").split("/") if s]
    resource_type, link = signing.resource_type_and_link(segments)
    date = signing.http_date()
    all_headers = {
        "x-ms-date": date, "x-ms-version": "2020-07-15", "Accept": "application/json",
        "authorization": signing.authorization(signing.decode_key(key), method, resource_type, link, date),
        **(headers or {}),
    }
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        url = endpoint.rstrip("/") + "/" + quote(path.lstrip("/"), safe="/")
        async with session.request(method, url, headers=all_headers, data=body) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, await response.read()
