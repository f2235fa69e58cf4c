// Transactional batch: all or nothing within one logical partition.
import { client, freshContainer, report } from "./common.mjs";

await report(async () => {
  const container = await freshContainer(client(), { paths: ["/pk"], version: 2 });
  const ok = await container.items.batch([
    { operationType: "Create", resourceBody: { id: "a", pk: "A", n: 1 } },
    { operationType: "Upsert", resourceBody: { id: "b", pk: "A", n: 2 } },
    { operationType: "Read", id: "a" },
    { operationType: "Patch", id: "b", resourceBody: { operations: [{ op: "incr", path: "/n", value: 5 }] } },
  ], "A");
  const failed = await container.items.batch([
    { operationType: "Create", resourceBody: { id: "c", pk: "A" } },
    { operationType: "Create", resourceBody: { id: "a", pk: "A" } },   // conflict: nothing commits
  ], "A");
  const { resources } = await container.items.query("SELECT c.id, c.n FROM c", { partitionKey: "A" }).fetchAll();
  return {
    ok: { code: ok.code, statuses: ok.result.map((r) => r.statusCode) },
    failed: { code: failed.code, statuses: failed.result.map((r) => r.statusCode) },
    items: resources.sort((x, y) => x.id.localeCompare(y.id)),
  };
});
