// Item patch: the SDK sends a bare operation array, or {condition, operations}.
import { client, freshContainer, report } from "./common.mjs";

await report(async () => {
  const container = await freshContainer(client(), { paths: ["/pk"], version: 2 });
  await container.items.create({ id: "p", pk: "k", n: 1, tags: ["a"] });
  const item = container.item("p", "k");
  const bare = await item.patch([
    { op: "incr", path: "/n", value: 2 },
    { op: "add", path: "/tags/-", value: "b" },
    { op: "set", path: "/nested", value: { x: 1 } },
  ]);
  let conditionFailed = null;
  try {
    await item.patch({ condition: "FROM c WHERE c.n = 100", operations: [{ op: "remove", path: "/n" }] });
  } catch (err) {
    conditionFailed = err.code;
  }
  const conditional = await item.patch({ condition: "FROM c WHERE c.n = 3", operations: [{ op: "remove", path: "/tags" }] });
  return { bare: bare.resource, conditionFailed, conditional: conditional.resource };
});
