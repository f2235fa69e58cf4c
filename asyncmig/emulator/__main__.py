"""``python -m asyncmig.emulator``: serve until SIGINT/SIGTERM, printing the connection string first."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

from asyncmig.emulator.server import FAULT_KINDS, WELL_KNOWN_KEY, EmulatorConfig, RunningEmulator


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m asyncmig.emulator",
        description="A local Cosmos DB (NoSQL API) emulator for the azure-cosmos SDK: several physical "
        "partition key ranges, change feed, RU charges, 429 throttling, fault injection, SQLite persistence.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    parser.add_argument("--port", type=int, default=8081, help="port; 0 picks a free one (default 8081)")
    storage = parser.add_mutually_exclusive_group()
    storage.add_argument("--data-dir", type=Path, help="keep databases and documents in this folder")
    storage.add_argument("--in-memory", action="store_true", help="keep nothing after exit (the default "
                         "when --data-dir is not given)")
    parser.add_argument("--partitions", type=int, help="physical ranges per new container, a test override "
                        "(default: as Cosmos DB, one per 6,000 RU/s of the container's throughput, at least one)")
    parser.add_argument("--key", default=WELL_KNOWN_KEY, help="account key (default: the official emulator's key)")
    parser.add_argument("--no-rate-limit", action="store_true", help="never answer 429")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="added to every request")
    parser.add_argument("--fault-rate", type=float, default=0.0,
                        help="fraction of document requests answered with an injected fault")
    parser.add_argument("--faults", default=",".join(FAULT_KINDS),
                        help="kinds of injected faults: 503, 408, reset (default: all three)")
    parser.add_argument("--fault-seed", type=int, help="seed for reproducible fault injection")
    parser.add_argument("--entra-issuer-key", type=Path, metavar="FILE",
                        help="accept Microsoft Entra ID tokens signed with this key: a PEM public key, or a "
                        "shared secret (HS256); such tokens get data-plane rights only")
    parser.add_argument("--tls-cert", type=Path, metavar="FILE", help="serve HTTPS with this PEM certificate "
                        "(with --tls-key); the SDK sends Entra ID tokens over HTTPS only")
    parser.add_argument("--tls-key", type=Path, metavar="FILE", help="the certificate's PEM private key")
    return parser


async def serve(config: EmulatorConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with RunningEmulator(config) as running:
        print(f"asyncmig emulator ready: {running.connection_string}", flush=True)
        await stop.wait()
    print("asyncmig emulator stopped", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    kinds = tuple(k.strip() for k in args.faults.split(",") if k.strip())
    unknown = set(kinds) - set(FAULT_KINDS)
    if (args.tls_cert is None) != (args.tls_key is None):
        print("error: --tls-cert and --tls-key go together", file=sys.stderr)
        return 2
    if unknown or not 0 <= args.fault_rate <= 1 or (args.partitions is not None and args.partitions < 1):
        print(f"error: invalid arguments (faults {sorted(unknown)}, fault rate {args.fault_rate}, "
              f"partitions {args.partitions})", file=sys.stderr)
        return 2
    config = EmulatorConfig(
        host=args.host, port=args.port, data_dir=None if args.in_memory else args.data_dir,
        partitions=args.partitions, key=args.key, rate_limit=not args.no_rate_limit,
        latency_ms=args.latency_ms, fault_rate=args.fault_rate, faults=kinds, fault_seed=args.fault_seed,
        entra_issuer_key=args.entra_issuer_key,
        tls=(args.tls_cert, args.tls_key) if args.tls_cert else None,
    )
    try:
        import uvloop  # noqa: PLC0415 - optional speed-up
        uvloop.install()
    except ImportError:
        pass
    try:
        asyncio.run(serve(config))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # e.g. the port is taken: one line, not a traceback (and not "bad arguments")
        print(f"error: cannot serve on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
