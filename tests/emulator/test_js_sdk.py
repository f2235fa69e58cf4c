"""The emulator through a second real client: the official JavaScript SDK (@azure/cosmos).

Each scenario is a node script in tests/js that prints one JSON object; these tests run it against
the session's emulator and assert on what the SDK saw. ``make test`` installs the pinned SDK
(``npm ci --prefix tests/js``); without node or that install the module is skipped, saying why.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Cosmos, needs_emulator
from tests.helpers import raw_request, unique

JS_DIR = Path(__file__).resolve().parents[1] / "js"
NODE = shutil.which("node")

if NODE is None:
    pytest.skip("node is not installed: the JavaScript SDK tests need Node.js >= 20", allow_module_level=True)
if not (JS_DIR / "node_modules" / "@azure" / "cosmos").is_dir():
    pytest.skip("the JavaScript SDK is not installed: run `make test` or `npm ci --prefix tests/js`",
                allow_module_level=True)


@pytest.fixture(scope="module")
def js_database(cosmos: Cosmos) -> Iterator[str]:
    """A database name for the scripts (they create it); dropped afterwards."""
    name = unique("jsdb")
    yield name
    asyncio.run(raw_request(cosmos.endpoint, cosmos.key, "DELETE", f"dbs/{name}"))


def run_js(cosmos: Cosmos, database: str, script: str, **env: str) -> dict[str, Any]:
    assert NODE is not None
    completed = subprocess.run(
        [NODE, str(JS_DIR / script)], cwd=JS_DIR, capture_output=True, text=True, timeout=60,
        env={**os.environ, "COSMOS_ENDPOINT": cosmos.endpoint, "COSMOS_KEY": cosmos.key,
             "COSMOS_DATABASE": database, **env},
    )
    lines = completed.stdout.strip().splitlines()
    assert lines, f"{script} printed nothing; stderr:\n{completed.stderr[-2000:]}"
    result: dict[str, Any] = json.loads(lines[-1])
    assert "error" not in result, f"{script} failed: {result}\nstderr:\n{completed.stderr[-2000:]}"
    assert completed.returncode == 0, completed.stderr[-2000:]
    return result


@needs_emulator
@pytest.mark.parametrize("version", ["2", "1"])
def test_bulk_across_a_split(cosmos: Cosmos, js_database: str, version: str) -> None:
    result = run_js(cosmos, js_database, "bulk.mjs", SPLIT="1", PK_VERSION=version)
    assert result["first"] == [201] * 100
    assert result["second"] == [201] * 60 + [409, 200, 200, 204]  # one conflict, the rest committed
    assert result["patched"] is True
    assert result["count"] == 160 + 1 - 1  # + "taken", - the deleted d7
    assert result["ranges"] == 8


@needs_emulator
def test_bulk_is_throttled_per_operation_and_completes(cosmos: Cosmos, js_database: str) -> None:
    assert cosmos.emulator is not None
    before = cosmos.emulator.admin("stats")["throttled"]
    result = run_js(cosmos, js_database, "bulk.mjs", THROTTLE="1", FILLER="600")
    assert cosmos.emulator.admin("stats")["throttled"] > before, "the bulk call should have met 429s"
    assert result["first"] == [201] * 100  # ... and the SDK retried each throttled operation
    assert result["count"] == 100


def test_transactional_batch(cosmos: Cosmos, js_database: str) -> None:
    result = run_js(cosmos, js_database, "batch.mjs")
    assert result["ok"] == {"code": 200, "statuses": [201, 201, 200, 200]}
    assert result["failed"]["statuses"] == [424, 409]
    assert result["items"] == [{"id": "a", "n": 1}, {"id": "b", "n": 7}]  # "c" rolled back


def test_patch(cosmos: Cosmos, js_database: str) -> None:
    result = run_js(cosmos, js_database, "patch.mjs")
    assert (result["bare"]["n"], result["bare"]["tags"], result["bare"]["nested"]) == (3, ["a", "b"], {"x": 1})
    assert result["conditionFailed"] == 412
    assert "tags" not in result["conditional"]


def test_queries_page_with_continuations(cosmos: Cosmos, js_database: str) -> None:
    result = run_js(cosmos, js_database, "query.mjs")
    assert result["all"] == {"count": 57, "distinct": 57, "maxPage": 10}
    assert result["filtered"] == [f"q{n}" for n in range(40, 57)]
    assert result["byKey"] == [f"q{n:02d}" for n in range(3, 57, 5)]
    assert result["resumed"] == [f"q{n:02d}" for n in range(1, 57, 5)]


@pytest.mark.parametrize("version", ["2", "1"])
def test_change_feed_per_feed_range(cosmos: Cosmos, js_database: str, version: str) -> None:
    result = run_js(cosmos, js_database, "changefeed.mjs", PK_VERSION=version)
    assert ("version" in result["partitionKey"]) == (version == "2")
    assert result["all"] == sorted(f"c{n}" for n in range(40))  # every change once, over all ranges
    if cosmos.emulator is not None:
        assert len(result["perRange"]) == 4 and min(result["perRange"]) > 0, result["perRange"]
    assert result["byKey"] == ["c7"]
    assert (result["read"], result["queried"]) == ("c11", ["c12"])
