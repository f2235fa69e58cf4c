// Shared set-up for the JS SDK scenarios: a client for the emulator named by the environment,
// a fresh container per run, and one JSON line of results on stdout for pytest to assert on.
import { CosmosClient } from "@azure/cosmos";

export function client() {
  const endpoint = process.env.COSMOS_ENDPOINT;
  const key = process.env.COSMOS_KEY;
  if (!endpoint || !key) throw new Error("COSMOS_ENDPOINT and COSMOS_KEY must be set");
  // Default settings: plain http is accepted, and endpoint discovery keeps this endpoint because
  // the emulator's account advertises the very endpoint the client used.
  return new CosmosClient({ endpoint, key });
}

export async function freshContainer(cosmos, partitionKey, extra = {}) {
  const { database } = await cosmos.databases.createIfNotExists({ id: process.env.COSMOS_DATABASE });
  const id = `js-${Math.random().toString(16).slice(2, 10)}`;
  const { container } = await database.containers.create({ id, partitionKey, ...extra });
  return container;
}

export async function report(run) {
  try {
    const result = await run();
    process.stdout.write(JSON.stringify(result) + "\n");
  } catch (err) {
    process.stdout.write(JSON.stringify({ error: String(err?.message ?? err), code: err?.code ?? null }) + "\n");
    process.exitCode = 1;
  }
}

// Splits every physical range of the container through the emulator's admin endpoint (tests only).
export async function splitAllRanges(container) {
  const response = await fetch(`${process.env.COSMOS_ENDPOINT.replace(/\/$/, "")}/_admin/split`, {
    method: "POST",
    headers: { "x-asyncmig-admin-key": process.env.COSMOS_KEY },
    body: JSON.stringify({ database: container.database.id, container: container.id }),
  });
  if (!response.ok) throw new Error(`split failed: ${response.status}`);
  return response.json();
}
