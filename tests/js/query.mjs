// Queries paged with fetchNext and continuation tokens, cross-partition and by partition key.
import { client, freshContainer, report } from "./common.mjs";

await report(async () => {
  const container = await freshContainer(client(), { paths: ["/pk"], version: 2 });
  await Promise.all(Array.from({ length: 57 }, (_, i) =>
    container.items.create({ id: `q${String(i).padStart(2, "0")}`, pk: `p${i % 5}`, n: i })));
  const pages = async (iterator) => {
    const sizes = [];
    const ids = [];
    while (iterator.hasMoreResults()) {
      const page = await iterator.fetchNext();
      if (page.resources.length) sizes.push(page.resources.length);
      ids.push(...page.resources.map((r) => r.id ?? r));
    }
    return { sizes, ids };
  };
  const all = await pages(container.items.query("SELECT * FROM c", { maxItemCount: 10 }));
  const filtered = await pages(container.items.query(
    { query: "SELECT c.id FROM c WHERE c.n >= @low", parameters: [{ name: "@low", value: 40 }] },
    { maxItemCount: 4 }));
  const byKey = await pages(container.items.query("SELECT * FROM c", { partitionKey: "p3", maxItemCount: 3 }));
  // A continuation token taken from one iterator resumes in a new one.
  const firstPage = await container.items.query("SELECT * FROM c", { partitionKey: "p1", maxItemCount: 5 }).fetchNext();
  const resumed = await pages(container.items.query("SELECT * FROM c",
    { partitionKey: "p1", maxItemCount: 5, continuationToken: firstPage.continuationToken }));
  return {
    all: { count: all.ids.length, distinct: new Set(all.ids).size, maxPage: Math.max(...all.sizes) },
    filtered: filtered.ids.map((r) => r.id ?? r).sort(),
    byKey: byKey.ids.sort(),
    resumed: [...firstPage.resources.map((r) => r.id), ...resumed.ids].sort(),
  };
});
