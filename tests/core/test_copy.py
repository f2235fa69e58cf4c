"""asyncmig copy end to end: the real CLI in a subprocess, the real SDK, the emulator as a real server."""

from __future__ import annotations

import json
import os
import random
import signal
import time
from pathlib import Path

import pytest
from azure.cosmos import PartitionKey
from azure.cosmos.aio import CosmosClient, DatabaseProxy

from asyncmig.core.engine.checkpoint import load_checkpoint
from tests.conftest import Cosmos, needs_emulator
from tests.core.support import contents, copier, mixed_documents, run_copier, seed, writes_to
from tests.helpers import EmulatorProcess, unique

REPO = Path(__file__).resolve().parents[2]


async def _pair(database: DatabaseProxy, *, target_throughput: int | None = None) -> tuple:
    source = await database.create_container(unique("src"), partition_key=PartitionKey("/pk"))
    target = await database.create_container(
        unique("dst"), partition_key=PartitionKey("/pk"), offer_throughput=target_throughput
    )
    return source, target


def _names(database: DatabaseProxy, source, target) -> tuple[str, str]:  # noqa: ANN001
    return f"{database.id}/{source.id}", f"{database.id}/{target.id}"


async def test_copy_equals_source_document_by_document(cosmos: Cosmos, database: DatabaseProxy, tmp_path: Path) -> None:
    source, target = await _pair(database)
    await seed(source, mixed_documents(3000))
    report = tmp_path / "report.json"
    result = run_copier(cosmos.connection_string, *_names(database, source, target),
                        "--checkpoint", str(tmp_path / "ck.json"), "--report", str(report),
                        "--max-in-flight", "400", "--page-size", "100", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert await contents(target) == await contents(source)
    data = json.loads(report.read_text())
    assert data["status"] == "succeeded"
    assert data["documents"]["written"] == data["documents"]["read"] == 3000
    assert 0 < data["memory"]["peak_in_flight"] <= 400  # the memory bound held
    assert cosmos.key not in report.read_text() and cosmos.key not in result.stdout + result.stderr
    again = run_copier(cosmos.connection_string, *_names(database, source, target),
                       "--checkpoint", str(tmp_path / "ck.json"), cwd=tmp_path)
    assert again.returncode == 0, again.stderr  # a finished copy resumes to "nothing to do"
    assert await writes_to(target) == 3000  # ... and wrote nothing twice


@needs_emulator
async def test_throttled_copy_arrives_exactly_once_and_reports_the_charges(
    cosmos: Cosmos, database: DatabaseProxy, tmp_path: Path
) -> None:
    source, target = await _pair(database, target_throughput=400)
    await seed(source, [{"id": f"t{i}", "pk": f"p{i % 7}", "pad": "y" * 600} for i in range(500)])
    ledger = [f"{database.id}/{c.id}" for c in (source, target)]  # reads of the source count too
    before = sum(cosmos.emulator.admin("stats")["charged_ru"].get(name, 0.0) for name in ledger)
    report = tmp_path / "report.json"
    # Ask for ten times what the target was given, so the server has to push back with 429s.
    result = run_copier(cosmos.connection_string, *_names(database, source, target), "--ru-budget", "4000",
                        "--checkpoint", str(tmp_path / "ck.json"), "--report", str(report), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    charged = sum(cosmos.emulator.admin("stats")["charged_ru"][name] for name in ledger) - before
    assert await contents(target) == await contents(source)
    assert await writes_to(target) == 500  # a 429 writes nothing: no document was written twice
    data = json.loads(report.read_text())
    assert data["throttled"] > 0  # the 400 RU/s target did push back
    assert data["ru"]["total"] == pytest.approx(charged, abs=0.05)


@needs_emulator
async def test_by_default_the_copy_paces_itself_to_the_targets_throughput(
    cosmos: Cosmos, database: DatabaseProxy, tmp_path: Path
) -> None:
    source, target = await _pair(database, target_throughput=400)
    await seed(source, [{"id": f"t{i}", "pk": f"p{i % 7}", "pad": "y" * 600} for i in range(300)])
    report = tmp_path / "report.json"
    result = run_copier(cosmos.connection_string, *_names(database, source, target),
                        "--checkpoint", str(tmp_path / "ck.json"), "--report", str(report), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    data = json.loads(report.read_text())
    assert data["ru_budget_per_s"] == 400.0  # read from the target's offer
    assert data["throttled_share"] <= 0.05
    assert await contents(target) == await contents(source)


def _wait_for(condition, timeout: float = 60.0) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def _target_ru(emulator: EmulatorProcess, name: str) -> float:
    return float(emulator.admin("stats")["charged_ru"].get(name, 0.0))


@needs_emulator
async def test_sigkill_at_random_moments_then_resume_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    emulator = EmulatorProcess("--no-rate-limit", "--latency-ms", "3").start()
    try:
        async with CosmosClient(emulator.endpoint, credential=emulator.key) as client:
            database = await client.create_database(unique("db"))
            source, target = await _pair(database)
            await seed(source, mixed_documents(1500, seed=11))
            args = [*_names(database, source, target), "--checkpoint", str(tmp_path / "ck.json"),
                    "--max-in-flight", "200", "--page-size", "100"]
            name = f"{database.id}/{target.id}"
            rng = random.Random(2026)
            kills = 0
            for _ in range(3):
                threshold = _target_ru(emulator, name) + rng.uniform(500, 2500)
                process = copier(emulator.connection_string, *args, cwd=tmp_path)
                try:
                    _wait_for(lambda t=threshold, p=process: _target_ru(emulator, name) >= t or p.poll() is not None)
                    if process.poll() is None:
                        process.send_signal(signal.SIGKILL)
                        kills += 1
                    process.wait(timeout=30)
                finally:
                    process.stdout.close()
                    process.stderr.close()
            final = run_copier(emulator.connection_string, *args, cwd=tmp_path)
            assert final.returncode == 0, final.stderr
            assert kills >= 2
            assert await contents(target) == await contents(source)
            duplicates = await writes_to(target) - 1500
            assert 0 <= duplicates <= kills * 200  # at most what was in flight at each kill
    finally:
        emulator.stop()


@needs_emulator
async def test_ctrl_c_saves_a_valid_checkpoint_and_a_resume_completes(tmp_path: Path) -> None:
    emulator = EmulatorProcess("--no-rate-limit", "--latency-ms", "5").start()
    try:
        async with CosmosClient(emulator.endpoint, credential=emulator.key) as client:
            database = await client.create_database(unique("db"))
            source, target = await _pair(database)
            await seed(source, mixed_documents(1200, seed=3))
            checkpoint = tmp_path / "ck.json"
            args = [*_names(database, source, target), "--checkpoint", str(checkpoint), "--page-size", "100"]
            process = copier(emulator.connection_string, *args, cwd=tmp_path)
            name = f"{database.id}/{target.id}"
            _wait_for(lambda: _target_ru(emulator, name) > 300 or process.poll() is not None)
            process.send_signal(signal.SIGINT)
            out, err = process.communicate(timeout=60)
            assert process.returncode == 130, err
            assert "Resume with" in err and "asyncmig copy" in err
            saved = json.loads(checkpoint.read_text())
            assert saved["format"] == "asyncmig-checkpoint" and saved["checksum"]
            assert 0 < saved["totals"]["written"] < 1200
            resumed = run_copier(emulator.connection_string, *args, cwd=tmp_path)
            assert resumed.returncode == 0, resumed.stderr
            assert await contents(target) == await contents(source)
    finally:
        emulator.stop()


@needs_emulator
async def test_faults_and_an_emulator_restart_mid_copy_still_complete(tmp_path: Path) -> None:
    emulator = EmulatorProcess("--no-rate-limit", "--latency-ms", "3", "--fault-rate", "0.05",
                               "--fault-seed", "5", data_dir=tmp_path / "emu").start()
    try:
        async with CosmosClient(emulator.endpoint, credential=emulator.key) as client:
            database = await client.create_database(unique("db"))
            source, target = await _pair(database)
            emulator.admin("faults", {"fault_rate": 0.0})
            await seed(source, mixed_documents(1200, seed=5))
            emulator.admin("faults", {"fault_rate": 0.05})
        args = [*_names(database, source, target), "--checkpoint", str(tmp_path / "ck.json"), "--page-size", "100"]
        name = f"{database.id}/{target.id}"
        process = copier(emulator.connection_string, *args, cwd=tmp_path)
        _wait_for(lambda: _target_ru(emulator, name) > 1500 or process.poll() is not None)
        emulator.restart()  # SIGKILL, then start again on the same port and data folder
        emulator.admin("faults", {"fault_rate": 0.05})
        out, err = process.communicate(timeout=240)
        assert process.returncode == 0, err
        emulator.admin("faults", {"fault_rate": 0.0})
        async with CosmosClient(emulator.endpoint, credential=emulator.key) as client:
            db = client.get_database_client(database.id)
            assert await contents(db.get_container_client(target.id)) == await contents(db.get_container_client(source.id))
    finally:
        emulator.stop()


async def test_corrupt_and_foreign_checkpoints_are_refused(cosmos: Cosmos, database: DatabaseProxy, tmp_path: Path) -> None:
    source, target = await _pair(database)
    other = await database.create_container(unique("other"), partition_key=PartitionKey("/pk"))
    await seed(source, mixed_documents(50))
    checkpoint = tmp_path / "ck.json"
    first = run_copier(cosmos.connection_string, *_names(database, source, target), "--checkpoint", str(checkpoint),
                       cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    foreign = run_copier(cosmos.connection_string, f"{database.id}/{source.id}", f"{database.id}/{other.id}",
                         "--checkpoint", str(checkpoint), cwd=tmp_path)
    assert foreign.returncode == 5
    assert other.id in foreign.stderr and "--restart" in foreign.stderr
    checkpoint.write_text(checkpoint.read_text().replace('"written":50', '"written":49'))
    corrupt = run_copier(cosmos.connection_string, *_names(database, source, target), "--checkpoint", str(checkpoint),
                         cwd=tmp_path)
    assert corrupt.returncode == 5
    assert str(checkpoint) in corrupt.stderr and "--restart" in corrupt.stderr
    restarted = run_copier(cosmos.connection_string, *_names(database, source, target), "--checkpoint",
                           str(checkpoint), "--restart", cwd=tmp_path)
    assert restarted.returncode == 0, restarted.stderr
    assert load_checkpoint(checkpoint, json.loads(checkpoint.read_text())["identity"], restart=False).ranges


async def test_bad_documents_go_to_the_dead_letter_file_and_the_exit_code_says_so(
    cosmos: Cosmos, database: DatabaseProxy, tmp_path: Path
) -> None:
    source, target = await _pair(database)
    await seed(source, [{"id": f"d{i}", "pk": f"p{i % 5}", "n": i} for i in range(300)])
    dead = tmp_path / "dead.jsonl"
    env_args = [*_names(database, source, target), "--checkpoint", str(tmp_path / "ck.json"),
                "--dead-letter", str(dead), "--transform", "tests.core.poison:poison"]
    os.environ["PYTHONPATH"] = str(REPO)
    try:
        result = run_copier(cosmos.connection_string, *env_args, cwd=tmp_path)
        assert result.returncode == 7, result.stderr
        assert "12 document(s)" in result.stderr and str(dead) in result.stderr
        records = [json.loads(line) for line in dead.read_text().splitlines()]
        reasons = " | ".join(r["reason"] for r in records)
        assert len(records) == 12  # 3 of each of 4 problems
        assert "refuses" in reasons and "not accepted" in reasons and "bytes" in reasons and "NaN" in reasons
        assert oct(dead.stat().st_mode & 0o777) == "0o600"
        written = await contents(target)
        assert len(written) == 300 - 12  # every good document still landed
        accepted = run_copier(cosmos.connection_string, *env_args, "--allow-dead-letters", cwd=tmp_path)
        assert accepted.returncode == 0, accepted.stderr
        assert len(dead.read_text().splitlines()) == 12  # a replay records each document once
    finally:
        del os.environ["PYTHONPATH"]


async def test_dry_run_counts_and_estimates_without_writing(cosmos: Cosmos, database: DatabaseProxy, tmp_path: Path) -> None:
    source, target = await _pair(database)
    await seed(source, [{"id": f"v{i}", "pk": f"p{i % 5}", "v": [0.5] * 200} for i in range(120)])
    result = run_copier(cosmos.connection_string, *_names(database, source, target), "--dry-run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    header, _, row = result.stdout.strip().splitlines()[:3]
    assert "estimated time" in header and "total RU" in header
    assert row.split()[0] == "120"  # documents counted
    assert await contents(target) == {}  # nothing written
    assert not (tmp_path / ".asyncmig").exists()  # no checkpoint either


async def test_catch_up_copies_what_changed_after_a_finished_copy(
    cosmos: Cosmos, database: DatabaseProxy, tmp_path: Path
) -> None:
    source, target = await _pair(database)
    await seed(source, mixed_documents(300))
    args = [*_names(database, source, target), "--checkpoint", str(tmp_path / "ck.json")]
    assert run_copier(cosmos.connection_string, *args, cwd=tmp_path).returncode == 0
    await seed(source, [{"id": "doc-000007", "pk": "changed", "n": -1}, {"id": "late", "pk": "p1", "n": 1}])
    edited = await source.read_item("doc-000010", partition_key=await _pk_of(source, "doc-000010"))
    await source.upsert_item({**edited, "edited": True})
    again = run_copier(cosmos.connection_string, *args, cwd=tmp_path)
    assert again.returncode == 0 and await contents(target) != await contents(source)  # finished ranges are skipped
    caught_up = run_copier(cosmos.connection_string, *args, "--catch-up", cwd=tmp_path)
    assert caught_up.returncode == 0, caught_up.stderr
    assert await contents(target) == await contents(source)


async def _pk_of(container, doc_id: str):  # noqa: ANN001, ANN202
    async for doc in container.query_items("SELECT * FROM c WHERE c.id = @id", parameters=[{"name": "@id", "value": doc_id}]):
        return doc["pk"]
    raise AssertionError(f"{doc_id} not found")
