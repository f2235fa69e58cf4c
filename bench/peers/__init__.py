"""Baselines that ``make bench`` measures asyncmig against: what users would otherwise run.

Each peer is a small, faithful program of our own, runnable on its own::

    python -m bench.peers.original   DB/SRC DB/DST --count N
    python -m bench.peers.sdk_gather DB/SRC DB/DST --count N [--concurrency 32]

Both read every document of SRC, strip the Cosmos system properties (what asyncmig's identity
transform strips too, so all three write exactly the same documents), write them to DST, and print
one JSON line: ``{"peer", "read", "written", "errors", "ru", "elapsed_s", ...}``. The account comes
from ``AZURE_COSMOS_CONNECTION_STRING`` (or ``--connection``). ``--count N`` is the number of
documents expected in SRC: the peer copies at most N and exits 1 when it found fewer, or when any
write failed, so a peer that loses documents cannot look fast.

This module holds only what both peers share and deliberately imports nothing from asyncmig: a
peer's CPU and memory must be its own.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

ENV_CONNECTION_STRING = "AZURE_COSMOS_CONNECTION_STRING"
# The properties Cosmos DB adds to a stored document (and `_lsn` from the change feed); the target
# assigns its own. The same list as asyncmig.core.engine.transform.SYSTEM_PROPERTIES.
SYSTEM_PROPERTIES = frozenset(("_rid", "_self", "_etag", "_attachments", "_ts", "_lsn"))


def strip_system(document: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in document.items() if k not in SYSTEM_PROPERTIES}


def parse_connection_string(text: str) -> tuple[str, str]:
    """``AccountEndpoint=...;AccountKey=...;`` -> (endpoint, key)."""
    fields: dict[str, str] = {}
    for part in text.strip().split(";"):
        name, sep, value = part.partition("=")
        if sep:
            fields[name.strip().lower()] = value.strip()
    try:
        return fields["accountendpoint"], fields["accountkey"]
    except KeyError:
        raise SystemExit("error: the connection string needs AccountEndpoint=...;AccountKey=...;") from None


def container_ref(text: str) -> tuple[str, str]:
    database, sep, container = text.rpartition("/")
    if not sep or not database or not container:
        raise SystemExit(f"error: expected DATABASE/CONTAINER, got {text!r}")
    return database, container


def parser(prog: str, description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("source", help="DATABASE/CONTAINER to read")
    p.add_argument("target", help="DATABASE/CONTAINER to write (must exist)")
    p.add_argument("--count", type=int, required=True, help="documents expected in SOURCE (at most this many are copied)")
    p.add_argument("--connection", help=f"connection string (default: ${ENV_CONNECTION_STRING})")
    return p


def connection(args: argparse.Namespace) -> tuple[str, str]:
    text = args.connection or os.environ.get(ENV_CONNECTION_STRING, "")
    if not text:
        raise SystemExit(f"error: set {ENV_CONNECTION_STRING} or pass --connection")
    return parse_connection_string(text)


class Charges:
    """Sums ``x-ms-request-charge`` of successful responses through the SDK's ``response_hook``."""

    def __init__(self) -> None:
        self.ru = 0.0
        self.responses = 0

    def __call__(self, headers: Any, *_: Any) -> None:
        self.responses += 1
        try:
            self.ru += float(headers.get("x-ms-request-charge", 0) or 0)
        except (TypeError, ValueError):
            pass


def finish(result: dict[str, Any], expected: int) -> int:
    """Print the result line; exit 0 only when exactly ``expected`` documents were written."""
    print(json.dumps(result), flush=True)
    ok = result["read"] == expected and result["written"] == expected and not result["errors"]
    if not ok:
        print(f"error: read {result['read']}, wrote {result['written']} of {expected}, "
              f"{result['errors']} failed writes", file=sys.stderr)
    return 0 if ok else 1
