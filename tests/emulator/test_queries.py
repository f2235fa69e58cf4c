"""Reads and SQL through the SDK: read feed, feed-range / logical-partition / cross-partition queries,
the SQL subset the emulator serves, paging and aggregates (including the SDK's merge of partials)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest
from azure.cosmos import PartitionKey
from azure.cosmos.aio import ContainerProxy, CosmosClient
from azure.cosmos.exceptions import CosmosHttpResponseError

from tests.conftest import Cosmos, needs_emulator
from tests.helpers import unique

KEYS = ["alpha", "beta", "gamma", "delta", "eps", "zeta"]


def _dataset() -> list[dict[str, Any]]:
    docs = []
    for i in range(60):
        doc: dict[str, Any] = {"id": f"d{i:02d}", "pk": KEYS[i % 6], "n": i, "half": i // 2, "s": f"s{(i * 7) % 13}",
                               "even": i % 2 == 0, "tags": ["t", f"t{i % 3}"], "nested": {"v": i % 5}}
        if i % 4 == 0:
            doc["opt"] = None
        elif i % 4 == 1:
            doc["opt"] = i
        docs.append(doc)
    return docs


DOCS = _dataset()


@pytest.fixture(scope="module")
async def qclient(cosmos: Cosmos) -> AsyncIterator[CosmosClient]:
    async with CosmosClient(cosmos.endpoint, credential=cosmos.key) as c:
        yield c


@pytest.fixture(scope="module")
async def qc(qclient: CosmosClient) -> AsyncIterator[ContainerProxy]:
    db = await qclient.create_database(unique("qdb"))
    try:
        container = await db.create_container(unique("q"), PartitionKey("/pk"))
        for doc in DOCS:
            await container.create_item(doc)
        yield container
    finally:
        await qclient.delete_database(db.id)


async def q(container: ContainerProxy, text: str, params: list[dict[str, Any]] | None = None,
            **kwargs: Any) -> list[Any]:
    return [d async for d in container.query_items(text, parameters=params, **kwargs)]


def ids(rows: list[dict[str, Any]]) -> list[str]:
    return [r["id"] for r in rows]


async def test_select_star_cross_partition_and_read_feed(qc: ContainerProxy) -> None:
    rows = await q(qc, "SELECT * FROM c")
    assert sorted(ids(rows)) == [d["id"] for d in DOCS]
    assert all({"_rid", "_etag", "_ts", "_self"} <= set(r) for r in rows)
    assert sorted(ids([d async for d in qc.read_all_items()])) == [d["id"] for d in DOCS]


async def test_projections_and_select_value(qc: ContainerProxy) -> None:
    rows = await q(qc, "SELECT c.id, c.n, c.nested.v AS v FROM c WHERE c.pk = 'alpha'")
    assert sorted(rows, key=lambda r: r["n"]) == [
        {"id": d["id"], "n": d["n"], "v": d["nested"]["v"]} for d in DOCS if d["pk"] == "alpha"]
    values = await q(qc, "SELECT VALUE c.n FROM c WHERE c.n < 5")
    assert sorted(values) == [0, 1, 2, 3, 4]
    # A projected property that is undefined is left out, not set to null.
    rows = await q(qc, "SELECT c.id, c.opt FROM c WHERE c.n IN (2, 4)")
    assert sorted(rows, key=lambda r: r["id"]) == [{"id": "d02"}, {"id": "d04", "opt": None}]


@pytest.mark.parametrize(("where", "predicate"), [
    ("c.n = 7", lambda d: d["n"] == 7),
    ("c.n != 7", lambda d: d["n"] != 7),
    ("c.n <> 7", lambda d: d["n"] != 7),
    ("c.n > 50", lambda d: d["n"] > 50),
    ("c.n >= 50", lambda d: d["n"] >= 50),
    ("c.n < 3", lambda d: d["n"] < 3),
    ("c.n <= 3", lambda d: d["n"] <= 3),
    ("c.s = 's3'", lambda d: d["s"] == "s3"),
    ("c.s >= 's5'", lambda d: d["s"] >= "s5"),
    ("c.even = true", lambda d: d["even"]),
    ("c.nested.v = 2", lambda d: d["nested"]["v"] == 2),
    ("c['nested']['v'] = 2", lambda d: d["nested"]["v"] == 2),
    ("c.n > 10 AND c.n < 20", lambda d: 10 < d["n"] < 20),
    ("c.n < 3 OR c.n > 56", lambda d: d["n"] < 3 or d["n"] > 56),
    ("NOT (c.n > 3)", lambda d: not d["n"] > 3),
    ("c.pk = 'beta' AND NOT c.even", lambda d: d["pk"] == "beta" and not d["even"]),
    ("(c.n < 3 OR c.n > 56) AND c.even", lambda d: (d["n"] < 3 or d["n"] > 56) and d["even"]),
    ("c.pk IN ('alpha', 'zeta')", lambda d: d["pk"] in ("alpha", "zeta")),
    ("c.n IN (1, 2, 99)", lambda d: d["n"] in (1, 2, 99)),
    ("NOT (c.pk IN ('alpha', 'zeta'))", lambda d: d["pk"] not in ("alpha", "zeta")),
    ("IS_DEFINED(c.opt)", lambda d: "opt" in d),
    ("NOT IS_DEFINED(c.opt)", lambda d: "opt" not in d),
    ("IS_NULL(c.opt)", lambda d: "opt" in d and d["opt"] is None),
    ("c.opt = null", lambda d: "opt" in d and d["opt"] is None),
    ("c.opt > 10", lambda d: isinstance(d.get("opt"), int) and d["opt"] > 10),
    ("c.missing = 1", lambda d: False),
    ("c.s > 5", lambda d: False),  # comparing a string with a number is undefined, so never true
])
async def test_where(qc: ContainerProxy, where: str, predicate: Any) -> None:
    rows = await q(qc, f"SELECT * FROM c WHERE {where}")
    assert sorted(ids(rows)) == [d["id"] for d in DOCS if predicate(d)]


async def test_parameters(qc: ContainerProxy) -> None:
    rows = await q(qc, "SELECT * FROM c WHERE c.pk = @pk AND c.n >= @min",
                   [{"name": "@pk", "value": "gamma"}, {"name": "@min", "value": 20}])
    assert sorted(ids(rows)) == [d["id"] for d in DOCS if d["pk"] == "gamma" and d["n"] >= 20]
    rows = await q(qc, "SELECT * FROM c WHERE c.n IN (@a, @b)", [{"name": "@a", "value": 3}, {"name": "@b", "value": 4}])
    assert sorted(ids(rows)) == ["d03", "d04"]


async def test_top_offset_limit_and_order_by(qc: ContainerProxy) -> None:
    by_n = sorted(DOCS, key=lambda d: d["n"])
    assert ids(await q(qc, "SELECT * FROM c ORDER BY c.n")) == ids(by_n)
    assert ids(await q(qc, "SELECT * FROM c ORDER BY c.n DESC")) == ids(by_n[::-1])
    assert ids(await q(qc, "SELECT TOP 5 * FROM c ORDER BY c.n DESC")) == ids(by_n[::-1][:5])
    assert len(await q(qc, "SELECT TOP 5 * FROM c")) == 5
    assert ids(await q(qc, "SELECT * FROM c ORDER BY c.n OFFSET 10 LIMIT 5")) == ids(by_n[10:15])
    two_keys = sorted(DOCS, key=lambda d: (d["s"], -d["n"]))
    assert ids(await q(qc, "SELECT * FROM c ORDER BY c.s ASC, c.n DESC")) == ids(two_keys)
    three = sorted(DOCS, key=lambda d: (d["pk"], d["half"], d["id"]))
    assert ids(await q(qc, "SELECT * FROM c ORDER BY c.pk, c.half, c.id")) == ids(three)
    top_param = await q(qc, "SELECT TOP @k VALUE c.n FROM c ORDER BY c.n", [{"name": "@k", "value": 3}])
    assert top_param == [0, 1, 2]
    in_partition = await q(qc, "SELECT VALUE c.n FROM c ORDER BY c.n DESC", partition_key="beta")
    assert in_partition == sorted((d["n"] for d in DOCS if d["pk"] == "beta"), reverse=True)


async def test_distinct(qc: ContainerProxy) -> None:
    assert sorted(await q(qc, "SELECT DISTINCT VALUE c.pk FROM c")) == sorted(KEYS)
    rows = await q(qc, "SELECT DISTINCT c.nested.v FROM c")
    assert sorted(r["v"] for r in rows) == [0, 1, 2, 3, 4]


async def test_aggregates_cross_partition(qc: ContainerProxy) -> None:
    ns = [d["n"] for d in DOCS]
    assert await q(qc, "SELECT VALUE COUNT(1) FROM c") == [60]
    assert await q(qc, "SELECT VALUE SUM(c.n) FROM c") == [sum(ns)]
    assert await q(qc, "SELECT VALUE MIN(c.n) FROM c") == [0]
    assert await q(qc, "SELECT VALUE MAX(c.s) FROM c") == [max(d["s"] for d in DOCS)]
    assert await q(qc, "SELECT VALUE COUNT(1) FROM c WHERE c.even") == [30]
    assert await q(qc, "SELECT VALUE COUNT(c.opt) FROM c") == [sum("opt" in d for d in DOCS)]
    assert await q(qc, "SELECT VALUE COUNT(1) FROM c WHERE c.pk = 'zeta'", partition_key="zeta") == [10]
    # Non-VALUE aggregates: the SDK refuses them cross-partition on the query-plan path (real
    # accounts), so this one is scoped to a logical partition.
    rows = await q(qc, "SELECT COUNT(1) AS n, SUM(c.n) AS total, MAX(c.n) AS top FROM c", partition_key="alpha")
    alpha = [d["n"] for d in DOCS if d["pk"] == "alpha"]
    assert rows == [{"n": len(alpha), "total": sum(alpha), "top": max(alpha)}]


async def test_aggregates_per_feed_range_are_merged_by_the_sdk(qc: ContainerProxy) -> None:
    ranges = [r async for r in qc.read_feed_ranges()]
    partial_counts = [(await q(qc, "SELECT VALUE COUNT(1) FROM c", feed_range=r))[0] for r in ranges]
    assert sum(partial_counts) == 60
    whole = {"Range": {"min": "", "max": "FF", "isMinInclusive": True, "isMaxInclusive": False}}
    assert await q(qc, "SELECT VALUE COUNT(1) FROM c", feed_range=whole) == [60]
    assert await q(qc, "SELECT VALUE SUM(c.n) FROM c", feed_range=whole) == [sum(d["n"] for d in DOCS)]
    assert await q(qc, "SELECT VALUE MIN(c.n) FROM c", feed_range=whole) == [0]
    assert await q(qc, "SELECT VALUE MAX(c.n) FROM c", feed_range=whole) == [59]
    pk_range = await qc.feed_range_from_partition_key("delta")
    assert await q(qc, "SELECT VALUE COUNT(1) FROM c", feed_range=pk_range) == [10]


async def test_scoped_queries(qc: ContainerProxy) -> None:
    ranges = [r async for r in qc.read_feed_ranges()]
    seen: Counter[str] = Counter()
    for r in ranges:
        for row in await q(qc, "SELECT * FROM c WHERE c.n >= 0", feed_range=r):
            seen[row["id"]] += 1
    assert seen == Counter(d["id"] for d in DOCS)
    for key in KEYS:
        expected = sorted(d["id"] for d in DOCS if d["pk"] == key)
        assert sorted(ids(await q(qc, "SELECT * FROM c", partition_key=key))) == expected
        pk_range = await qc.feed_range_from_partition_key(key)
        assert sorted(ids(await q(qc, "SELECT * FROM c", feed_range=pk_range))) == expected


async def test_read_items(qc: ContainerProxy) -> None:
    wanted = [(d["id"], d["pk"]) for d in DOCS[::3]] + [("nope", "alpha"), ("d01", "wrong-key")]
    found = await qc.read_items(wanted)
    assert sorted(ids(found)) == sorted(d["id"] for d in DOCS[::3])
    assert float(found.get_response_headers()["x-ms-request-charge"]) > 0


@pytest.mark.parametrize("max_items", [1, 7, 100])
async def test_paging_with_continuations(qc: ContainerProxy, max_items: int) -> None:
    for text in ("SELECT * FROM c", "SELECT * FROM c WHERE c.n % 2 = 1", "SELECT * FROM c ORDER BY c.n DESC"):
        pager = qc.query_items(text, max_item_count=max_items).by_page()
        rows: list[dict[str, Any]] = []
        async for page in pager:
            chunk = [r async for r in page]
            assert len(chunk) <= max_items
            rows.extend(chunk)
        expected = [d for d in DOCS if "% 2" not in text or d["n"] % 2 == 1]
        assert Counter(ids(rows)) == Counter(d["id"] for d in expected), text
        if "ORDER BY" in text:
            assert [r["n"] for r in rows] == sorted((d["n"] for d in expected), reverse=True)


async def test_resume_a_query_from_a_continuation_token(qc: ContainerProxy) -> None:
    r = [fr async for fr in qc.read_feed_ranges()][0]
    first = qc.query_items("SELECT * FROM c", feed_range=r, max_item_count=3).by_page()
    page = [x async for x in await first.__anext__()]
    token = first.continuation_token
    assert token and len(page) == 3
    rest: list[dict[str, Any]] = []
    async for p in qc.query_items("SELECT * FROM c", feed_range=r, max_item_count=3).by_page(token):
        rest.extend([x async for x in p])
    everything = await q(qc, "SELECT * FROM c", feed_range=r)
    assert ids(page) + ids(rest) == ids(everything)


@needs_emulator  # the emulator's RU model: a real account's index makes the filtered query cheap
async def test_query_pages_are_charged_for_what_they_load(qc: ContainerProxy) -> None:
    charges: list[float] = []

    def hook(headers: Any, _: Any) -> None:
        charges.append(float(headers["x-ms-request-charge"]))

    await q(qc, "SELECT * FROM c WHERE c.pk = 'alpha'", partition_key="alpha", response_hook=hook)
    one_partition = sum(charges)
    charges.clear()
    await q(qc, "SELECT * FROM c", response_hook=hook)
    everything = sum(charges)
    charges.clear()
    await q(qc, "SELECT * FROM c WHERE c.n = -1", response_hook=hook)  # loads all, returns none
    filtered = sum(charges)
    assert 0 < one_partition < everything
    assert filtered > one_partition


@needs_emulator
@pytest.mark.parametrize(("text", "named"), [
    ("SELECT c.id FROM c JOIN t IN c.tags", "JOIN"),
    ("SELECT c.pk, COUNT(1) AS n FROM c GROUP BY c.pk", "GROUP BY"),
])
async def test_unsupported_sql_is_400_naming_it(qc: ContainerProxy, text: str, named: str) -> None:
    with pytest.raises(CosmosHttpResponseError) as caught:
        await q(qc, text)
    assert caught.value.status_code == 400
    assert named.lower() in json.dumps(caught.value.message).lower().replace("_", " ")


async def test_invalid_sql_is_400(qc: ContainerProxy) -> None:
    with pytest.raises(CosmosHttpResponseError) as caught:
        await q(qc, "SELEC * FROM c")
    assert caught.value.status_code == 400
    with pytest.raises(CosmosHttpResponseError) as caught:
        await q(qc, "SELECT * FROM c WHERE c.n = @undeclared")
    assert caught.value.status_code == 400
