"""The SDK documentation's concurrency recipe: the async SDK, ``asyncio.gather`` over one
``upsert_item`` per document under a semaphore, the SDK's default retries (9 throttle retries / 30 s).

As in the recipe (the azure-cosmos README's async sample and the SDK's workload samples), the
documents are read first (``query_items`` on the async client pages through every partition) and
then written with one task each, at most ``--concurrency`` (default 32) in flight; the event loop is
plain ``asyncio.run``. Failed upserts are counted (``gather(..., return_exceptions=True)``).
Run as ``python -m bench.peers.sdk_gather DB/SRC DB/DST --count N``.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

from azure.cosmos.aio import CosmosClient

from bench.peers import Charges, connection, container_ref, finish, parser, strip_system

DEFAULT_CONCURRENCY = 32


async def copy(endpoint: str, key: str, source_ref: str, target_ref: str, count: int, concurrency: int
               ) -> dict[str, Any]:
    started = time.perf_counter()
    charges = Charges()
    async with CosmosClient(endpoint, credential=key) as client:
        source_db, source_name = container_ref(source_ref)
        target_db, target_name = container_ref(target_ref)
        source = client.get_database_client(source_db).get_container_client(source_name)
        target = client.get_database_client(target_db).get_container_client(target_name)
        documents = []
        async for item in source.query_items("SELECT * FROM c"):
            documents.append(strip_system(item))
            if len(documents) > count:
                break
        semaphore = asyncio.Semaphore(concurrency)

        async def upsert(document: dict[str, Any]) -> None:
            async with semaphore:
                await target.upsert_item(document, response_hook=charges)

        outcomes = await asyncio.gather(*(upsert(d) for d in documents[:count]), return_exceptions=True)
    failures = [o for o in outcomes if isinstance(o, BaseException)]
    first_error = f"{type(failures[0]).__name__}: {failures[0]}"[:300] if failures else None
    return {"peer": "sdk-gather", "concurrency": concurrency, "read": len(documents),
            "written": len(outcomes) - len(failures), "errors": len(failures), "first_error": first_error,
            "ru": round(charges.ru, 2), "elapsed_s": round(time.perf_counter() - started, 3)}


def main(argv: list[str] | None = None) -> int:
    p = parser("python -m bench.peers.sdk_gather", __doc__.split("\n\n")[0].replace("\n", " "))
    p.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY, help="upserts in flight (semaphore)")
    args = p.parse_args(argv)
    endpoint, key = connection(args)
    result = asyncio.run(copy(endpoint, key, args.source, args.target, args.count, args.concurrency))
    return finish(result, args.count)


if __name__ == "__main__":
    sys.exit(main())
