"""What the original Vimarsh script did : the synchronous SDK, one ``create_item`` per
document, in sequence, with the SDK's default retries (9 throttle retries / 30 s).

``migrate_personality_vectors.py`` read ``SELECT * FROM c`` across partitions, buffered 50 documents
and then created them one at a time; the buffer changes nothing about the requests, so this peer
creates each document as it is read. Per-document failures are counted and the copy carries on, as
the script did. Run as ``python -m bench.peers.original DB/SRC DB/DST --count N``.
"""

from __future__ import annotations

import sys
import time

from azure.cosmos import CosmosClient

from bench.peers import Charges, connection, container_ref, finish, parser, strip_system


def main(argv: list[str] | None = None) -> int:
    args = parser("python -m bench.peers.original", __doc__.split("\n\n")[0].replace("\n", " ")).parse_args(argv)
    endpoint, key = connection(args)
    started = time.perf_counter()
    client = CosmosClient(endpoint, credential=key)
    source_db, source_name = container_ref(args.source)
    target_db, target_name = container_ref(args.target)
    source = client.get_database_client(source_db).get_container_client(source_name)
    target = client.get_database_client(target_db).get_container_client(target_name)
    charges = Charges()
    read = written = errors = 0
    first_error = None
    for item in source.query_items("SELECT * FROM c", enable_cross_partition_query=True):
        if read == args.count:
            read += 1  # one more than expected: the source is not what the caller thinks
            break
        read += 1
        try:
            target.create_item(body=strip_system(item), response_hook=charges)
            written += 1
        except Exception as exc:  # noqa: BLE001 - the original script counted errors and went on
            errors += 1
            first_error = first_error or f"{type(exc).__name__}: {exc}"[:300]
    elapsed = time.perf_counter() - started
    return finish({"peer": "original", "read": read, "written": written, "errors": errors,
                   "first_error": first_error, "ru": round(charges.ru, 2), "elapsed_s": round(elapsed, 3)},
                  args.count)


if __name__ == "__main__":
    sys.exit(main())
