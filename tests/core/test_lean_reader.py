"""The lean change-feed reader against the emulator: the same documents and the same continuation
tokens as the SDK's iterator, positions that resume on either path, exact values, splits during a
read (the old range id answering 410/1002, and a routing map that is already fresh), positions
that cannot be resumed refused with a clear message, and Microsoft Entra ID sign-in taken over
from the SDK client."""

from __future__ import annotations

import base64
import json
import math
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.cosmos import PartitionKey
from azure.cosmos.aio import ContainerProxy, CosmosClient, DatabaseProxy

from asyncmig.core.cosmos.lean_reader import ENV_READ_PATH, FeedPosition
from asyncmig.core.cosmos.source import CosmosSource
from asyncmig.core.engine.source import SourcePage
from asyncmig.errors import CorruptState, UsageError
from tests.conftest import Cosmos, needs_emulator
from tests.core.support import contents, mixed_documents, run_copier, seed
from tests.entra_issuer import Issuer, MintingCredential, entra_emulator_arguments
from tests.helpers import EmulatorProcess, unique

PAGE = 4


async def _container(database: DatabaseProxy, count: int) -> ContainerProxy:
    container = await database.create_container(unique("c"), PartitionKey("/pk"))
    for i in range(count):
        await container.upsert_item({"id": f"d{i}", "pk": f"p{i}", "n": i})
    return container


async def _source(container: ContainerProxy, path: str) -> CosmosSource:
    source = CosmosSource(container, page_size=PAGE, read_path=path)  # type: ignore[arg-type]
    await source.open()
    return source


async def _drain(source: CosmosSource, feed_range: Any, position: str | None) -> list[SourcePage]:
    return [page async for page in source.pages(feed_range, position)]


def _ids(pages: list[SourcePage]) -> list[str]:
    return [doc["id"] for page in pages for doc in page.documents]


async def test_the_same_pages_and_tokens_as_the_sdk(database: DatabaseProxy) -> None:
    container = await _container(database, 23)
    read: dict[str, list[tuple[list[str], str | None]]] = {}
    charged: dict[str, float] = {}
    for path in ("sdk", "lean"):
        source = await _source(container, path)
        assert source.read_path == path
        ranges = (await source.partitions()).values()
        pages = [page for fr in ranges for page in await _drain(source, fr, None)]
        read[path] = [([d["id"] for d in p.documents], p.position) for p in pages if p.documents]
        charged[path] = source.read_ru
    assert read["lean"] == read["sdk"]  # documents, page boundaries, and the tokens byte for byte
    assert sorted(i for ids, _ in read["lean"] for i in ids) == sorted(f"d{i}" for i in range(23))
    # The SDK path asks each range once more from its final position (a 304, 1 RU): the SDK ends a
    # pass on an empty 200 page too, so only a read that does not move the position proves the end.
    assert charged["sdk"] - charged["lean"] == len(ranges) * 1.0 and charged["lean"] > 0


async def test_positions_resume_on_the_other_path(database: DatabaseProxy) -> None:
    container = await _container(database, 30)
    sdk, lean = await _source(container, "sdk"), await _source(container, "lean")
    by_size = {len(_ids(await _drain(sdk, fr, None))): fr for fr in (await sdk.partitions()).values()}
    feed_range = by_size[max(by_size)]
    everything = _ids(await _drain(sdk, feed_range, None))
    assert len(everything) > PAGE
    for first, then in ((sdk, lean), (lean, sdk)):
        head = await anext(aiter(first.pages(feed_range, None)))
        rest = await _drain(then, feed_range, head.position)
        assert [d["id"] for d in head.documents] + _ids(rest) == everything
        # a finished position reads nothing more on either path
        final = rest[-1].position
        assert _ids(await _drain(lean, feed_range, final)) == _ids(await _drain(sdk, feed_range, final)) == []


async def test_fragile_values_come_back_exactly(database: DatabaseProxy) -> None:
    container = await database.create_container(unique("c"), PartitionKey("/pk"))
    fragile = {"id": "f", "pk": "p", "wide": 2**70, "negative_wide": -(2**65), "u64": 2**64 - 1,
               "minus_zero": -0.0, "long_float": 2100.607537417505, "text": "ünï \u2603 \U0001f600",
               "vector": [0.1 * i for i in range(768)]}
    await container.upsert_item(fragile)
    source = await _source(container, "lean")
    docs = [d for fr in (await source.partitions()).values() for p in await _drain(source, fr, None)
            for d in p.documents]
    assert len(docs) == 1
    doc = docs[0]
    for key, value in fragile.items():
        assert doc[key] == value and type(doc[key]) is type(value), key
    assert math.copysign(1.0, doc["minus_zero"]) == -1.0


@needs_emulator
@pytest.mark.parametrize("fresh_source", [False, True], ids=["stale-map-gets-410", "fresh-map-splits-locally"])
async def test_a_split_during_the_read_continues_the_children_from_the_parents_position(
    cosmos: Cosmos, database: DatabaseProxy, fresh_source: bool
) -> None:
    assert cosmos.emulator is not None
    container = await _container(database, 60)
    source = await _source(container, "lean")
    partitions = await source.partitions()
    key, feed_range = next(iter(partitions.items()))
    pages = source.pages(feed_range, None)
    head = await anext(aiter(pages))
    await pages.aclose()
    answer = cosmos.emulator.admin("split", {"database": database.id, "container": container.id, "range": "0"})
    assert answer["split"] == ["0"], answer
    for i in range(60, 90):  # written after the split: some land in the split range's children
        await container.upsert_item({"id": f"d{i}", "pk": f"p{i}", "n": i})
    reader = await _source(container, "lean") if fresh_source else source
    rest = await _drain(reader, feed_range, head.position)
    seen = Counter([d["id"] for d in head.documents] + _ids(rest))
    for other_key, other in partitions.items():
        if other_key != key:
            seen.update(_ids(await _drain(reader, other, None)))
    assert seen == Counter(f"d{i}" for i in range(90))  # every document once: none lost, none twice
    final = FeedPosition.parse(rest[-1].position or "", _rid(head.position))
    assert len(final.cursors) == 2 and all(c.etag for c in final.cursors)  # one per child, each with its etag
    # the SDK's iterator resumes the split position too: nothing more until something changes
    sdk = await _source(container, "sdk")
    assert _ids(await _drain(sdk, feed_range, rest[-1].position)) == []


def _rid(token: str | None) -> str:
    return str(json.loads(base64.b64decode(token or ""))["containerRid"])


async def test_positions_that_cannot_be_resumed_are_refused(database: DatabaseProxy) -> None:
    first, second = await _container(database, 3), await _container(database, 3)
    source = await _source(first, "lean")
    feed_range = next(iter((await source.partitions()).values()))
    with pytest.raises(CorruptState, match="cannot be read.*--restart"):
        await _drain(source, feed_range, "bm90IGEgdG9rZW4=")
    other = await _source(second, "lean")
    position = (await _drain(other, feed_range, None))[-1].position
    with pytest.raises(CorruptState, match="re-created.*--restart"):
        await _drain(source, feed_range, position)


async def test_the_read_path_comes_from_the_environment(database: DatabaseProxy,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    container = await _container(database, 0)
    assert CosmosSource(container).read_path == "lean"
    monkeypatch.setenv(ENV_READ_PATH, "sdk")
    assert CosmosSource(container).read_path == "sdk"
    monkeypatch.setenv(ENV_READ_PATH, "fast")
    with pytest.raises(UsageError, match=ENV_READ_PATH):
        CosmosSource(container)


async def test_a_checkpoint_written_by_one_read_path_resumes_on_the_other(
    cosmos: Cosmos, database: DatabaseProxy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The copier end to end: a copy made with the SDK reader, caught up with the lean reader from
    the positions in its checkpoint, then caught up again with the SDK reader."""
    source = await database.create_container(unique("src"), PartitionKey("/pk"))
    target = await database.create_container(unique("dst"), PartitionKey("/pk"))
    await seed(source, mixed_documents(200, seed=5))
    args = [f"{database.id}/{source.id}", f"{database.id}/{target.id}", "--checkpoint", str(tmp_path / "ck.json"),
            "--page-size", "30"]
    read_before = 0
    for round_number, path in enumerate(("sdk", "lean", "sdk")):
        monkeypatch.setenv(ENV_READ_PATH, path)
        done = run_copier(cosmos.connection_string, *args, *(["--catch-up"] if round_number else []), cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert await contents(target) == await contents(source), path
        read = json.loads((tmp_path / "ck.json").read_text())["totals"]["read"]
        assert read - read_before == (25 if round_number else 200), path  # resumed: only the new documents
        read_before = read
        await seed(source, [{"id": f"late-{path}-{i}", "pk": f"p{i}", "n": round_number} for i in range(25)])


@pytest.fixture(scope="module")
def entra_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[EmulatorProcess, Issuer]]:
    issuer = Issuer(tmp_path_factory.mktemp("issuer"))
    arguments = entra_emulator_arguments(issuer, tmp_path_factory.mktemp("tls"))
    with EmulatorProcess("--partitions", "2", *arguments) as process:
        yield process, issuer


async def test_a_client_signed_in_with_entra_id_reads_with_its_tokens(
    entra_emulator: tuple[EmulatorProcess, Issuer],
) -> None:
    emulator, issuer = entra_emulator
    async with CosmosClient(emulator.endpoint, credential=emulator.key, connection_verify=False) as admin:
        database = await admin.create_database(unique("entra"))
        container = await _container(database, 9)
        credential = MintingCredential(issuer)
        try:
            async with CosmosClient(emulator.endpoint, credential=credential, connection_verify=False) as client:
                signed_in = client.get_database_client(database.id).get_container_client(container.id)
                read: dict[str, list[str]] = {}
                for path in ("sdk", "lean"):
                    source = await _source(signed_in, path)
                    assert source.read_path == path
                    read[path] = sorted([i for fr in (await source.partitions()).values()
                                         for i in _ids(await _drain(source, fr, None))])
            assert read["lean"] == read["sdk"] == sorted(f"d{i}" for i in range(9))
            assert not credential.closed  # the SDK client's credential: not the reader's to close
        finally:
            await admin.delete_database(database.id)
