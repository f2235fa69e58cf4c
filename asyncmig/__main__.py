"""``python -m asyncmig``.

SIGTERM is made to behave like Ctrl-C before anything else is imported, so a signal that arrives
while the program is still starting ends it with exit code 130, not a traceback or a bare kill.
"""

import signal

signal.signal(signal.SIGTERM, signal.default_int_handler)

try:
    from asyncmig.cli import console
except KeyboardInterrupt:
    raise SystemExit(130) from None

raise SystemExit(console())
