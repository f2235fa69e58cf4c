"""``asyncmig reconcile``: target documents whose source document is gone are deleted, nothing else."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from azure.cosmos import PartitionKey
from azure.cosmos.aio import DatabaseProxy

from tests.conftest import Cosmos
from tests.core.support import COPIER_TIMEOUT_S, contents, seed
from tests.helpers import run_asyncmig, unique


def _asyncmig(connection_string: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return run_asyncmig(connection_string, cwd, *args, timeout=COPIER_TIMEOUT_S)


async def test_reconcile_deletes_only_what_the_source_no_longer_has(
    cosmos: Cosmos, database: DatabaseProxy, tmp_path: Path
) -> None:
    source = await database.create_container(unique("src"), partition_key=PartitionKey("/pk"))
    target = await database.create_container(unique("dst"), partition_key=PartitionKey("/pk"))
    kept = [{"id": f"k{i}", "pk": f"p{i % 7}", "n": i} for i in range(150)]
    kept += [{"id": "numeric", "pk": 5, "n": -1}, {"id": "no-key", "n": 0}]  # a numeric and an undefined key
    # Same id as a kept document under another key: a different document, and an orphan.
    orphans = [{"id": f"gone{i}", "pk": f"p{i % 3}"} for i in range(40)] + [{"id": "k1", "pk": "elsewhere"}]
    await seed(source, kept)
    await seed(target, kept + orphans)
    names = [f"{database.id}/{source.id}", f"{database.id}/{target.id}"]

    refused = _asyncmig(cosmos.connection_string, "reconcile", *names, cwd=tmp_path)
    assert refused.returncode == 1 and "--yes" in refused.stderr  # no terminal to ask: nothing deleted
    dry = _asyncmig(cosmos.connection_string, "reconcile", *names, "--dry-run", "--report", "dry.json", cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr
    report = json.loads((tmp_path / "dry.json").read_text())
    assert report["documents"]["orphans"] == len(orphans) and report["documents"]["deleted"] == 0
    assert len(await contents(target)) == len(kept) + len(orphans)

    done = _asyncmig(cosmos.connection_string, "reconcile", *names, "--yes", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert await contents(target) == await contents(source)
    again = _asyncmig(cosmos.connection_string, "reconcile", *names, "--yes", "--report", "again.json", cwd=tmp_path)
    assert again.returncode == 0 and json.loads((tmp_path / "again.json").read_text())["documents"]["orphans"] == 0
