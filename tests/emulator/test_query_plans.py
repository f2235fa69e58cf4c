"""Query plans: the SDK's own cross-partition pipeline (ORDER BY merge, aggregates, DISTINCT, TOP,
OFFSET/LIMIT) runs against the emulator, which answers as Cosmos DB's gateway does: 400/1004 for a
query it does not merge, a partitionedQueryExecutionInfo for the plan request, and the rewritten
per-range queries."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from azure.cosmos import CosmosClient as SyncClient
from azure.cosmos import PartitionKey
from azure.cosmos.aio import ContainerProxy, CosmosClient, DatabaseProxy
from azure.cosmos.exceptions import CosmosHttpResponseError

from tests.conftest import Cosmos, needs_emulator
from tests.helpers import raw_request, unique

# Values chosen so that every range holds both small and large numbers: a merge that concatenated
# ranges instead of interleaving them would come out unsorted.
DOCS = [{"id": f"p{i:02d}", "pk": f"key{i % 9}", "n": (i * 37) % 41, "g": i % 4, "s": f"s{i % 7}"} for i in range(40)]


@pytest.fixture(scope="module")
async def plan_db(cosmos: Cosmos) -> AsyncIterator[tuple[DatabaseProxy, ContainerProxy]]:
    async with CosmosClient(cosmos.endpoint, credential=cosmos.key) as client:
        db = await client.create_database(unique("plans"))
        try:
            container = await db.create_container(unique("c"), PartitionKey("/pk"), offer_throughput=40_000)
            for doc in DOCS:
                await container.create_item(doc)
            yield db, container
        finally:
            await client.delete_database(db.id)


@pytest.fixture
def container(plan_db: tuple[DatabaseProxy, ContainerProxy]) -> ContainerProxy:
    return plan_db[1]


def _path(container: ContainerProxy) -> str:
    return f"/dbs/{container.database_link.split('/')[-1]}/colls/{container.id}/docs"


async def _query(container: ContainerProxy, text: str, params: list[dict[str, Any]] | None = None,
                 ) -> tuple[list[Any], list[dict[str, str]]]:
    """Results plus the headers (and ``status``) of every query request the SDK sent for them.

    (The plan request itself bypasses the response hook; the 400/1004 before it and the
    per-range requests after it show that the SDK went through its pipeline.)
    """
    sent: list[dict[str, str]] = []

    def hook(response: Any) -> None:
        headers = {k.lower(): v for k, v in response.http_request.headers.items()}
        sent.append({**headers, "status": str(response.http_response.status_code)})

    rows = [r async for r in container.query_items(text, parameters=params, raw_response_hook=hook)]
    return rows, sent


def _went_through_the_plan(sent: list[dict[str, str]]) -> None:
    assert sent[0]["status"] == "400" and "x-ms-documentdb-partitionkeyrangeid" not in sent[0]
    assert all(h["status"] == "200" and "x-ms-documentdb-partitionkeyrangeid" in h for h in sent[1:])


async def test_the_sdk_merges_order_by_through_the_plan(container: ContainerProxy) -> None:
    assert len([r async for r in container.read_feed_ranges()]) >= 4
    rows, sent = await _query(container, "SELECT * FROM c WHERE c.n > 2 ORDER BY c.n DESC, c.id")
    expected = sorted((d for d in DOCS if d["n"] > 2), key=lambda d: (-d["n"], d["id"]))
    assert [r["id"] for r in rows] == [d["id"] for d in expected]
    assert all("orderByItems" not in r and "_rid" in r for r in rows)  # the payload, not the wrapper
    _went_through_the_plan(sent)
    assert sum("x-ms-documentdb-partitionkeyrangeid" in h for h in sent) >= 4


@pytest.mark.parametrize(("text", "expected"), [
    ("SELECT VALUE COUNT(1) FROM c", [len(DOCS)]),
    ("SELECT VALUE SUM(c.n) FROM c WHERE c.g = 1", [sum(d["n"] for d in DOCS if d["g"] == 1)]),
    ("SELECT VALUE AVG(c.n) FROM c", [sum(d["n"] for d in DOCS) / len(DOCS)]),
    ("SELECT VALUE MIN(c.s) FROM c", [min(d["s"] for d in DOCS)]),
    ("SELECT VALUE MAX(c.n) FROM c WHERE c.n < 30", [29]),
    ("SELECT VALUE COUNT(1) FROM c WHERE c.n > 1000", [0]),
    ("SELECT VALUE COUNT(1) FROM c ORDER BY c.n", [len(DOCS)]),
    ("SELECT VALUE MAX(c.n) FROM c ORDER BY c.n DESC", [max(d["n"] for d in DOCS)]),
    ("SELECT DISTINCT VALUE c.g FROM c ORDER BY c.g DESC", [3, 2, 1, 0]),
    ("SELECT TOP 3 c.id, c.n FROM c ORDER BY c.n", [{"id": d["id"], "n": d["n"]}
                                                      for d in sorted(DOCS, key=lambda d: d["n"])[:3]]),
    ("SELECT VALUE c.n FROM c ORDER BY c.n OFFSET 5 LIMIT 4", sorted(d["n"] for d in DOCS)[5:9]),
])
async def test_pipeline_results(container: ContainerProxy, text: str, expected: list[Any]) -> None:
    rows, sent = await _query(container, text)
    assert rows == expected
    _went_through_the_plan(sent)


async def test_unordered_distinct_top_and_parameters(container: ContainerProxy) -> None:
    rows, _ = await _query(container, "SELECT DISTINCT VALUE c.s FROM c")
    assert sorted(rows) == sorted({d["s"] for d in DOCS})
    rows, _ = await _query(container, "SELECT TOP @k * FROM c WHERE c.g = @g", [{"name": "@k", "value": 4},
                                                                               {"name": "@g", "value": 2}])
    assert len(rows) == 4 and all(r["g"] == 2 for r in rows)
    rows, _ = await _query(container, "SELECT * FROM c OFFSET 10 LIMIT 7")
    assert len(rows) == 7


@needs_emulator  # exact wording and plan details of the emulator's gateway
async def test_gateway_answers_1004_with_the_plan_and_the_plan_request(container: ContainerProxy,
                                                                       cosmos: Cosmos) -> None:
    query = json.dumps({"query": "SELECT * FROM c WHERE c.g = 1 ORDER BY c.n DESC", "parameters": []}).encode()
    base = {"Content-Type": "application/query+json"}
    status, headers, body = await raw_request(
        cosmos.endpoint, cosmos.key, "POST", _path(container), body=query,
        headers={**base, "x-ms-documentdb-isquery": "True", "x-ms-documentdb-query-enablecrosspartition": "True"})
    assert (status, headers["x-ms-substatus"]) == (400, "1004")
    embedded = json.loads(json.loads(body)["additionalErrorInfo"])

    status, _, body = await raw_request(cosmos.endpoint, cosmos.key, "POST", _path(container), body=query,
                                        headers={**base, "x-ms-cosmos-is-query-plan-request": "True"})
    assert status == 200
    plan = json.loads(body)
    assert plan == embedded
    info = plan["queryInfo"]
    assert info["orderBy"] == ["Descending"] and info["distinctType"] == "None" and info["aggregates"] == []
    assert info["rewrittenQuery"].startswith('SELECT c._rid, [{"item": c.n}] AS orderByItems, c AS payload')
    assert "AND ({documentdb-formattableorderbyquery-filter})" in info["rewrittenQuery"]
    assert plan["queryRanges"] == [{"min": "", "max": "FF", "isMinInclusive": True, "isMaxInclusive": False}]

    # The rewritten query, run on one range, returns the wrapped rows the SDK merges.
    rewritten = info["rewrittenQuery"].replace("{documentdb-formattableorderbyquery-filter}", "true")
    status, _, body = await raw_request(
        cosmos.endpoint, cosmos.key, "POST", _path(container), body=json.dumps({"query": rewritten}).encode(),
        headers={**base, "x-ms-documentdb-isquery": "True", "x-ms-documentdb-partitionkeyrangeid": "0"})
    assert status == 200
    wrapped = json.loads(body)["Documents"]
    assert wrapped and all(set(w) == {"_rid", "orderByItems", "payload"} for w in wrapped)
    assert [w["orderByItems"][0]["item"] for w in wrapped] == sorted((w["payload"]["n"] for w in wrapped),
                                                                       reverse=True)


async def test_cross_partition_needs_the_opt_in(container: ContainerProxy, cosmos: Cosmos) -> None:
    """Without enable_cross_partition_query the sync SDK sends no opt-in: 400, as on a real account."""
    with SyncClient(cosmos.endpoint, credential=cosmos.key) as client:
        sync = client.get_database_client(container.database_link.split("/")[-1]).get_container_client(container.id)
        with pytest.raises(CosmosHttpResponseError) as caught:
            list(sync.query_items("SELECT * FROM c"))
        assert caught.value.status_code == 400
        assert "cross partition" in str(caught.value.message).lower()
        assert len(list(sync.query_items("SELECT * FROM c", enable_cross_partition_query=True))) == len(DOCS)
        assert list(sync.query_items("SELECT VALUE COUNT(1) FROM c", partition_key="key1")) == [
            sum(d["pk"] == "key1" for d in DOCS)]


@pytest.mark.parametrize("where", [
    "c.n > 2 AND NOT c.even", "(c.a ?? 1) > 0 OR c.s || 'x' = 'ax'", "c.n BETWEEN 1 AND 3", "c.k NOT IN (1, 2, 'x')",
    "(c.b ? 1 : 2) = 1", "-c.n < 0 AND +c.n >= -5", "c['odd key'][0].v != null", "ARRAY_CONTAINS(c.tags, {'a': [1, 2.5]})",
    "c.s = 'quote \\' and \\u00e9 and \\n'", "c.n % 3 = 1 AND c.n / 2 * 4 - 1 > 0", "IS_DEFINED(c.x) = false",
])
def test_rewritten_filters_parse_back_to_the_same_query(where: str) -> None:
    """The plan's SQL text is the query the emulator parsed, whatever operators and literals it has."""
    from asyncmig.emulator.query import compile_query
    from asyncmig.emulator.query_plan import plan

    original = compile_query(f"SELECT * FROM c WHERE {where} ORDER BY c.n")
    rewritten = plan(original)["queryInfo"]["rewrittenQuery"]
    filter_text = rewritten.split("\nWHERE ", 1)[1].split("\nORDER BY", 1)[0]
    inner = filter_text.removeprefix("((").removesuffix(") AND ({documentdb-formattableorderbyquery-filter}))")
    assert compile_query(f"SELECT * FROM c WHERE {inner} ORDER BY c.n").parsed == original.parsed


def test_min_and_max_partials_carry_item_and_item2() -> None:
    """Python merges ``item`` (the plain extreme); the JavaScript SDK merges ``item2`` ({max, count}),
    and without it answers [] for a cross-partition MAX."""
    from asyncmig.emulator.query import compile_query
    from asyncmig.emulator.query_plan import plan

    rewritten = plan(compile_query("SELECT VALUE MAX(c.n) FROM c"))["queryInfo"]["rewrittenQuery"]
    partial = compile_query(rewritten).run([{"n": 3}, {"n": 5}, {"x": 1}])
    assert partial == [[{"item": 5, "item2": {"max": 5, "count": 2}}]]
    empty = compile_query(rewritten).run([{"x": 1}])
    assert empty == [[{"item2": {"count": 0}}]]  # the SDKs skip a range with no values
