"""``python -m asyncmig`` and the ``asyncmig`` command: :func:`run`.

SIGTERM is made to behave like Ctrl-C before anything else is imported, so a signal that arrives
while the program is still starting ends it with exit code 130, not a traceback or a bare kill.

The garbage collector is tuned for a copy, also before the imports (which allocate too). A copy
allocates millions of short-lived containers (parsed documents) that reference counting frees; at
the collector's default (a young collection every 700 allocations) it still walked them ~45 times
per 6,514 vector documents, with a full collection over everything imported: 0.045 s, ~5 % of such
a copy's CPU (and ~0.02 s more during start-up). Young collections now wait for 20,000 allocations
and the objects made at start-up are frozen out of every collection; cyclic garbage is still
collected, later. Only the process entry point does this: ``asyncmig.cli.main`` as tests call it
in-process is unchanged.
"""

import gc
import signal
from typing import NoReturn


def run() -> NoReturn:
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    gc.set_threshold(20_000, 10, 10)
    try:
        from asyncmig.cli import main
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    gc.freeze()
    raise SystemExit(main())


if __name__ == "__main__":
    run()
