// executeBulkOperations: non-atomic batches per physical range with per-operation results.
// SPLIT=1 splits every range between two bulk calls (the SDK re-routes on 410/1002);
// THROTTLE=1 gives the container 400 RU/s so that the bulk call is throttled per operation;
// PK_VERSION=1 makes a Hash V1 container (the SDK routes with its own V1 hashing).
import { BulkOperationType } from "@azure/cosmos";
import { client, freshContainer, report, splitAllRanges } from "./common.mjs";

await report(async () => {
  const cosmos = client();
  const definition = process.env.PK_VERSION === "1" ? { paths: ["/pk"] } : { paths: ["/pk"], version: 2 };
  const container = await freshContainer(cosmos, definition,
                                         process.env.THROTTLE === "1" ? { throughput: 400 } : {});
  const filler = "x".repeat(Number(process.env.FILLER ?? 100));
  // executeBulkOperations wants every operation's partitionKey (it routes by it, client-side).
  const upserts = (from, to) => Array.from({ length: to - from }, (_, i) => ({
    operationType: BulkOperationType.Upsert, partitionKey: `key-${(from + i) % 37}`,
    resourceBody: { id: `d${from + i}`, pk: `key-${(from + i) % 37}`, filler },
  }));
  const status = (r) => r.response?.statusCode ?? r.error?.code;
  const result = {};
  result.first = (await container.items.executeBulkOperations(upserts(0, 100))).map(status);
  if (process.env.SPLIT === "1") {
    await container.items.create({ id: "taken", pk: "key-1" });
    await splitAllRanges(container);
    const mixed = [
      ...upserts(100, 160),
      { operationType: BulkOperationType.Create, partitionKey: "key-1", resourceBody: { id: "taken", pk: "key-1" } },
      { operationType: BulkOperationType.Patch, id: "d5", partitionKey: "key-5",
        resourceBody: { operations: [{ op: "set", path: "/patched", value: true }] } },
      { operationType: BulkOperationType.Read, id: "d6", partitionKey: "key-6" },
      { operationType: BulkOperationType.Delete, id: "d7", partitionKey: "key-7" },
    ];
    result.second = (await container.items.executeBulkOperations(mixed)).map(status);
    result.patched = (await container.item("d5", "key-5").read()).resource?.patched ?? null;
  }
  result.count = (await container.items.query("SELECT VALUE COUNT(1) FROM c").fetchAll()).resources[0];
  result.ranges = (await container.getFeedRanges()).length;
  return result;
});
