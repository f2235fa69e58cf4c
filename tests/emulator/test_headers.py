"""Response headers and charges as Cosmos DB sends them: query and index metrics on request, quota
and index transformation progress on container reads, return=minimal, the charge of a 404 read,
one LSN per transactional batch, and the partition's LSN on a point read."""

from __future__ import annotations

from typing import Any

import pytest
from azure.cosmos import PartitionKey
from azure.cosmos.aio import ContainerProxy, DatabaseProxy
from azure.cosmos.exceptions import CosmosResourceNotFoundError

from tests.conftest import needs_emulator
from tests.helpers import unique


@pytest.fixture
async def container(database: DatabaseProxy) -> ContainerProxy:
    indexing = {"indexingMode": "consistent", "includedPaths": [{"path": "/*"}],
                "excludedPaths": [{"path": '/"_etag"/?'}, {"path": "/blob/*"}]}
    container = await database.create_container(unique("c"), PartitionKey("/pk"), indexing_policy=indexing)
    for i in range(10):
        await container.create_item({"id": f"d{i}", "pk": "a", "n": i, "blob": {"x": i}})
    return container


def _capture(into: dict[str, str]) -> Any:
    def hook(headers: Any, _: Any) -> None:
        into.update({k.lower(): v for k, v in headers.items()})
    return hook


async def test_query_and_index_metrics_when_requested(container: ContainerProxy) -> None:
    plain: dict[str, str] = {}
    [d async for d in container.query_items("SELECT * FROM c WHERE c.n > 4", partition_key="a",
                                            response_hook=_capture(plain))]
    assert "x-ms-documentdb-query-metrics" not in plain and "x-ms-cosmos-index-utilization" not in plain

    seen: dict[str, str] = {}
    rows = [d async for d in container.query_items(
        "SELECT * FROM c WHERE c.n > 4 AND c.blob.x > 1", partition_key="a", populate_query_metrics=True,
        populate_index_metrics=True, response_hook=_capture(seen))]
    assert len(rows) == 5
    query_metrics = dict(part.split("=") for part in seen["x-ms-documentdb-query-metrics"].split(";"))
    assert int(query_metrics["retrievedDocumentCount"]) == 10 and int(query_metrics["outputDocumentCount"]) == 5
    assert float(query_metrics["totalExecutionTimeInMs"]) >= 0
    index = container.client_connection.last_response_headers["x-ms-cosmos-index-utilization"]
    assert [i["IndexSpec"] for i in index["UtilizedSingleIndexes"]] == ["/n/?"]
    assert [i["IndexSpec"] for i in index["PotentialSingleIndexes"]] == ["/blob/x/?"]


async def test_quota_and_index_transformation_progress_on_container_reads(container: ContainerProxy) -> None:
    await container.read()
    headers = container.client_connection.last_response_headers
    assert headers["x-ms-documentdb-collection-index-transformation-progress"] == "100"
    assert "x-ms-resource-usage" not in headers
    await container.read(populate_quota_info=True)
    headers = container.client_connection.last_response_headers
    usage = dict(p.split("=") for p in headers["x-ms-resource-usage"].strip(";").split(";"))
    assert usage["documentsCount"] == "10" and int(usage["documentsSize"]) >= 1
    assert "collectionSize" in headers["x-ms-resource-quota"]


async def test_return_minimal_on_replace_and_patch(container: ContainerProxy) -> None:
    replaced = await container.replace_item("d1", {"id": "d1", "pk": "a", "n": 100}, no_response=True)
    assert dict(replaced) == {}
    patched = await container.patch_item("d1", partition_key="a", no_response=True,
                                         patch_operations=[{"op": "incr", "path": "/n", "value": 1}])
    assert dict(patched) == {}
    assert (await container.read_item("d1", partition_key="a"))["n"] == 101
    assert (await container.replace_item("d1", {"id": "d1", "pk": "a", "n": 5}))["n"] == 5  # full body by default


@needs_emulator  # the emulator's charge for a miss
async def test_a_404_read_is_charged(container: ContainerProxy) -> None:
    with pytest.raises(CosmosResourceNotFoundError) as caught:
        await container.read_item("missing", partition_key="a")
    assert float(caught.value.headers["x-ms-request-charge"]) == 1.0


async def test_a_batch_commits_at_one_lsn_and_reads_report_the_partition_lsn(container: ContainerProxy) -> None:
    await container.execute_item_batch([("upsert", ({"id": f"b{i}", "pk": "b"},)) for i in range(5)],
                                       partition_key="b")
    batch_lsn = int(container.client_connection.last_response_headers["lsn"])
    feed = [d async for d in container.query_items_change_feed(start_time="Beginning", partition_key="b")]
    assert [d["_lsn"] for d in feed] == [batch_lsn] * 5

    await container.upsert_item({"id": "later", "pk": "b"})
    later_lsn = int(container.client_connection.last_response_headers["lsn"])
    assert later_lsn > batch_lsn
    await container.read_item("b0", partition_key="b")  # written at the batch's LSN
    assert int(container.client_connection.last_response_headers["lsn"]) == later_lsn
