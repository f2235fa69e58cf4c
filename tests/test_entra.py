"""Microsoft Entra ID end to end: the real CLI in a subprocess signs in through azure-identity's
``DefaultAzureCredential`` (environment service principal) at a local token endpoint, and talks to the
emulator, which accepts the tokens that endpoint mints and refuses them management operations.

The connection strings given to asyncmig here have no AccountKey: a request the emulator accepted
can only have carried a token.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from azure.cosmos import PartitionKey
from azure.cosmos.aio import CosmosClient, DatabaseProxy
from azure.cosmos.exceptions import CosmosHttpResponseError

from asyncmig.core.cosmos.retry import classify
from asyncmig.emulator.auth import COSMOS_AUDIENCE, EntraIssuer, Refused, is_management_write
from asyncmig.errors import ControlPlaneRequired
from tests.core.support import contents, mixed_documents, seed
from tests.entra_issuer import Issuer, MintingCredential, TokenEndpoint, entra_emulator_arguments
from tests.helpers import EmulatorProcess, unique

TIMEOUT_S = 240
DATABASE = "vimarsh-multi-personality"


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("entra")


@pytest.fixture(scope="module")
def issuer(folder: Path) -> Issuer:
    return Issuer(folder)


@pytest.fixture(scope="module")
def token_endpoint(issuer: Issuer, folder: Path) -> Iterator[TokenEndpoint]:
    with TokenEndpoint(issuer, folder) as endpoint:
        yield endpoint


@pytest.fixture(scope="module")
def emulator(issuer: Issuer, folder: Path) -> Iterator[EmulatorProcess]:
    with EmulatorProcess("--partitions", "2", *entra_emulator_arguments(issuer, folder)) as process:
        yield process


@pytest.fixture
async def keyed(emulator: EmulatorProcess) -> AsyncIterator[DatabaseProxy]:
    """A fresh database, set up with the key (as an administrator would, before an Entra ID run)."""
    async with CosmosClient(emulator.endpoint, credential=emulator.key, connection_verify=False) as client:
        database = await client.create_database(unique("entra"))
        try:
            yield database
        finally:
            await client.delete_database(database.id)


def _asyncmig(emulator: EmulatorProcess, token_endpoint: TokenEndpoint, cwd: Path, *args: str,
              key: bool = False, client_secret: str | None = None) -> subprocess.CompletedProcess[str]:
    """The CLI with the token endpoint's sign-in environment; the connection string has the key only if asked."""
    connection = emulator.connection_string if key else f"AccountEndpoint={emulator.endpoint};"
    env = {**os.environ, "AZURE_COSMOS_CONNECTION_STRING": connection, **token_endpoint.environment}
    if client_secret is not None:
        env["AZURE_CLIENT_SECRET"] = client_secret
    return subprocess.run([sys.executable, "-m", "asyncmig", "-v", *args, "--no-progress"], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=TIMEOUT_S, stdin=subprocess.DEVNULL)


def _leaks(tokens: list[str], result: subprocess.CompletedProcess[str], folder: Path) -> list[str]:
    """Where any token appears: the output, or any file the run left behind."""
    places = {"stdout": result.stdout, "stderr": result.stderr}
    places.update({str(p): p.read_text(errors="replace") for p in folder.rglob("*") if p.is_file()
                   and not p.suffix == ".gz"})
    return [name for name, text in places.items() for token in tokens if token in text]


async def test_a_copy_signed_in_with_entra_id_copies_everything_and_shows_no_token(
    emulator: EmulatorProcess, token_endpoint: TokenEndpoint, issuer: Issuer, keyed: DatabaseProxy, tmp_path: Path
) -> None:
    source = await keyed.create_container(unique("src"), partition_key=PartitionKey("/pk"))
    target = await keyed.create_container(unique("dst"), partition_key=PartitionKey("/pk"))
    await seed(source, mixed_documents(600))
    issued_before, requests_before = len(issuer.issued), token_endpoint.requests
    report = tmp_path / "report.json"
    result = _asyncmig(emulator, token_endpoint, tmp_path, "copy", f"{keyed.id}/{source.id}",
                       f"{keyed.id}/{target.id}", "--checkpoint", str(tmp_path / "ck.json"), "--report", str(report))
    assert result.returncode == 0, result.stderr
    assert await contents(target) == await contents(source)
    assert json.loads(report.read_text())["documents"]["written"] == 600
    assert token_endpoint.requests > requests_before  # the real credential signed in at the token endpoint
    tokens = issuer.issued[issued_before:]
    assert tokens and _leaks(tokens, result, tmp_path) == []


async def test_a_failed_sign_in_ends_the_run_with_a_clear_message_and_no_secret(
    emulator: EmulatorProcess, token_endpoint: TokenEndpoint, keyed: DatabaseProxy, tmp_path: Path
) -> None:
    source = await keyed.create_container(unique("src"), partition_key=PartitionKey("/pk"))
    result = _asyncmig(emulator, token_endpoint, tmp_path, "copy", f"{keyed.id}/{source.id}",
                       f"{keyed.id}/{source.id}-copy", client_secret="not-the-secret-either")
    message = result.stderr.strip().splitlines()[-1]
    assert result.returncode == 3, result.stderr
    assert message.startswith("error: Microsoft Entra ID sign-in failed for 127.0.0.1")  # (-v logs come before)
    assert "AADSTS7000215" in message  # why, as the token endpoint said
    assert "not-the-secret-either" not in result.stdout + result.stderr


async def test_the_migration_runs_with_entra_id_once_an_administrator_created_the_containers(
    emulator: EmulatorProcess, token_endpoint: TokenEndpoint, issuer: Issuer, tmp_path: Path
) -> None:
    issued_before = len(issuer.issued)
    demo = ("seed-demo", "--vectors", "60", "--dimensions", "8")
    not_seeded = _asyncmig(emulator, token_endpoint, tmp_path, *demo)  # would create the database
    assert not_seeded.returncode == ControlPlaneRequired.exit_code, not_seeded.stderr
    assert "create them in advance" in not_seeded.stderr.strip().splitlines()[-1]
    seeded = _asyncmig(emulator, token_endpoint, tmp_path, *demo, key=True)
    assert seeded.returncode == 0, seeded.stderr
    refused = _asyncmig(emulator, token_endpoint, tmp_path, "create-containers", "--yes")
    assert refused.returncode == ControlPlaneRequired.exit_code, refused.stderr
    message = refused.stderr.strip().splitlines()[-1]
    assert "data-plane rights only" in message and "--auth key" in message and "personality_vectors" in message
    assert "403" not in message and "Traceback" not in refused.stderr
    async with CosmosClient(emulator.endpoint, credential=emulator.key, connection_verify=False) as client:
        names = {c["id"] async for c in client.get_database_client(DATABASE).list_containers()}
    assert "personality_vectors" not in names  # nothing was created
    created = _asyncmig(emulator, token_endpoint, tmp_path, "create-containers", "--yes", key=True)
    assert created.returncode == 0, created.stderr
    migrated = _asyncmig(emulator, token_endpoint, tmp_path, "run", "--yes")  # backup, migrate, validate
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    assert "validation passed" in migrated.stdout
    validated = _asyncmig(emulator, token_endpoint, tmp_path, "validate")
    assert validated.returncode == 0, validated.stdout + validated.stderr
    tokens = issuer.issued[issued_before:]
    assert tokens
    for result in (not_seeded, refused, migrated, validated):
        assert _leaks(tokens, result, tmp_path) == []


async def test_the_sdk_with_a_token_writes_items_but_cannot_create_containers(
    emulator: EmulatorProcess, issuer: Issuer, keyed: DatabaseProxy
) -> None:
    container = await keyed.create_container(unique("c"), partition_key=PartitionKey("/pk"), offer_throughput=400)
    credential = MintingCredential(issuer)
    async with CosmosClient(emulator.endpoint, credential=credential, connection_verify=False) as client:
        database = client.get_database_client(keyed.id)
        proxy = database.get_container_client(container.id)
        await proxy.upsert_item({"id": "a", "pk": "p", "n": 2**64 + 1})
        assert (await proxy.read_item("a", partition_key="p"))["n"] == 2**64 + 1
        assert [d["id"] async for d in proxy.query_items("SELECT * FROM c", partition_key="p")] == ["a"]
        assert (await proxy.get_throughput()).offer_throughput == 400  # reading metadata is allowed
        management = {
            "create container": lambda: database.create_container(unique("nope"), partition_key=PartitionKey("/pk")),
            "change throughput": lambda: proxy.replace_throughput(500),
            "delete container": lambda: database.delete_container(container.id),
            "create database": lambda: client.create_database(unique("nope")),
        }
        refusals: dict[str, CosmosHttpResponseError] = {}
        for name, call in management.items():
            with pytest.raises(CosmosHttpResponseError) as caught:
                await call()
            refusals[name] = caught.value
    assert {n: (e.status_code, e.sub_status) for n, e in refusals.items()} == dict.fromkeys(management, (403, 5300))
    assert (await container.get_throughput()).offer_throughput == 400  # nothing changed
    assert credential.scopes[0] == "https://127.0.0.1/.default"  # the account's scope, as the SDK asks
    error = classify(refusals["create container"]).as_error("creating a container")
    assert isinstance(error, ControlPlaneRequired) and "create them in advance" in str(error)
    assert not any(token in str(error) for token in issuer.issued)


def test_a_shared_secret_issuer_checks_signature_expiry_and_audience(tmp_path: Path) -> None:
    secret_file = tmp_path / "issuer.secret"
    secret_file.write_text("a shared secret of at least thirty-two bytes\n")
    issuer = EntraIssuer.from_file(secret_file)
    account = "https://127.0.0.1"
    now = int(time.time())

    def token(secret: str = "a shared secret of at least thirty-two bytes", **claims: Any) -> str:
        return jwt.encode({"aud": account, "exp": now + 600, **claims}, secret, algorithm="HS256")

    issuer.check(token(), [account])
    issuer.check(token(aud=COSMOS_AUDIENCE), [account, COSMOS_AUDIENCE])
    for bad, why in ((token(exp=now - 5), "expired"), (token(aud="https://elsewhere"), "audience"),
                     (token("another secret of at least thirty-two bytes"), "not valid"),
                     (jwt.encode({"aud": account}, "a shared secret of at least thirty-two bytes"), "not valid")):
        with pytest.raises(Refused, match=why):
            issuer.check(bad, [account])
    with pytest.raises(ValueError, match="is empty"):
        (tmp_path / "empty").write_text("  ")
        EntraIssuer.from_file(tmp_path / "empty")


@pytest.mark.parametrize(("verb", "path", "headers", "management"), [
    ("POST", "dbs", {}, True),
    ("DELETE", "dbs/d", {}, True),
    ("POST", "dbs/d/colls", {}, True),
    ("PUT", "dbs/d/colls/c", {}, True),
    ("DELETE", "dbs/d/colls/c", {}, True),
    ("PUT", "offers/o1", {}, True),
    ("POST", "offers", {"x-ms-documentdb-isquery": "True"}, False),
    ("GET", "dbs/d/colls/c", {}, False),
    ("GET", "dbs/d/colls/c/pkranges", {}, False),
    ("POST", "dbs/d/colls/c/docs", {}, False),
    ("DELETE", "dbs/d/colls/c/docs/x", {}, False),
    ("POST", "dbs/d/colls/c/operations/partitionkeydelete", {}, False),
])
def test_management_writes_are_told_apart_from_data_operations(
    verb: str, path: str, headers: dict[str, str], management: bool
) -> None:
    assert is_management_write(verb, path.split("/"), headers) is management
