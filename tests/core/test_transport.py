"""The transport seam against the emulator as a real HTTPS server: key and Entra ID authorization,
token caching and refresh, GET pages with continuation headers, and one error type for classify."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import ClientAuthenticationError
from azure.cosmos import PartitionKey
from azure.cosmos.aio import CosmosClient, DatabaseProxy

from asyncmig.connection import CosmosEndpoint
from asyncmig.core import jsoncodec
from asyncmig.core.cosmos.lean_writer import LeanContainer, LeanWriter
from asyncmig.core.cosmos.retry import classify
from asyncmig.core.cosmos.transport import (
    COSMOS_SCOPE,
    TOKEN_REFRESH_MARGIN_S,
    CosmosHttpError,
    EntraAuthorizer,
    MasterKeyAuthorizer,
    RedactingCredential,
    Transport,
    token_scope,
)
from asyncmig.errors import AuthenticationFailed, ControlPlaneRequired
from asyncmig.redaction import redact
from tests.entra_issuer import Issuer, MintingCredential, audience_of, entra_emulator_arguments
from tests.helpers import EmulatorProcess, unique


@pytest.fixture(scope="module")
def issuer(tmp_path_factory: pytest.TempPathFactory) -> Issuer:
    return Issuer(tmp_path_factory.mktemp("issuer"))


@pytest.fixture(scope="module")
def emulator(issuer: Issuer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    arguments = entra_emulator_arguments(issuer, tmp_path_factory.mktemp("tls"))
    with EmulatorProcess("--partitions", "2", *arguments) as process:
        yield process


@pytest.fixture
async def database(emulator: EmulatorProcess) -> AsyncIterator[DatabaseProxy]:
    async with CosmosClient(emulator.endpoint, credential=emulator.key, connection_verify=False) as client:
        db = await client.create_database(unique("t"))
        try:
            yield db
        finally:
            await client.delete_database(db.id)


def _entra(emulator: EmulatorProcess, credential: Any) -> Transport:
    scope, _ = token_scope(emulator.endpoint)
    return Transport(CosmosEndpoint(emulator.endpoint), connections=2, authorizer=EntraAuthorizer(credential, scope))


async def test_one_token_serves_requests_until_it_nears_expiry(emulator: EmulatorProcess, issuer: Issuer) -> None:
    lasting = MintingCredential(issuer)
    transport = _entra(emulator, lasting)
    try:
        replies = [await transport.request("GET", "/") for _ in range(3)]
    finally:
        await transport.close()
    assert [r.status for r in replies] == [200, 200, 200]
    assert lasting.scopes == ["https://127.0.0.1/.default"] and lasting.closed  # fetched once; closed with it
    short = MintingCredential(issuer, lifetime_s=TOKEN_REFRESH_MARGIN_S - 10)  # always inside the margin
    transport = _entra(emulator, short)
    try:
        assert [(await transport.request("GET", "/")).status for _ in range(2)] == [200, 200]
    finally:
        await transport.close()
    assert len(short.scopes) == 2  # refreshed before each request, never sent about to expire


class _UnknownAccountScope(MintingCredential):
    """Entra's answer for an account scope it does not know (sovereign clouds, some tenants)."""

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        if scopes[0] != COSMOS_SCOPE:
            self.scopes.append(scopes[0])
            raise ClientAuthenticationError("AADSTS500011: The resource principal named ... was not found")
        return await super().get_token(*scopes, **kwargs)


async def test_an_unknown_account_scope_falls_back_to_the_cosmos_scope(emulator: EmulatorProcess, issuer: Issuer) -> None:
    credential = _UnknownAccountScope(issuer)
    transport = _entra(emulator, credential)
    try:
        assert (await transport.request("GET", "/")).status == 200
    finally:
        await transport.close()
    assert credential.scopes == ["https://127.0.0.1/.default", COSMOS_SCOPE]


class _Refusing(MintingCredential):
    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        raise ClientAuthenticationError("EnvironmentCredential: AADSTS7000215: Invalid client secret provided.")


async def test_a_failed_sign_in_is_an_authentication_error(emulator: EmulatorProcess, issuer: Issuer) -> None:
    transport = _entra(emulator, _Refusing(issuer))
    try:
        with pytest.raises(AuthenticationFailed, match="Entra ID sign-in failed .*AADSTS7000215"):
            await transport.request("GET", "/")
    finally:
        await transport.close()


@pytest.mark.parametrize("problem", ["expired", "other audience", "forged"])
async def test_a_bad_token_is_refused_with_401_and_classified_fatal(
    emulator: EmulatorProcess, issuer: Issuer, tmp_path: Path, problem: str
) -> None:
    credential = {
        "expired": MintingCredential(issuer, lifetime_s=-60),
        "other audience": MintingCredential(issuer, audience="https://another-account.documents.azure.com"),
        "forged": MintingCredential(Issuer(tmp_path)),  # signed with a key the emulator does not trust
    }[problem]
    transport = _entra(emulator, credential)
    try:
        reply = await transport.request("GET", "/")
    finally:
        await transport.close()
    assert reply.status == 401
    failure = classify(reply.error())
    assert failure.kind == "fatal" and isinstance(failure.as_error("connecting"), AuthenticationFailed)
    tokens = credential.issuer.issued
    assert tokens and not any(t in failure.reason or t in str(reply.error()) for t in tokens)


async def test_a_token_may_write_items_but_not_create_containers(
    emulator: EmulatorProcess, issuer: Issuer, database: DatabaseProxy
) -> None:
    container = await database.create_container(unique("c"), partition_key=PartitionKey("/pk"))
    properties = await container.read()
    endpoint = CosmosEndpoint(emulator.endpoint)  # no key: the writer's default authorizer would be Entra ID
    scope, _ = token_scope(emulator.endpoint)
    writer = LeanWriter(endpoint, connections=2, authorizer=EntraAuthorizer(MintingCredential(issuer), scope))
    transport = _entra(emulator, MintingCredential(issuer))
    try:
        address = LeanContainer(container.container_link, properties["_rid"], _never_called)
        assert await writer.upsert_batch(address, ["p"], [b'{"id":"a","pk":"p","n":18446744073709551617}',
                                                          b'{"id":"b","pk":"p"}'])
        body = jsoncodec.dumps({"id": unique("nope"), "partitionKey": {"paths": ["/pk"], "kind": "Hash"}})
        refused = await transport.request("POST", f"/dbs/{database.id}/colls", {"Content-Type": "application/json"},
                                          body)
    finally:
        await writer.close()
        await transport.close()
    assert (await container.read_item("a", partition_key="p"))["n"] == 18446744073709551617
    assert (refused.status, refused.error().sub_status) == (403, 5300)
    assert isinstance(classify(refused.error()).as_error("creating a container"), ControlPlaneRequired)


async def _never_called() -> str:
    raise AssertionError("the container's rid was not in question")


async def test_get_pages_follow_continuation_headers_and_a_304_is_a_reply(
    emulator: EmulatorProcess, database: DatabaseProxy
) -> None:
    container = await database.create_container(unique("feed"), partition_key=PartitionKey("/pk"))
    for i in range(5):
        await container.upsert_item({"id": f"d{i}", "pk": "p"})
    transport = Transport(CosmosEndpoint(emulator.endpoint, emulator.key), connections=1)
    path = f"/{container.container_link}/docs"
    try:
        ids: list[str] = []
        headers = {"x-ms-max-item-count": "2"}
        while True:
            page = await transport.request("GET", path, headers)
            assert page.ok, page.body
            ids += [d["id"] for d in jsoncodec.loads(page.body)["Documents"]]
            if "x-ms-continuation" not in page.headers:
                break
            headers["x-ms-continuation"] = page.headers["x-ms-continuation"]
        feed = {"a-im": "Incremental feed", "x-ms-max-item-count": "100"}
        first = await transport.request("GET", path, feed)
        caught_up = await transport.request("GET", path, {**feed, "if-none-match": first.headers["etag"]})
    finally:
        await transport.close()
    assert sorted(ids) == [f"d{i}" for i in range(5)]
    assert len(jsoncodec.loads(first.body)["Documents"]) == 5
    assert caught_up.status == 304 and not caught_up.ok and caught_up.headers["etag"] == first.headers["etag"]


async def test_a_wrong_key_is_one_error_type_with_a_redacted_message(
    emulator: EmulatorProcess, database: DatabaseProxy
) -> None:
    wrong = base64.b64encode(b"not the key" * 6).decode()
    transport = Transport(CosmosEndpoint(emulator.endpoint), connections=1, authorizer=MasterKeyAuthorizer(wrong))
    try:
        reply = await transport.request("GET", f"/dbs/{database.id}")
    finally:
        await transport.close()
    error = reply.error()
    assert isinstance(error, CosmosHttpError) and error.status == 401 and str(error).startswith("HTTP 401 Unauthorized")
    assert classify(error).kind == "fatal" and redact(str(error)) == str(error)


def test_the_scope_is_the_accounts_as_the_sdk_derives_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AZURE_COSMOS_AAD_SCOPE_OVERRIDE", raising=False)
    assert token_scope("https://acct.documents.azure.com:443/") == ("https://acct.documents.azure.com/.default", False)
    assert audience_of(token_scope("https://127.0.0.1:8081/")[0]) == "https://127.0.0.1"
    monkeypatch.setenv("AZURE_COSMOS_AAD_SCOPE_OVERRIDE", COSMOS_SCOPE)
    assert token_scope("https://acct.documents.azure.com/") == (COSMOS_SCOPE, True)


class _Opaque:
    """A credential whose tokens are not JWTs, so only registration can mask them."""

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken(f"opaque-token-{scopes[0]}-{kwargs.get('tenant_id')}", 2**31)

    async def close(self) -> None:
        return None


async def test_tokens_the_sdk_client_fetches_are_registered_for_redaction() -> None:
    async with RedactingCredential(_Opaque()) as credential:  # (an in-process AsyncTokenCredential)
        token = await credential.get_token("https://acct.example/.default", tenant_id="t1")
    assert token.token == "opaque-token-https://acct.example/.default-t1"  # arguments passed through
    assert redact(f"header sig={token.token};") == "header sig=***;"
