"""A local Cosmos DB (NoSQL API) server that the unmodified ``azure-cosmos`` SDK talks to.

Several physical partition key ranges, the change feed, RU charges, 429 throttling, fault injection
and SQLite persistence; see README "The local emulator".
"""

from asyncmig.emulator.server import WELL_KNOWN_KEY, Emulator, EmulatorConfig, RunningEmulator

__all__ = ["WELL_KNOWN_KEY", "Emulator", "EmulatorConfig", "RunningEmulator"]
