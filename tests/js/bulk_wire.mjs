// Upserts through executeBulkOperations into an existing container, for the wire comparison in
// tests/core/test_wire_equivalence_writes.py (which captures what this sends).
// OPERATIONS: JSON list of {resourceBody, partitionKey}; {} is the SDK's literal for an undefined key.
import { BulkOperationType } from "@azure/cosmos";
import { client, report } from "./common.mjs";

await report(async () => {
  const container = client().database(process.env.COSMOS_DATABASE).container(process.env.COSMOS_CONTAINER);
  const operations = JSON.parse(process.env.OPERATIONS).map((op) => ({
    operationType: BulkOperationType.Upsert, ...op,
  }));
  const results = await container.items.executeBulkOperations(operations);
  return { statuses: results.map((r) => r.response?.statusCode ?? r.error?.code) };
});
