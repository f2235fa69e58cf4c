"""``make migrate``: the whole Vimarsh migration, on the embedded default or on a configured account.

With no ``.env`` naming an account, a local emulator is started (data kept in ``.emulator-data/``,
so an interrupted ``make migrate`` resumes), the deterministic demo data set is seeded into the legacy
layout once, and ``asyncmig run --yes`` runs every phase. With a ``.env`` naming an account, the
same run asks before each phase that changes data.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from asyncmig import cli
from asyncmig.emulator.process import EmulatorProcess
from asyncmig.errors import AsyncmigError
from asyncmig.settings import ENV_CONNECTION_STRING, load_settings

DATA_DIR = Path(os.environ.get("ASYNCMIG_EMULATOR_DATA", ".emulator-data"))
PORT = int(os.environ.get("ASYNCMIG_EMULATOR_PORT", "18081"))


def main() -> int:
    try:
        settings = load_settings()
    except AsyncmigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    if settings.endpoint is not None:
        print(f"Using the account in {settings.env_file or 'the environment'} ({settings.endpoint.host}); "
              "each phase that changes data asks first.")
        return cli.main(["run"])
    print(f"No {ENV_CONNECTION_STRING} configured: starting the local emulator (data in {DATA_DIR}/, "
          f"port {PORT}) with the Vimarsh demo data set.")
    emulator = EmulatorProcess(data_dir=DATA_DIR, port=PORT, own_session=True)
    try:
        emulator.start()
    except RuntimeError as exc:
        print(f"error: {exc}\nIs another program using port {PORT}? Set ASYNCMIG_EMULATOR_PORT to another port.",
              file=sys.stderr)
        return 3
    try:
        os.environ[ENV_CONNECTION_STRING] = emulator.connection_string
        code = cli.main(["seed-demo"])
        return code or cli.main(["run", "--yes"])
    finally:
        emulator.stop()


if __name__ == "__main__":
    raise SystemExit(main())
